package provision

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/pgtest"
)

// TestPostgresRotateAndCommit checks that the new password takes effect only
// once commit has recorded it, under the environment's lock: commit's failure
// keeps the old password, and a rotation racing with it waits, so the last
// recorded secret is always the role's password.
func TestPostgresRotateAndCommit(t *testing.T) {
	t.Parallel()
	p := newTestPostgres(t, pgtest.URL(t))
	su := superuser(t)
	ctx := testContext(t)
	env, res := provisionEnv(t, p)
	name := mustName(t, env)
	before := rolPassword(t, su, name)

	boom := errors.New("the store is down")
	var offered string
	err := p.RotateAndCommit(ctx, env, res.Secret, func(_ context.Context, secret string) error {
		offered = secret
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("RotateAndCommit with a failing commit = %v, want commit's error", err)
	}
	if offered == "" || offered == res.Secret {
		t.Fatalf("commit was offered the old or an empty secret")
	}
	if got := rolPassword(t, su, name); got != before {
		t.Fatalf("a failed commit changed the password")
	}
	assertVerifierOf(t, before, res.Secret)

	// A rotation whose commit is slow holds off a concurrent one.
	inCommit := make(chan string)
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- p.RotateAndCommit(ctx, env, res.Secret, func(_ context.Context, secret string) error {
			inCommit <- secret
			<-release
			return nil
		})
	}()
	var firstSecret string
	select {
	case firstSecret = <-inCommit:
	case err := <-first:
		t.Fatalf("RotateAndCommit: %v", err)
	}
	if got := rolPassword(t, su, name); got != before {
		t.Errorf("the new password took effect before commit returned")
	}
	type result struct {
		secret string
		err    error
	}
	second := make(chan result, 1)
	go func() {
		s, err := p.Rotate(ctx, env, "")
		second <- result{s, err}
	}()
	var r result
	early := false
	select {
	case r = <-second:
		early = true
		t.Errorf("a concurrent Rotate finished while another rotation was committing (err %v)", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("RotateAndCommit: %v", err)
	}
	if !early {
		r = <-second
	}
	if r.err != nil {
		t.Fatalf("Rotate: %v", r.err)
	}
	if r.secret == firstSecret {
		t.Fatal("two rotations made the same secret")
	}
	assertVerifierOf(t, rolPassword(t, su, name), r.secret)
}
