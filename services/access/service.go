// Package access implements AccessService: API tokens, the principals of
// every call, and who-am-I.
package access

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	accessv1 "github.com/envplane/envplane/gen/envplane/access/v1"
	"github.com/envplane/envplane/gen/envplane/access/v1/accessv1connect"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/dberror"
	"github.com/envplane/envplane/internal/idempotency"
	"github.com/envplane/envplane/internal/invalidate"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/reqlog"
)

// ErrorInfo reasons of AccessService.
const (
	ReasonTokenNotFound          = "TOKEN_NOT_FOUND"
	ReasonOrganizationNotFound   = "ORGANIZATION_NOT_FOUND"
	ReasonEnvironmentNotInOrg    = "ENVIRONMENT_NOT_IN_ORGANIZATION"
	ReasonPlatformTokenShape     = "PLATFORM_TOKEN_INVALID"
	ReasonRequestIDReused        = "REQUEST_ID_REUSED"
	ReasonInvalidPageToken       = "INVALID_PAGE_TOKEN"
	ReasonOrganizationIDRequired = "ORGANIZATION_ID_REQUIRED"
	ReasonTokenOutlivesCreator   = "TOKEN_OUTLIVES_CREATOR"
)

// Service implements accessv1connect.AccessServiceHandler.
type Service struct {
	store  controlplane.Store
	events invalidate.Publisher
	log    *slog.Logger
}

var _ accessv1connect.AccessServiceHandler = (*Service)(nil)

// New returns the service.
func New(store controlplane.Store, events invalidate.Publisher, log *slog.Logger) *Service {
	return &Service{store: store, events: events, log: log.With("service", "access")}
}

// CreateToken implements AccessService.CreateToken. A token never carries
// more than its creator: only platform admins mint platform tokens, an
// organization admin mints tokens of its own organization, and a token limited
// to environments mints only tokens limited to a subset of them.
func (s *Service) CreateToken(ctx context.Context, req *connect.Request[accessv1.CreateTokenRequest]) (*connect.Response[accessv1.CreateTokenResponse], error) {
	m := req.Msg
	caller := auth.From(ctx)
	spec := controlplane.Token{
		Name:           m.GetName(),
		OrganizationID: m.GetOrganizationId(),
		Role:           m.GetRole(),
		EnvironmentIDs: m.GetEnvironmentIds(),
		RequestID:      m.GetRequestId(),
		CreatedBy:      caller.TokenID,
	}
	if spec.RequestID != "" {
		spec.RequestDigest = idempotency.Digest(m)
	}
	if m.ExpireTime != nil {
		spec.ExpireTime = m.GetExpireTime().AsTime().UTC()
	}
	if !caller.ExpireTime.IsZero() && (spec.ExpireTime.IsZero() || spec.ExpireTime.After(caller.ExpireTime)) {
		return nil, apierr.New(connect.CodePermissionDenied, ReasonTokenOutlivesCreator,
			"a token that expires can only mint tokens expiring no later than itself: set expire_time",
			"max_expire_time", caller.ExpireTime.Format(time.RFC3339))
	}
	if spec.OrganizationID == "" {
		if err := caller.RequirePlatformAdmin(); err != nil {
			return nil, err
		}
		if spec.Role != auth.RoleAdmin || len(spec.EnvironmentIDs) > 0 {
			return nil, apierr.InvalidArgument(ReasonPlatformTokenShape,
				"a platform token (no organization_id) has role admin and no environment limit",
				apierr.FieldViolation{Field: "organization_id", Description: "set it, or ask for role admin without environment_ids"})
		}
		spec.PlatformAdmin = true
	} else {
		if !caller.InOrganization(spec.OrganizationID) {
			return nil, organizationNotFound()
		}
		if _, err := s.store.GetOrganization(ctx, spec.OrganizationID); err != nil {
			if errors.Is(err, controlplane.ErrNotFound) {
				return nil, organizationNotFound()
			}
			return nil, s.internal(ctx, err)
		}
		if err := caller.RequireRole(auth.RoleAdmin); err != nil {
			return nil, err
		}
		if caller.Limited() {
			if len(spec.EnvironmentIDs) == 0 {
				return nil, caller.RequireUnlimited()
			}
			for _, id := range spec.EnvironmentIDs {
				if err := caller.RequireEnvironment(id); err != nil {
					return nil, err
				}
			}
		}
		for i, id := range spec.EnvironmentIDs {
			env, err := s.store.GetEnvironment(ctx, id)
			if errors.Is(err, controlplane.ErrNotFound) || (err == nil && env.OrganizationID != spec.OrganizationID) {
				return nil, apierr.InvalidArgument(ReasonEnvironmentNotInOrg, "environment_ids names an environment the organization does not have",
					apierr.FieldViolation{Field: "environment_ids[" + strconv.Itoa(i) + "]", Description: "not an environment of the organization"})
			}
			if err != nil {
				return nil, s.internal(ctx, err)
			}
		}
	}
	tok, secret, created, err := auth.Mint(ctx, s.store, spec)
	switch {
	case errors.Is(err, controlplane.ErrRequestReused):
		return nil, apierr.InvalidArgument(ReasonRequestIDReused, "request_id was already used for a different request",
			apierr.FieldViolation{Field: "request_id", Description: "already used for a request with other content"})
	case errors.Is(err, controlplane.ErrOrganizationMissing):
		return nil, organizationNotFound()
	case err != nil:
		return nil, s.internal(ctx, err)
	}
	if created {
		reqlog.Logger(ctx, s.log).Info("token created", "token_id", tok.ID, "organization_id", tok.OrganizationID,
			"role", tok.Role, "platform_admin", tok.PlatformAdmin, "created_by", caller.TokenID)
	}
	return connect.NewResponse(&accessv1.CreateTokenResponse{Token: tokenToProto(tok), Secret: secret}), nil
}

// ListTokens implements AccessService.ListTokens: organization admins list
// their organization's tokens, platform admins any organization's or all.
func (s *Service) ListTokens(ctx context.Context, req *connect.Request[accessv1.ListTokensRequest]) (*connect.Response[accessv1.ListTokensResponse], error) {
	caller := auth.From(ctx)
	orgID := req.Msg.GetOrganizationId()
	if orgID == "" && !caller.PlatformAdmin {
		orgID = caller.OrganizationID
	}
	if orgID != "" && !caller.InOrganization(orgID) {
		return nil, organizationNotFound()
	}
	if err := caller.RequireRole(auth.RoleAdmin); err != nil {
		return nil, err
	}
	after, err := pagetoken.Decode(req.Msg.GetPageToken(), "tokens", orgID)
	if err != nil {
		return nil, apierr.InvalidArgument(ReasonInvalidPageToken, err.Error(),
			apierr.FieldViolation{Field: "page_token", Description: err.Error()})
	}
	size := pagetoken.Size(req.Msg.GetPageSize())
	toks, err := s.store.ListTokens(ctx, orgID, controlplane.Page{After: after, Limit: size + 1})
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	resp := &accessv1.ListTokensResponse{}
	if len(toks) > size {
		toks = toks[:size]
		resp.NextPageToken = pagetoken.Encode(toks[size-1].ID, "tokens", orgID)
	}
	for _, t := range toks {
		// A token limited to environments sees only tokens within its limits.
		if withinLimits(caller, t) {
			resp.Tokens = append(resp.Tokens, tokenToProto(t))
		}
	}
	return connect.NewResponse(resp), nil
}

// RevokeToken implements AccessService.RevokeToken. Any token may revoke
// itself; other tokens need an admin of their organization. Revocation takes
// effect on the very next call: every authenticator cache drops the token.
func (s *Service) RevokeToken(ctx context.Context, req *connect.Request[accessv1.RevokeTokenRequest]) (*connect.Response[accessv1.RevokeTokenResponse], error) {
	caller := auth.From(ctx)
	tok, err := s.store.GetToken(ctx, req.Msg.GetId())
	if errors.Is(err, controlplane.ErrNotFound) || (err == nil && !canSee(caller, tok)) {
		return nil, apierr.New(connect.CodeNotFound, ReasonTokenNotFound, "token not found")
	}
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	if tok.ID != caller.TokenID {
		if err := caller.RequireRole(auth.RoleAdmin); err != nil {
			return nil, err
		}
		if !withinLimits(caller, tok) {
			return nil, caller.RequireUnlimited()
		}
		if tok.PlatformAdmin && !caller.PlatformAdmin {
			return nil, caller.RequirePlatformAdmin()
		}
	}
	tok, err = s.store.RevokeToken(ctx, tok.ID, time.Now().UTC())
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	if err := s.events.Publish(ctx, invalidate.Event{Kind: invalidate.KindToken, TokenID: tok.ID}); err != nil {
		reqlog.Logger(ctx, s.log).Error("publishing token revocation failed; caches keep it until their TTL", "token_id", tok.ID, "error", err)
	}
	reqlog.Logger(ctx, s.log).Info("token revoked", "token_id", tok.ID, "revoked_by", caller.TokenID)
	return connect.NewResponse(&accessv1.RevokeTokenResponse{Token: tokenToProto(tok)}), nil
}

// WhoAmI implements AccessService.WhoAmI, reading the session fresh from the
// store so an activation shows at once.
func (s *Service) WhoAmI(ctx context.Context, _ *connect.Request[accessv1.WhoAmIRequest]) (*connect.Response[accessv1.WhoAmIResponse], error) {
	caller := auth.From(ctx)
	tok, err := s.store.GetToken(ctx, caller.TokenID)
	if err != nil {
		return nil, s.internal(ctx, err)
	}
	return connect.NewResponse(&accessv1.WhoAmIResponse{
		TokenId:             tok.ID,
		OrganizationId:      tok.OrganizationID,
		Role:                tok.Role,
		PlatformAdmin:       tok.PlatformAdmin,
		EnvironmentIds:      tok.EnvironmentIDs,
		ActiveEnvironmentId: tok.ActiveEnvironmentID,
	}), nil
}

// withinLimits reports whether tok reaches no environment the caller cannot:
// a token limited to environments manages only tokens limited to a subset.
func withinLimits(caller *auth.Principal, tok controlplane.Token) bool {
	if !caller.Limited() {
		return true
	}
	if len(tok.EnvironmentIDs) == 0 || tok.PlatformAdmin {
		return false
	}
	for _, id := range tok.EnvironmentIDs {
		if !caller.AllowsEnvironment(id) {
			return false
		}
	}
	return true
}

// canSee reports whether caller may see tok: its own organization's tokens,
// or any for a platform admin.
func canSee(caller *auth.Principal, tok controlplane.Token) bool {
	if caller.PlatformAdmin || tok.ID == caller.TokenID {
		return true
	}
	return tok.OrganizationID != "" && caller.InOrganization(tok.OrganizationID)
}

func organizationNotFound() error {
	return apierr.New(connect.CodeNotFound, ReasonOrganizationNotFound, "organization not found")
}

func (s *Service) internal(ctx context.Context, err error) error {
	if known := dberror.ControlPlane(err); known != nil {
		reqlog.Logger(ctx, s.log).Error("the control plane's storage is full")
		return known
	}
	reqlog.Logger(ctx, s.log).Error("access service failed", "error", err)
	return apierr.Internal()
}

func tokenToProto(t controlplane.Token) *accessv1.Token {
	return &accessv1.Token{
		Id:             t.ID,
		Name:           t.Name,
		OrganizationId: t.OrganizationID,
		Role:           t.Role,
		EnvironmentIds: slices.Clone(t.EnvironmentIDs),
		SecretPrefix:   t.SecretPrefix,
		PlatformAdmin:  t.PlatformAdmin,
		CreateTime:     timestamp(t.CreateTime),
		ExpireTime:     timestamp(t.ExpireTime),
		RevokeTime:     timestamp(t.RevokeTime),
		LastUseTime:    timestamp(t.LastUseTime),
	}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
