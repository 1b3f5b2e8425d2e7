// Package auth authenticates every call by its API token and answers the
// questions authorization asks of the caller: which organization, which role,
// which environments. The principal travels in the request context only.
package auth

import (
	"context"
	"slices"
	"time"
)

// Roles, weakest first.
const (
	RoleViewer    = "viewer"
	RoleEditor    = "editor"
	RoleDeveloper = "developer"
	RoleAdmin     = "admin"
)

var roleRank = map[string]int{RoleViewer: 1, RoleEditor: 2, RoleDeveloper: 3, RoleAdmin: 4}

// Principal is the authenticated caller: one API token.
type Principal struct {
	TokenID        string
	Name           string
	OrganizationID string // "" for a platform token
	Role           string
	PlatformAdmin  bool
	// EnvironmentIDs limits the token to these environments when not empty.
	EnvironmentIDs []string
	ExpireTime     time.Time
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// From returns the caller of ctx, or nil when the call is not authenticated.
func From(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// InOrganization reports whether the caller may see resources of orgID.
// Resources of other organizations must look exactly like missing ones.
func (p *Principal) InOrganization(orgID string) bool {
	return p != nil && (p.PlatformAdmin || (p.OrganizationID != "" && p.OrganizationID == orgID))
}

// HasRole reports whether the caller's role is at least min.
func (p *Principal) HasRole(min string) bool {
	return p != nil && (p.PlatformAdmin || roleRank[p.Role] >= roleRank[min])
}

// Limited reports whether the token is restricted to a list of environments.
func (p *Principal) Limited() bool {
	return p != nil && !p.PlatformAdmin && len(p.EnvironmentIDs) > 0
}

// AllowsEnvironment reports whether the caller may enter environmentID,
// which the caller must already have checked belongs to a visible
// organization.
func (p *Principal) AllowsEnvironment(environmentID string) bool {
	if p == nil {
		return false
	}
	return !p.Limited() || slices.Contains(p.EnvironmentIDs, environmentID)
}
