package environment

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/hostname"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/reqlog"
)

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
