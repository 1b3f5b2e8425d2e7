package storetest

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envplane/envplane/internal/controlplane"
)

// newSecretHash returns the hash of a new random secret, as the API layer
// makes one for every create attempt.
func newSecretHash() []byte {
	h := sha256.Sum256([]byte("secret-" + newID()))
	return h[:]
}

// newToken returns a developer token of the organization (platform-wide when
// orgID is ""), not limited to any environment.
func newToken(orgID, name string) controlplane.Token {
	id := newID()
	return controlplane.Token{
		ID:             id,
		Name:           name,
		OrganizationID: orgID,
		Role:           "developer",
		SecretHash:     newSecretHash(),
		SecretPrefix:   "ept_" + id[len(id)-6:],
		CreateTime:     fixtureTime(),
	}
}

func mustCreateToken(t *testing.T, s controlplane.Store, tok controlplane.Token) controlplane.Token {
	t.Helper()
	got, created, err := s.CreateToken(t.Context(), tok)
	if err != nil || !created {
		t.Fatalf("CreateToken(%q) = created %v, %v; want created", tok.Name, created, err)
	}
	return got
}

func mustGetToken(t *testing.T, s controlplane.Store, id string) controlplane.Token {
	t.Helper()
	tok, err := s.GetToken(t.Context(), id)
	if err != nil {
		t.Fatalf("GetToken(%s): %v", id, err)
	}
	return tok
}

func mustCountTokens(t *testing.T, s controlplane.Store) int {
	t.Helper()
	n, err := s.CountTokens(t.Context())
	if err != nil {
		t.Fatalf("CountTokens: %v", err)
	}
	return n
}

// allTokens lists every token of an organization ("" = every token),
// following the pages.
func allTokens(t *testing.T, s controlplane.Store, orgID string) []controlplane.Token {
	t.Helper()
	var out []controlplane.Token
	page := controlplane.Page{Limit: 7}
	for {
		toks, err := s.ListTokens(t.Context(), orgID, page)
		if err != nil {
			t.Fatalf("ListTokens(%q): %v", orgID, err)
		}
		out = append(out, toks...)
		if len(toks) < page.Limit {
			return out
		}
		page.After = toks[len(toks)-1].ID
	}
}

func sortTokens(toks []controlplane.Token) {
	slices.SortFunc(toks, func(a, b controlplane.Token) int { return strings.Compare(a.ID, b.ID) })
}

func testTokenRoundTrip(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	dev := mustCreateEnv(t, s, newEnv(org.ID, "dev"), controlplane.DefaultIfFirst)
	prod := mustCreateEnv(t, s, newEnv(org.ID, "prod"), controlplane.DefaultNo)

	platform := newToken("", "bootstrap")
	platform.Role = "admin"
	platform.PlatformAdmin = true

	// Every field set; environment ids out of id order, which must be kept,
	// and a hash with zero bytes, which must survive as bytes.
	full := newToken(org.ID, "ci")
	full.Role = "editor"
	full.EnvironmentIDs = []string{prod.ID, dev.ID}
	full.SecretHash = append([]byte{0, 0xff, 0}, full.SecretHash[3:]...)
	full.RequestID = "req-" + newID()
	full.RequestDigest = "digest-" + full.RequestID
	full.CreatedBy = platform.ID
	full.ExpireTime = fixtureTime().Add(24 * time.Hour)
	full.RevokeTime = fixtureTime().Add(time.Minute)
	full.LastUseTime = fixtureTime().Add(2 * time.Minute)
	full.ActiveEnvironmentID = dev.ID

	for _, want := range []controlplane.Token{platform, full} {
		got := mustCreateToken(t, s, want)
		diff(t, "created token", want, got)
		diff(t, "read token", want, mustGetToken(t, s, want.ID))
		got, err := s.GetTokenBySecretHash(ctx, want.SecretHash)
		if err != nil {
			t.Fatalf("GetTokenBySecretHash: %v", err)
		}
		diff(t, "token read by hash", want, got)
	}

	// An empty, non-nil list of environment ids comes back nil, as from a
	// token created without one.
	empty := newToken(org.ID, "empty")
	empty.EnvironmentIDs = []string{}
	for what, got := range map[string]controlplane.Token{
		"created": mustCreateToken(t, s, empty),
		"read":    mustGetToken(t, s, empty.ID),
	} {
		if got.EnvironmentIDs != nil {
			t.Errorf("%s token with empty environment ids has EnvironmentIDs %#v, want nil", what, got.EnvironmentIDs)
		}
	}
	if got := mustGetToken(t, s, platform.ID); got.EnvironmentIDs != nil {
		t.Errorf("token without environment ids has EnvironmentIDs %#v, want nil", got.EnvironmentIDs)
	}

	_, err := s.GetToken(ctx, newID())
	wantErr(t, "GetToken(unknown)", err, controlplane.ErrNotFound)
	_, err = s.GetTokenBySecretHash(ctx, newSecretHash())
	wantErr(t, "GetTokenBySecretHash(unknown)", err, controlplane.ErrNotFound)
	_, err = s.GetTokenBySecretHash(ctx, platform.SecretHash[:16])
	wantErr(t, "GetTokenBySecretHash(prefix of a hash)", err, controlplane.ErrNotFound)
	_, err = s.GetTokenBySecretHash(ctx, nil)
	wantErr(t, "GetTokenBySecretHash(nil)", err, controlplane.ErrNotFound)

	// A token created with an active environment that does not exist.
	ghost := newToken(org.ID, "ghost")
	ghost.ActiveEnvironmentID = newID()
	_, _, err = s.CreateToken(ctx, ghost)
	wantErr(t, "CreateToken(unknown active environment)", err, controlplane.ErrNotFound)
	if _, err := s.GetToken(ctx, ghost.ID); err == nil {
		t.Errorf("token with an unknown active environment was stored")
	}
}

func testTokenOrganizationMissing(t *testing.T, s controlplane.Store) {
	tok := newToken(newID(), "orphan")
	_, _, err := s.CreateToken(t.Context(), tok)
	wantErr(t, "CreateToken in a missing organization", err, controlplane.ErrOrganizationMissing)
	tok.RequestID = "req-1"
	_, _, err = s.CreateToken(t.Context(), tok)
	wantErr(t, "CreateToken with a request id in a missing organization", err, controlplane.ErrOrganizationMissing)
	if n := mustCountTokens(t, s); n != 0 {
		t.Errorf("CountTokens = %d, want 0", n)
	}
}

func testTokenSecretHashTaken(t *testing.T, s controlplane.Store) {
	first := mustCreateToken(t, s, newToken("", "first"))
	again := newToken("", "again")
	again.SecretHash = first.SecretHash
	if _, _, err := s.CreateToken(t.Context(), again); err == nil {
		t.Errorf("CreateToken with a taken secret hash succeeded")
	}
	diff(t, "tokens", []controlplane.Token{first}, allTokens(t, s, ""))
}

func testListTokens(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	a := mustCreateOrg(t, s, "a")
	b := mustCreateOrg(t, s, "b")
	var wantA, wantB, wantAll []controlplane.Token
	for i := range 5 {
		tok := mustCreateToken(t, s, newToken(a.ID, fmt.Sprintf("a-%d", i)))
		wantA = append(wantA, tok)
		wantAll = append(wantAll, tok)
		if i < 2 {
			tok = mustCreateToken(t, s, newToken(b.ID, fmt.Sprintf("b-%d", i)))
			wantB = append(wantB, tok)
			wantAll = append(wantAll, tok)
			platform := newToken("", fmt.Sprintf("platform-%d", i))
			platform.PlatformAdmin = true
			wantAll = append(wantAll, mustCreateToken(t, s, platform))
		}
	}
	sortTokens(wantA)
	sortTokens(wantB)
	sortTokens(wantAll)

	var got []controlplane.Token
	var sizes []int
	page := controlplane.Page{Limit: 2}
	for range 5 {
		toks, err := s.ListTokens(ctx, a.ID, page)
		if err != nil {
			t.Fatalf("ListTokens(%+v): %v", page, err)
		}
		sizes = append(sizes, len(toks))
		if len(toks) == 0 {
			break
		}
		got = append(got, toks...)
		page.After = toks[len(toks)-1].ID
	}
	diff(t, "page sizes", []int{2, 2, 1, 0}, sizes)
	diff(t, "paged tokens of a", wantA, got)

	def, err := s.ListTokens(ctx, a.ID, controlplane.Page{})
	if err != nil {
		t.Fatalf("ListTokens(default page): %v", err)
	}
	diff(t, "default page of a", wantA, def)
	diff(t, "tokens of b", wantB, allTokens(t, s, b.ID))

	// "" lists every token, platform ones included, paged the same way.
	got, sizes, page = nil, nil, controlplane.Page{Limit: 4}
	for range 5 {
		toks, err := s.ListTokens(ctx, "", page)
		if err != nil {
			t.Fatalf("ListTokens(all, %+v): %v", page, err)
		}
		sizes = append(sizes, len(toks))
		if len(toks) == 0 {
			break
		}
		got = append(got, toks...)
		page.After = toks[len(toks)-1].ID
	}
	diff(t, "page sizes of all", []int{4, 4, 1, 0}, sizes)
	diff(t, "paged tokens", wantAll, got)

	rest, err := s.ListTokens(ctx, "", controlplane.Page{After: wantAll[5].ID, Limit: 100})
	if err != nil {
		t.Fatalf("ListTokens(after): %v", err)
	}
	diff(t, "tokens after the sixth", wantAll[6:], rest)

	unknown, err := s.ListTokens(ctx, newID(), controlplane.Page{})
	if err != nil || len(unknown) != 0 {
		t.Errorf("ListTokens(unknown organization) = %d tokens, %v; want none", len(unknown), err)
	}
}

func testTokenRequestID(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	other := mustCreateOrg(t, s, "other")

	first := newToken(org.ID, "ci")
	first.RequestID = "req-1"
	first.RequestDigest = "digest-1"
	first.EnvironmentIDs = []string{newID(), newID()}
	first.ExpireTime = fixtureTime().Add(24 * time.Hour)
	stored := mustCreateToken(t, s, first)

	// A retry is a new attempt of the same request: the same digest, but a
	// new id, new secret, new time, possibly another creator. The store
	// answers with the token it stored.
	retry := newToken(org.ID, "ci")
	retry.RequestID = "req-1"
	retry.RequestDigest = "digest-1"
	retry.EnvironmentIDs = slices.Clone(first.EnvironmentIDs)
	retry.ExpireTime = first.ExpireTime.UTC()
	retry.CreatedBy = newID()
	got, created, err := s.CreateToken(ctx, retry)
	if err != nil || created {
		t.Fatalf("retried CreateToken = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried token", stored, got)
	if _, err := s.GetTokenBySecretHash(ctx, retry.SecretHash); err == nil {
		t.Errorf("the retry's secret hash was stored")
	}

	// Another digest is another request, with the same fields or not.
	for what, change := range map[string]func(*controlplane.Token){
		"another digest": func(tok *controlplane.Token) { tok.RequestDigest = "digest-2" },
		"no digest":      func(tok *controlplane.Token) { tok.RequestDigest = "" },
		"another role":   func(tok *controlplane.Token) { tok.Role, tok.RequestDigest = "viewer", "digest-viewer" },
	} {
		tok := newToken(org.ID, first.Name)
		tok.RequestID = first.RequestID
		tok.RequestDigest = first.RequestDigest
		tok.EnvironmentIDs = slices.Clone(first.EnvironmentIDs)
		tok.ExpireTime = first.ExpireTime
		change(&tok)
		_, _, err := s.CreateToken(ctx, tok)
		wantErr(t, "request id reused with "+what, err, controlplane.ErrRequestReused)
	}
	diff(t, "tokens of acme", []controlplane.Token{stored}, allTokens(t, s, org.ID))

	// Request ids are scoped to the organization, and platform tokens form
	// a scope of their own.
	elsewhere := newToken(other.ID, "ci")
	elsewhere.RequestID = "req-1"
	elsewhere.RequestDigest = "digest-1"
	mustCreateToken(t, s, elsewhere)
	platform := newToken("", "ci")
	platform.RequestID = "req-1"
	platform.RequestDigest = "digest-1"
	platformStored := mustCreateToken(t, s, platform)
	platformRetry := newToken("", "ci")
	platformRetry.RequestID = "req-1"
	platformRetry.RequestDigest = "digest-1"
	got, created, err = s.CreateToken(ctx, platformRetry)
	if err != nil || created {
		t.Fatalf("retried platform CreateToken = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried platform token", platformStored, got)
	platformRetry.RequestDigest = "digest-2"
	_, _, err = s.CreateToken(ctx, platformRetry)
	wantErr(t, "platform request id reused with another digest", err, controlplane.ErrRequestReused)

	// Creates without a request id never collide on it.
	mustCreateToken(t, s, newToken(org.ID, "nokey"))
	mustCreateToken(t, s, newToken(org.ID, "nokey"))
	mustCreateToken(t, s, newToken("", "nokey"))
}

// testTokenRequestIDAfterRevoke retries a create after the token it made was
// revoked and used: the digest of the original request still matches, so the
// retry gets the token as it is now.
func testTokenRequestIDAfterRevoke(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	first := newToken(org.ID, "ci")
	first.RequestID = "req-1"
	first.RequestDigest = "digest-1"
	mustCreateToken(t, s, first)
	if err := s.TouchToken(ctx, first.ID, fixtureTime().Add(time.Minute)); err != nil {
		t.Fatalf("TouchToken: %v", err)
	}
	revoked, err := s.RevokeToken(ctx, first.ID, fixtureTime().Add(2*time.Minute))
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}

	retry := first
	retry.ID = newID()
	retry.SecretHash = newSecretHash()
	got, created, err := s.CreateToken(ctx, retry)
	if err != nil || created {
		t.Fatalf("CreateToken retried after a revocation = created %v, %v; want the stored one", created, err)
	}
	diff(t, "token retried after a revocation", revoked, got)

	retry.RequestDigest = "digest-2"
	_, _, err = s.CreateToken(ctx, retry)
	wantErr(t, "request id reused with another digest after a revocation", err, controlplane.ErrRequestReused)
	diff(t, "tokens of acme", []controlplane.Token{revoked}, allTokens(t, s, org.ID))
}

// testTokenRequestIDWithoutDigest covers tokens stored with a request id and
// no digest, as every one created before the digest was stored: a retry is
// told by the client-supplied fields.
func testTokenRequestIDWithoutDigest(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	other := mustCreateOrg(t, s, "other")

	first := newToken(org.ID, "ci")
	first.RequestID = "req-1"
	first.EnvironmentIDs = []string{newID(), newID()}
	first.ExpireTime = fixtureTime().Add(24 * time.Hour)
	stored := mustCreateToken(t, s, first)

	// A retry is a new attempt: new id, new secret, new time, possibly
	// another creator, and an expire time that is the same instant written
	// in another zone. The store answers with the token it stored.
	retry := newToken(org.ID, "ci")
	retry.RequestID = "req-1"
	retry.EnvironmentIDs = slices.Clone(first.EnvironmentIDs)
	retry.ExpireTime = first.ExpireTime.UTC()
	retry.CreatedBy = newID()
	retry.RequestDigest = "digest-1" // a new caller's retry may carry one
	got, created, err := s.CreateToken(ctx, retry)
	if err != nil || created {
		t.Fatalf("retried CreateToken = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried token", stored, got)
	if _, err := s.GetTokenBySecretHash(ctx, retry.SecretHash); err == nil {
		t.Errorf("the retry's secret hash was stored")
	}

	changes := map[string]func(*controlplane.Token){
		"name":                  func(tok *controlplane.Token) { tok.Name = "other" },
		"role":                  func(tok *controlplane.Token) { tok.Role = "viewer" },
		"platform_admin":        func(tok *controlplane.Token) { tok.PlatformAdmin = true },
		"environment ids order": func(tok *controlplane.Token) { slices.Reverse(tok.EnvironmentIDs) },
		"fewer environment ids": func(tok *controlplane.Token) { tok.EnvironmentIDs = tok.EnvironmentIDs[:1] },
		"no environment ids":    func(tok *controlplane.Token) { tok.EnvironmentIDs = nil },
		"more environment ids":  func(tok *controlplane.Token) { tok.EnvironmentIDs = append(tok.EnvironmentIDs, newID()) },
		"expire time":           func(tok *controlplane.Token) { tok.ExpireTime = tok.ExpireTime.Add(time.Microsecond) },
		"no expire time":        func(tok *controlplane.Token) { tok.ExpireTime = time.Time{} },
	}
	for field, change := range changes {
		tok := newToken(org.ID, first.Name)
		tok.RequestID = first.RequestID
		tok.EnvironmentIDs = slices.Clone(first.EnvironmentIDs)
		tok.ExpireTime = first.ExpireTime
		change(&tok)
		_, _, err := s.CreateToken(ctx, tok)
		wantErr(t, "request id reused with another "+field, err, controlplane.ErrRequestReused)
	}
	diff(t, "tokens of acme", []controlplane.Token{stored}, allTokens(t, s, org.ID))

	// Request ids are scoped to the organization, and platform tokens form
	// a scope of their own.
	elsewhere := newToken(other.ID, "ci")
	elsewhere.RequestID = "req-1"
	mustCreateToken(t, s, elsewhere)
	platform := newToken("", "ci")
	platform.RequestID = "req-1"
	platformStored := mustCreateToken(t, s, platform)
	platformRetry := newToken("", "ci")
	platformRetry.RequestID = "req-1"
	got, created, err = s.CreateToken(ctx, platformRetry)
	if err != nil || created {
		t.Fatalf("retried platform CreateToken = created %v, %v; want the stored one", created, err)
	}
	diff(t, "retried platform token", platformStored, got)
	platformRetry.Role = "admin"
	_, _, err = s.CreateToken(ctx, platformRetry)
	wantErr(t, "platform request id reused with another role", err, controlplane.ErrRequestReused)

	// Creates without a request id never collide on it.
	mustCreateToken(t, s, newToken(org.ID, "nokey"))
	mustCreateToken(t, s, newToken(org.ID, "nokey"))
	mustCreateToken(t, s, newToken("", "nokey"))

	if n := mustCountTokens(t, s); n != 6 {
		t.Errorf("CountTokens = %d, want 6", n)
	}
}

func testRevokeToken(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	tok := mustCreateToken(t, s, newToken(org.ID, "ci"))
	keep := mustCreateToken(t, s, newToken(org.ID, "keep"))

	first := fixtureTime().Add(10 * time.Minute)
	got, err := s.RevokeToken(ctx, tok.ID, first)
	if err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	want := tok
	want.RevokeTime = first
	diff(t, "revoked token", want, got)

	// Revoking again keeps the first revocation, earlier or later.
	for _, at := range []time.Time{first.Add(time.Hour), first.Add(-time.Hour)} {
		got, err = s.RevokeToken(ctx, tok.ID, at)
		if err != nil {
			t.Fatalf("RevokeToken again: %v", err)
		}
		diff(t, "token revoked again", want, got)
	}
	diff(t, "read revoked token", want, mustGetToken(t, s, tok.ID))
	byHash, err := s.GetTokenBySecretHash(ctx, tok.SecretHash)
	if err != nil {
		t.Fatalf("GetTokenBySecretHash(revoked): %v", err)
	}
	diff(t, "revoked token by hash", want, byHash)
	diff(t, "other token", keep, mustGetToken(t, s, keep.ID))

	_, err = s.RevokeToken(ctx, newID(), first)
	wantErr(t, "RevokeToken(unknown)", err, controlplane.ErrNotFound)
}

func testActiveEnvironment(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	org := mustCreateOrg(t, s, "acme")
	dev := mustCreateEnv(t, s, newEnv(org.ID, "dev"), controlplane.DefaultIfFirst)
	prod := mustCreateEnv(t, s, newEnv(org.ID, "prod"), controlplane.DefaultNo)
	tok := mustCreateToken(t, s, newToken(org.ID, "session"))
	other := mustCreateToken(t, s, newToken("", "platform session"))

	set := func(tokenID, envID string) {
		t.Helper()
		if err := s.SetActiveEnvironment(ctx, tokenID, envID); err != nil {
			t.Fatalf("SetActiveEnvironment(%s, %q): %v", tokenID, envID, err)
		}
	}
	wantActive := func(tokenID, envID string) {
		t.Helper()
		if got := mustGetToken(t, s, tokenID).ActiveEnvironmentID; got != envID {
			t.Errorf("token %s: ActiveEnvironmentID %q, want %q", tokenID, got, envID)
		}
	}

	set(tok.ID, dev.ID)
	wantActive(tok.ID, dev.ID)
	wantActive(other.ID, "")
	set(tok.ID, prod.ID)
	wantActive(tok.ID, prod.ID)
	set(other.ID, prod.ID)
	want := tok
	want.ActiveEnvironmentID = prod.ID
	diff(t, "token with an active environment", want, mustGetToken(t, s, tok.ID))

	err := s.SetActiveEnvironment(ctx, tok.ID, newID())
	wantErr(t, "SetActiveEnvironment(unknown environment)", err, controlplane.ErrNotFound)
	wantActive(tok.ID, prod.ID)
	err = s.SetActiveEnvironment(ctx, newID(), dev.ID)
	wantErr(t, "SetActiveEnvironment(unknown token)", err, controlplane.ErrNotFound)

	// Deleting the environment clears it from every session, and nothing else.
	if err := s.DeleteEnvironment(ctx, prod.ID); err != nil {
		t.Fatalf("DeleteEnvironment: %v", err)
	}
	diff(t, "token after deleting its active environment", tok, mustGetToken(t, s, tok.ID))
	wantActive(other.ID, "")
	err = s.SetActiveEnvironment(ctx, tok.ID, prod.ID)
	wantErr(t, "SetActiveEnvironment(deleted environment)", err, controlplane.ErrNotFound)

	// An empty environment id clears it.
	set(tok.ID, dev.ID)
	set(tok.ID, "")
	wantActive(tok.ID, "")
	set(tok.ID, "")
	wantActive(tok.ID, "")
}

func testTouchToken(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	tok := mustCreateToken(t, s, newToken("", "ci"))
	keep := mustCreateToken(t, s, newToken("", "keep"))

	touch := func(at time.Time) {
		t.Helper()
		if err := s.TouchToken(ctx, tok.ID, at); err != nil {
			t.Fatalf("TouchToken: %v", err)
		}
	}
	used := fixtureTime().Add(5 * time.Minute)
	touch(used)
	want := tok
	want.LastUseTime = used
	diff(t, "touched token", want, mustGetToken(t, s, tok.ID))

	later := used.Add(time.Minute + time.Microsecond)
	touch(later)
	want.LastUseTime = later
	diff(t, "token touched later", want, mustGetToken(t, s, tok.ID))

	// A touch that lands out of order does not move the time back.
	touch(used)
	diff(t, "token touched out of order", want, mustGetToken(t, s, tok.ID))
	touch(later) // the same time again is no error
	diff(t, "token touched at the same time", want, mustGetToken(t, s, tok.ID))

	diff(t, "other token", keep, mustGetToken(t, s, keep.ID))
	err := s.TouchToken(ctx, newID(), used)
	wantErr(t, "TouchToken(unknown)", err, controlplane.ErrNotFound)
}

func testCountTokens(t *testing.T, s controlplane.Store) {
	ctx := t.Context()
	if n := mustCountTokens(t, s); n != 0 {
		t.Errorf("CountTokens of a new store = %d, want 0", n)
	}
	org := mustCreateOrg(t, s, "acme")
	first := newToken("", "bootstrap")
	first.RequestID = "bootstrap"
	mustCreateToken(t, s, first)
	revoked := mustCreateToken(t, s, newToken(org.ID, "revoked"))
	mustCreateToken(t, s, newToken(org.ID, "ci"))
	if _, err := s.RevokeToken(ctx, revoked.ID, fixtureTime()); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}

	// Neither a retry nor a failed create adds one.
	retry := newToken("", "bootstrap")
	retry.RequestID = "bootstrap"
	if _, created, err := s.CreateToken(ctx, retry); err != nil || created {
		t.Fatalf("retried CreateToken = created %v, %v; want the stored one", created, err)
	}
	if _, _, err := s.CreateToken(ctx, newToken(newID(), "orphan")); err == nil {
		t.Fatalf("CreateToken in a missing organization succeeded")
	}
	if n := mustCountTokens(t, s); n != 3 {
		t.Errorf("CountTokens = %d, want 3 (revoked ones included)", n)
	}
}

func testRaceTokenRequestID(t *testing.T, s controlplane.Store) {
	org := mustCreateOrg(t, s, "acme")
	ids := make([]string, racers)
	created := make([]bool, racers)
	errs := race(func(i int) error {
		tok := newToken(org.ID, "ci")
		tok.RequestID = "req-1"
		tok.RequestDigest = "digest-1"
		got, c, err := s.CreateToken(t.Context(), tok)
		ids[i], created[i] = got.ID, c
		return err
	})
	wantNoErrors(t, errs)
	if n := countTrue(created); n != 1 {
		t.Errorf("%d callers created, want 1", n)
	}
	toks := allTokens(t, s, "")
	if len(toks) != 1 {
		t.Fatalf("%d tokens, want 1", len(toks))
	}
	for i, id := range ids {
		if id != toks[0].ID {
			t.Errorf("racer %d got token %q, want %q", i, id, toks[0].ID)
		}
	}
	if n := mustCountTokens(t, s); n != 1 {
		t.Errorf("CountTokens = %d, want 1", n)
	}
}
