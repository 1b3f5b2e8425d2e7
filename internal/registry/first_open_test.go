package registry_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/envplane/envplane/internal/registry"
)

// TestFirstCallsOpenOnce repeats short bursts of first calls: a caller that
// missed the cache just before another's open was inserted must take that
// driver, not open (and insert over it) a second one.
func TestFirstCallsOpenOnce(t *testing.T) {
	t.Parallel()
	o := newOpener()
	r := registry.New(o.open, registry.Options{MaxOpen: 100_000}, quiet())
	defer r.Close()
	const rounds = 5000
	twice := 0
	for round := range rounds {
		id := fmt.Sprint("env-", round)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				l, err := r.Acquire(t.Context(), id)
				if err != nil {
					t.Error(err)
					return
				}
				l.Release()
			})
		}
		wg.Wait()
		if o.count(id) != 1 {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d of %d environments were opened more than once", twice, rounds)
	}
	if n := r.Len(); n != rounds {
		t.Errorf("Len = %d, want %d", n, rounds)
	}
}
