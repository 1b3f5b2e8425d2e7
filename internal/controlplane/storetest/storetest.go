// Package storetest is the conformance suite of controlplane.Store: every
// implementation runs Run, so the documented semantics (uniqueness, request
// idempotency, the single default environment, patching, paging, tokens and
// their sessions, versioned object definitions) hold the same on every backend, including under concurrent
// writers.
package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/envplane/envplane/internal/controlplane"
)

// Run runs the conformance suite. open must return a new, empty store for each
// call and close it when t ends (t.Cleanup); subtests run in parallel, each on
// its own store.
func Run(t *testing.T, open func(t *testing.T) controlplane.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s controlplane.Store)
	}{
		{"Ping", testPing},
		{"OrganizationRoundTrip", testOrganizationRoundTrip},
		{"OrganizationSlugTaken", testOrganizationSlugTaken},
		{"OrganizationRequestID", testOrganizationRequestID},
		{"OrganizationRequestIDWithoutDigest", testOrganizationRequestIDWithoutDigest},
		{"ListOrganizations", testListOrganizations},
		{"EnvironmentRoundTrip", testEnvironmentRoundTrip},
		{"EnvironmentOrganizationMissing", testEnvironmentOrganizationMissing},
		{"EnvironmentSlugTaken", testEnvironmentSlugTaken},
		{"EnvironmentHostnameTaken", testEnvironmentHostnameTaken},
		{"EnvironmentRequestID", testEnvironmentRequestID},
		{"EnvironmentRequestIDAfterUpdate", testEnvironmentRequestIDAfterUpdate},
		{"EnvironmentRequestIDWithoutDigest", testEnvironmentRequestIDWithoutDigest},
		{"DefaultModes", testDefaultModes},
		{"DefaultYesRollsBack", testDefaultYesRollsBack},
		{"ListEnvironments", testListEnvironments},
		{"UpdatePatch", testUpdatePatch},
		{"UpdateCredential", testUpdateCredential},
		{"UpdateHostnameTaken", testUpdateHostnameTaken},
		{"UpdateDefault", testUpdateDefault},
		{"UpdateIfStatus", testUpdateIfStatus},
		{"UpdateIfUpdatedBefore", testUpdateIfUpdatedBefore},
		{"ResourcesMayExist", testResourcesMayExist},
		{"Delete", testDelete},
		{"RaceOrganizationSlug", testRaceOrganizationSlug},
		{"RaceOrganizationRequestID", testRaceOrganizationRequestID},
		{"RaceEnvironmentSlug", testRaceEnvironmentSlug},
		{"RaceHostname", testRaceHostname},
		{"RaceEnvironmentRequestID", testRaceEnvironmentRequestID},
		{"RaceDefaultYes", testRaceDefaultYes},
		{"RaceDefaultIfFirst", testRaceDefaultIfFirst},
		{"RaceUpdateDefault", testRaceUpdateDefault},
		{"RaceStatusTransition", testRaceStatusTransition},
		{"RaceStatusTransitionAndDelete", testRaceStatusTransitionAndDelete},
		{"TokenRoundTrip", testTokenRoundTrip},
		{"TokenOrganizationMissing", testTokenOrganizationMissing},
		{"TokenSecretHashTaken", testTokenSecretHashTaken},
		{"ListTokens", testListTokens},
		{"TokenRequestID", testTokenRequestID},
		{"TokenRequestIDAfterRevoke", testTokenRequestIDAfterRevoke},
		{"TokenRequestIDWithoutDigest", testTokenRequestIDWithoutDigest},
		{"RevokeToken", testRevokeToken},
		{"ActiveEnvironment", testActiveEnvironment},
		{"TouchToken", testTouchToken},
		{"CountTokens", testCountTokens},
		{"RaceTokenRequestID", testRaceTokenRequestID},
	}
	tests = append(tests, objectTests...)
	tests = append(tests, hostnameTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// racers is how many goroutines the race tests run against one store.
const racers = 20

// zone is a non-UTC location for fixture times: stores must keep the instant,
// whatever location they hand back.
var zone = time.FixedZone("UTC+2", 2*60*60)

// fixtureTime is an hour in the past, at microsecond precision so that every
// backend (PostgreSQL timestamps included) can store it exactly, and in zone.
func fixtureTime() time.Time {
	return time.Now().Add(-time.Hour).Truncate(time.Microsecond).In(zone)
}

// newID returns a new UUIDv7, as the API layer makes them. It takes no
// *testing.T so that racing goroutines can call it.
func newID() string {
	return uuid.Must(uuid.NewV7()).String()
}

func newOrg(slug string) controlplane.Organization {
	now := fixtureTime()
	return controlplane.Organization{
		ID:          newID(),
		Slug:        slug,
		DisplayName: "Organization " + slug,
		CreateTime:  now,
		UpdateTime:  now,
	}
}

func newEnv(orgID, slug string) controlplane.Environment {
	now := fixtureTime()
	id := newID()
	return controlplane.Environment{
		ID:             id,
		OrganizationID: orgID,
		Slug:           slug,
		DisplayName:    "Environment " + slug,
		Type:           "development",
		Driver:         "postgres",
		Status:         controlplane.StatusProvisioning,
		Hostname:       slug + "-" + id[len(id)-12:] + ".env.test",
		Proof:          controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedGenerated},
		Region:         "eu-west-1",
		StorageLimitMB: 1024,
		DatabaseURL:    "postgres://db.internal:5432/" + slug,
		CreateTime:     now,
		UpdateTime:     now,
	}
}

// newCredential returns a credential sealed with keyID, with a ciphertext of
// every byte value (NUL included) unique to this call, rotated at a fixture
// time.
func newCredential(keyID string) controlplane.Credential {
	ct := []byte(newID())
	for b := range 256 {
		ct = append(ct, byte(b))
	}
	return controlplane.Credential{KeyID: keyID, Ciphertext: ct, RotateTime: fixtureTime().Add(2 * time.Minute)}
}

// sortedByID returns envs in id order, as the stores list them.
func sortedByID(envs ...controlplane.Environment) []controlplane.Environment {
	slices.SortFunc(envs, func(x, y controlplane.Environment) int { return strings.Compare(x.ID, y.ID) })
	return envs
}

func mustCreateOrg(t *testing.T, s controlplane.Store, slug string) controlplane.Organization {
	t.Helper()
	org, created, err := s.CreateOrganization(t.Context(), newOrg(slug))
	if err != nil || !created {
		t.Fatalf("CreateOrganization(%q) = created %v, %v; want created", slug, created, err)
	}
	return org
}

func mustCreateEnv(t *testing.T, s controlplane.Store, env controlplane.Environment, mode controlplane.DefaultMode) controlplane.Environment {
	t.Helper()
	got, created, err := s.CreateEnvironment(t.Context(), env, mode)
	if err != nil || !created {
		t.Fatalf("CreateEnvironment(%q) = created %v, %v; want created", env.Slug, created, err)
	}
	return got
}

func mustGetEnv(t *testing.T, s controlplane.Store, id string) controlplane.Environment {
	t.Helper()
	env, err := s.GetEnvironment(t.Context(), id)
	if err != nil {
		t.Fatalf("GetEnvironment(%s): %v", id, err)
	}
	return env
}

// allEnvs lists every environment of an organization, following the pages.
func allEnvs(t *testing.T, s controlplane.Store, orgID string) []controlplane.Environment {
	t.Helper()
	var out []controlplane.Environment
	page := controlplane.Page{Limit: 7}
	for {
		envs, err := s.ListEnvironments(t.Context(), orgID, page)
		if err != nil {
			t.Fatalf("ListEnvironments: %v", err)
		}
		out = append(out, envs...)
		if len(envs) < page.Limit {
			return out
		}
		page.After = envs[len(envs)-1].ID
	}
}

// defaults returns the ids of the organization's default environments.
func defaults(t *testing.T, s controlplane.Store, orgID string) []string {
	t.Helper()
	var ids []string
	for _, env := range allEnvs(t, s, orgID) {
		if env.IsDefault {
			ids = append(ids, env.ID)
		}
	}
	return ids
}

func allOrgs(t *testing.T, s controlplane.Store) []controlplane.Organization {
	t.Helper()
	var out []controlplane.Organization
	page := controlplane.Page{Limit: 7}
	for {
		orgs, err := s.ListOrganizations(t.Context(), page)
		if err != nil {
			t.Fatalf("ListOrganizations: %v", err)
		}
		out = append(out, orgs...)
		if len(orgs) < page.Limit {
			return out
		}
		page.After = orgs[len(orgs)-1].ID
	}
}

func diff(t *testing.T, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, opts...); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// wantErr fails unless err is target, and unless its message is free of the
// SQL behind it: callers may show these messages to clients.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
	msg := strings.ToLower(err.Error())
	for _, leak := range []string{"constraint", "unique", "sqlite", "sqlstate", "organizations.", "environments.", "tokens.", "(20"} {
		if strings.Contains(msg, leak) {
			t.Errorf("%s: error %q reveals %q", what, err, leak)
		}
	}
}

// race runs fn(i) for i in [0, racers) at once and returns their errors.
func race(fn func(i int) error) []error {
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// wantOneWinner fails unless exactly one error is nil and the others are loser.
func wantOneWinner(t *testing.T, errs []error, loser error) {
	t.Helper()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, loser):
			t.Errorf("racer %d: error %v, want nil or %v", i, err, loser)
		}
	}
	if won != 1 {
		t.Errorf("%d racers succeeded, want exactly 1", won)
	}
}

func wantNoErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Errorf("racer %d: %v", i, err)
		}
	}
}

func testPing(t *testing.T, s controlplane.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testOrganizationRoundTrip(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	for i, requestID := range []string{"", "req-" + newID()} {
		org := newOrg(fmt.Sprintf("acme-%d", i))
		org.RequestID = requestID
		if requestID != "" {
			org.RequestDigest = "digest-" + requestID
		}
		got, created, err := s.CreateOrganization(ctx, org)
		if err != nil || !created {
			t.Fatalf("CreateOrganization = created %v, %v; want created", created, err)
		}
		diff(t, "created organization", org, got)
		got, err = s.GetOrganization(ctx, org.ID)
		if err != nil {
			t.Fatalf("GetOrganization: %v", err)
		}
		diff(t, "read organization", org, got)
	}
	_, err := s.GetOrganization(ctx, newID())
	wantErr(t, "GetOrganization(unknown)", err, controlplane.ErrNotFound)
}

func testOrganizationSlugTaken(t *testing.T, s controlplane.Store) {
	first := mustCreateOrg(t, s, "acme")
	_, _, err := s.CreateOrganization(t.Context(), newOrg("acme"))
	wantErr(t, "CreateOrganization(taken slug)", err, controlplane.ErrOrganizationExists)
	diff(t, "organizations", []controlplane.Organization{first}, allOrgs(t, s))
}

func testOrganizationRequestID(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	first := newOrg("acme")
	first.RequestID = "req-1"
	first.RequestDigest = "digest-1"
	mustCreate := func(org controlplane.Organization) {
		t.Helper()
		if _, created, err := s.CreateOrganization(ctx, org); err != nil || !created {
			t.Fatalf("CreateOrganization(%q) = created %v, %v; want created", org.Slug, created, err)
		}
	}
	mustCreate(first)

	// A retry carries the same request, hence the same digest, but, being a
	// new attempt, a new id and new times: the store answers with what it
	// stored the first time.
	retry := newOrg("acme")
	retry.RequestID = "req-1"
	retry.RequestDigest = "digest-1"
	retry.CreateTime = retry.CreateTime.Add(time.Minute)
	retry.UpdateTime = retry.CreateTime
	got, created, err := s.CreateOrganization(ctx, retry)
	if err != nil || created {
		t.Fatalf("retried CreateOrganization = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried organization", first, got)

	// Another digest is another request, even with the same fields.
	for what, digest := range map[string]string{"another digest": "digest-2", "no digest": ""} {
		org := newOrg("acme")
		org.RequestID = "req-1"
		org.RequestDigest = digest
		_, _, err = s.CreateOrganization(ctx, org)
		wantErr(t, "request id reused with "+what, err, controlplane.ErrRequestReused)
	}
	otherSlug := newOrg("other")
	otherSlug.RequestID = "req-1"
	otherSlug.RequestDigest = "digest-other"
	_, _, err = s.CreateOrganization(ctx, otherSlug)
	wantErr(t, "request id reused with another slug", err, controlplane.ErrRequestReused)

	// Creates without a request id never collide on it.
	noKey1, noKey2 := newOrg("nokey1"), newOrg("nokey2")
	mustCreate(noKey1)
	mustCreate(noKey2)

	diff(t, "organizations", []controlplane.Organization{first, noKey1, noKey2}, allOrgs(t, s),
		cmpopts.SortSlices(func(a, b controlplane.Organization) bool { return a.ID < b.ID }))
}

// testOrganizationRequestIDWithoutDigest covers organizations stored with a
// request id and no digest, as every one created before the digest was
// stored: a retry is told by the client-supplied fields.
func testOrganizationRequestIDWithoutDigest(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	first := newOrg("acme")
	first.RequestID = "req-1"
	if _, created, err := s.CreateOrganization(ctx, first); err != nil || !created {
		t.Fatalf("CreateOrganization = created %v, %v; want created", created, err)
	}
	retry := newOrg("acme")
	retry.RequestID = "req-1"
	retry.RequestDigest = "digest-1" // a new caller's retry may carry one
	got, created, err := s.CreateOrganization(ctx, retry)
	if err != nil || created {
		t.Fatalf("retried CreateOrganization = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried organization", first, got)

	otherSlug := newOrg("other")
	otherSlug.RequestID = "req-1"
	_, _, err = s.CreateOrganization(ctx, otherSlug)
	wantErr(t, "request id reused with another slug", err, controlplane.ErrRequestReused)
	otherName := newOrg("acme")
	otherName.RequestID = "req-1"
	otherName.DisplayName = "Another name"
	_, _, err = s.CreateOrganization(ctx, otherName)
	wantErr(t, "request id reused with another display name", err, controlplane.ErrRequestReused)
	diff(t, "organizations", []controlplane.Organization{first}, allOrgs(t, s))
}

func testListOrganizations(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	var want []controlplane.Organization
	for i := range 7 {
		want = append(want, mustCreateOrg(t, s, fmt.Sprintf("org-%d", i)))
	}
	slices.SortFunc(want, func(a, b controlplane.Organization) int { return strings.Compare(a.ID, b.ID) })

	var got []controlplane.Organization
	page := controlplane.Page{Limit: 3}
	var sizes []int
	for range 5 {
		orgs, err := s.ListOrganizations(ctx, page)
		if err != nil {
			t.Fatalf("ListOrganizations(%+v): %v", page, err)
		}
		sizes = append(sizes, len(orgs))
		if len(orgs) == 0 {
			break
		}
		got = append(got, orgs...)
		page.After = orgs[len(orgs)-1].ID
	}
	diff(t, "page sizes", []int{3, 3, 1, 0}, sizes)
	diff(t, "paged organizations", want, got)

	all, err := s.ListOrganizations(ctx, controlplane.Page{})
	if err != nil {
		t.Fatalf("ListOrganizations(default page): %v", err)
	}
	diff(t, "default page", want, all)

	rest, err := s.ListOrganizations(ctx, controlplane.Page{After: want[4].ID, Limit: 10})
	if err != nil {
		t.Fatalf("ListOrganizations(after): %v", err)
	}
	diff(t, "page after the fifth", want[5:], rest)
}

func testEnvironmentRoundTrip(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")

	plain := newEnv(org.ID, "dev")
	got := mustCreateEnv(t, s, plain, controlplane.DefaultNo)
	diff(t, "created environment", plain, got)

	full := newEnv(org.ID, "prod")
	full.Type = "production"
	full.Status = controlplane.StatusFailed
	full.StatusMessage = "quota exceeded"
	full.RequestID = "req-" + newID()
	full.RequestDigest = "digest-" + full.RequestID
	full.StorageLimitMB = 1 << 40
	full.ProvisionTime = fixtureTime().Add(time.Minute)
	full.ExternalDatabase = true
	full.ResourcesMayExist = true
	full.Credential = newCredential("key-1")
	full.Proof = controlplane.HostnameProof{
		State: controlplane.HostnameVerified, Method: controlplane.VerifiedDNS, Token: "0123456789abcdef",
		VerifyTime: fixtureTime().Add(2 * time.Minute), CheckTime: fixtureTime().Add(3 * time.Minute),
		NextCheckTime: fixtureTime().Add(4 * time.Minute), Failures: 3, Message: "no TXT record",
		FailingSince: fixtureTime().Add(5 * time.Minute),
	}
	got = mustCreateEnv(t, s, full, controlplane.DefaultNo)
	diff(t, "created environment", full, got)

	// A credential without ciphertext is none: no part of it is kept.
	empty := newEnv(org.ID, "empty")
	empty.Credential = controlplane.Credential{KeyID: "key-1", Ciphertext: []byte{}, RotateTime: fixtureTime()}
	got = mustCreateEnv(t, s, empty, controlplane.DefaultNo)
	empty.Credential = controlplane.Credential{}
	diff(t, "created environment with an empty credential", empty, got)

	for _, want := range []controlplane.Environment{plain, full, empty} {
		got, err := s.GetEnvironment(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetEnvironment: %v", err)
		}
		diff(t, "read environment", want, got)
		got, err = s.GetEnvironmentByHostname(ctx, want.Hostname)
		if err != nil {
			t.Fatalf("GetEnvironmentByHostname: %v", err)
		}
		diff(t, "environment read by hostname", want, got)
	}
	listed := allEnvs(t, s, org.ID)
	diff(t, "listed environments", sortedByID(plain, full, empty), listed)
	for _, env := range listed {
		if !env.Credential.RotateTime.IsZero() && env.Credential.Ciphertext == nil {
			t.Errorf("environment %q: credential with a rotate time and no ciphertext", env.Slug)
		}
		if env.Credential.Ciphertext != nil && len(env.Credential.Ciphertext) == 0 {
			t.Errorf("environment %q: empty non-nil ciphertext, want nil for none", env.Slug)
		}
	}

	_, err := s.GetEnvironment(ctx, newID())
	wantErr(t, "GetEnvironment(unknown)", err, controlplane.ErrNotFound)
	_, err = s.GetEnvironmentByHostname(ctx, "nowhere.env.test")
	wantErr(t, "GetEnvironmentByHostname(unknown)", err, controlplane.ErrNotFound)
}

func testEnvironmentOrganizationMissing(t *testing.T, s controlplane.Store) {
	for _, mode := range []controlplane.DefaultMode{controlplane.DefaultIfFirst, controlplane.DefaultYes, controlplane.DefaultNo} {
		_, _, err := s.CreateEnvironment(t.Context(), newEnv(newID(), "dev"), mode)
		wantErr(t, fmt.Sprintf("CreateEnvironment(mode %d) in a missing organization", mode), err, controlplane.ErrOrganizationMissing)
	}
}

func testEnvironmentSlugTaken(t *testing.T, s controlplane.Store) {
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	first := mustCreateEnv(t, s, newEnv(a.ID, "dev"), controlplane.DefaultIfFirst)
	_, _, err := s.CreateEnvironment(t.Context(), newEnv(a.ID, "dev"), controlplane.DefaultNo)
	wantErr(t, "CreateEnvironment(taken slug)", err, controlplane.ErrEnvironmentExists)
	diff(t, "environments of a", []controlplane.Environment{first}, allEnvs(t, s, a.ID))

	// Slugs are unique per organization only.
	mustCreateEnv(t, s, newEnv(b.ID, "dev"), controlplane.DefaultNo)
}

func testEnvironmentHostnameTaken(t *testing.T, s controlplane.Store) {
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	first := mustCreateEnv(t, s, newEnv(a.ID, "dev"), controlplane.DefaultIfFirst)

	// Hostnames are unique across organizations.
	for _, orgID := range []string{a.ID, b.ID} {
		env := newEnv(orgID, "other")
		env.Hostname = first.Hostname
		_, _, err := s.CreateEnvironment(t.Context(), env, controlplane.DefaultYes)
		wantErr(t, "CreateEnvironment(taken hostname)", err, controlplane.ErrHostnameTaken)
	}
	diff(t, "environments of a", []controlplane.Environment{first}, allEnvs(t, s, a.ID))
	diff(t, "environments of b", []controlplane.Environment(nil), allEnvs(t, s, b.ID), cmpopts.EquateEmpty())
}

func testEnvironmentRequestID(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	other := mustCreateOrg(t, s, "other")

	first := newEnv(org.ID, "dev")
	first.RequestID = "req-1"
	first.RequestDigest = "digest-1"
	first.Credential = newCredential("key-1")
	stored := mustCreateEnv(t, s, first, controlplane.DefaultIfFirst)

	// A retry is a new attempt with a new id, new server-side fields and
	// possibly another mode; the store answers with the stored environment.
	retry := first
	retry.ID = newID()
	retry.Status = controlplane.StatusActive
	retry.DatabaseURL = "postgres://elsewhere/dev"
	retry.CreateTime = retry.CreateTime.Add(time.Minute)
	// The secret is sealed afresh on every attempt, so the credential
	// differs too; the stored one is kept.
	retry.Credential = newCredential("key-2")
	got, created, err := s.CreateEnvironment(ctx, retry, controlplane.DefaultNo)
	if err != nil || created {
		t.Fatalf("retried CreateEnvironment = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried environment", stored, got)
	retry.ID = newID()
	retry.Credential = controlplane.Credential{}
	got, created, err = s.CreateEnvironment(ctx, retry, controlplane.DefaultNo)
	if err != nil || created {
		t.Fatalf("retried CreateEnvironment without a credential = created %v, %v; want the stored one", created, err)
	}
	diff(t, "environment retried without a credential", stored, got)

	// Another digest is another request, with the same fields or not.
	for what, change := range map[string]func(*controlplane.Environment){
		"another digest": func(e *controlplane.Environment) { e.RequestDigest = "digest-2" },
		"no digest":      func(e *controlplane.Environment) { e.RequestDigest = "" },
		"another slug": func(e *controlplane.Environment) {
			e.Slug, e.Hostname, e.RequestDigest = "staging", "staging.env.test", "digest-staging"
		},
	} {
		env := first
		env.ID = newID()
		change(&env)
		_, _, err := s.CreateEnvironment(ctx, env, controlplane.DefaultNo)
		wantErr(t, "request id reused with "+what, err, controlplane.ErrRequestReused)
	}
	diff(t, "environments", []controlplane.Environment{stored}, allEnvs(t, s, org.ID))

	// Request ids are scoped to the organization.
	elsewhere := newEnv(other.ID, "dev")
	elsewhere.RequestID = "req-1"
	mustCreateEnv(t, s, elsewhere, controlplane.DefaultNo)

	// Creates without a request id never collide on it.
	mustCreateEnv(t, s, newEnv(org.ID, "nokey1"), controlplane.DefaultNo)
	mustCreateEnv(t, s, newEnv(org.ID, "nokey2"), controlplane.DefaultNo)
}

// testEnvironmentRequestIDAfterUpdate retries a create after the environment
// it made was changed: the digest of the original request still matches, so
// the retry gets the environment as it is now, not ErrRequestReused.
func testEnvironmentRequestIDAfterUpdate(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	first := newEnv(org.ID, "dev")
	first.RequestID = "req-1"
	first.RequestDigest = "digest-1"
	mustCreateEnv(t, s, first, controlplane.DefaultIfFirst)
	updated, err := s.UpdateEnvironment(ctx, first.ID, controlplane.EnvironmentPatch{
		Hostname:    ptr("renamed-" + first.Hostname),
		DisplayName: ptr("Renamed"),
	})
	if err != nil {
		t.Fatalf("UpdateEnvironment: %v", err)
	}

	retry := first
	retry.ID = newID()
	got, created, err := s.CreateEnvironment(ctx, retry, controlplane.DefaultIfFirst)
	if err != nil || created {
		t.Fatalf("CreateEnvironment retried after an update = created %v, %v; want the stored one", created, err)
	}
	diff(t, "environment retried after an update", updated, got)

	retry.RequestDigest = "digest-2"
	_, _, err = s.CreateEnvironment(ctx, retry, controlplane.DefaultIfFirst)
	wantErr(t, "request id reused with another digest after an update", err, controlplane.ErrRequestReused)
	diff(t, "environments", []controlplane.Environment{updated}, allEnvs(t, s, org.ID))
}

// testEnvironmentRequestIDWithoutDigest covers environments stored with a
// request id and no digest, as every one created before the digest was
// stored: a retry is told by the client-supplied fields as stored now.
func testEnvironmentRequestIDWithoutDigest(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	first := newEnv(org.ID, "dev")
	first.RequestID = "req-1"
	first.Credential = newCredential("key-1")
	stored := mustCreateEnv(t, s, first, controlplane.DefaultIfFirst)

	retry := first
	retry.ID = newID()
	retry.RequestDigest = "digest-1" // a new caller's retry may carry one
	retry.Status = controlplane.StatusActive
	retry.DatabaseURL = "postgres://elsewhere/dev"
	retry.CreateTime = retry.CreateTime.Add(time.Minute)
	retry.Credential = newCredential("key-2")
	got, created, err := s.CreateEnvironment(ctx, retry, controlplane.DefaultNo)
	if err != nil || created {
		t.Fatalf("retried CreateEnvironment = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried environment", stored, got)

	changes := map[string]func(*controlplane.Environment){
		"slug":              func(e *controlplane.Environment) { e.Slug = "staging" },
		"display_name":      func(e *controlplane.Environment) { e.DisplayName = "Another name" },
		"type":              func(e *controlplane.Environment) { e.Type = "production" },
		"driver":            func(e *controlplane.Environment) { e.Driver = "sqlite" },
		"hostname":          func(e *controlplane.Environment) { e.Hostname = "another.env.test" },
		"region":            func(e *controlplane.Environment) { e.Region = "us-east-1" },
		"storage_limit_mb":  func(e *controlplane.Environment) { e.StorageLimitMB++ },
		"external_database": func(e *controlplane.Environment) { e.ExternalDatabase = true },
	}
	for field, change := range changes {
		env := first
		env.ID = newID()
		change(&env)
		_, _, err := s.CreateEnvironment(ctx, env, controlplane.DefaultNo)
		wantErr(t, "request id reused with another "+field, err, controlplane.ErrRequestReused)
	}
	diff(t, "environments", []controlplane.Environment{stored}, allEnvs(t, s, org.ID))
}

func testDefaultModes(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")

	first := mustCreateEnv(t, s, newEnv(org.ID, "first"), controlplane.DefaultIfFirst)
	if !first.IsDefault {
		t.Errorf("first environment with DefaultIfFirst is not the default")
	}
	second := mustCreateEnv(t, s, newEnv(org.ID, "second"), controlplane.DefaultIfFirst)
	if second.IsDefault {
		t.Errorf("second environment with DefaultIfFirst is the default")
	}
	// The mode decides, not the IsDefault the caller passes.
	asked := newEnv(org.ID, "never")
	asked.IsDefault = true
	if never := mustCreateEnv(t, s, asked, controlplane.DefaultNo); never.IsDefault {
		t.Errorf("environment created with DefaultNo is the default")
	}
	diff(t, "defaults", []string{first.ID}, defaults(t, s, org.ID))

	moved := mustCreateEnv(t, s, newEnv(org.ID, "moved"), controlplane.DefaultYes)
	if !moved.IsDefault {
		t.Errorf("environment created with DefaultYes is not the default")
	}
	diff(t, "defaults", []string{moved.ID}, defaults(t, s, org.ID))
	// The old default lost the flag and nothing else.
	wantFirst := first
	wantFirst.IsDefault = false
	diff(t, "old default", wantFirst, mustGetEnv(t, s, first.ID),
		cmpopts.IgnoreFields(controlplane.Environment{}, "UpdateTime"))

	// Another organization's default is its own business.
	fresh := mustCreateOrg(t, s, "fresh")
	if e := mustCreateEnv(t, s, newEnv(fresh.ID, "no"), controlplane.DefaultNo); e.IsDefault {
		t.Errorf("DefaultNo in a fresh organization made the default")
	}
	if e := mustCreateEnv(t, s, newEnv(fresh.ID, "yes"), controlplane.DefaultYes); !e.IsDefault {
		t.Errorf("DefaultYes in a fresh organization did not make the default")
	}
	if e := mustCreateEnv(t, s, newEnv(fresh.ID, "first"), controlplane.DefaultIfFirst); e.IsDefault {
		t.Errorf("DefaultIfFirst in an organization with a default made the default")
	}
	diff(t, "defaults of acme", []string{moved.ID}, defaults(t, s, org.ID))

	// DefaultIfFirst in an organization whose environments are all DefaultNo.
	none := mustCreateOrg(t, s, "none")
	mustCreateEnv(t, s, newEnv(none.ID, "no"), controlplane.DefaultNo)
	if e := mustCreateEnv(t, s, newEnv(none.ID, "first"), controlplane.DefaultIfFirst); !e.IsDefault {
		t.Errorf("DefaultIfFirst in an organization without a default did not make the default")
	}

	bad := newEnv(org.ID, "bad")
	if _, _, err := s.CreateEnvironment(ctx, bad, controlplane.DefaultMode(99)); err == nil {
		t.Errorf("CreateEnvironment with an unknown mode succeeded")
	}
	if _, err := s.GetEnvironment(ctx, bad.ID); !errors.Is(err, controlplane.ErrNotFound) {
		t.Errorf("environment created with an unknown mode: GetEnvironment error %v, want ErrNotFound", err)
	}
}

func testDefaultYesRollsBack(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	def := mustCreateEnv(t, s, newEnv(org.ID, "dev"), controlplane.DefaultIfFirst)

	// Each failing create must leave the old default in place, untouched.
	slugTaken := newEnv(org.ID, "dev")
	hostTaken := newEnv(org.ID, "other")
	hostTaken.Hostname = def.Hostname
	for _, env := range []controlplane.Environment{slugTaken, hostTaken} {
		if _, _, err := s.CreateEnvironment(t.Context(), env, controlplane.DefaultYes); err == nil {
			t.Fatalf("CreateEnvironment(%q) succeeded, want a uniqueness error", env.Slug)
		}
	}
	diff(t, "environments", []controlplane.Environment{def}, allEnvs(t, s, org.ID))
}

func testListEnvironments(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	var want []controlplane.Environment
	for i := range 6 {
		want = append(want, mustCreateEnv(t, s, newEnv(a.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultIfFirst))
		if i < 2 {
			mustCreateEnv(t, s, newEnv(b.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultIfFirst)
		}
	}
	slices.SortFunc(want, func(x, y controlplane.Environment) int { return strings.Compare(x.ID, y.ID) })

	var got []controlplane.Environment
	var sizes []int
	page := controlplane.Page{Limit: 4}
	for range 5 {
		envs, err := s.ListEnvironments(ctx, a.ID, page)
		if err != nil {
			t.Fatalf("ListEnvironments(%+v): %v", page, err)
		}
		sizes = append(sizes, len(envs))
		if len(envs) == 0 {
			break
		}
		got = append(got, envs...)
		page.After = envs[len(envs)-1].ID
	}
	diff(t, "page sizes", []int{4, 2, 0}, sizes)
	diff(t, "paged environments", want, got)

	all, err := s.ListEnvironments(ctx, a.ID, controlplane.Page{})
	if err != nil {
		t.Fatalf("ListEnvironments(default page): %v", err)
	}
	diff(t, "default page", want, all)

	if n := len(allEnvs(t, s, b.ID)); n != 2 {
		t.Errorf("organization b has %d environments, want 2", n)
	}
	unknown, err := s.ListEnvironments(ctx, newID(), controlplane.Page{})
	if err != nil || len(unknown) != 0 {
		t.Errorf("ListEnvironments(unknown organization) = %d environments, %v; want none", len(unknown), err)
	}
}

// wantUpdatedNow fails unless the store set UpdateTime between before and now.
func wantUpdatedNow(t *testing.T, got controlplane.Environment, before time.Time) {
	t.Helper()
	if got.UpdateTime.Before(before.Truncate(time.Microsecond)) || got.UpdateTime.After(time.Now()) {
		t.Errorf("UpdateTime %v, want between %v and now", got.UpdateTime, before)
	}
}

func testUpdatePatch(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	env := mustCreateEnv(t, s, newEnv(org.ID, "dev"), controlplane.DefaultNo)

	// An empty patch changes nothing but UpdateTime.
	before := time.Now()
	got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{})
	if err != nil {
		t.Fatalf("UpdateEnvironment(empty patch): %v", err)
	}
	wantUpdatedNow(t, got, before)
	want := env
	want.UpdateTime = got.UpdateTime
	diff(t, "environment after an empty patch", want, got)

	// One field at a time leaves the others alone.
	name := "Renamed"
	got, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{DisplayName: &name})
	if err != nil {
		t.Fatalf("UpdateEnvironment(display name): %v", err)
	}
	want.DisplayName = name
	want.UpdateTime = got.UpdateTime
	diff(t, "environment after a display name patch", want, got)

	// Every field at once.
	provisioned := fixtureTime().Add(30 * time.Minute)
	patch := controlplane.EnvironmentPatch{
		Hostname:       ptr("renamed.env.test"),
		DisplayName:    ptr("Dev"),
		IsDefault:      ptr(true),
		Status:         ptr(controlplane.StatusActive),
		StatusMessage:  ptr("ready"),
		Region:         ptr("us-east-1"),
		StorageLimitMB: ptr(int64(4096)),
		DatabaseURL:    ptr("postgres://db2.internal:5432/dev"),
		ProvisionTime:  &provisioned,
	}
	before = time.Now()
	got, err = s.UpdateEnvironment(ctx, env.ID, patch)
	if err != nil {
		t.Fatalf("UpdateEnvironment(every field): %v", err)
	}
	wantUpdatedNow(t, got, before)
	want.Hostname = *patch.Hostname
	want.DisplayName = *patch.DisplayName
	want.IsDefault = true
	want.Status = *patch.Status
	want.StatusMessage = *patch.StatusMessage
	want.Region = *patch.Region
	want.StorageLimitMB = *patch.StorageLimitMB
	want.DatabaseURL = *patch.DatabaseURL
	want.ProvisionTime = provisioned
	want.UpdateTime = got.UpdateTime
	diff(t, "environment after a full patch", want, got)
	diff(t, "environment read after a full patch", want, mustGetEnv(t, s, env.ID))
	if _, err := s.GetEnvironmentByHostname(ctx, env.Hostname); !errors.Is(err, controlplane.ErrNotFound) {
		t.Errorf("old hostname still resolves: %v", err)
	}
	byHost, err := s.GetEnvironmentByHostname(ctx, want.Hostname)
	if err != nil {
		t.Fatalf("GetEnvironmentByHostname(new hostname): %v", err)
	}
	diff(t, "environment by new hostname", want, byHost)

	// A zero ProvisionTime in a patch clears it; keeping one's own hostname
	// is no conflict.
	got, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		ProvisionTime: &time.Time{},
		Hostname:      &want.Hostname,
	})
	if err != nil {
		t.Fatalf("UpdateEnvironment(clear provision time): %v", err)
	}
	want.ProvisionTime = time.Time{}
	want.UpdateTime = got.UpdateTime
	diff(t, "environment after clearing the provision time", want, got)

	_, err = s.UpdateEnvironment(ctx, newID(), controlplane.EnvironmentPatch{DisplayName: &name})
	wantErr(t, "UpdateEnvironment(unknown)", err, controlplane.ErrNotFound)
}

func ptr[T any](v T) *T { return &v }

func testUpdateCredential(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	created := newEnv(org.ID, "dev")
	created.ExternalDatabase = true
	env := mustCreateEnv(t, s, created, controlplane.DefaultNo)
	want := env

	step := func(what string, patch controlplane.EnvironmentPatch) {
		t.Helper()
		got, err := s.UpdateEnvironment(ctx, env.ID, patch)
		if err != nil {
			t.Fatalf("UpdateEnvironment(%s): %v", what, err)
		}
		want.UpdateTime = got.UpdateTime
		diff(t, "environment after "+what, want, got)
		diff(t, "environment read after "+what, want, mustGetEnv(t, s, env.ID))
		byHost, err := s.GetEnvironmentByHostname(ctx, want.Hostname)
		if err != nil {
			t.Fatalf("GetEnvironmentByHostname after %s: %v", what, err)
		}
		diff(t, "environment by hostname after "+what, want, byHost)
		diff(t, "environments listed after "+what, []controlplane.Environment{want}, allEnvs(t, s, org.ID))
	}

	first := newCredential("key-1")
	want.Credential = first
	step("setting the credential", controlplane.EnvironmentPatch{Credential: &first})

	// Patches of other fields keep the credential, and ExternalDatabase.
	want.Status = controlplane.StatusActive
	want.DatabaseURL = "postgres://db2.internal:5432/dev"
	step("an unrelated patch", controlplane.EnvironmentPatch{
		Status: &want.Status, DatabaseURL: &want.DatabaseURL,
	})
	step("an empty patch", controlplane.EnvironmentPatch{})

	// A new credential replaces the whole old one, the rotate time included.
	second := newCredential("key-2")
	second.RotateTime = time.Time{}
	want.Credential = second
	step("replacing the credential", controlplane.EnvironmentPatch{Credential: &second})

	third := newCredential("key-3")
	want.Credential = third
	want.DisplayName = "Dev"
	step("replacing the credential with another field", controlplane.EnvironmentPatch{
		Credential: &third, DisplayName: &want.DisplayName,
	})

	// A pointer to the zero credential, or to one without ciphertext, clears it.
	want.Credential = controlplane.Credential{}
	step("clearing the credential", controlplane.EnvironmentPatch{Credential: &controlplane.Credential{}})
	want.Credential = first
	step("setting the credential again", controlplane.EnvironmentPatch{Credential: &first})
	want.Credential = controlplane.Credential{}
	step("clearing with an empty ciphertext", controlplane.EnvironmentPatch{
		Credential: &controlplane.Credential{KeyID: "key-1", Ciphertext: []byte{}, RotateTime: fixtureTime()},
	})
	if got := mustGetEnv(t, s, env.ID); got.Credential.Ciphertext != nil {
		t.Errorf("cleared credential has ciphertext %v, want nil", got.Credential.Ciphertext)
	}
}

func testUpdateHostnameTaken(t *testing.T, s controlplane.Store) {
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	def := mustCreateEnv(t, s, newEnv(a.ID, "dev"), controlplane.DefaultIfFirst)
	other := mustCreateEnv(t, s, newEnv(a.ID, "other"), controlplane.DefaultNo)
	foreign := mustCreateEnv(t, s, newEnv(b.ID, "dev"), controlplane.DefaultIfFirst)

	for _, taken := range []string{def.Hostname, foreign.Hostname} {
		_, err := s.UpdateEnvironment(t.Context(), other.ID, controlplane.EnvironmentPatch{
			Hostname:    &taken,
			DisplayName: ptr("Changed"),
			IsDefault:   ptr(true),
			Status:      ptr(controlplane.StatusActive),
		})
		wantErr(t, "UpdateEnvironment(taken hostname)", err, controlplane.ErrHostnameTaken)
	}
	// Nothing changed: not the patched row, not the default flag.
	diff(t, "environments of a", []controlplane.Environment{def, other}, allEnvs(t, s, a.ID),
		cmpopts.SortSlices(func(x, y controlplane.Environment) bool { return x.ID < y.ID }))
	diff(t, "environment of b", foreign, mustGetEnv(t, s, foreign.ID))
}

func testUpdateDefault(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	first := mustCreateEnv(t, s, newEnv(a.ID, "first"), controlplane.DefaultIfFirst)
	second := mustCreateEnv(t, s, newEnv(a.ID, "second"), controlplane.DefaultNo)
	foreign := mustCreateEnv(t, s, newEnv(b.ID, "dev"), controlplane.DefaultIfFirst)

	setDefault := func(id string, v bool) controlplane.Environment {
		t.Helper()
		got, err := s.UpdateEnvironment(ctx, id, controlplane.EnvironmentPatch{IsDefault: &v})
		if err != nil {
			t.Fatalf("UpdateEnvironment(IsDefault=%v): %v", v, err)
		}
		if got.IsDefault != v {
			t.Errorf("UpdateEnvironment(IsDefault=%v) returned IsDefault=%v", v, got.IsDefault)
		}
		return got
	}

	setDefault(second.ID, true)
	diff(t, "defaults after moving", []string{second.ID}, defaults(t, s, a.ID))
	wantFirst := first
	wantFirst.IsDefault = false
	diff(t, "old default", wantFirst, mustGetEnv(t, s, first.ID),
		cmpopts.IgnoreFields(controlplane.Environment{}, "UpdateTime"))

	setDefault(second.ID, true) // already the default
	diff(t, "defaults after setting again", []string{second.ID}, defaults(t, s, a.ID))

	setDefault(second.ID, false)
	diff(t, "defaults after clearing", []string(nil), defaults(t, s, a.ID))

	setDefault(first.ID, false) // was not the default
	setDefault(first.ID, true)
	diff(t, "defaults after setting on an organization without one", []string{first.ID}, defaults(t, s, a.ID))

	diff(t, "other organization's default", foreign, mustGetEnv(t, s, foreign.ID))
}

// testUpdateIfStatus checks the compare-and-set of a status: a patch with
// IfStatus applies, whole, only while the status is one of those; otherwise
// it changes nothing, not even UpdateTime, and hands back the environment as
// it is.
func testUpdateIfStatus(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	created := newEnv(org.ID, "dev")
	created.Status = controlplane.StatusFailed
	created.StatusMessage = "could not create the database"
	env := mustCreateEnv(t, s, created, controlplane.DefaultNo)

	// The status is not among IfStatus: nothing changes.
	for _, ifStatus := range [][]string{
		{controlplane.StatusActive},
		{controlplane.StatusProvisioning, controlplane.StatusDeleting},
	} {
		got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
			IfStatus:    ifStatus,
			Status:      ptr(controlplane.StatusDeleting),
			DisplayName: ptr("Changed"),
			Hostname:    ptr("changed.env.test"),
		})
		wantErr(t, fmt.Sprintf("UpdateEnvironment(IfStatus %q on a failed environment)", ifStatus), err, controlplane.ErrStatusMismatch)
		diff(t, fmt.Sprintf("environment returned with the mismatch of IfStatus %q", ifStatus), env, got)
		diff(t, fmt.Sprintf("environment after the mismatch of IfStatus %q", ifStatus), env, mustGetEnv(t, s, env.ID))
	}

	// The status is among IfStatus: the whole patch applies.
	before := time.Now()
	got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfStatus:    []string{controlplane.StatusSuspended, controlplane.StatusFailed},
		Status:      ptr(controlplane.StatusProvisioning),
		DisplayName: ptr("Retried"),
	})
	if err != nil {
		t.Fatalf("UpdateEnvironment(IfStatus failed on a failed environment): %v", err)
	}
	wantUpdatedNow(t, got, before)
	want := env
	want.Status = controlplane.StatusProvisioning
	want.DisplayName = "Retried"
	want.UpdateTime = got.UpdateTime
	diff(t, "environment after a matching conditional patch", want, got)
	diff(t, "environment read after a matching conditional patch", want, mustGetEnv(t, s, env.ID))

	// The same transition again finds the status it set.
	got, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfStatus: []string{controlplane.StatusFailed},
		Status:   ptr(controlplane.StatusProvisioning),
	})
	wantErr(t, "UpdateEnvironment(IfStatus failed, repeated)", err, controlplane.ErrStatusMismatch)
	diff(t, "environment returned with the repeated transition", want, got)

	// A conditional patch that matches and then breaks a rule changes nothing.
	other := mustCreateEnv(t, s, newEnv(org.ID, "other"), controlplane.DefaultNo)
	_, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfStatus: []string{controlplane.StatusProvisioning},
		Status:   ptr(controlplane.StatusActive),
		Hostname: &other.Hostname,
	})
	wantErr(t, "UpdateEnvironment(IfStatus matching, hostname taken)", err, controlplane.ErrHostnameTaken)
	diff(t, "environment after a matching patch with a taken hostname", want, mustGetEnv(t, s, env.ID))

	// A missing environment is ErrNotFound, whatever IfStatus says.
	_, err = s.UpdateEnvironment(ctx, newID(), controlplane.EnvironmentPatch{
		IfStatus: []string{controlplane.StatusFailed},
		Status:   ptr(controlplane.StatusProvisioning),
	})
	wantErr(t, "UpdateEnvironment(IfStatus, unknown)", err, controlplane.ErrNotFound)
}

// testUpdateIfUpdatedBefore checks the compare-and-set on the time of the
// last update: a patch with IfUpdatedBefore applies only while the
// environment was last updated before it (and its status matches IfStatus);
// otherwise nothing changes. The patch that applies sets UpdateTime, so the
// same condition, tried again, no longer holds: of concurrent patches,
// exactly one applies.
func testUpdateIfUpdatedBefore(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	created := newEnv(org.ID, "dev")
	created.Status = controlplane.StatusProvisioning
	env := mustCreateEnv(t, s, created, controlplane.DefaultNo)
	patch := func(before time.Time, status string) controlplane.EnvironmentPatch {
		return controlplane.EnvironmentPatch{
			IfStatus:        []string{status},
			IfUpdatedBefore: &before,
			Status:          ptr(controlplane.StatusProvisioning),
			StatusMessage:   ptr("retried"),
		}
	}

	// Updated at or after the time: nothing changes.
	for _, before := range []time.Time{env.UpdateTime, env.UpdateTime.Add(-time.Second)} {
		got, err := s.UpdateEnvironment(ctx, env.ID, patch(before, controlplane.StatusProvisioning))
		wantErr(t, fmt.Sprintf("UpdateEnvironment(IfUpdatedBefore %v, updated at %v)", before, env.UpdateTime), err, controlplane.ErrStatusMismatch)
		diff(t, "environment returned with the mismatch of IfUpdatedBefore", env, got)
		diff(t, "environment after the mismatch of IfUpdatedBefore", env, mustGetEnv(t, s, env.ID))
	}
	// Updated before it, but in another status: nothing changes either.
	later := env.UpdateTime.Add(time.Second)
	_, err := s.UpdateEnvironment(ctx, env.ID, patch(later, controlplane.StatusFailed))
	wantErr(t, "UpdateEnvironment(IfUpdatedBefore holding, IfStatus not)", err, controlplane.ErrStatusMismatch)
	diff(t, "environment after the mismatch of IfStatus with IfUpdatedBefore", env, mustGetEnv(t, s, env.ID))

	// Both hold: the patch applies, and the time it sets ends the condition.
	before := time.Now()
	got, err := s.UpdateEnvironment(ctx, env.ID, patch(later, controlplane.StatusProvisioning))
	if err != nil {
		t.Fatalf("UpdateEnvironment(IfUpdatedBefore holding): %v", err)
	}
	wantUpdatedNow(t, got, before)
	want := env
	want.StatusMessage = "retried"
	want.UpdateTime = got.UpdateTime
	diff(t, "environment after a matching IfUpdatedBefore", want, got)
	if got.UpdateTime.Before(later) {
		t.Fatalf("the patch set UpdateTime %v, before the condition's %v: the test cannot show the second patch fail", got.UpdateTime, later)
	}
	_, err = s.UpdateEnvironment(ctx, env.ID, patch(later, controlplane.StatusProvisioning))
	wantErr(t, "UpdateEnvironment(IfUpdatedBefore, repeated)", err, controlplane.ErrStatusMismatch)
	diff(t, "environment after the repeated IfUpdatedBefore", want, mustGetEnv(t, s, env.ID))
}

// testResourcesMayExist checks the flag is stored as inserted, kept by
// patches that do not name it, set and cleared by ones that do, and set
// together with a conditional status change or not at all.
func testResourcesMayExist(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	for _, inserted := range []bool{false, true} {
		created := newEnv(org.ID, fmt.Sprintf("dev-%v", inserted))
		created.ResourcesMayExist = inserted
		env := mustCreateEnv(t, s, created, controlplane.DefaultNo)
		if env.ResourcesMayExist != inserted {
			t.Errorf("CreateEnvironment(ResourcesMayExist %v) stored %v", inserted, env.ResourcesMayExist)
		}
		if got := mustGetEnv(t, s, env.ID); got.ResourcesMayExist != inserted {
			t.Errorf("GetEnvironment after inserting ResourcesMayExist %v = %v", inserted, got.ResourcesMayExist)
		}
		got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{DisplayName: ptr("Renamed")})
		if err != nil {
			t.Fatalf("UpdateEnvironment(display name): %v", err)
		}
		if got.ResourcesMayExist != inserted {
			t.Errorf("a patch without ResourcesMayExist changed it from %v to %v", inserted, got.ResourcesMayExist)
		}
		got, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{ResourcesMayExist: ptr(!inserted)})
		if err != nil {
			t.Fatalf("UpdateEnvironment(ResourcesMayExist %v): %v", !inserted, err)
		}
		if got.ResourcesMayExist != !inserted || mustGetEnv(t, s, env.ID).ResourcesMayExist != !inserted {
			t.Errorf("after patching ResourcesMayExist to %v: returned %v, read %v",
				!inserted, got.ResourcesMayExist, mustGetEnv(t, s, env.ID).ResourcesMayExist)
		}
	}

	// With a conditional status change: both or neither.
	created := newEnv(org.ID, "failed")
	created.Status = controlplane.StatusFailed
	env := mustCreateEnv(t, s, created, controlplane.DefaultNo)
	got, err := s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfStatus:          []string{controlplane.StatusActive},
		Status:            ptr(controlplane.StatusProvisioning),
		ResourcesMayExist: ptr(true),
	})
	wantErr(t, "UpdateEnvironment(IfStatus active on a failed environment, ResourcesMayExist)", err, controlplane.ErrStatusMismatch)
	if got.ResourcesMayExist || mustGetEnv(t, s, env.ID).ResourcesMayExist {
		t.Errorf("a conditional patch that did not apply set ResourcesMayExist")
	}
	got, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{
		IfStatus:          []string{controlplane.StatusFailed},
		Status:            ptr(controlplane.StatusProvisioning),
		ResourcesMayExist: ptr(true),
	})
	if err != nil {
		t.Fatalf("UpdateEnvironment(IfStatus failed, ResourcesMayExist): %v", err)
	}
	if got.Status != controlplane.StatusProvisioning || !got.ResourcesMayExist {
		t.Errorf("after a matching conditional patch: status %q, ResourcesMayExist %v; want provisioning, true", got.Status, got.ResourcesMayExist)
	}
}

func testDelete(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	env := mustCreateEnv(t, s, newEnv(org.ID, "dev"), controlplane.DefaultIfFirst)
	keep := mustCreateEnv(t, s, newEnv(org.ID, "keep"), controlplane.DefaultNo)

	if err := s.DeleteEnvironment(ctx, env.ID); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	_, err := s.GetEnvironment(ctx, env.ID)
	wantErr(t, "GetEnvironment(deleted)", err, controlplane.ErrNotFound)
	_, err = s.GetEnvironmentByHostname(ctx, env.Hostname)
	wantErr(t, "GetEnvironmentByHostname(deleted)", err, controlplane.ErrNotFound)
	err = s.DeleteEnvironment(ctx, env.ID)
	wantErr(t, "DeleteEnvironment(deleted)", err, controlplane.ErrNotFound)
	_, err = s.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{DisplayName: ptr("x")})
	wantErr(t, "UpdateEnvironment(deleted)", err, controlplane.ErrNotFound)
	diff(t, "remaining environments", []controlplane.Environment{keep}, allEnvs(t, s, org.ID))

	// The slug and hostname are free again, and so is the default.
	again := newEnv(org.ID, "dev")
	again.Hostname = env.Hostname
	if got := mustCreateEnv(t, s, again, controlplane.DefaultIfFirst); !got.IsDefault {
		t.Errorf("DefaultIfFirst after deleting the default did not make the default")
	}
}

func testRaceOrganizationSlug(t *testing.T, s controlplane.Store) {
	errs := race(func(int) error {
		_, _, err := s.CreateOrganization(t.Context(), newOrg("acme"))
		return err
	})
	wantOneWinner(t, errs, controlplane.ErrOrganizationExists)
	if n := len(allOrgs(t, s)); n != 1 {
		t.Errorf("%d organizations, want 1", n)
	}
}

func testRaceOrganizationRequestID(t *testing.T, s controlplane.Store) {
	ids := make([]string, racers)
	created := make([]bool, racers)
	errs := race(func(i int) error {
		org := newOrg("acme")
		org.RequestID = "req-1"
		org.RequestDigest = "digest-1"
		got, c, err := s.CreateOrganization(t.Context(), org)
		ids[i], created[i] = got.ID, c
		return err
	})
	wantNoErrors(t, errs)
	if n := countTrue(created); n != 1 {
		t.Errorf("%d callers created, want 1", n)
	}
	orgs := allOrgs(t, s)
	if len(orgs) != 1 {
		t.Fatalf("%d organizations, want 1", len(orgs))
	}
	for i, id := range ids {
		if id != orgs[0].ID {
			t.Errorf("racer %d got organization %q, want %q", i, id, orgs[0].ID)
		}
	}
}

func testRaceEnvironmentSlug(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	errs := race(func(int) error {
		_, _, err := s.CreateEnvironment(t.Context(), newEnv(org.ID, "dev"), controlplane.DefaultIfFirst)
		return err
	})
	wantOneWinner(t, errs, controlplane.ErrEnvironmentExists)
	if n := len(allEnvs(t, s, org.ID)); n != 1 {
		t.Errorf("%d environments, want 1", n)
	}
}

func testRaceHostname(t *testing.T, s controlplane.Store) {
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	errs := race(func(i int) error {
		orgID := a.ID
		if i%2 == 1 {
			orgID = b.ID
		}
		env := newEnv(orgID, fmt.Sprintf("env-%d", i))
		env.Hostname = "contested.env.test"
		_, _, err := s.CreateEnvironment(t.Context(), env, controlplane.DefaultIfFirst)
		return err
	})
	wantOneWinner(t, errs, controlplane.ErrHostnameTaken)
	if n := len(allEnvs(t, s, a.ID)) + len(allEnvs(t, s, b.ID)); n != 1 {
		t.Errorf("%d environments, want 1", n)
	}
}

func testRaceEnvironmentRequestID(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	template := newEnv(org.ID, "dev")
	template.RequestID = "req-1"
	template.RequestDigest = "digest-1"
	ids := make([]string, racers)
	created := make([]bool, racers)
	errs := race(func(i int) error {
		env := template
		env.ID = newID()
		got, c, err := s.CreateEnvironment(t.Context(), env, controlplane.DefaultIfFirst)
		ids[i], created[i] = got.ID, c
		return err
	})
	wantNoErrors(t, errs)
	if n := countTrue(created); n != 1 {
		t.Errorf("%d callers created, want 1", n)
	}
	envs := allEnvs(t, s, org.ID)
	if len(envs) != 1 {
		t.Fatalf("%d environments, want 1", len(envs))
	}
	for i, id := range ids {
		if id != envs[0].ID {
			t.Errorf("racer %d got environment %q, want %q", i, id, envs[0].ID)
		}
	}
}

func testRaceDefaultYes(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	errs := race(func(i int) error {
		_, _, err := s.CreateEnvironment(t.Context(), newEnv(org.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultYes)
		return err
	})
	wantNoErrors(t, errs)
	if n := len(allEnvs(t, s, org.ID)); n != racers {
		t.Errorf("%d environments, want %d", n, racers)
	}
	if d := defaults(t, s, org.ID); len(d) != 1 {
		t.Errorf("%d defaults, want 1", len(d))
	}
}

func testRaceDefaultIfFirst(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	isDefault := make([]bool, racers)
	errs := race(func(i int) error {
		env, _, err := s.CreateEnvironment(t.Context(), newEnv(org.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultIfFirst)
		isDefault[i] = env.IsDefault
		return err
	})
	wantNoErrors(t, errs)
	if n := countTrue(isDefault); n != 1 {
		t.Errorf("%d creates returned IsDefault, want 1", n)
	}
	if n := len(allEnvs(t, s, org.ID)); n != racers {
		t.Errorf("%d environments, want %d", n, racers)
	}
	if d := defaults(t, s, org.ID); len(d) != 1 {
		t.Errorf("%d defaults, want 1", len(d))
	}
}

func testRaceUpdateDefault(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	ids := make([]string, racers)
	for i := range racers {
		ids[i] = mustCreateEnv(t, s, newEnv(org.ID, fmt.Sprintf("env-%d", i)), controlplane.DefaultNo).ID
	}
	errs := race(func(i int) error {
		_, err := s.UpdateEnvironment(t.Context(), ids[i], controlplane.EnvironmentPatch{IsDefault: ptr(true)})
		return err
	})
	wantNoErrors(t, errs)
	if d := defaults(t, s, org.ID); len(d) != 1 {
		t.Errorf("%d defaults, want 1", len(d))
	}
}

// testRaceStatusTransition races callers that all move one failed
// environment to provisioning, as concurrent RetryProvisioning calls do:
// exactly one wins, every other one gets ErrStatusMismatch and sees the
// status the winner set.
func testRaceStatusTransition(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	created := newEnv(org.ID, "dev")
	created.Status = controlplane.StatusFailed
	env := mustCreateEnv(t, s, created, controlplane.DefaultNo)
	seen := make([]string, racers)
	errs := race(func(i int) error {
		got, err := s.UpdateEnvironment(t.Context(), env.ID, controlplane.EnvironmentPatch{
			IfStatus:    []string{controlplane.StatusFailed},
			Status:      ptr(controlplane.StatusProvisioning),
			DisplayName: ptr(fmt.Sprintf("racer %d", i)),
		})
		seen[i] = got.Status
		return err
	})
	wantOneWinner(t, errs, controlplane.ErrStatusMismatch)
	for i, status := range seen {
		if status != controlplane.StatusProvisioning {
			t.Errorf("racer %d got status %q, want %q (set by the winner, or by itself)", i, status, controlplane.StatusProvisioning)
		}
	}
	got := mustGetEnv(t, s, env.ID)
	if got.Status != controlplane.StatusProvisioning {
		t.Errorf("status after the race = %q, want %q", got.Status, controlplane.StatusProvisioning)
	}
	if winner := slices.Index(errs, nil); winner >= 0 && got.DisplayName != fmt.Sprintf("racer %d", winner) {
		t.Errorf("display name after the race = %q, want the winner's, racer %d", got.DisplayName, winner)
	}
}

// testRaceStatusTransitionAndDelete races conditional patches against the
// removal of their environment: each either applies before the removal or
// finds nothing (ErrNotFound), never ErrStatusMismatch or another error.
func testRaceStatusTransitionAndDelete(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	created := newEnv(org.ID, "dev")
	created.Status = controlplane.StatusProvisioning
	env := mustCreateEnv(t, s, created, controlplane.DefaultNo)
	errs := race(func(i int) error {
		if i == 0 {
			return s.DeleteEnvironment(t.Context(), env.ID)
		}
		_, err := s.UpdateEnvironment(t.Context(), env.ID, controlplane.EnvironmentPatch{
			IfStatus:       []string{controlplane.StatusProvisioning},
			StorageLimitMB: ptr(int64(i)),
		})
		return err
	})
	if errs[0] != nil {
		t.Errorf("DeleteEnvironment: %v", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil && !errors.Is(err, controlplane.ErrNotFound) {
			t.Errorf("racer %d: error %v, want nil or %v", i+1, err, controlplane.ErrNotFound)
		}
	}
	_, err := s.GetEnvironment(t.Context(), env.ID)
	wantErr(t, "GetEnvironment after the race", err, controlplane.ErrNotFound)
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
