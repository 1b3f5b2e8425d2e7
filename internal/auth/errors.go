package auth

import (
	"connectrpc.com/connect"

	"github.com/envplane/envplane/internal/apierr"
)

// ErrorInfo reasons of authentication and authorization.
const (
	ReasonTokenMissing          = "TOKEN_MISSING"
	ReasonTokenMalformed        = "TOKEN_MALFORMED"
	ReasonTokenUnknown          = "TOKEN_UNKNOWN"
	ReasonTokenRevoked          = "TOKEN_REVOKED"
	ReasonTokenExpired          = "TOKEN_EXPIRED"
	ReasonPlatformAdminRequired = "PLATFORM_ADMIN_REQUIRED"
	ReasonRoleInsufficient      = "ROLE_INSUFFICIENT"
	ReasonEnvironmentNotAllowed = "ENVIRONMENT_NOT_ALLOWED"
	ReasonTokenLimited          = "TOKEN_ENVIRONMENT_LIMITED"
)

// RequireRole returns PERMISSION_DENIED unless the caller's role is at least min.
func (p *Principal) RequireRole(min string) error {
	if p.HasRole(min) {
		return nil
	}
	role := ""
	if p != nil {
		role = p.Role
	}
	return apierr.New(connect.CodePermissionDenied, ReasonRoleInsufficient,
		"this call needs the "+min+" role; the token has "+role, "required_role", min, "role", role)
}

// RequirePlatformAdmin returns PERMISSION_DENIED unless the caller is a platform admin.
func (p *Principal) RequirePlatformAdmin() error {
	if p != nil && p.PlatformAdmin {
		return nil
	}
	return apierr.New(connect.CodePermissionDenied, ReasonPlatformAdminRequired, "this call needs a platform admin token")
}

// RequireEnvironment returns PERMISSION_DENIED unless the caller may enter
// environmentID (of an organization the caller already sees).
func (p *Principal) RequireEnvironment(environmentID string) error {
	if p.AllowsEnvironment(environmentID) {
		return nil
	}
	return apierr.New(connect.CodePermissionDenied, ReasonEnvironmentNotAllowed,
		"the token is limited to other environments", "environment_id", environmentID)
}

// RequireUnlimited returns PERMISSION_DENIED for a token limited to
// environments: such a token cannot act beyond them (create environments,
// mint unlimited tokens).
func (p *Principal) RequireUnlimited() error {
	if !p.Limited() {
		return nil
	}
	return apierr.New(connect.CodePermissionDenied, ReasonTokenLimited,
		"the token is limited to a list of environments and cannot do this")
}

func unauthenticated(reason, message string) *connect.Error {
	err := apierr.New(connect.CodeUnauthenticated, reason, message)
	err.Meta().Set("WWW-Authenticate", `Bearer realm="envplane"`)
	return err
}
