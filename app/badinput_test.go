package app_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/internal/server"
	"github.com/envplane/envplane/services/environment"
)

// snapshot is everything a refused call must leave as it was.
type snapshot struct {
	Orgs  []*environmentv1.Organization
	Envs  map[string][]*environmentv1.Environment // by organization id
	Files []string                                // names in <data-dir>/envs
}

func takeSnapshot(t *testing.T, env *apptest.Env, c client) snapshot {
	t.Helper()
	resp, err := c.ListOrganizations(t.Context(), connect.NewRequest(&environmentv1.ListOrganizationsRequest{PageSize: 1000}))
	if err != nil {
		t.Fatalf("ListOrganizations: %v", err)
	}
	s := snapshot{Orgs: resp.Msg.GetOrganizations(), Envs: map[string][]*environmentv1.Environment{}, Files: env.EnvFiles(t)}
	for _, o := range s.Orgs {
		s.Envs[o.GetId()] = listEnvs(t, c, o.GetId())
	}
	slices.Sort(s.Files)
	return s
}

func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		acme := createOrg(t, c, "acme")
		acmeQA := createOrg(t, c, "acme-qa")
		long := createOrg(t, c, strings.Repeat("l", 63))
		dev := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "dev", Driver: "memory"})
		staging := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: acme.GetId(), Slug: "staging", Driver: "sqlite", RequestId: "rid-1",
		})
		createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "qa-api", Driver: "memory",
			Hostname: proto.String("taken.acme.example")})

		create := func(m *environmentv1.CreateEnvironmentRequest) func(context.Context) error {
			return func(ctx context.Context) error {
				if m.OrganizationId == "" {
					m.OrganizationId = acme.GetId()
				}
				_, err := c.CreateEnvironment(ctx, connect.NewRequest(m))
				return err
			}
		}
		update := func(m *environmentv1.UpdateEnvironmentRequest) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := c.UpdateEnvironment(ctx, connect.NewRequest(m))
				return err
			}
		}
		tests := []struct {
			name   string
			call   func(context.Context) error
			code   connect.Code
			reason string
			field  string // a BadRequest field violation to expect, if any
			port   bool   // the call puts a colon in a REST path (see portInPath)
		}{
			{
				name: "slug with an underscore", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "bad_slug", Driver: "sqlite"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "slug",
			},
			{
				name: "uppercase slug", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "Dev2", Driver: "sqlite"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "slug",
			},
			{
				name: "empty slug", call: create(&environmentv1.CreateEnvironmentRequest{Driver: "sqlite"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "slug",
			},
			{
				name: "64-character slug", call: create(&environmentv1.CreateEnvironmentRequest{Slug: strings.Repeat("s", 64), Driver: "sqlite"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "slug",
			},
			{
				name: "organization id not a UUID", call: create(&environmentv1.CreateEnvironmentRequest{OrganizationId: "acme", Slug: "x"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "organization_id",
			},
			{
				name: "unknown organization", call: create(&environmentv1.CreateEnvironmentRequest{OrganizationId: uuid.NewString(), Slug: "x", Driver: "sqlite"}),
				code: connect.CodeNotFound, reason: environment.ReasonOrganizationNotFound,
			},
			{
				name: "unknown type", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Type: "prod"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "type",
			},
			{
				name: "unknown driver", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Driver: "mysql"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "driver",
			},
			{
				name: "negative storage limit", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", StorageLimitMb: -1}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "storage_limit_mb",
			},
			{
				name: "display name too long", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", DisplayName: strings.Repeat("d", 201)}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "display_name",
			},
			{
				name: "request id with a space", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", RequestId: "a b"}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "request_id",
			},
			{
				name: "duplicate slug", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "staging", Driver: "sqlite"}),
				code: connect.CodeAlreadyExists, reason: environment.ReasonEnvironmentSlugTaken,
			},
			{
				name: "duplicate slug asking to be the default",
				call: create(&environmentv1.CreateEnvironmentRequest{Slug: "staging", Driver: "sqlite", IsDefault: proto.Bool(true)}),
				code: connect.CodeAlreadyExists, reason: environment.ReasonEnvironmentSlugTaken,
			},
			{
				name: "platform hostname asking to be the default",
				call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Driver: "sqlite", Hostname: proto.String("ACME-dev.localhost."), IsDefault: proto.Bool(true)}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonHostnameInPlatform, field: "hostname",
			},
			{
				name: "taken custom hostname asking to be the default",
				call: create(&environmentv1.CreateEnvironmentRequest{OrganizationId: acmeQA.GetId(), Slug: "x", Driver: "sqlite",
					Hostname: proto.String("TAKEN.acme.example."), IsDefault: proto.Bool(true)}),
				code: connect.CodeAlreadyExists, reason: environment.ReasonHostnameTaken,
			},
			{
				name: "reserved hostname", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Driver: "sqlite", Hostname: proto.String("localhost")}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonHostnameReserved, field: "hostname",
			},
			{
				name: "generated hostname label too long",
				call: create(&environmentv1.CreateEnvironmentRequest{OrganizationId: long.GetId(), Slug: strings.Repeat("e", 63), Driver: "sqlite"}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname, field: "hostname",
			},
			{
				name: "invalid custom hostname", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Driver: "sqlite", Hostname: proto.String("x_y.example")}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname, field: "hostname",
			},
			{
				name: "postgres not configured", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "pg", Driver: "postgres", IsDefault: proto.Bool(true)}),
				code: connect.CodeFailedPrecondition, reason: environment.ReasonDriverNotConfigured,
			},
			{
				name: "turso not configured", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "edge", Driver: "turso"}),
				code: connect.CodeFailedPrecondition, reason: environment.ReasonDriverNotConfigured,
			},
			{
				name: "database_url with sqlite", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Driver: "sqlite", DatabaseUrl: "file:/etc/passwd"}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonDatabaseURLNotAllowed, field: "database_url",
			},
			{
				name: "database_url with the default driver", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", DatabaseUrl: "sqlite:elsewhere"}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonDatabaseURLNotAllowed, field: "database_url",
			},
			{
				name: "database_secret with memory", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "x", Driver: "memory", DatabaseSecret: "hunter2"}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonDatabaseURLNotAllowed,
			},
			{
				name: "request id reused for another environment", call: create(&environmentv1.CreateEnvironmentRequest{Slug: "other", Driver: "sqlite", RequestId: "rid-1"}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonRequestIDReused, field: "request_id",
			},
			{
				name: "update of an unknown environment", call: update(&environmentv1.UpdateEnvironmentRequest{Id: uuid.NewString(), DisplayName: proto.String("x")}),
				code: connect.CodeNotFound, reason: environment.ReasonEnvironmentNotFound,
			},
			{
				name: "update with an id that is no UUID", call: update(&environmentv1.UpdateEnvironmentRequest{Id: "dev", DisplayName: proto.String("x")}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "id",
			},
			{
				name: "update to a status clients cannot set", call: update(&environmentv1.UpdateEnvironmentRequest{Id: staging.GetId(), Status: proto.String("deleting")}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "status",
			},
			{
				name: "update to a taken hostname, also asking to be the default",
				call: update(&environmentv1.UpdateEnvironmentRequest{
					Id: staging.GetId(), Hostname: proto.String("taken.acme.example"), IsDefault: proto.Bool(true), DisplayName: proto.String("x"),
				}),
				code: connect.CodeAlreadyExists, reason: environment.ReasonHostnameTaken,
			},
			{
				name: "update to a platform hostname",
				call: update(&environmentv1.UpdateEnvironmentRequest{
					Id: staging.GetId(), Hostname: proto.String("Acme-Dev.localhost"), IsDefault: proto.Bool(true), DisplayName: proto.String("x"),
				}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonHostnameInPlatform, field: "hostname",
			},
			{
				name: "update to an invalid hostname with another field",
				call: update(&environmentv1.UpdateEnvironmentRequest{Id: staging.GetId(), Hostname: proto.String("10.0.0.1"), DisplayName: proto.String("x")}),
				code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname, field: "hostname",
			},
			{
				name: "update to a negative storage limit", call: update(&environmentv1.UpdateEnvironmentRequest{Id: staging.GetId(), StorageLimitMb: proto.Int64(-5)}),
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "storage_limit_mb",
			},
			{
				name: "delete the default without force",
				call: func(ctx context.Context) error {
					_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId()}))
					return err
				},
				code: connect.CodeFailedPrecondition, reason: environment.ReasonEnvironmentProtected,
			},
			{
				name: "delete an unknown environment",
				call: func(ctx context.Context) error {
					_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: uuid.NewString(), Force: true}))
					return err
				},
				code: connect.CodeNotFound, reason: environment.ReasonEnvironmentNotFound,
			},
			{
				name: "retry an active environment",
				call: func(ctx context.Context) error {
					_, err := c.RetryProvisioning(ctx, connect.NewRequest(&environmentv1.RetryProvisioningRequest{Id: staging.GetId()}))
					return err
				},
				code: connect.CodeFailedPrecondition, reason: environment.ReasonEnvironmentNotFailed,
			},
			{
				name: "activate an unknown environment",
				call: func(ctx context.Context) error {
					_, err := c.ActivateEnvironment(ctx, connect.NewRequest(&environmentv1.ActivateEnvironmentRequest{Id: uuid.NewString()}))
					return err
				},
				code: connect.CodeNotFound, reason: environment.ReasonEnvironmentNotFound,
			},
			{
				name: "organization slug with uppercase",
				call: func(ctx context.Context) error {
					_, err := c.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "Acme"}))
					return err
				},
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "slug",
			},
			{
				name: "organization slug taken",
				call: func(ctx context.Context) error {
					_, err := c.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "acme-qa", DisplayName: "Other"}))
					return err
				},
				code: connect.CodeAlreadyExists, reason: environment.ReasonOrganizationSlugTaken,
			},
			{
				name: "environments of an unknown organization",
				call: func(ctx context.Context) error {
					_, err := c.ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{OrganizationId: uuid.NewString()}))
					return err
				},
				code: connect.CodeNotFound, reason: environment.ReasonOrganizationNotFound,
			},
			{
				name: "negative page size",
				call: func(ctx context.Context) error {
					_, err := c.ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{OrganizationId: acme.GetId(), PageSize: -1}))
					return err
				},
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "page_size",
			},
			{
				name: "resolve an empty hostname",
				call: func(ctx context.Context) error {
					_, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{}))
					return err
				},
				code: connect.CodeInvalidArgument, reason: server.ReasonValidation, field: "hostname",
				port: true, // over REST an empty path segment matches no route at all
			},
		}

		before := takeSnapshot(t, env, c)
		if len(before.Files) != 1 {
			t.Fatalf("envs dir holds %q, want staging's database only", before.Files)
		}
		for _, tc := range tests {
			if tc.port && !portInPath(p) {
				continue
			}
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call(t.Context())
				if !apptest.WantError(t, err, tc.code, tc.reason) {
					return
				}
				if tc.field != "" {
					apptest.WantFieldViolation(t, err, tc.field)
				}
				after := takeSnapshot(t, env, c)
				if diff := cmp.Diff(before, after, protocmp.Transform()); diff != "" {
					t.Fatalf("a refused call changed state (-before +after):\n%s", diff)
				}
			})
		}
	})
}
