// Package environment implements EnvironmentService: organizations,
// environments, provisioning of each environment's own database and the
// hostname registry.
package environment

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/idempotency"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/ownership"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/reqlog"
	"github.com/envplane/envplane/internal/secrets"
)

// Service implements environmentv1connect.EnvironmentServiceHandler.
type Service struct {
	// started is when this process started, the reset time of the memory
	// environments provisioned before.
	started     time.Time
	store       controlplane.Store
	provisioner *provision.Set
	keyring     *secrets.Keyring
	events      invalidate.Publisher
	rootDomain  string
	checks      HostnameChecks
	log         *slog.Logger
	now         func() time.Time
}

var _ environmentv1connect.EnvironmentServiceHandler = (*Service)(nil)

// New returns the service. rootDomain and checks.APIHostnames must be
// normalized.
func New(store controlplane.Store, provisioner *provision.Set, keyring *secrets.Keyring, events invalidate.Publisher, rootDomain string, checks HostnameChecks, log *slog.Logger) *Service {
	if checks.Checker == nil {
		checks.Checker = &ownership.Checker{}
	}
	if checks.Interval <= 0 {
		checks.Interval = time.Hour
	}
	return &Service{
		checks:      checks,
		store:       store,
		provisioner: provisioner,
		keyring:     keyring,
		events:      events,
		rootDomain:  rootDomain,
		log:         log.With("service", "environment"),
		now:         func() time.Time { return time.Now().UTC() },
		started:     time.Now().UTC(),
	}
}

// enter loads environment id for the caller: an environment of another
// organization is NOT_FOUND, exactly like a missing one; a role below min or
// a token limited to other environments is PERMISSION_DENIED.
func (s *Service) enter(ctx context.Context, id, min string) (controlplane.Environment, error) {
	caller := auth.From(ctx)
	env, err := s.store.GetEnvironment(ctx, id)
	if err != nil {
		return controlplane.Environment{}, s.notFound(ctx, err, environmentNotFound())
	}
	if !caller.InOrganization(env.OrganizationID) {
		return controlplane.Environment{}, environmentNotFound()
	}
	if err := caller.RequireEnvironment(env.ID); err != nil {
		return controlplane.Environment{}, err
	}
	if err := caller.RequireRole(min); err != nil {
		return controlplane.Environment{}, err
	}
	return env, nil
}

// requestDigest fingerprints a create carrying a request_id ("" without one).
func requestDigest(m interface {
	proto.Message
	GetRequestId() string
}, omit ...protoreflect.Name) string {
	if m.GetRequestId() == "" {
		return ""
	}
	return idempotency.Digest(m, omit...)
}

// routingEvents lists what a change of env makes stale: the environment, its
// organization's resolution (default, only environment) and its hostnames,
// old and new.
func routingEvents(env controlplane.Environment, oldHostname string) []invalidate.Event {
	events := []invalidate.Event{
		{Kind: invalidate.KindEnvironment, EnvironmentID: env.ID, OrganizationID: env.OrganizationID},
		{Kind: invalidate.KindOrganization, OrganizationID: env.OrganizationID},
		{Kind: invalidate.KindHostname, Hostname: env.Hostname, EnvironmentID: env.ID},
	}
	if oldHostname != "" && oldHostname != env.Hostname {
		events = append(events, invalidate.Event{Kind: invalidate.KindHostname, Hostname: oldHostname, EnvironmentID: env.ID})
	}
	return events
}

func (s *Service) publish(ctx context.Context, events ...invalidate.Event) {
	if err := s.events.Publish(ctx, events...); err != nil {
		// Caches still expire by TTL; say loudly that they may be stale until then.
		reqlog.Logger(ctx, s.log).Error("publishing invalidation failed; caches stay stale until their TTL", "error", err)
	}
}
