// Package resolve decides which environment an environment-scoped call is
// for, with one rule set for every protocol: the request's environment_id,
// then the Host (:authority), then X-Environment-Id, then the caller's
// session, then the organization's default, then its only environment. An
// explicit hint naming an unknown environment is an error, never a
// fall-through to another environment.
package resolve

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/cache"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/hostname"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/reqlog"
)

// HeaderEnvironmentID names an environment on a request and echoes the
// resolved one on the response.
const HeaderEnvironmentID = "X-Environment-Id"

// ErrorInfo reasons of resolution.
const (
	ReasonEnvironmentNotFound     = "ENVIRONMENT_NOT_FOUND"
	ReasonEnvironmentNotResolved  = "ENVIRONMENT_NOT_RESOLVED"
	ReasonEnvironmentSuspended    = "ENVIRONMENT_SUSPENDED"
	ReasonEnvironmentProvisioning = "ENVIRONMENT_PROVISIONING"
	ReasonEnvironmentFailed       = "ENVIRONMENT_FAILED"
	ReasonEnvironmentDeleting     = "ENVIRONMENT_DELETING"
	// ReasonHostnameNotVerified: the Host is a custom hostname of the
	// caller's organization that does not route (yet, or any more).
	ReasonHostnameNotVerified = "HOSTNAME_NOT_VERIFIED"
	// ReasonEnvironmentHintsConflict: two ways of naming the environment
	// (the request's environment_id, the Host, X-Environment-Id) name
	// different ones.
	ReasonEnvironmentHintsConflict = "ENVIRONMENT_HINTS_CONFLICT"
)

// Options are the platform's hostnames, which decide what a Host means.
type Options struct {
	// RootDomain is the platform's namespace (normalized): a Host under it
	// names an environment, or a missing one.
	RootDomain string
	// APIHostnames are the API's own names (normalized): never a hint.
	APIHostnames []string
}

// Source is what resolution reads from the control plane.
type Source interface {
	GetEnvironment(ctx context.Context, id string) (controlplane.Environment, error)
	ListHostnameClaims(ctx context.Context, hostname string) ([]controlplane.Environment, error)
	GetToken(ctx context.Context, id string) (controlplane.Token, error)
	ListEnvironments(ctx context.Context, organizationID string, page controlplane.Page) ([]controlplane.Environment, error)
}

// Cache bounds. Invalidation events drop entries at once; the TTL bounds
// the damage of a missed event. While the control plane cannot be reached,
// environments already known keep serving for up to maxStale.
const (
	cacheSize = 100_000
	cacheTTL  = 10 * time.Second
	maxStale  = 5 * time.Minute
)

// orgRoute is what an organization contributes to resolution.
type orgRoute struct {
	defaultID string // its default environment, if any
	onlyID    string // its environment when it has exactly one
}

// Hints are the ways a request can name its environment.
type Hints struct {
	EnvironmentID string // from the path or the request message
	Host          string // Host header or :authority, as received
	Header        string // X-Environment-Id
}

// Resolver resolves and authorizes environments, caching control-plane reads.
type Resolver struct {
	src      Source
	envs     *cache.Cache[string, *controlplane.Environment]
	hosts    *cache.Cache[string, hostRoute]
	sessions *cache.Cache[string, string] // token id → active environment id
	orgs     *cache.Cache[string, orgRoute]
	// hostnames memoizes hostname.FromHost (IDNA processing allocates):
	// normalization is a pure function, so entries never go stale.
	hostnames *lru.Cache[string, normalized]
	opts      Options
	log       *slog.Logger

	// guard keeps a lookup that raced an invalidation out of the caches
	// (a suspended environment, a moved hostname).
	guard cache.Guard
}

// normalized is what a Host header means: the result of hostname.FromHost,
// ok false also for names that are never a hint (reserved names outside the
// platform's namespace, the API's own hostnames).
type normalized struct {
	name     string
	ok       bool
	platform bool // under the root domain
}

// hostRoute is what the control plane says of a hostname: the environment
// that holds it verified, and the organizations whose claims to it are
// pending or lapsed.
type hostRoute struct {
	id      string // "" = none routes it
	waiting []string
}

// New returns a Resolver reading src and dropping cached entries on events.
func New(src Source, events invalidate.Subscriber, opts Options, log *slog.Logger) *Resolver {
	r := &Resolver{
		src:      src,
		opts:     opts,
		envs:     cache.New[string, *controlplane.Environment](cacheSize, cacheTTL, maxStale),
		hosts:    cache.New[string, hostRoute](cacheSize, cacheTTL, maxStale),
		sessions: cache.New[string, string](cacheSize, cacheTTL, maxStale),
		orgs:     cache.New[string, orgRoute](cacheSize, cacheTTL, maxStale),
		log:      log.With("component", "resolve"),
	}
	r.hostnames, _ = lru.New[string, normalized](10_000)
	events.Subscribe(r.invalidate)
	return r
}

func (r *Resolver) invalidate(ev invalidate.Event) {
	defer r.guard.Invalidate()()
	switch ev.Kind {
	case invalidate.KindAll:
		r.envs.Purge()
		r.hosts.Purge()
		r.sessions.Purge()
		r.orgs.Purge()
	case invalidate.KindEnvironment, invalidate.KindCredential:
		r.envs.Remove(ev.EnvironmentID)
		if ev.OrganizationID != "" {
			r.orgs.Remove(ev.OrganizationID)
		}
	case invalidate.KindHostname:
		r.hosts.Remove(ev.Hostname)
		if ev.EnvironmentID != "" {
			r.envs.Remove(ev.EnvironmentID)
		}
	case invalidate.KindOrganization:
		r.orgs.Remove(ev.OrganizationID)
	case invalidate.KindToken:
		r.sessions.Remove(ev.TokenID)
	}
}

// Resolve returns the environment the call is for, entered by p: it exists,
// the caller may enter it, and it is active.
func (r *Resolver) Resolve(ctx context.Context, h Hints, p *auth.Principal) (controlplane.Environment, error) {
	env, _, err := r.resolve(ctx, h, p)
	if err != nil {
		return controlplane.Environment{}, err
	}
	return *env, nil
}

// resolve is Resolve, also naming the rule that found the environment.
func (r *Resolver) resolve(ctx context.Context, h Hints, p *auth.Principal) (*controlplane.Environment, string, error) {
	env, source, err := r.find(ctx, h, p)
	if errors.Is(err, errNotFound) {
		return nil, "", notFound()
	}
	if err != nil {
		return nil, "", err
	}
	if !p.InOrganization(env.OrganizationID) {
		return nil, "", notFound()
	}
	if err := p.RequireEnvironment(env.ID); err != nil {
		return nil, "", err
	}
	if err := ready(env); err != nil {
		return nil, "", err
	}
	return env, source, nil
}

// find applies the resolution rules and returns the environment with the
// name of the rule that found it. The explicit hints (the request's
// environment_id, the Host, X-Environment-Id) must agree: two naming
// different environments are an error, never a silent preference. Only when
// none names one do the session, the default and the only environment count.
func (r *Resolver) find(ctx context.Context, h Hints, p *auth.Principal) (*controlplane.Environment, string, error) {
	var found *controlplane.Environment
	var source string
	agree := func(env *controlplane.Environment, from string) error {
		if source != "" && env.ID != found.ID {
			return conflict(source, from)
		}
		if source == "" {
			found, source = env, from
		}
		return nil
	}
	if h.EnvironmentID != "" {
		env, err := r.environment(ctx, h.EnvironmentID)
		if err != nil {
			return nil, "", err
		}
		found, source = env, "request"
	}
	if n, ok := r.normalize(h.Host); ok {
		env, named, err := r.byHost(ctx, n, p)
		if err != nil {
			return nil, "", err
		}
		if named {
			if err := agree(env, "host"); err != nil {
				return nil, "", err
			}
		}
	}
	if h.Header != "" {
		// Environment ids are UUIDs. Anything else names no environment and
		// is not looked up: a miss is cached, and the header is the
		// client's to fill, up to the header size limit, with new values.
		if len(h.Header) != len(uuidExample) || uuid.Validate(h.Header) != nil {
			return nil, "header", errNotFound
		}
		env, err := r.environment(ctx, h.Header)
		if err != nil {
			return nil, "header", err
		}
		if err := agree(env, "header"); err != nil {
			return nil, "", err
		}
	}
	if source != "" {
		return found, source, nil
	}
	if p == nil {
		return nil, "", notResolved(false)
	}
	if p.TokenID != "" {
		id, err := r.session(ctx, p.TokenID)
		if err != nil {
			return nil, "", err
		}
		if id != "" {
			env, err := r.environment(ctx, id)
			if !errors.Is(err, errNotFound) {
				return env, "session", err
			}
			// The session's environment is gone: not a hint any more.
		}
	}
	if p.OrganizationID != "" {
		route, err := r.organization(ctx, p.OrganizationID)
		if err != nil {
			return nil, "", err
		}
		for _, c := range []struct{ id, source string }{{route.defaultID, "default"}, {route.onlyID, "only"}} {
			if c.id == "" {
				continue
			}
			env, err := r.environment(ctx, c.id)
			if !errors.Is(err, errNotFound) {
				return env, c.source, err
			}
		}
	}
	return nil, "", notResolved(p.OrganizationID != "")
}

// byHost is what the Host n means to caller p: the environment holding it
// verified (named true), nothing (named false: a Host outside the platform's
// namespace that routes nowhere, or routes to an environment p cannot see,
// which must look the same), or an error: a name under the root domain that
// routes to no environment p can see is ENVIRONMENT_NOT_FOUND, a custom
// hostname of p's organization that is not verified HOSTNAME_NOT_VERIFIED.
//
// The environment's own row must agree that n is its verified hostname: a
// cached hostname entry older than a fresher reading of the environment (the
// hostname moved on, and the notification is still on its way) is read
// again, never trusted, so two hostnames never route one environment.
func (r *Resolver) byHost(ctx context.Context, n normalized, p *auth.Principal) (*controlplane.Environment, bool, error) {
	route, err := r.hostname(ctx, n.name, false)
	if err != nil {
		return nil, false, err
	}
	if route.id != "" {
		env, err := r.environment(ctx, route.id)
		if err == nil && (env.Hostname != n.name || !env.Proof.Routes()) {
			// One of the two entries is stale: read both again.
			r.forget(n.name, route.id)
			if route, err = r.hostname(ctx, n.name, true); err != nil {
				return nil, false, err
			}
			env, err = nil, errNotFound
			if route.id != "" {
				env, err = r.environment(ctx, route.id)
			}
			if err == nil && (env.Hostname != n.name || !env.Proof.Routes()) {
				err = errNotFound // still moving: route nowhere rather than somewhere old
			}
		}
		switch {
		case err == nil && p.InOrganization(env.OrganizationID):
			return env, true, nil
		case err != nil && !errors.Is(err, errNotFound):
			return nil, false, err
		}
	}
	for _, org := range route.waiting {
		if p.InOrganization(org) {
			return nil, false, apierr.New(connect.CodeFailedPrecondition, ReasonHostnameNotVerified,
				"the hostname "+n.name+" does not route: its ownership is not verified (see the environment's hostname_verification, and VerifyHostname)",
				"hostname", n.name)
		}
	}
	if n.platform {
		return nil, false, errNotFound
	}
	return nil, false, nil
}

// conflict is the error of two hints naming different environments.
func conflict(first, second string) *connect.Error {
	return apierr.New(connect.CodeInvalidArgument, ReasonEnvironmentHintsConflict,
		"the "+hintName(first)+" and the "+hintName(second)+" name different environments; name one, or make them agree",
		"first", hintName(first), "second", hintName(second))
}

// hintName is how errors call the hint a rule reads.
func hintName(source string) string {
	switch source {
	case "request":
		return "environment_id"
	case "host":
		return "Host"
	default:
		return HeaderEnvironmentID
	}
}

// uuidExample has the length of every environment id.
const uuidExample = "00000000-0000-0000-0000-000000000000"

// errNotFound is the internal sentinel for a missing environment; Resolve
// turns it into a fresh client error (connect errors carry per-call metadata,
// so one instance must never be shared between calls).
var errNotFound = errors.New("environment not found")

func notFound() *connect.Error {
	return apierr.New(connect.CodeNotFound, ReasonEnvironmentNotFound, "environment not found")
}

// notResolved names every way to pick an environment; the organization's
// default is one only for a token of an organization (a platform-admin token
// has none to take it from).
func notResolved(orgToken bool) *connect.Error {
	ways := "use the /api/v1/environments/{id}/… path or the environment_id field, " +
		"an environment's hostname as Host, the X-Environment-Id header"
	if orgToken {
		ways += ", ActivateEnvironment, or give the organization a default environment"
	} else {
		ways += " or ActivateEnvironment (a platform-admin token has no organization, so no default environment)"
	}
	return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentNotResolved, "no environment named: "+ways)
}

// ready refuses environments that cannot serve calls now.
func ready(env *controlplane.Environment) error {
	switch env.Status {
	case controlplane.StatusActive:
		return nil
	case controlplane.StatusSuspended:
		return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentSuspended, "the environment is suspended", "environment_id", env.ID)
	case controlplane.StatusProvisioning:
		return apierr.New(connect.CodeUnavailable, ReasonEnvironmentProvisioning, "the environment is still being provisioned; retry shortly", "environment_id", env.ID)
	case controlplane.StatusFailed:
		return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentFailed, "the environment's provisioning failed; retry it with RetryProvisioning", "environment_id", env.ID)
	default:
		return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentDeleting, "the environment is being deleted", "environment_id", env.ID)
	}
}

func (r *Resolver) normalize(host string) (normalized, bool) {
	if host == "" {
		return normalized{}, false
	}
	if n, ok := r.hostnames.Get(host); ok {
		return n, n.ok
	}
	var n normalized
	n.name, n.ok = hostname.FromHost(host)
	if n.ok {
		n.platform = hostname.Under(n.name, r.opts.RootDomain)
		// A reserved name (localhost, a single label, the API's own) is
		// never an environment's outside the platform's namespace, whatever
		// a control plane from before the rule holds.
		if !n.platform && hostname.Reserved(n.name, r.opts.APIHostnames) != nil {
			n.ok = false
		}
	}
	r.hostnames.Add(host, n)
	return n, n.ok
}

// forget drops the cached entries of a hostname and an environment that
// disagree with each other.
func (r *Resolver) forget(name, id string) {
	defer r.guard.Invalidate()()
	r.hosts.Remove(name)
	r.envs.Remove(id)
}

// missing is the cached answer for an environment that does not exist.
var missing = &controlplane.Environment{}

// environment returns the environment of id, from the cache when it can.
// The environment is shared: callers never change it.
func (r *Resolver) environment(ctx context.Context, id string) (*controlplane.Environment, error) {
	if env, ok := r.envs.Get(id); ok {
		if env.ID == "" {
			return nil, errNotFound
		}
		return env, nil
	}
	gen := r.guard.Begin()
	row, err := r.src.GetEnvironment(ctx, id)
	switch {
	case errors.Is(err, controlplane.ErrNotFound):
		r.guard.Add(gen, func() { r.envs.Add(id, missing) })
		return nil, errNotFound
	case err != nil:
		if env, ok := r.envs.Stale(id); ok && env.ID != "" {
			r.servedStale(ctx, err)
			return env, nil
		}
		return nil, r.unavailable(ctx, err)
	}
	env := &row
	r.guard.Add(gen, func() { r.envs.Add(id, env) })
	return env, nil
}

// hostname returns the route of a hostname, from the cache unless fresh.
func (r *Resolver) hostname(ctx context.Context, name string, fresh bool) (hostRoute, error) {
	if !fresh {
		if route, ok := r.hosts.Get(name); ok {
			return route, nil
		}
	}
	gen := r.guard.Begin()
	claims, err := r.src.ListHostnameClaims(ctx, name)
	if err != nil {
		if route, ok := r.hosts.Stale(name); ok {
			r.servedStale(ctx, err)
			return route, nil
		}
		return hostRoute{}, r.unavailable(ctx, err)
	}
	var route hostRoute
	var holder controlplane.Environment
	for _, c := range claims {
		if c.Proof.Routes() {
			route.id, holder = c.ID, c
		} else if !slices.Contains(route.waiting, c.OrganizationID) {
			route.waiting = append(route.waiting, c.OrganizationID)
		}
	}
	r.guard.Add(gen, func() {
		r.hosts.Add(name, route)
		if route.id != "" {
			r.envs.Add(holder.ID, &holder)
		}
	})
	return route, nil
}

func (r *Resolver) session(ctx context.Context, tokenID string) (string, error) {
	if id, ok := r.sessions.Get(tokenID); ok {
		return id, nil
	}
	gen := r.guard.Begin()
	tok, err := r.src.GetToken(ctx, tokenID)
	switch {
	case errors.Is(err, controlplane.ErrNotFound):
		return "", nil
	case err != nil:
		if id, ok := r.sessions.Stale(tokenID); ok {
			r.servedStale(ctx, err)
			return id, nil
		}
		return "", r.unavailable(ctx, err)
	}
	r.guard.Add(gen, func() { r.sessions.Add(tokenID, tok.ActiveEnvironmentID) })
	return tok.ActiveEnvironmentID, nil
}

func (r *Resolver) organization(ctx context.Context, orgID string) (orgRoute, error) {
	if route, ok := r.orgs.Get(orgID); ok {
		return route, nil
	}
	gen := r.guard.Begin()
	var route orgRoute
	var after string
	count := 0
	for {
		envs, err := r.src.ListEnvironments(ctx, orgID, controlplane.Page{After: after, Limit: 1000})
		if err != nil {
			if route, ok := r.orgs.Stale(orgID); ok {
				r.servedStale(ctx, err)
				return route, nil
			}
			return orgRoute{}, r.unavailable(ctx, err)
		}
		for _, e := range envs {
			count++
			if e.IsDefault {
				route.defaultID = e.ID
			}
			if count == 1 {
				route.onlyID = e.ID
			}
		}
		if len(envs) < 1000 || route.defaultID != "" && count > 1 {
			break
		}
		after = envs[len(envs)-1].ID
	}
	if count != 1 {
		route.onlyID = ""
	}
	r.guard.Add(gen, func() { r.orgs.Add(orgID, route) })
	return route, nil
}

// servedStale notes that a lookup was answered from the last known good
// value because the control plane failed.
func (r *Resolver) servedStale(ctx context.Context, err error) {
	reqlog.Logger(ctx, r.log).Warn("control plane unreachable; serving the last known routing")
	reqlog.Logger(ctx, r.log).Debug("control plane lookup failure", "error", err)
}

func (r *Resolver) unavailable(ctx context.Context, err error) error {
	reqlog.Logger(ctx, r.log).Error("control plane lookup failed", "error", err)
	return apierr.New(connect.CodeUnavailable, apierr.ReasonControlPlaneUnavailable, "the control plane cannot be reached; retry")
}
