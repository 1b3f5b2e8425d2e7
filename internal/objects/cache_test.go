package objects_test

import (
	"context"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/controlplane/cptest"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/objects"
)

// pausingStore stops its first definition read after reading and before
// returning until released: the moment a PutObject can slip in.
type pausingStore struct {
	controlplane.ObjectStore
	read    chan struct{}
	release chan struct{}
	armed   bool
}

func (s *pausingStore) GetObjectDefinition(ctx context.Context, environmentID, name string) (controlplane.ObjectDefinition, error) {
	def, err := s.ObjectStore.GetObjectDefinition(ctx, environmentID, name)
	if s.armed {
		s.armed = false
		s.read <- struct{}{}
		<-s.release
	}
	return def, err
}

// TestCacheReadBeforeWriteIsNotCached: a definition read just before a new
// version is stored, and cached just after that version's event, must not
// be served afterwards.
func TestCacheReadBeforeWriteIsNotCached(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, env := cptest.WithEnvironment(t, "memory")
	now := time.Now().UTC()
	put := func(version int64, definition string) {
		t.Helper()
		_, err := store.PutObjectDefinition(ctx, controlplane.ObjectDefinition{
			EnvironmentID: env.ID, Name: "thing", Definition: []byte(definition), Version: version, UpdateTime: now,
		}, version-1, controlplane.ObjectMigration{})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(1, `{"name":"thing","fields":[{"name":"a","type":"text"}]}`)

	src := &pausingStore{ObjectStore: store, read: make(chan struct{}), release: make(chan struct{}), armed: true}
	bus := invalidate.NewBus()
	cache := objects.NewCache(src, bus)
	done := make(chan error, 1)
	go func() {
		_, err := cache.Object(context.Background(), env.ID, "thing")
		done <- err
	}()
	<-src.read // version 1 was read
	put(2, `{"name":"thing","fields":[{"name":"a","type":"text"},{"name":"b","type":"text"}]}`)
	if err := bus.Publish(ctx, invalidate.Event{Kind: invalidate.KindObject, EnvironmentID: env.ID, Object: "thing"}); err != nil {
		t.Fatal(err)
	}
	close(src.release)
	if err := <-done; err != nil {
		t.Fatalf("the racing read: %v", err)
	}
	obj, err := cache.Object(ctx, env.ID, "thing")
	if err != nil {
		t.Fatal(err)
	}
	if obj.Version != 2 || len(obj.Fields) != 2 {
		t.Errorf("after the new version's event: version %d with %d fields, want version 2 with 2", obj.Version, len(obj.Fields))
	}
}
