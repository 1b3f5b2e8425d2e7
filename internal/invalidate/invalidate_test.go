package invalidate

import (
	"sync"
	"testing"
)

func TestBusDeliversToEverySubscriberUntilCancelled(t *testing.T) {
	t.Parallel()
	bus := NewBus()
	var mu sync.Mutex
	var a, b []Event
	cancelA := bus.Subscribe(func(e Event) { mu.Lock(); a = append(a, e); mu.Unlock() })
	bus.Subscribe(func(e Event) { mu.Lock(); b = append(b, e); mu.Unlock() })

	first := Event{Kind: KindHostname, Hostname: "acme-dev.localhost"}
	if err := bus.Publish(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	cancelA()
	second := Event{Kind: KindEnvironment, EnvironmentID: "e1"}
	if err := bus.Publish(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	if len(a) != 1 || a[0] != first {
		t.Errorf("cancelled subscriber got %v, want only %v", a, first)
	}
	if len(b) != 2 || b[0] != first || b[1] != second {
		t.Errorf("subscriber got %v, want %v then %v", b, first, second)
	}
}

func TestBusConcurrentPublishAndSubscribe(t *testing.T) {
	t.Parallel()
	bus := NewBus()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			cancel := bus.Subscribe(func(Event) {})
			cancel()
		}()
		go func() {
			defer wg.Done()
			_ = bus.Publish(t.Context(), Event{Kind: KindAll})
		}()
	}
	wg.Wait()
}
