package environment

import (
	"context"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/controlplane"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/reqlog"
)

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
