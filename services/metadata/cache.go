package metadata

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"google.golang.org/protobuf/encoding/protojson"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/schema"
)

// ErrObjectNotDefined means the environment has no such object.
var ErrObjectNotDefined = errors.New("metadata: object not defined")

// Cache serves object definitions to the data plane: decoded once, kept
// briefly, dropped at once when a definition changes (KindObject events) or
// its environment goes.
type Cache struct {
	store   controlplane.ObjectStore
	objects *expirable.LRU[string, *schema.Object] // nil value: not defined
}

// NewCache returns a Cache over store, subscribed to events.
func NewCache(store controlplane.ObjectStore, events invalidate.Subscriber) *Cache {
	c := &Cache{store: store, objects: expirable.NewLRU[string, *schema.Object](100_000, nil, 30*time.Second)}
	events.Subscribe(c.invalidate)
	return c
}

func cacheKey(environmentID, name string) string { return environmentID + "/" + name }

func (c *Cache) invalidate(ev invalidate.Event) {
	switch ev.Kind {
	case invalidate.KindAll:
		c.objects.Purge()
	case invalidate.KindObject:
		c.objects.Remove(cacheKey(ev.EnvironmentID, ev.Object))
	case invalidate.KindEnvironment:
		// A deleted environment takes its definitions with it.
		prefix := ev.EnvironmentID + "/"
		for _, k := range c.objects.Keys() {
			if len(k) > len(prefix) && k[:len(prefix)] == prefix {
				c.objects.Remove(k)
			}
		}
	}
}

// Object returns the definition of name in the environment. The returned
// object is shared: callers must not modify it.
func (c *Cache) Object(ctx context.Context, environmentID, name string) (*schema.Object, error) {
	key := cacheKey(environmentID, name)
	if obj, ok := c.objects.Get(key); ok {
		if obj == nil {
			return nil, ErrObjectNotDefined
		}
		return obj, nil
	}
	def, err := c.store.GetObjectDefinition(ctx, environmentID, name)
	if errors.Is(err, controlplane.ErrNotFound) {
		c.objects.Add(key, nil)
		return nil, ErrObjectNotDefined
	}
	if err != nil {
		return nil, err
	}
	obj, err := decode(def)
	if err != nil {
		return nil, err
	}
	c.objects.Add(key, obj)
	return obj, nil
}

// encode stores a definition as protojson: the API's own, versioned format.
func encode(obj *schema.Object) ([]byte, error) {
	return protojson.Marshal(objectToProto(obj))
}

func decode(def controlplane.ObjectDefinition) (*schema.Object, error) {
	var p metadatav1.ObjectDefinition
	if err := protojson.Unmarshal(def.Definition, &p); err != nil {
		return nil, fmt.Errorf("metadata: decode %s/%s: %w", def.EnvironmentID, def.Name, err)
	}
	obj, violations := objectFromProto(def.Name, &p)
	if len(violations) > 0 {
		return nil, fmt.Errorf("metadata: stored definition %s/%s is invalid: %v", def.EnvironmentID, def.Name, violations)
	}
	obj.Version = def.Version
	obj.CreateTime = def.CreateTime
	obj.UpdateTime = def.UpdateTime
	return obj, nil
}
