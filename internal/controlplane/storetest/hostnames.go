package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
)

// hostnameTests are the cases of hostname claims and their checks, run by Run.
var hostnameTests = []struct {
	name string
	fn   func(t *testing.T, s controlplane.Store)
}{
	{"HostnamePendingClaimsShare", testHostnamePendingClaimsShare},
	{"HostnameTake", testHostnameTake},
	{"HostnameIfHostname", testHostnameIfHostname},
	{"HostnameChecksDue", testHostnameChecksDue},
	{"HostnameCheckLock", testHostnameCheckLock},
	{"RaceHostnameTake", testRaceHostnameTake},
}

func pending(token string) controlplane.HostnameProof {
	return controlplane.HostnameProof{State: controlplane.HostnamePending, Token: token}
}

// testHostnamePendingClaimsShare: any number of environments, of any
// organizations, claim one hostname pending beside the one that holds it
// verified; lookups by hostname see only the holder, the claims list all.
func testHostnamePendingClaimsShare(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	a, b := mustCreateOrg(t, s, "orga"), mustCreateOrg(t, s, "orgb")
	holder := newEnv(a.ID, "holder")
	holder.Hostname = "shop.example.com"
	holder = mustCreateEnv(t, s, holder, controlplane.DefaultNo)
	claimB := newEnv(b.ID, "claim")
	claimB.Hostname = "shop.example.com"
	claimB.Proof = pending("tok-b")
	claimB = mustCreateEnv(t, s, claimB, controlplane.DefaultNo)
	other := mustCreateEnv(t, s, newEnv(a.ID, "other"), controlplane.DefaultNo)
	h := "shop.example.com"
	if _, err := s.UpdateEnvironment(ctx, other.ID, controlplane.EnvironmentPatch{Hostname: &h, Proof: ptr(pending("tok-o"))}); err != nil {
		t.Fatalf("a second pending claim: %v", err)
	}

	got, err := s.GetEnvironmentByHostname(ctx, h)
	if err != nil || got.ID != holder.ID {
		t.Fatalf("GetEnvironmentByHostname = %v, %v; want the verified holder", got.ID, err)
	}
	claims, err := s.ListHostnameClaims(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range claims {
		ids = append(ids, c.ID)
	}
	diff(t, "claims", sortedIDs(holder.ID, claimB.ID, other.ID), ids)

	// A second verified claim is refused, by create and by update.
	dup := newEnv(b.ID, "dup")
	dup.Hostname = h
	_, _, err = s.CreateEnvironment(ctx, dup, controlplane.DefaultNo)
	wantErr(t, "a second verified create", err, controlplane.ErrHostnameTaken)
	verified := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedOperator}
	_, err = s.UpdateEnvironment(ctx, claimB.ID, controlplane.EnvironmentPatch{Proof: &verified})
	wantErr(t, "a second verified update", err, controlplane.ErrHostnameTaken)
	if got, _ := s.GetEnvironment(ctx, claimB.ID); got.Proof.State != controlplane.HostnamePending {
		t.Errorf("after the refused update the claim is %q, want pending", got.Proof.State)
	}

	// Nothing holds a hostname only claimed pending.
	lone := "lone.example.com"
	if _, err := s.UpdateEnvironment(ctx, other.ID, controlplane.EnvironmentPatch{Hostname: &lone, Proof: ptr(pending("tok-l"))}); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetEnvironmentByHostname(ctx, lone)
	wantErr(t, "a hostname claimed only pending", err, controlplane.ErrNotFound)
}

// testHostnameTake: a verified proof with TakeHostname moves the hostname
// from its holder, whose claim falls back to pending with a fresh check.
func testHostnameTake(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	a, b := mustCreateOrg(t, s, "orga"), mustCreateOrg(t, s, "orgb")
	h := "take.example.com"
	holder := newEnv(a.ID, "holder")
	holder.Hostname = h
	holder.Proof = controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedDNS, Token: "tok-a"}
	holder = mustCreateEnv(t, s, holder, controlplane.DefaultNo)
	taker := newEnv(b.ID, "taker")
	taker.Hostname = h
	taker.Proof = pending("tok-b")
	taker = mustCreateEnv(t, s, taker, controlplane.DefaultNo)

	proof := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedDNS, Token: "tok-b",
		VerifyTime: fixtureTime()}
	got, err := s.UpdateEnvironment(ctx, taker.ID, controlplane.EnvironmentPatch{
		IfHostname: &controlplane.HostnameClaim{Hostname: h, Token: "tok-b"}, Proof: &proof, TakeHostname: true,
	})
	if err != nil {
		t.Fatalf("take: %v", err)
	}
	diff(t, "taker's proof", proof, got.Proof)
	routed, err := s.GetEnvironmentByHostname(ctx, h)
	if err != nil || routed.ID != taker.ID {
		t.Fatalf("after the take the hostname routes to %v (%v), want the taker", routed.ID, err)
	}
	old, err := s.GetEnvironment(ctx, holder.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Proof.State != controlplane.HostnamePending || old.Proof.Token != "tok-a" || old.Proof.Message == "" ||
		old.Proof.NextCheckTime.IsZero() || old.Hostname != h {
		t.Errorf("the old holder's claim = %+v (hostname %q), want pending on the same hostname and token, with a message and a check due", old.Proof, old.Hostname)
	}
}

// testHostnameIfHostname: a check's outcome is recorded only on the claim
// it checked.
func testHostnameIfHostname(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	env := newEnv(org.ID, "dev")
	env.Hostname = "a.example.com"
	env.Proof = pending("tok-1")
	env = mustCreateEnv(t, s, env, controlplane.DefaultNo)
	verified := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedHTTP, Token: "tok-1"}
	for _, c := range []controlplane.HostnameClaim{{Hostname: "b.example.com", Token: "tok-1"}, {Hostname: "a.example.com", Token: "tok-2"}} {
		got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{IfHostname: &c, Proof: &verified})
		wantErr(t, "outcome for another claim", err, controlplane.ErrHostnameMoved)
		if got.ID != env.ID || got.Proof.State != controlplane.HostnamePending {
			t.Errorf("ErrHostnameMoved came with %v %q, want the environment as it is", got.ID, got.Proof.State)
		}
	}
	read, err := s.GetEnvironment(ctx, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfHostname: &controlplane.HostnameClaim{Hostname: "a.example.com", Token: "tok-1", Proof: &read.Proof}, Proof: &verified})
	if err != nil || got.Proof.State != controlplane.HostnameVerified {
		t.Fatalf("outcome for its claim: %v, %v", got.Proof, err)
	}
	// An outcome of a check that read the claim before that outcome was
	// recorded (a check that failed, racing the one that proved it) is
	// dropped: it would take the verification back.
	failed := read.Proof
	failed.Failures, failed.Message, failed.CheckTime = 1, "no TXT record", fixtureTime()
	got, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfHostname: &controlplane.HostnameClaim{Hostname: "a.example.com", Token: "tok-1", Proof: &read.Proof}, Proof: &failed})
	wantErr(t, "an outcome recorded over a later one", err, controlplane.ErrHostnameMoved)
	if got.Proof.State != controlplane.HostnameVerified {
		t.Errorf("after the stale outcome the proof is %+v, want it verified", got.Proof)
	}
	// Read again, the claim takes the next outcome.
	now, err := s.GetEnvironment(ctx, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	next := now.Proof
	next.CheckTime = fixtureTime().Add(time.Hour)
	if _, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfHostname: &controlplane.HostnameClaim{Hostname: "a.example.com", Token: "tok-1", Proof: &now.Proof}, Proof: &next}); err != nil {
		t.Errorf("an outcome for the claim as it is: %v", err)
	}
}

// testHostnameChecksDue lists the claims whose check is due, most overdue
// first, and no others.
func testHostnameChecksDue(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	base := fixtureTime()
	mk := func(slug string, next time.Time) controlplane.Environment {
		env := newEnv(org.ID, slug)
		env.Proof = pending("tok-" + slug)
		env.Proof.NextCheckTime = next
		return mustCreateEnv(t, s, env, controlplane.DefaultNo)
	}
	late := mk("late", base.Add(-time.Hour))
	soon := mk("soon", base.Add(-time.Minute))
	mk("future", base.Add(time.Hour))
	mk("never", time.Time{})
	due, err := s.ListHostnameChecks(ctx, base, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range due {
		ids = append(ids, e.ID)
	}
	diff(t, "due checks", []string{late.ID, soon.ID}, ids)
	one, err := s.ListHostnameChecks(ctx, base, 1)
	if err != nil || len(one) != 1 || one[0].ID != late.ID {
		t.Errorf("ListHostnameChecks(limit 1) = %v, %v; want the most overdue", one, err)
	}
}

// testHostnameCheckLock: one holder at a time, and released it is free.
func testHostnameCheckLock(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	release, ok, err := s.LockHostnameChecks(ctx)
	if err != nil || !ok {
		t.Fatalf("first lock: %v, %v", ok, err)
	}
	if _, ok2, err := s.LockHostnameChecks(ctx); err != nil || ok2 {
		t.Fatalf("second lock while held: ok=%v, %v; want refused", ok2, err)
	}
	release()
	release2, ok, err := s.LockHostnameChecks(ctx)
	if err != nil || !ok {
		t.Fatalf("lock after release: %v, %v", ok, err)
	}
	release2()
}

// testRaceHostnameTake: environments proving one hostname at once end with
// exactly one holder.
func testRaceHostnameTake(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	h := "race.example.com"
	var envs []controlplane.Environment
	for i := range 6 {
		org := mustCreateOrg(t, s, "org"+string(rune('a'+i)))
		env := newEnv(org.ID, "env")
		env.Hostname = h
		env.Proof = pending("tok")
		envs = append(envs, mustCreateEnv(t, s, env, controlplane.DefaultNo))
	}
	var wg sync.WaitGroup
	for _, env := range envs {
		wg.Go(func() {
			proof := controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedDNS, Token: "tok"}
			if _, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{Proof: &proof, TakeHostname: true}); err != nil {
				t.Errorf("take by %s: %v", env.ID, err)
			}
		})
	}
	wg.Wait()
	claims, err := s.ListHostnameClaims(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	verified := 0
	for _, c := range claims {
		if c.Proof.State == controlplane.HostnameVerified {
			verified++
		}
	}
	if verified != 1 || len(claims) != len(envs) {
		t.Errorf("%d verified of %d claims, want exactly 1 of %d", verified, len(claims), len(envs))
	}
}

func sortedIDs(ids ...string) []string {
	out := append([]string(nil), ids...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
