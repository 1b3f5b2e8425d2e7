package environment

import (
	"context"
	"errors"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/reqlog"
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
