package resolve_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/resolve"
)

// pausingSource is a resolve.Source whose reads, once armed, stop after
// reading and before returning until released: the moment a control-plane
// write and its invalidation can slip in.
type pausingSource struct {
	resolve.Source
	read    chan struct{} // receives when an armed read has read
	release chan struct{}
	armed   bool
}

func (s *pausingSource) pause() {
	if s.armed {
		s.armed = false
		s.read <- struct{}{}
		<-s.release
	}
}

func (s *pausingSource) GetEnvironment(ctx context.Context, id string) (controlplane.Environment, error) {
	env, err := s.Source.GetEnvironment(ctx, id)
	s.pause()
	return env, err
}

func (s *pausingSource) ListHostnameClaims(ctx context.Context, name string) ([]controlplane.Environment, error) {
	env, err := s.Source.ListHostnameClaims(ctx, name)
	s.pause()
	return env, err
}

// TestReadBeforeWriteIsNotCached: a lookup that read an environment just
// before a write, and would cache it just after the write's invalidation,
// must not keep serving the old row: the next call sees the write.
func TestReadBeforeWriteIsNotCached(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		hints func(f *fixture) resolve.Hints
		write func(t *testing.T, f *fixture) []invalidate.Event
		want  string // reason of the next call, "" for success
		// racing is the reason the racing call may fail with, having read
		// the write ("" = it must succeed).
		racing string
	}{
		{
			name:  "suspension",
			hints: func(f *fixture) resolve.Hints { return resolve.Hints{EnvironmentID: f.dev.ID} },
			write: func(t *testing.T, f *fixture) []invalidate.Event {
				suspended := controlplane.StatusSuspended
				if _, err := f.store.UpdateEnvironment(t.Context(), f.dev.ID, controlplane.EnvironmentPatch{Status: &suspended}); err != nil {
					t.Fatal(err)
				}
				return []invalidate.Event{{Kind: invalidate.KindEnvironment, EnvironmentID: f.dev.ID, OrganizationID: f.org.ID}}
			},
			want: resolve.ReasonEnvironmentSuspended,
		},
		{
			name:  "hostname moved away",
			hints: func(f *fixture) resolve.Hints { return resolve.Hints{Host: f.dev.Hostname, Header: f.stg.ID} },
			write: func(t *testing.T, f *fixture) []invalidate.Event {
				moved := "moved.example"
				if _, err := f.store.UpdateEnvironment(t.Context(), f.dev.ID, controlplane.EnvironmentPatch{Hostname: &moved}); err != nil {
					t.Fatal(err)
				}
				return []invalidate.Event{
					{Kind: invalidate.KindEnvironment, EnvironmentID: f.dev.ID, OrganizationID: f.org.ID},
					{Kind: invalidate.KindHostname, Hostname: f.dev.Hostname, EnvironmentID: f.dev.ID},
					{Kind: invalidate.KindHostname, Hostname: moved, EnvironmentID: f.dev.ID},
				}
			},
			// The moved hostname is under the root domain: once the move
			// is read it names a missing environment.
			racing: resolve.ReasonEnvironmentNotFound,
			want:   resolve.ReasonEnvironmentNotFound,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			src := &pausingSource{Source: f.store, read: make(chan struct{}), release: make(chan struct{}), armed: true}
			bus := invalidate.NewBus()
			r := resolve.New(src, bus, resolve.Options{RootDomain: "localhost"}, slog.New(slog.DiscardHandler))
			p := &auth.Principal{TokenID: "t", OrganizationID: f.org.ID, Role: auth.RoleViewer}
			h := tc.hints(f)

			done := make(chan error, 1)
			go func() {
				_, err := r.Resolve(context.Background(), h, p)
				done <- err
			}()
			<-src.read // the lookup has read the row as it was
			events := tc.write(t, f)
			if err := bus.Publish(t.Context(), events...); err != nil {
				t.Fatal(err)
			}
			close(src.release)
			if err := <-done; err != nil && (tc.racing == "" || apierr.Reason(err) != tc.racing) {
				t.Fatalf("the racing call: %v", err)
			}

			env, err := r.Resolve(t.Context(), h, p)
			switch {
			case tc.want != "" && apierr.Reason(err) != tc.want:
				t.Errorf("the call after the write: %v (environment %s), want %s", err, env.ID, tc.want)
			case tc.want == "" && (err != nil || env.ID != f.stg.ID):
				// The old hostname no longer routes: the header decides.
				t.Errorf("the call after the write: %s, %v; want %s by its header", env.ID, err, f.stg.ID)
			}
		})
	}
}
