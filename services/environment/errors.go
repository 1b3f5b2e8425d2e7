package environment

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/dberror"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/provision"
	"github.com/envplane/envplane/internal/reqlog"
)

// ErrorInfo reasons of EnvironmentService.
const (
	ReasonOrganizationNotFound  = "ORGANIZATION_NOT_FOUND"
	ReasonOrganizationSlugTaken = "ORGANIZATION_SLUG_TAKEN"
	ReasonEnvironmentNotFound   = "ENVIRONMENT_NOT_FOUND"
	ReasonEnvironmentSlugTaken  = "ENVIRONMENT_SLUG_TAKEN"
	ReasonHostnameTaken         = "HOSTNAME_TAKEN"
	ReasonHostnameNotFound      = "HOSTNAME_NOT_FOUND"
	ReasonInvalidHostname       = "INVALID_HOSTNAME"
	ReasonDriverNotConfigured   = "DRIVER_NOT_CONFIGURED"
	ReasonDriverNotSupported    = "DRIVER_NOT_SUPPORTED_HERE"
	ReasonDatabaseURLNotAllowed = "DATABASE_URL_NOT_ALLOWED"
	// ReasonDatabaseURLManaged: a brought database is one envplane manages
	// for an environment, or is reached as a superuser.
	ReasonDatabaseURLManaged = "DATABASE_URL_MANAGED"
	// ReasonDatabaseURLInUse: another environment already brought the
	// database.
	ReasonDatabaseURLInUse       = "DATABASE_URL_IN_USE"
	ReasonRequestIDReused        = "REQUEST_ID_REUSED"
	ReasonInvalidPageToken       = "INVALID_PAGE_TOKEN"
	ReasonEnvironmentProtected   = "ENVIRONMENT_PROTECTED"
	ReasonEnvironmentNotFailed   = "ENVIRONMENT_NOT_FAILED"
	ReasonEnvironmentNotReady    = "ENVIRONMENT_NOT_READY"
	ReasonCredentialNotRotatable = "CREDENTIAL_NOT_ROTATABLE"
	ReasonDeprovisionFailed      = "DEPROVISION_FAILED"
	ReasonRotationFailed         = "ROTATION_FAILED"
	ReasonDatabaseUnreachable    = "DATABASE_UNREACHABLE"
)

// toConnect maps a store, hostname or provisioning error to the client-facing
// error. Anything unexpected is logged with the request id and hidden.
func (s *Service) toConnect(ctx context.Context, err error, attrs ...any) error {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, controlplane.ErrOrganizationMissing):
		return organizationNotFound()
	case errors.Is(err, controlplane.ErrOrganizationExists):
		return apierr.New(connect.CodeAlreadyExists, ReasonOrganizationSlugTaken, "an organization with this slug exists")
	case errors.Is(err, controlplane.ErrEnvironmentExists):
		return apierr.New(connect.CodeAlreadyExists, ReasonEnvironmentSlugTaken, "the organization has an environment with this slug")
	case errors.Is(err, controlplane.ErrHostnameTaken):
		return apierr.New(connect.CodeAlreadyExists, ReasonHostnameTaken, "the hostname routes to another environment")
	case errors.Is(err, controlplane.ErrRequestReused):
		return apierr.InvalidArgument(ReasonRequestIDReused, "request_id was already used for a different request",
			apierr.FieldViolation{Field: "request_id", Description: "already used for a request with other content"})
	case errors.Is(err, pagetoken.ErrInvalid):
		return apierr.InvalidArgument(ReasonInvalidPageToken, pagetoken.ErrInvalid.Error(),
			apierr.FieldViolation{Field: "page_token", Description: pagetoken.ErrInvalid.Error()})
	case errors.Is(err, provision.ErrDriverNotSupported):
		return apierr.New(connect.CodeFailedPrecondition, ReasonDriverNotSupported,
			"memory environments keep their data in one server process, and this deployment runs several replicas "+
				"on a shared control plane: use postgres (or sqlite on a shared data dir)")
	case errors.Is(err, provision.ErrDriverNotConfigured):
		return apierr.New(connect.CodeFailedPrecondition, ReasonDriverNotConfigured,
			"this server is not configured to provision environments with this driver")
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	}
	if known := dberror.ControlPlane(err); known != nil {
		reqlog.Logger(ctx, s.log).Error("the control plane's storage is full", attrs...)
		return known
	}
	reqlog.Logger(ctx, s.log).Error("environment service failed", append(attrs, "error", err)...)
	return apierr.Internal()
}

func organizationNotFound() error {
	return apierr.New(connect.CodeNotFound, ReasonOrganizationNotFound, "organization not found")
}

func environmentNotFound() error {
	return apierr.New(connect.CodeNotFound, ReasonEnvironmentNotFound, "environment not found")
}

// notFailed refuses to retry an environment found in status.
func notFailed(status string) error {
	return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentNotFailed,
		"only a failed environment (or one whose provisioning stopped with its server) can be retried; this one is "+status,
		"status", status)
}

// stillProvisioning refuses to retry an environment whose provisioning may
// still be running, until from.
func stillProvisioning(from time.Time) error {
	at := from.UTC().Truncate(time.Second).Format(time.RFC3339)
	return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentNotFailed,
		"the environment is being provisioned; if its server stopped during the run, it can be retried from "+at,
		"status", controlplane.StatusProvisioning, "retry_from", at)
}

// notReady refuses to change the status of an environment found in status.
func notReady(status string) error {
	return apierr.New(connect.CodeFailedPrecondition, ReasonEnvironmentNotReady,
		"only an active or suspended environment can change status; this one is "+status, "status", status)
}

func invalidHostname(field string, err error) error {
	return apierr.InvalidArgument(ReasonInvalidHostname, err.Error(),
		apierr.FieldViolation{Field: field, Description: err.Error()})
}

// notFound maps ErrNotFound to err and passes anything else to toConnect.
func (s *Service) notFound(ctx context.Context, err error, notFound error) error {
	if errors.Is(err, controlplane.ErrNotFound) {
		return notFound
	}
	return s.toConnect(ctx, err)
}
