package objects

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/cache"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/schema"
)

// ErrNotDefined means the environment has no such object.
var ErrNotDefined = errors.New("objects: object not defined")

// Cache serves object definitions to the data plane: decoded once, kept
// briefly, dropped at once when a definition changes (KindObject events) or
// its environment goes.
type Cache struct {
	store   controlplane.ObjectStore
	objects *cache.Cache[string, *schema.Object] // nil value: not defined

	// guard keeps a read that raced an invalidation out of the cache: a
	// definition read just before a PutObject, cached just after its event
	// dropped the old entry, would be served until the TTL.
	guard cache.Guard
}

// NewCache returns a Cache over store, subscribed to events.
func NewCache(store controlplane.ObjectStore, events invalidate.Subscriber) *Cache {
	c := &Cache{store: store, objects: cache.New[string, *schema.Object](100_000, 30*time.Second, 5*time.Minute)}
	events.Subscribe(c.invalidate)
	return c
}

func cacheKey(environmentID, name string) string { return environmentID + "/" + name }

func (c *Cache) invalidate(ev invalidate.Event) {
	defer c.guard.Invalidate()()
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
			return nil, ErrNotDefined
		}
		return obj, nil
	}
	gen := c.guard.Begin()
	def, err := c.store.GetObjectDefinition(ctx, environmentID, name)
	if errors.Is(err, controlplane.ErrNotFound) {
		c.add(gen, key, nil)
		return nil, ErrNotDefined
	}
	if err != nil {
		// The control plane is unreachable: a definition known from before
		// keeps the environment serving (changes still arrive as events).
		if obj, ok := c.objects.Stale(key); ok && obj != nil {
			return obj, nil
		}
		return nil, err
	}
	obj, err := Decode(def)
	if err != nil {
		return nil, err
	}
	c.add(gen, key, obj)
	return obj, nil
}

// Forget drops the cached definition of name, so that the next read asks
// the control plane: a call found the object's table other than the
// cached definition says.
func (c *Cache) Forget(environmentID, name string) {
	c.invalidate(invalidate.Event{Kind: invalidate.KindObject, EnvironmentID: environmentID, Object: name})
}

// Defined reports whether the control plane defines the object now,
// bypassing the cache: what a call that found no table asks before it
// calls the table missing (drift) rather than the object deleted.
func (c *Cache) Defined(ctx context.Context, environmentID, name string) (bool, error) {
	_, err := c.store.GetObjectDefinition(ctx, environmentID, name)
	if errors.Is(err, controlplane.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// add caches what a read that started at generation gen found, unless an
// invalidation happened since.
func (c *Cache) add(gen uint64, key string, obj *schema.Object) {
	c.guard.Add(gen, func() { c.objects.Add(key, obj) })
}

// Encode stores a definition as protojson: the API's own, versioned format.
func Encode(obj *schema.Object) ([]byte, error) {
	return protojson.Marshal(ToProto(obj))
}

// Decode reads a definition the control plane stored (see Encode).
func Decode(def controlplane.ObjectDefinition) (*schema.Object, error) {
	var p metadatav1.ObjectDefinition
	if err := protojson.Unmarshal(def.Definition, &p); err != nil {
		return nil, fmt.Errorf("objects: decode %s/%s: %w", def.EnvironmentID, def.Name, err)
	}
	obj, violations := FromStored(def.Name, &p)
	if len(violations) > 0 {
		return nil, fmt.Errorf("objects: stored definition %s/%s is invalid: %v", def.EnvironmentID, def.Name, violations)
	}
	obj.Version = def.Version
	obj.CreateTime = def.CreateTime
	obj.UpdateTime = def.UpdateTime
	return obj, nil
}
