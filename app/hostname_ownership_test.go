package app_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	metadatav1 "github.com/envplane/envplane/gen/envplane/metadata/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/resolve"
	"github.com/envplane/envplane/services/environment"
)

// challengeServer serves the HTTP challenges a test publishes.
type challengeServer struct {
	mu    sync.Mutex
	files map[string]string // path → body
	*httptest.Server
}

func startChallengeServer(t *testing.T) *challengeServer {
	s := &challengeServer{files: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, ok := s.files[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *challengeServer) set(path, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if body == "" {
		delete(s.files, path)
	} else {
		s.files[path] = body
	}
}

// ownershipWorld is a server whose hostname checks ask a DNS server and an
// HTTP server of the test's, with two organizations and their admin tokens.
type ownershipWorld struct {
	env      *apptest.Env
	p        apptest.Protocol
	dns      *apptest.DNS
	web      *challengeServer
	admin    client
	orgA     *environmentv1.Organization
	orgB     *environmentv1.Organization
	tokA     string
	tokB     string
	asA, asB client
}

func newOwnershipWorld(t *testing.T, p apptest.Protocol) *ownershipWorld {
	d := apptest.StartDNS(t)
	web := startChallengeServer(t)
	_, port, err := net.SplitHostPort(web.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	env := apptest.Start(t, "--dns-resolver="+d.Addr, "--hostname-check-http-port="+port, "--hostname-check-allow-private",
		"--hostname-check-interval=300ms", "--hostname-grace=1500ms", "--api-hostnames=api.envplane.test")
	w := &ownershipWorld{env: env, p: p, dns: d, web: web, admin: env.Client(p)}
	w.orgA, w.orgB = createOrg(t, w.admin, "orga"), createOrg(t, w.admin, "orgb")
	_, w.tokA = env.MintToken(t, &accessv1.CreateTokenRequest{Name: "a", OrganizationId: w.orgA.GetId(), Role: "admin"})
	_, w.tokB = env.MintToken(t, &accessv1.CreateTokenRequest{Name: "b", OrganizationId: w.orgB.GetId(), Role: "admin"})
	w.asA, w.asB = env.ClientWithToken(p, w.tokA), env.ClientWithToken(p, w.tokB)
	return w
}

// routed lists objects with Host host (and X-Environment-Id header, when
// set) as token, and returns the environment the call resolved to.
func (w *ownershipWorld) routed(t *testing.T, token, host, header string) (string, error) {
	t.Helper()
	req := connect.NewRequest(&metadatav1.ListObjectsRequest{})
	req.Header().Set("Host", host)
	if header != "" {
		req.Header().Set(apptest.HeaderEnvironmentID, header)
	}
	resp, err := w.env.MetadataClient(w.p, token).ListObjects(t.Context(), req)
	if err != nil {
		return "", err
	}
	return resp.Header().Get(apptest.HeaderEnvironmentID), nil
}

func (w *ownershipWorld) verify(t *testing.T, c client, id string) (*environmentv1.Environment, error) {
	t.Helper()
	resp, err := c.VerifyHostname(t.Context(), connect.NewRequest(&environmentv1.VerifyHostnameRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetEnvironment(), nil
}

// TestHostnameOwnership is the attack table of hostname ownership over every
// protocol: reserved names and the platform's namespace refused in any
// spelling, revealing nothing of other organizations; a custom domain routes
// only once proven by DNS or HTTP, moves to whoever proves it last, and stops
// routing when its proof lapses past the grace period; a deleted
// environment's generated Host is ENVIRONMENT_NOT_FOUND; disagreeing hints
// are a conflict.
func TestHostnameOwnership(t *testing.T) {
	t.Parallel()
	for _, p := range apptest.Protocols {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			w := newOwnershipWorld(t, p)
			ctx := t.Context()
			a1 := createEnv(t, w.asA, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.orgA.GetId(), Slug: "dev", Driver: "memory"})
			a2 := createEnv(t, w.asA, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.orgA.GetId(), Slug: "web", Driver: "memory"})
			b1 := createEnv(t, w.asB, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.orgB.GetId(), Slug: "dev", Driver: "memory"})

			t.Run("reserved names are refused in any spelling", func(t *testing.T) {
				for _, tc := range []struct{ in, reason string }{
					{"localhost", environment.ReasonHostnameReserved},
					{"LOCALHOST.", environment.ReasonHostnameReserved},
					{"ｌｏｃａｌｈｏｓｔ", environment.ReasonHostnameReserved},
					{"localhost\u3002", environment.ReasonHostnameReserved},     // an ideographic full stop
					{"loca\u00adlhost", environment.ReasonHostnameReserved},     // a soft hyphen, which IDNA maps away
					{"xn--localhost-", environment.ReasonInvalidHostname},       // the A-label of an ASCII name is no valid label
					{"localhost\u200d.test", environment.ReasonInvalidHostname}, // a zero-width joiner
					{"ip6-localhost", environment.ReasonHostnameReserved},
					{"localhost.localdomain", environment.ReasonHostnameReserved},
					{"printer.local", environment.ReasonHostnameReserved},
					{"1.0.0.127.in-addr.arpa", environment.ReasonHostnameReserved},
					{"intranet", environment.ReasonHostnameReserved},
					{"api.envplane.test", environment.ReasonHostnameReserved},
					{"API.EnvPlane.Test.", environment.ReasonHostnameReserved},
					{"127.0.0.1", environment.ReasonInvalidHostname},
					{"[::1]", environment.ReasonInvalidHostname},
					{"localhost:8080", environment.ReasonInvalidHostname},
					{"0x7f.1", environment.ReasonInvalidHostname},
					{"orga-web.localhost", environment.ReasonHostnameInPlatform},
					{"x.orga-dev.LOCALHOST.", environment.ReasonHostnameInPlatform},
					{"ORGA-WEB.ＬＯＣＡＬＨＯＳＴ\u3002", environment.ReasonHostnameInPlatform},
				} {
					for _, c := range []struct {
						who string
						cl  client
					}{{"organization admin", w.asA}, {"platform admin", w.admin}} {
						_, err := c.cl.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
							OrganizationId: w.orgA.GetId(), Slug: "r", Driver: "memory", Hostname: proto.String(tc.in)}))
						wantReason(t, err, tc.reason, "create with "+tc.in+" by "+c.who)
						_, err = c.cl.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: a1.GetId(), Hostname: proto.String(tc.in)}))
						wantReason(t, err, tc.reason, "update to "+tc.in+" by "+c.who)
					}
				}
				if got := getEnv(t, w.admin, a1.GetId()); got.GetHostname() != "orga-dev.localhost" {
					t.Errorf("after refused updates a1's hostname is %q", got.GetHostname())
				}
			})

			t.Run("another organization's namespace reveals nothing", func(t *testing.T) {
				_, errTaken := w.asA.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: a1.GetId(), Hostname: proto.String("orgb-dev.localhost")}))
				_, errFree := w.asA.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{Id: a1.GetId(), Hostname: proto.String("orgb-future.localhost")}))
				wantReason(t, errTaken, environment.ReasonHostnameInPlatform, "orgb-dev.localhost")
				wantReason(t, errFree, environment.ReasonHostnameInPlatform, "orgb-future.localhost")
				if errTaken != nil && errFree != nil && strings.ReplaceAll(errTaken.Error(), "dev", "future") != errFree.Error() {
					t.Errorf("an existing and a missing name answer differently:\n%v\n%v", errTaken, errFree)
				}
				future := createEnv(t, w.asB, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.orgB.GetId(), Slug: "future", Driver: "memory"})
				if future.GetHostname() != "orgb-future.localhost" {
					t.Errorf("orgb's future got %q", future.GetHostname())
				}
			})

			t.Run("generated names never collide across organizations", func(t *testing.T) {
				acme := createOrg(t, w.admin, "acme")
				acmeDev := createOrg(t, w.admin, "acme-dev")
				x1 := createEnv(t, w.admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "dev-x", Driver: "memory"})
				x2 := createEnv(t, w.admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: acmeDev.GetId(), Slug: "x", Driver: "memory"})
				if x1.GetHostname() == x2.GetHostname() || !strings.HasSuffix(x2.GetHostname(), ".localhost") {
					t.Fatalf("acme/dev-x got %q, acme-dev/x got %q: want distinct generated names", x1.GetHostname(), x2.GetHostname())
				}
				for _, e := range []*environmentv1.Environment{x1, x2} {
					if got, err := w.routed(t, w.env.AdminToken(), e.GetHostname(), ""); err != nil || got != e.GetId() {
						t.Errorf("Host %s routes to %q (%v), want %s", e.GetHostname(), got, err, e.GetId())
					}
				}
			})

			t.Run("a custom domain routes once proven by DNS", func(t *testing.T) {
				pending := updateEnv(t, w.asA, &environmentv1.UpdateEnvironmentRequest{Id: a1.GetId(), Hostname: proto.String("Shop.OrgA.Test.")})
				v := pending.GetHostnameVerification()
				if pending.GetHostname() != "shop.orga.test" || v.GetState() != "pending" || v.GetToken() == "" ||
					v.GetDnsName() != "_envplane-challenge.shop.orga.test" || !strings.HasSuffix(v.GetHttpUrl(), "/.well-known/envplane-challenge/"+v.GetToken()) {
					t.Fatalf("after the patch: %s %v", pending.GetHostname(), v)
				}
				_, err := w.routed(t, w.tokA, "shop.orga.test", "")
				wantReason(t, err, resolve.ReasonHostnameNotVerified, "a call on the pending domain")
				_, err = w.routed(t, w.tokA, "shop.orga.test:443", a1.GetId())
				wantReason(t, err, resolve.ReasonHostnameNotVerified, "a call on the pending domain naming the environment too")
				_, err = w.verify(t, w.asA, a1.GetId())
				wantReason(t, err, environment.ReasonHostnameNotVerified, "VerifyHostname before the record")

				w.dns.SetTXT(v.GetDnsName(), "unrelated", v.GetToken())
				got, err := w.verify(t, w.asA, a1.GetId())
				if err != nil || got.GetHostnameVerification().GetState() != "verified" || got.GetHostnameVerification().GetMethod() != "dns" {
					t.Fatalf("VerifyHostname with the record: %v, %v", got.GetHostnameVerification(), err)
				}
				if id, err := w.routed(t, w.tokA, "SHOP.orga.test.:8080", ""); err != nil || id != a1.GetId() {
					t.Fatalf("the verified domain routes to %q (%v), want a1", id, err)
				}
				// Disagreeing hints are a conflict, never a preference.
				_, err = w.routed(t, w.tokA, "shop.orga.test", a2.GetId())
				wantReason(t, err, resolve.ReasonEnvironmentHintsConflict, "Host a1, header a2")
				// To another organization the domain is no hint at all.
				if id, err := w.routed(t, w.tokB, "shop.orga.test", ""); err != nil || id != b1.GetId() {
					t.Errorf("org B on a1's domain resolved %q (%v), want its own default b1", id, err)
				}
			})

			t.Run("a custom domain routes once proven by HTTP", func(t *testing.T) {
				pending := updateEnv(t, w.asA, &environmentv1.UpdateEnvironmentRequest{Id: a2.GetId(), Hostname: proto.String("www.orga.test")})
				token := pending.GetHostnameVerification().GetToken()
				w.dns.SetA("www.orga.test", "127.0.0.1")
				w.web.set("/.well-known/envplane-challenge/"+token, token+"\n")
				got, err := w.verify(t, w.asA, a2.GetId())
				if err != nil || got.GetHostnameVerification().GetMethod() != "http" {
					t.Fatalf("VerifyHostname over HTTP: %v, %v", got.GetHostnameVerification(), err)
				}
				if id, err := w.routed(t, w.tokA, "www.orga.test", ""); err != nil || id != a2.GetId() {
					t.Fatalf("www.orga.test routes to %q (%v), want a2", id, err)
				}
			})

			t.Run("whoever proves ownership last holds the domain", func(t *testing.T) {
				claim := updateEnv(t, w.asB, &environmentv1.UpdateEnvironmentRequest{Id: b1.GetId(), Hostname: proto.String("shop.orga.test")})
				if claim.GetHostnameVerification().GetState() != "pending" {
					t.Fatalf("B's claim: %v", claim.GetHostnameVerification())
				}
				if id, err := w.routed(t, w.tokA, "shop.orga.test", ""); err != nil || id != a1.GetId() {
					t.Fatalf("B's pending claim moved routing: %q, %v", id, err)
				}
				w.dns.SetTXT("_envplane-challenge.shop.orga.test", claim.GetHostnameVerification().GetToken())
				if _, err := w.verify(t, w.asB, b1.GetId()); err != nil {
					t.Fatalf("B proves ownership: %v", err)
				}
				if id, err := w.routed(t, w.tokB, "shop.orga.test", ""); err != nil || id != b1.GetId() {
					t.Errorf("after B's proof the domain routes to %q (%v), want b1", id, err)
				}
				_, err := w.routed(t, w.tokA, "shop.orga.test", a1.GetId())
				wantReason(t, err, resolve.ReasonHostnameNotVerified, "A on the domain it lost")
				if st := getEnv(t, w.asA, a1.GetId()).GetHostnameVerification(); st.GetState() != "pending" || st.GetMessage() == "" {
					t.Errorf("a1 after losing its domain: %v, want pending with a message", st)
				}
			})

			t.Run("a lapsed proof stops routing after the grace period", func(t *testing.T) {
				token := getEnv(t, w.asA, a2.GetId()).GetHostnameVerification().GetToken()
				w.web.set("/.well-known/envplane-challenge/"+token, "")
				start := time.Now()
				var sawGrace bool
				for {
					v := getEnv(t, w.asA, a2.GetId()).GetHostnameVerification()
					if v.GetState() == "lapsed" {
						break
					}
					if g := v.GetGraceExpireTime(); g != nil {
						sawGrace = true
					}
					if g := v.GetGraceExpireTime(); g != nil && time.Until(g.AsTime()) > 500*time.Millisecond {
						if id, err := w.routed(t, w.tokA, "www.orga.test", ""); err != nil || id != a2.GetId() {
							t.Errorf("within the grace period www.orga.test routes to %q (%v), want a2", id, err)
						}
					}
					if time.Since(start) > 15*time.Second {
						t.Fatalf("the proof never lapsed: %v", v)
					}
					time.Sleep(50 * time.Millisecond)
				}
				if !sawGrace {
					t.Errorf("no grace_expire_time was shown while the checks failed")
				}
				_, err := w.routed(t, w.tokA, "www.orga.test", "")
				wantReason(t, err, resolve.ReasonHostnameNotVerified, "a lapsed domain")
			})

			t.Run("a deleted environment's generated Host is not found", func(t *testing.T) {
				gone := createEnv(t, w.asA, &environmentv1.CreateEnvironmentRequest{OrganizationId: w.orgA.GetId(), Slug: "gone", Driver: "memory"})
				if _, err := w.asA.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: gone.GetId()})); err != nil {
					t.Fatal(err)
				}
				_, err := w.routed(t, w.tokA, "orga-gone.localhost", "")
				wantReason(t, err, resolve.ReasonEnvironmentNotFound, "Host of a deleted environment")
			})

			t.Run("operators are trusted", func(t *testing.T) {
				op := updateEnv(t, w.admin, &environmentv1.UpdateEnvironmentRequest{Id: a2.GetId(), Hostname: proto.String("api.acme.test")})
				if v := op.GetHostnameVerification(); v.GetState() != "verified" || v.GetMethod() != "operator" {
					t.Fatalf("a platform admin's hostname: %v", v)
				}
				if id, err := w.routed(t, w.tokA, "api.acme.test", ""); err != nil || id != a2.GetId() {
					t.Errorf("api.acme.test routes to %q (%v), want a2", id, err)
				}
				_, err := w.asA.VerifyHostname(ctx, connect.NewRequest(&environmentv1.VerifyHostnameRequest{Id: a1.GetId(), SkipCheck: true}))
				if connect.CodeOf(err) != connect.CodePermissionDenied {
					t.Errorf("skip_check by an organization token: %v, want PERMISSION_DENIED", err)
				}
				if apierr.Reason(err) != auth.ReasonPlatformAdminRequired {
					t.Errorf("skip_check by an organization token: reason %q", apierr.Reason(err))
				}

				// A claim an operator marks verified is the operator's word:
				// the owner's check of it (which fails, nothing is published)
				// answers that there is nothing to verify and starts no grace
				// period that would lapse it.
				claimed := updateEnv(t, w.asA, &environmentv1.UpdateEnvironmentRequest{Id: a2.GetId(), Hostname: proto.String("marked.acme.test")})
				if claimed.GetHostnameVerification().GetState() != "pending" {
					t.Fatalf("an organization's claim: %v", claimed.GetHostnameVerification())
				}
				marked, err := w.admin.VerifyHostname(ctx, connect.NewRequest(&environmentv1.VerifyHostnameRequest{Id: a2.GetId(), SkipCheck: true}))
				if err != nil || marked.Msg.GetEnvironment().GetHostnameVerification().GetMethod() != "operator" {
					t.Fatalf("skip_check by a platform admin: %v, %v", marked, err)
				}
				_, err = w.asA.VerifyHostname(ctx, connect.NewRequest(&environmentv1.VerifyHostnameRequest{Id: a2.GetId()}))
				wantReason(t, err, environment.ReasonHostnameNothingToVerify, "the owner's check of an operator-verified hostname")
				after := getEnv(t, w.admin, a2.GetId()).GetHostnameVerification()
				if after.GetState() != "verified" || after.GetMethod() != "operator" || after.GetGraceExpireTime() != nil || after.GetNextCheckTime() != nil {
					t.Errorf("after the owner's check the operator-verified hostname is %v; want it untouched, never re-checked", after)
				}
				if id, err := w.routed(t, w.tokA, "marked.acme.test", ""); err != nil || id != a2.GetId() {
					t.Errorf("marked.acme.test routes to %q (%v), want a2", id, err)
				}
			})
		})
	}
}

func wantReason(t *testing.T, err error, reason, what string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: success, want %s", what, reason)
		return
	}
	if got := apierr.Reason(err); got != reason {
		t.Errorf("%s: %v (%s), want %s", what, err, got, reason)
	}
}

// TestPlatformNamespaceSweep: a hostname under the root domain bound before
// the platform namespace existed (another organization's generated name,
// squatted) is taken back at start: the environment gets its own generated
// name, and the organization whose name it was can have it.
func TestPlatformNamespaceSweep(t *testing.T) {
	dir := t.TempDir()
	env := apptest.StartDir(t, dir)
	admin := env.Client(apptest.ConnectProto)
	orgA, orgB := createOrg(t, admin, "orga"), createOrg(t, admin, "orgb")
	squatter := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: orgA.GetId(), Slug: "x"})
	env.Stop(t)

	// What a server before the namespace let org A do, and migration 7 kept.
	store := env.ControlPlane(t)
	if _, err := store.UpdateEnvironment(t.Context(), squatter.GetId(), controlplane.EnvironmentPatch{
		Hostname: proto.String("orgb-future.localhost"),
		Proof:    &controlplane.HostnameProof{State: controlplane.HostnameVerified, Method: controlplane.VerifiedMigrated},
	}); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	env = apptest.StartDir(t, dir)
	admin = env.Client(apptest.ConnectProto)
	deadline := time.Now().Add(5 * time.Second)
	for getEnv(t, admin, squatter.GetId()).GetHostname() != "orga-x.localhost" {
		if time.Now().After(deadline) {
			t.Fatalf("the squatter still holds %q after the start", getEnv(t, admin, squatter.GetId()).GetHostname())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := getEnv(t, admin, squatter.GetId()).GetHostnameVerification(); v.GetState() != "verified" || v.GetMethod() != "generated" {
		t.Errorf("the squatter's new hostname = %v, want verified as generated", v)
	}
	future := createEnv(t, admin, &environmentv1.CreateEnvironmentRequest{OrganizationId: orgB.GetId(), Slug: "future"})
	if future.GetHostname() != "orgb-future.localhost" {
		t.Errorf("org B's future got %q, want its generated orgb-future.localhost", future.GetHostname())
	}
	if !strings.Contains(env.Logs.String(), "not its generated one") {
		t.Errorf("the log does not say the hostname was taken back:\n%s", env.Logs)
	}
}
