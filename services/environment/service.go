// Package environment implements EnvironmentService: organizations,
// environments, provisioning of each environment's own database and the
// hostname registry.
package environment

import (
	"context"
	"errors"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/gen/envplane/environment/v1/environmentv1connect"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/hostname"
	"github.com/envplane/envplane/internal/idempotency"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/ownership"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/reqlog"
	"github.com/envplane/envplane/internal/secrets"
)

// provisionTimeout bounds one provisioning run. Provisioning is detached from
// the caller's cancellation so a client that hangs up cannot leave an
// environment stuck in provisioning.
const provisionTimeout = 2 * time.Minute

// recordTimeout bounds the control-plane writes that move an environment into
// provisioning and out of it. They are detached from the caller's
// cancellation too: a client hanging up between the two must not leave the
// environment provisioning with no run to finish it.
const recordTimeout = 30 * time.Second

// abandonedAfter is how long after its last update an environment still
// provisioning was left by a run that can no longer finish it (its server
// stopped mid-run): a run records its outcome within provisionTimeout and
// recordTimeout, and a minute more covers replicas whose clocks disagree.
// RetryProvisioning accepts such an environment as it accepts a failed one.
const abandonedAfter = provisionTimeout + recordTimeout + time.Minute

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

// CreateOrganization implements EnvironmentService.CreateOrganization.
func (s *Service) CreateOrganization(ctx context.Context, req *connect.Request[environmentv1.CreateOrganizationRequest]) (*connect.Response[environmentv1.CreateOrganizationResponse], error) {
	if err := auth.From(ctx).RequirePlatformAdmin(); err != nil {
		return nil, err
	}
	m := req.Msg
	now := s.now()
	org := controlplane.Organization{
		ID:            uuid.Must(uuid.NewV7()).String(),
		Slug:          m.GetSlug(),
		DisplayName:   m.GetDisplayName(),
		RequestID:     m.GetRequestId(),
		RequestDigest: requestDigest(m),
		CreateTime:    now,
		UpdateTime:    now,
	}
	if org.DisplayName == "" {
		org.DisplayName = org.Slug
	}
	stored, created, err := s.store.CreateOrganization(ctx, org)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	if created {
		reqlog.Logger(ctx, s.log).Info("organization created", "organization_id", stored.ID, "slug", stored.Slug)
	}
	return connect.NewResponse(&environmentv1.CreateOrganizationResponse{Organization: organizationToProto(stored)}), nil
}

// GetOrganization implements EnvironmentService.GetOrganization.
func (s *Service) GetOrganization(ctx context.Context, req *connect.Request[environmentv1.GetOrganizationRequest]) (*connect.Response[environmentv1.GetOrganizationResponse], error) {
	if !auth.From(ctx).InOrganization(req.Msg.GetId()) {
		return nil, organizationNotFound()
	}
	org, err := s.store.GetOrganization(ctx, req.Msg.GetId())
	if err != nil {
		return nil, s.notFound(ctx, err, organizationNotFound())
	}
	return connect.NewResponse(&environmentv1.GetOrganizationResponse{Organization: organizationToProto(org)}), nil
}

// ListOrganizations implements EnvironmentService.ListOrganizations: a
// platform admin sees every organization, any other token its own.
func (s *Service) ListOrganizations(ctx context.Context, req *connect.Request[environmentv1.ListOrganizationsRequest]) (*connect.Response[environmentv1.ListOrganizationsResponse], error) {
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), "organizations")
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	if caller := auth.From(ctx); !caller.PlatformAdmin {
		resp := &environmentv1.ListOrganizationsResponse{}
		if after == "" && caller.OrganizationID != "" {
			org, err := s.store.GetOrganization(ctx, caller.OrganizationID)
			if err != nil {
				return nil, s.notFound(ctx, err, organizationNotFound())
			}
			resp.Organizations = append(resp.Organizations, organizationToProto(org))
		}
		return connect.NewResponse(resp), nil
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	// One more than the page tells whether a next page exists.
	orgs, err := s.store.ListOrganizations(ctx, controlplane.Page{After: after, Limit: size + 1})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &environmentv1.ListOrganizationsResponse{}
	if len(orgs) > size {
		orgs = orgs[:size]
		resp.NextPageToken = pagetoken.Encode(orgs[size-1].ID, "organizations")
	}
	for _, o := range orgs {
		resp.Organizations = append(resp.Organizations, organizationToProto(o))
	}
	return connect.NewResponse(resp), nil
}

// CreateEnvironment implements EnvironmentService.CreateEnvironment: it
// registers the environment as provisioning, provisions its database and
// marks it active, or failed with a sanitized message that RetryProvisioning
// can recover from.
func (s *Service) CreateEnvironment(ctx context.Context, req *connect.Request[environmentv1.CreateEnvironmentRequest]) (*connect.Response[environmentv1.CreateEnvironmentResponse], error) {
	m := req.Msg
	caller := auth.From(ctx)
	if !caller.InOrganization(m.GetOrganizationId()) {
		return nil, organizationNotFound()
	}
	if err := caller.RequireRole(auth.RoleAdmin); err != nil {
		return nil, err
	}
	if err := caller.RequireUnlimited(); err != nil {
		return nil, err
	}
	org, err := s.store.GetOrganization(ctx, m.GetOrganizationId())
	if err != nil {
		return nil, s.notFound(ctx, err, organizationNotFound())
	}
	env := controlplane.Environment{
		ID:             uuid.Must(uuid.NewV7()).String(),
		OrganizationID: org.ID,
		Slug:           m.GetSlug(),
		DisplayName:    m.GetDisplayName(),
		Type:           m.GetType(),
		Driver:         m.GetDriver(),
		Status:         controlplane.StatusProvisioning,
		// Nothing is made yet; provision records whether its attempt may
		// have made something.
		ResourcesMayExist: false,
		Region:            m.GetRegion(),
		StorageLimitMB:    m.GetStorageLimitMb(),
		RequestID:         m.GetRequestId(),
		RequestDigest:     requestDigest(m, "database_secret"),
	}
	if env.DisplayName == "" {
		env.DisplayName = env.Slug
	}
	if env.Type == "" {
		env.Type = "development"
	}
	if env.Driver == "" {
		env.Driver = provision.DriverSQLite
	}
	host, err := s.claimHostname(caller, org.Slug, env.Slug, m.Hostname)
	if err != nil {
		return nil, err
	}
	env.Hostname, env.Proof = host.name, host.proof
	var provisioner provision.Provisioner
	if m.GetDatabaseUrl() != "" || m.GetDatabaseSecret() != "" {
		if err := s.bringYourOwn(ctx, &env, m.GetDatabaseUrl(), m.GetDatabaseSecret()); err != nil {
			return nil, err
		}
	} else if provisioner, err = s.provisioner.For(env.Driver); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	mode := controlplane.DefaultIfFirst
	if m.IsDefault != nil {
		mode = controlplane.DefaultNo
		if m.GetIsDefault() {
			mode = controlplane.DefaultYes
		}
	}
	now := s.now()
	env.CreateTime, env.UpdateTime = now, now
	stored, created, err := s.store.CreateEnvironment(ctx, env, mode)
	for attempt := 1; host.generated && errors.Is(err, controlplane.ErrHostnameTaken) && attempt < generatedAttempts; attempt++ {
		// Another organization's slugs made the same name: derive another.
		env.Hostname = s.alternative(host.name, env.ID, attempt)
		stored, created, err = s.store.CreateEnvironment(ctx, env, mode)
	}
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	if !created {
		// A retry of a create that already happened: return what it made.
		return connect.NewResponse(&environmentv1.CreateEnvironmentResponse{Environment: s.environmentToProto(stored)}), nil
	}
	s.publish(ctx, routingEvents(stored, "")...)
	reqlog.Logger(ctx, s.log).Info("environment registered", "environment_id", stored.ID,
		"organization_id", stored.OrganizationID, "driver", stored.Driver, "hostname", stored.Hostname,
		"default", stored.IsDefault, "external_database", stored.ExternalDatabase)
	if stored.ExternalDatabase {
		return connect.NewResponse(&environmentv1.CreateEnvironmentResponse{Environment: s.environmentToProto(stored)}), nil
	}
	result, err := s.provision(ctx, provisioner, stored)
	if err != nil {
		return nil, s.toConnect(ctx, err, "environment_id", stored.ID)
	}
	return connect.NewResponse(&environmentv1.CreateEnvironmentResponse{Environment: s.environmentToProto(result)}), nil
}

// provision runs the driver's provisioner on env (status provisioning) and
// records the outcome: active with its database URL, or failed with a
// sanitized message. The cause goes to the debug log only: it may name files
// or servers.
//
// The caller has moved env to provisioning itself (CreateEnvironment by
// inserting it so, RetryProvisioning by a compare-and-set from failed), so
// this is the only run for env until the outcome is recorded, and that record
// is a compare-and-set from provisioning too. Only DeleteEnvironment takes an
// environment out of provisioning meanwhile; its removal of the database may
// have come before this run made it, so the run then removes what it made and
// reports the environment gone.
//
// The outcome also sets ResourcesMayExist unless this attempt provably made
// nothing; the flag is never cleared, so it stays false only while no attempt
// may have made anything, which is what lets DeleteEnvironment skip the engine.
func (s *Service) provision(ctx context.Context, p provision.Provisioner, env controlplane.Environment) (controlplane.Environment, error) {
	log := reqlog.Logger(ctx, s.log).With("environment_id", env.ID, "driver", env.Driver)
	start := time.Now()
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provisionTimeout)
	result, perr := p.Provision(pctx, env)
	cancel()
	now := s.now()
	patch := controlplane.EnvironmentPatch{IfStatus: []string{controlplane.StatusProvisioning}}
	mayExist := true
	if perr == nil && result.Secret != "" {
		cred, err := s.seal(env.ID, result.Secret, now)
		if err != nil {
			// Without its credential the database is unusable: record a
			// failure, which a retry (with a new secret) can recover from.
			perr = &provision.Error{Public: "could not store the environment's credential", Err: err}
		} else {
			patch.Credential = &cred
		}
	}
	if perr != nil {
		status, message := controlplane.StatusFailed, provision.PublicMessage(perr)
		patch.Status, patch.StatusMessage = &status, &message
		if !provision.CreatedNothing(perr) {
			patch.ResourcesMayExist = &mayExist
		}
		log.Warn("provisioning failed", "status_message", message)
		log.Debug("provisioning failure cause", "error", perr)
	} else {
		status, message := controlplane.StatusActive, ""
		patch.Status, patch.StatusMessage, patch.DatabaseURL, patch.ProvisionTime = &status, &message, &result.DatabaseURL, &now
		patch.ResourcesMayExist = &mayExist
	}
	// The outcome gets a deadline of its own: a run that used up
	// provisionTimeout must still record it, or the environment would stay
	// provisioning, which no retry accepts.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer rcancel()
	updated, err := s.store.UpdateEnvironment(rctx, env.ID, patch)
	switch {
	case err == nil:
	case errors.Is(err, controlplane.ErrNotFound),
		errors.Is(err, controlplane.ErrStatusMismatch) && updated.Status == controlplane.StatusDeleting:
		s.removeOrphan(ctx, p, env, log)
		return controlplane.Environment{}, apierr.New(connect.CodeNotFound, ReasonEnvironmentNotFound,
			"the environment was deleted while it was being provisioned")
	default:
		return controlplane.Environment{}, err
	}
	if perr == nil {
		log.Info("environment provisioned", "duration_ms", time.Since(start).Milliseconds())
	}
	s.publish(rctx,
		invalidate.Event{Kind: invalidate.KindEnvironment, EnvironmentID: env.ID, OrganizationID: env.OrganizationID},
		invalidate.Event{Kind: invalidate.KindDatabase, EnvironmentID: env.ID})
	return updated, nil
}

// removeOrphan removes what a provisioning run made for an environment that
// was deleted while it ran. Deprovisioning twice is harmless, so it does not
// matter whether the delete removed it already.
func (s *Service) removeOrphan(ctx context.Context, p provision.Provisioner, env controlplane.Environment, log *slog.Logger) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provisionTimeout)
	defer cancel()
	if err := p.Deprovision(dctx, env); err != nil {
		log.Error("the environment was deleted while it was being provisioned and removing its database failed; "+
			"it is left behind, named after the environment id", "status_message", provision.PublicMessage(err))
		log.Debug("orphan removal failure cause", "error", err)
		return
	}
	log.Info("the environment was deleted while it was being provisioned; its database is removed")
}

// GetEnvironment implements EnvironmentService.GetEnvironment.
func (s *Service) GetEnvironment(ctx context.Context, req *connect.Request[environmentv1.GetEnvironmentRequest]) (*connect.Response[environmentv1.GetEnvironmentResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleViewer)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&environmentv1.GetEnvironmentResponse{Environment: s.environmentToProto(env)}), nil
}

// ListEnvironments implements EnvironmentService.ListEnvironments.
func (s *Service) ListEnvironments(ctx context.Context, req *connect.Request[environmentv1.ListEnvironmentsRequest]) (*connect.Response[environmentv1.ListEnvironmentsResponse], error) {
	orgID := req.Msg.GetOrganizationId()
	caller := auth.From(ctx)
	if !caller.InOrganization(orgID) {
		return nil, organizationNotFound()
	}
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), "environments", orgID)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	if _, err := s.store.GetOrganization(ctx, orgID); err != nil {
		return nil, s.notFound(ctx, err, organizationNotFound())
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	envs, err := s.store.ListEnvironments(ctx, orgID, controlplane.Page{After: after, Limit: size + 1})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &environmentv1.ListEnvironmentsResponse{}
	if len(envs) > size {
		envs = envs[:size]
		resp.NextPageToken = pagetoken.Encode(envs[size-1].ID, "environments", orgID)
	}
	for _, e := range envs {
		// A token limited to environments lists only those (a page may then
		// hold fewer than page_size; next_page_token still says if more follow).
		if caller.AllowsEnvironment(e.ID) {
			resp.Environments = append(resp.Environments, s.environmentToProto(e))
		}
	}
	return connect.NewResponse(resp), nil
}

// UpdateEnvironment implements EnvironmentService.UpdateEnvironment: only
// the fields present in the request change.
func (s *Service) UpdateEnvironment(ctx context.Context, req *connect.Request[environmentv1.UpdateEnvironmentRequest]) (*connect.Response[environmentv1.UpdateEnvironmentResponse], error) {
	m := req.Msg
	before, err := s.enter(ctx, m.GetId(), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	patch := controlplane.EnvironmentPatch{
		DisplayName:    m.DisplayName,
		IsDefault:      m.IsDefault,
		Region:         m.Region,
		StorageLimitMB: m.StorageLimitMb,
	}
	var host claim
	if m.Hostname != nil && !s.sameHostname(before, m.GetHostname()) {
		org, err := s.store.GetOrganization(ctx, before.OrganizationID)
		if err != nil {
			return nil, s.notFound(ctx, err, environmentNotFound())
		}
		if host, err = s.claimHostname(auth.From(ctx), org.Slug, before.Slug, m.Hostname); err != nil {
			return nil, err
		}
		patch.Hostname, patch.Proof = &host.name, &host.proof
	}
	if m.Status != nil && m.GetStatus() != before.Status {
		if before.Status != controlplane.StatusActive && before.Status != controlplane.StatusSuspended {
			return nil, notReady(before.Status)
		}
		patch.Status = m.Status
		// Checked again in the write: a delete or another status change
		// may have come in between.
		patch.IfStatus = []string{controlplane.StatusActive, controlplane.StatusSuspended}
	}
	after, err := s.store.UpdateEnvironment(ctx, before.ID, patch)
	for attempt := 1; host.generated && errors.Is(err, controlplane.ErrHostnameTaken) && attempt < generatedAttempts; attempt++ {
		alt := s.alternative(host.name, before.ID, attempt)
		patch.Hostname = &alt
		after, err = s.store.UpdateEnvironment(ctx, before.ID, patch)
	}
	if errors.Is(err, controlplane.ErrStatusMismatch) {
		return nil, notReady(after.Status)
	}
	if err != nil {
		return nil, s.notFound(ctx, err, environmentNotFound())
	}
	events := routingEvents(after, before.Hostname)
	if after.StorageLimitMB != before.StorageLimitMB {
		// The limit is the open driver's: every replica reopens it.
		events = append(events, invalidate.Event{Kind: invalidate.KindDatabase, EnvironmentID: after.ID})
	}
	s.publish(ctx, events...)
	reqlog.Logger(ctx, s.log).Info("environment updated", "environment_id", after.ID,
		"hostname", after.Hostname, "status", after.Status, "default", after.IsDefault)
	return connect.NewResponse(&environmentv1.UpdateEnvironmentResponse{Environment: s.environmentToProto(after)}), nil
}

// sameHostname reports whether requested names env's hostname as it is, so
// that patching it unchanged keeps its proof: "" asks for the generated name,
// which env has when the platform made its hostname.
func (s *Service) sameHostname(env controlplane.Environment, requested string) bool {
	if requested == "" {
		return env.Proof.Method == controlplane.VerifiedGenerated
	}
	name, err := hostname.Normalize(requested)
	return err == nil && name == env.Hostname
}

// DeleteEnvironment implements EnvironmentService.DeleteEnvironment. The row
// goes to deleting first, so routing stops before the database is removed; a
// failure in between leaves it deleting, and calling Delete again finishes.
// Deleting wins over a provisioning run in flight (CreateEnvironment or
// RetryProvisioning, on any replica): the run cannot record its outcome on a
// deleting or deleted environment, and removes what it made itself. An
// environment no attempt made anything for (ResourcesMayExist false) is
// removed without asking the engine, so a cluster that was never reached and
// is still down does not keep it, its slug and its hostname.
func (s *Service) DeleteEnvironment(ctx context.Context, req *connect.Request[environmentv1.DeleteEnvironmentRequest]) (*connect.Response[environmentv1.DeleteEnvironmentResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !req.Msg.GetForce() && env.Status != controlplane.StatusDeleting {
		if env.IsDefault {
			return nil, apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentProtected,
				"this is the organization's default environment; make another the default or pass force", "protection", "default")
		}
		if env.Type == "production" {
			return nil, apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentProtected,
				"this is a production environment; pass force to delete it", "protection", "production")
		}
	}
	var provisioner provision.Provisioner
	if !env.ExternalDatabase {
		if provisioner, err = s.provisioner.For(env.Driver); err != nil {
			return nil, s.toConnect(ctx, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provisionTimeout)
	defer cancel()
	deleting := controlplane.StatusDeleting
	patch := controlplane.EnvironmentPatch{Status: &deleting}
	if env.Status == controlplane.StatusFailed {
		// Leaving failed itself, the environment has no provisioning run in
		// flight (a run needs it provisioning), so the flag it carries then
		// is final. A retry that took it over since it was read makes this
		// miss, and the delete goes on as for any other status.
		patch.IfStatus = []string{controlplane.StatusFailed}
	}
	before := env
	env, err = s.store.UpdateEnvironment(ctx, before.ID, patch)
	madeNothing := err == nil && patch.IfStatus != nil && !env.ResourcesMayExist
	if errors.Is(err, controlplane.ErrStatusMismatch) {
		env, err = s.store.UpdateEnvironment(ctx, before.ID, controlplane.EnvironmentPatch{Status: &deleting})
	}
	if err != nil {
		return nil, s.notFound(ctx, err, environmentNotFound())
	}
	s.publish(ctx, append(routingEvents(env, ""), invalidate.Event{Kind: invalidate.KindDatabase, EnvironmentID: env.ID})...)
	if env.ExternalDatabase {
		// The user's own database: envplane forgets it and leaves it alone.
	} else if madeNothing {
		// Every provisioning attempt failed before making anything (the
		// cluster unreachable, say): no need to reach an engine that may
		// still be down.
		reqlog.Logger(ctx, s.log).Debug("no provisioning attempt made anything; the engine is not asked to remove it",
			"environment_id", env.ID)
	} else if err := provisioner.Deprovision(ctx, env); err != nil {
		reqlog.Logger(ctx, s.log).Warn("deprovisioning failed; the environment stays deleting until Delete is retried",
			"environment_id", env.ID, "status_message", provision.PublicMessage(err))
		reqlog.Logger(ctx, s.log).Debug("deprovisioning failure cause", "environment_id", env.ID, "error", err)
		return nil, apierr.New(connect.CodeUnavailable, ReasonDeprovisionFailed,
			provision.PublicMessage(err)+"; the environment is deleting and no longer routed: retry the delete")
	}
	if err := s.store.DeleteEnvironment(ctx, env.ID); err != nil && !errors.Is(err, controlplane.ErrNotFound) {
		return nil, s.toConnect(ctx, err)
	}
	s.publish(ctx, routingEvents(env, "")...)
	reqlog.Logger(ctx, s.log).Info("environment deleted", "environment_id", env.ID, "organization_id", env.OrganizationID)
	return connect.NewResponse(&environmentv1.DeleteEnvironmentResponse{}), nil
}

// ActivateEnvironment implements EnvironmentService.ActivateEnvironment: the
// calling token's session remembers the environment, which data and metadata
// calls then use when they name none.
func (s *Service) ActivateEnvironment(ctx context.Context, req *connect.Request[environmentv1.ActivateEnvironmentRequest]) (*connect.Response[environmentv1.ActivateEnvironmentResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleViewer)
	if err != nil {
		return nil, err
	}
	caller := auth.From(ctx)
	if err := s.store.SetActiveEnvironment(ctx, caller.TokenID, env.ID); err != nil {
		return nil, s.notFound(ctx, err, environmentNotFound())
	}
	s.publish(ctx, invalidate.Event{Kind: invalidate.KindToken, TokenID: caller.TokenID})
	reqlog.Logger(ctx, s.log).Info("environment activated", "environment_id", env.ID, "token_id", caller.TokenID)
	return connect.NewResponse(&environmentv1.ActivateEnvironmentResponse{Environment: s.environmentToProto(env)}), nil
}

// RotateCredential implements EnvironmentService.RotateCredential: the
// engine makes a new secret valid and the old one invalid (a new password
// for the environment's role), the sealed credential is replaced, and every
// routing cache drops the old one. A retry after a failure in between
// converges: the engine does not need the old secret.
func (s *Service) RotateCredential(ctx context.Context, req *connect.Request[environmentv1.RotateCredentialRequest]) (*connect.Response[environmentv1.RotateCredentialResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	notRotatable := func(why string) error {
		return apierr.New(connect.CodeFailedPrecondition, ReasonCredentialNotRotatable, why, "driver", env.Driver)
	}
	if env.ExternalDatabase {
		return nil, notRotatable("the database was brought by you: change its password there, then recreate the environment with the new one")
	}
	if env.Status != controlplane.StatusActive && env.Status != controlplane.StatusSuspended {
		return nil, apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentNotReady,
			"only an active or suspended environment's credential can rotate; this one is "+env.Status, "status", env.Status)
	}
	p, err := s.provisioner.For(env.Driver)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	rotator, ok := p.(provision.Rotator)
	if !ok {
		return nil, notRotatable("environments with the " + env.Driver + " driver have no database credential to rotate")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), provisionTimeout)
	defer cancel()
	current, err := s.open(env)
	if err != nil {
		return nil, s.toConnect(ctx, err, "environment_id", env.ID)
	}
	var now time.Time
	var cred controlplane.Credential
	// store seals and records the new secret. A CommittingRotator runs it
	// under the engine's lock, before the new secret takes effect, so racing
	// rotations cannot leave stored a secret the engine no longer accepts.
	var storeErr error
	store := func(ctx context.Context, secret string) error {
		now = s.now()
		if cred, storeErr = s.seal(env.ID, secret, now); storeErr != nil {
			return storeErr
		}
		updated, err := s.store.UpdateEnvironment(ctx, env.ID, controlplane.EnvironmentPatch{Credential: &cred})
		if err != nil {
			storeErr = err
			return err
		}
		env = updated
		return nil
	}
	if committing, ok := rotator.(provision.CommittingRotator); ok {
		err = committing.RotateAndCommit(ctx, env, current, store)
	} else {
		var secret string
		if secret, err = rotator.Rotate(ctx, env, current); err == nil {
			err = store(ctx, secret)
		}
	}
	if storeErr != nil {
		// The environment was deleted meanwhile, or the store failed: the
		// engine kept the old secret (or a retry converges).
		if errors.Is(storeErr, controlplane.ErrNotFound) {
			return nil, environmentNotFound()
		}
		return nil, s.toConnect(ctx, storeErr, "environment_id", env.ID)
	}
	if err != nil {
		reqlog.Logger(ctx, s.log).Debug("rotation failure cause", "environment_id", env.ID, "error", err)
		// Only a CommittingRotator keeps the old secret valid on failure; a
		// Turso rotation invalidates every token before minting the new one.
		hint := "; the old credential is still valid, retry"
		if _, committing := rotator.(provision.CommittingRotator); !committing {
			hint = "; the database may accept no credential until a rotation succeeds: retry"
		}
		return nil, apierr.New(connect.CodeUnavailable, ReasonRotationFailed, provision.PublicMessage(err)+hint)
	}
	s.publish(ctx, invalidate.Event{Kind: invalidate.KindCredential, EnvironmentID: env.ID, OrganizationID: env.OrganizationID})
	reqlog.Logger(ctx, s.log).Info("credential rotated", "environment_id", env.ID, "key_id", cred.KeyID)
	return connect.NewResponse(&environmentv1.RotateCredentialResponse{
		Environment: s.environmentToProto(env),
		RotateTime:  timestamp(now),
	}), nil
}

// RetryProvisioning implements EnvironmentService.RetryProvisioning.
func (s *Service) RetryProvisioning(ctx context.Context, req *connect.Request[environmentv1.RetryProvisioningRequest]) (*connect.Response[environmentv1.RetryProvisioningResponse], error) {
	env, err := s.enter(ctx, req.Msg.GetId(), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	status := controlplane.StatusProvisioning
	retry := controlplane.EnvironmentPatch{IfStatus: []string{controlplane.StatusFailed}, Status: &status}
	if env.Status == controlplane.StatusProvisioning {
		// Left provisioning by a run that stopped with its server: retried
		// once no run can still be going (and only then).
		cutoff := s.now().Add(-abandonedAfter)
		if !env.UpdateTime.Before(cutoff) {
			return nil, stillProvisioning(env.UpdateTime.Add(abandonedAfter))
		}
		// What the abandoned run made is the environment's to remove, whatever
		// this one makes.
		mayExist := true
		retry.IfStatus, retry.IfUpdatedBefore, retry.ResourcesMayExist = []string{controlplane.StatusProvisioning}, &cutoff, &mayExist
	} else if env.Status != controlplane.StatusFailed {
		return nil, notFailed(env.Status)
	}
	provisioner, err := s.provisioner.For(env.Driver)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	// Concurrent retries, on this replica or another, all read the same
	// environment above; the compare-and-set (of the status, and of the time
	// of the last update for an abandoned run, which the patch moves) lets
	// exactly one of them provision. The others find what it set, as a
	// retry arriving a moment later would.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	env, err = s.store.UpdateEnvironment(wctx, env.ID, retry)
	switch {
	case errors.Is(err, controlplane.ErrStatusMismatch) && env.Status == controlplane.StatusProvisioning:
		return nil, stillProvisioning(env.UpdateTime.Add(abandonedAfter))
	case errors.Is(err, controlplane.ErrStatusMismatch):
		return nil, notFailed(env.Status)
	case err != nil:
		return nil, s.notFound(ctx, err, environmentNotFound())
	}
	result, err := s.provision(ctx, provisioner, env)
	if err != nil {
		return nil, s.toConnect(ctx, err, "environment_id", env.ID)
	}
	return connect.NewResponse(&environmentv1.RetryProvisioningResponse{Environment: s.environmentToProto(result)}), nil
}

// ResolveHostname implements EnvironmentService.ResolveHostname, normalizing
// the hostname exactly as the router normalizes a Host header.
func (s *Service) ResolveHostname(ctx context.Context, req *connect.Request[environmentv1.ResolveHostnameRequest]) (*connect.Response[environmentv1.ResolveHostnameResponse], error) {
	h, ok := hostname.FromHost(req.Msg.GetHostname())
	if !ok {
		return nil, invalidHostname("hostname", errors.New("hostname: not a DNS name that can route to an environment"))
	}
	notFound := apierr.New(connect.CodeNotFound, ReasonHostnameNotFound, "no environment has this hostname", "hostname", h)
	env, err := s.store.GetEnvironmentByHostname(ctx, h)
	if err != nil {
		return nil, s.notFound(ctx, err, notFound)
	}
	caller := auth.From(ctx)
	if !caller.InOrganization(env.OrganizationID) {
		return nil, notFound
	}
	if err := caller.RequireEnvironment(env.ID); err != nil {
		return nil, err
	}
	return connect.NewResponse(&environmentv1.ResolveHostnameResponse{
		Hostname:       h,
		EnvironmentId:  env.ID,
		OrganizationId: env.OrganizationID,
		Environment:    s.environmentToProto(env),
	}), nil
}

// bringYourOwn validates a database the user brings and makes env use it:
// active at once, never provisioned, never dropped by envplane.
func (s *Service) bringYourOwn(ctx context.Context, env *controlplane.Environment, url, secret string) error {
	var validate func(ctx context.Context, url, secret string) error
	switch env.Driver {
	case provision.DriverPostgres:
		validate = provision.ValidatePostgres
	case provision.DriverTurso:
		validate = provision.ValidateTurso
	default:
		return apierr.InvalidArgument(ReasonDatabaseURLNotAllowed,
			"database_url and database_secret bring an existing database and are not accepted for the "+env.Driver+" driver",
			apierr.FieldViolation{Field: "database_url", Description: "not accepted for driver " + env.Driver})
	}
	if url == "" {
		return apierr.InvalidArgument(ReasonDatabaseURLNotAllowed, "database_secret needs a database_url",
			apierr.FieldViolation{Field: "database_url", Description: "required with database_secret"})
	}
	if err := validate(ctx, url, secret); err != nil {
		reqlog.Logger(ctx, s.log).Debug("bring-your-own database check failed", "error", err)
		if errors.Is(err, provision.ErrManagedDatabase) {
			return apierr.InvalidArgument(ReasonDatabaseURLManaged, provision.PublicMessage(err)+": bring a database of your own",
				apierr.FieldViolation{Field: "database_url", Description: "names a database or role envplane manages, or a superuser"})
		}
		return apierr.New(connect.CodeFailedPrecondition, ReasonDatabaseUnreachable,
			provision.PublicMessage(err)+": check database_url and database_secret")
	}
	if inUse, err := s.databaseInUse(ctx, *env, url); err != nil {
		return s.toConnect(ctx, err)
	} else if inUse {
		// Two environments on one database would share its tables: no
		// isolation at all. Asked only once the caller has shown it can
		// reach the database, and naming no one.
		return apierr.InvalidArgument(ReasonDatabaseURLInUse,
			"another environment already uses this database; bring a database of this environment's own",
			apierr.FieldViolation{Field: "database_url", Description: "names a database another environment uses"})
	}
	now := s.now()
	env.ExternalDatabase = true
	env.DatabaseURL = url
	env.Status = controlplane.StatusActive
	env.ProvisionTime = now
	if secret != "" {
		cred, err := s.seal(env.ID, secret, now)
		if err != nil {
			return s.toConnect(ctx, err)
		}
		env.Credential = cred
	}
	return nil
}

// databaseInUse reports whether another environment, of any organization,
// brought the database url names (compared by databaseKey: scheme, user,
// parameters and case do not tell databases apart). A retried create (the
// same organization and request id) is not another environment.
func (s *Service) databaseInUse(ctx context.Context, env controlplane.Environment, url string) (bool, error) {
	key := databaseKey(url)
	if key == "" {
		return false, nil
	}
	inUse := false
	err := controlplane.EachEnvironment(ctx, s.store, func(_ controlplane.Organization, other controlplane.Environment) bool {
		retry := other.OrganizationID == env.OrganizationID && env.RequestID != "" && other.RequestID == env.RequestID
		inUse = other.ExternalDatabase && other.ID != env.ID && !retry && databaseKey(other.DatabaseURL) == key
		return !inUse
	})
	return inUse, err
}

// databaseKey names the database a brought URL reaches: lowercased host,
// port (the scheme's default when absent) and, for PostgreSQL, the database
// name (the user's name when absent, as libpq defaults it). "" when the URL
// cannot be read (validation refuses it then).
func databaseKey(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	port := u.Port()
	switch strings.ToLower(u.Scheme) {
	case "postgres", "postgresql":
		if port == "" {
			port = "5432"
		}
		db := strings.TrimPrefix(u.Path, "/")
		if db == "" {
			db = u.Query().Get("dbname")
		}
		if db == "" {
			db = u.User.Username()
		}
		return "postgres://" + host + ":" + port + "/" + db
	case "libsql", "https", "wss":
		if port == "" {
			port = "443"
		}
	case "http", "ws":
		if port == "" {
			port = "80"
		}
	}
	return "libsql://" + host + ":" + port + u.EscapedPath()
}

// seal encrypts an environment's secret, bound to the environment id so a
// ciphertext copied onto another row does not open.
func (s *Service) seal(environmentID, secret string, now time.Time) (controlplane.Credential, error) {
	sealed, err := s.keyring.Seal([]byte(secret), []byte(environmentID))
	if err != nil {
		return controlplane.Credential{}, err
	}
	return controlplane.Credential{KeyID: sealed.KeyID, Ciphertext: sealed.Ciphertext, RotateTime: now}, nil
}

// open decrypts an environment's secret ("" when it has none).
func (s *Service) open(env controlplane.Environment) (string, error) {
	if len(env.Credential.Ciphertext) == 0 {
		return "", nil
	}
	plain, err := s.keyring.Open(secrets.Sealed{KeyID: env.Credential.KeyID, Ciphertext: env.Credential.Ciphertext}, []byte(env.ID))
	if err != nil {
		return "", err
	}
	return string(plain), nil
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
