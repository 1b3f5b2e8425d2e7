package app_test

import (
	"fmt"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/services/environment"
)

// racers is how many clients race for one unique thing.
const racers = 16

// race runs call concurrently in racers goroutines, released together, and
// returns each one's error by index.
func race(call func(i int) error) []error {
	errs := make([]error, racers)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range racers {
		done.Go(func() {
			start.Wait()
			errs[i] = call(i)
		})
	}
	start.Done()
	done.Wait()
	return errs
}

// wantOneWinner fails t unless exactly one call succeeded and every other
// one failed with code and reason.
func wantOneWinner(t *testing.T, errs []error, code connect.Code, reason string) (winner int) {
	t.Helper()
	winner = -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				t.Errorf("calls %d and %d both succeeded", winner, i)
			}
			winner = i
			continue
		}
		apptest.WantError(t, err, code, reason)
	}
	if winner < 0 {
		t.Errorf("no call succeeded")
	}
	return winner
}

func TestUniquenessRaces(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, _ apptest.Protocol, c client) {
		org := createOrg(t, c, "acme")

		t.Run("same slug", func(t *testing.T) {
			ids := make([]string, racers)
			errs := race(func(i int) error {
				resp, err := c.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
					OrganizationId: org.GetId(), Slug: "dev", Driver: "sqlite",
				}))
				if err == nil {
					ids[i] = resp.Msg.GetEnvironment().GetId()
				}
				return err
			})
			w := wantOneWinner(t, errs, connect.CodeAlreadyExists, environment.ReasonEnvironmentSlugTaken)
			envs := listEnvs(t, c, org.GetId())
			if len(envs) != 1 || w >= 0 && envs[0].GetId() != ids[w] {
				t.Fatalf("environments after the race: %v, want the winner %s only", envs, ids[max(w, 0)])
			}
			if envs[0].GetStatus() != "active" || !envs[0].GetIsDefault() {
				t.Errorf("winner = %v, want active and default", envs[0])
			}
			if files := env.EnvFiles(t); len(files) != 1 || files[0] != envs[0].GetId()+".db" {
				t.Errorf("envs dir holds %q, want the winner's database only", files)
			}
		})

		t.Run("same hostname", func(t *testing.T) {
			errs := race(func(i int) error {
				_, err := c.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
					OrganizationId: org.GetId(), Slug: fmt.Sprintf("host-%d", i), Driver: "memory", Hostname: proto.String("Shared.Example"),
				}))
				return err
			})
			w := wantOneWinner(t, errs, connect.CodeAlreadyExists, environment.ReasonHostnameTaken)
			var holders []string
			for _, e := range listEnvs(t, c, org.GetId()) {
				if e.GetHostname() == "shared.example" {
					holders = append(holders, e.GetSlug())
				}
			}
			if len(holders) != 1 || holders[0] != fmt.Sprintf("host-%d", w) {
				t.Errorf("environments holding shared.example = %q, want [host-%d]", holders, w)
			}
			if n := len(listEnvs(t, c, org.GetId())); n != 2 {
				t.Errorf("%d environments after the race, want 2 (dev and the winner)", n)
			}
		})

		t.Run("first environment becomes the only default", func(t *testing.T) {
			fresh := createOrg(t, c, "race-first")
			errs := race(func(i int) error {
				_, err := c.CreateEnvironment(t.Context(), connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
					OrganizationId: fresh.GetId(), Slug: fmt.Sprintf("env-%d", i), Driver: "memory",
				}))
				return err
			})
			for i, err := range errs {
				if err != nil {
					t.Errorf("CreateEnvironment(env-%d): %v", i, err)
				}
			}
			if got := defaults(listEnvs(t, c, fresh.GetId())); len(got) != 1 {
				t.Errorf("default environments after the race = %q, want exactly one", got)
			}
		})

		t.Run("moving the default", func(t *testing.T) {
			other := createOrg(t, c, "race-default")
			envs := make([]*environmentv1.Environment, racers)
			for i := range envs {
				envs[i] = createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
					OrganizationId: other.GetId(), Slug: fmt.Sprintf("env-%d", i), Driver: "memory",
				})
			}
			errs := race(func(i int) error {
				_, err := c.UpdateEnvironment(t.Context(), connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{
					Id: envs[i].GetId(), IsDefault: proto.Bool(true),
				}))
				return err
			})
			for i, err := range errs {
				if err != nil {
					t.Errorf("UpdateEnvironment(env-%d, is_default): %v", i, err)
				}
			}
			if got := defaults(listEnvs(t, c, other.GetId())); len(got) != 1 {
				t.Errorf("default environments after the race = %q, want exactly one", got)
			}
		})
	})
}
