package app_test

import (
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/services/environment"
)

func TestOrganizationLifecycle(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		req := &environmentv1.CreateOrganizationRequest{Slug: "acme", DisplayName: "Acme Inc.", RequestId: "create-acme-1"}
		resp, err := c.CreateOrganization(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatalf("CreateOrganization: %v", err)
		}
		acme := resp.Msg.GetOrganization()
		if _, err := uuid.Parse(acme.GetId()); err != nil {
			t.Errorf("id %q is not a UUID: %v", acme.GetId(), err)
		}
		if acme.GetSlug() != "acme" || acme.GetDisplayName() != "Acme Inc." || acme.GetCreateTime() == nil || acme.GetUpdateTime() == nil {
			t.Errorf("CreateOrganization = %v", acme)
		}

		t.Run("retry with the same request_id returns the same organization", func(t *testing.T) {
			resp, err := c.CreateOrganization(ctx, connect.NewRequest(req))
			if err != nil {
				t.Fatalf("CreateOrganization retry: %v", err)
			}
			if diff := cmp.Diff(acme, resp.Msg.GetOrganization(), protocmp.Transform()); diff != "" {
				t.Errorf("retried create (-first +retry):\n%s", diff)
			}
		})
		t.Run("request_id reused for other content", func(t *testing.T) {
			other := clone(req)
			other.DisplayName = "Someone Else"
			_, err := c.CreateOrganization(ctx, connect.NewRequest(other))
			apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonRequestIDReused)
			apptest.WantFieldViolation(t, err, "request_id")
		})
		t.Run("taken slug", func(t *testing.T) {
			_, err := c.CreateOrganization(ctx, connect.NewRequest(&environmentv1.CreateOrganizationRequest{Slug: "acme"}))
			apptest.WantError(t, err, connect.CodeAlreadyExists, environment.ReasonOrganizationSlugTaken)
		})

		got, err := c.GetOrganization(ctx, connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: acme.GetId()}))
		if err != nil {
			t.Fatalf("GetOrganization: %v", err)
		}
		if diff := cmp.Diff(acme, got.Msg.GetOrganization(), protocmp.Transform()); diff != "" {
			t.Errorf("GetOrganization (-created +got):\n%s", diff)
		}
		_, err = c.GetOrganization(ctx, connect.NewRequest(&environmentv1.GetOrganizationRequest{Id: uuid.NewString()}))
		apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonOrganizationNotFound)

		beta := createOrg(t, c, "beta")
		gamma := createOrg(t, c, "gamma")
		want := []string{acme.GetId(), beta.GetId(), gamma.GetId()}

		t.Run("page_size=1 walks every page, oldest first", func(t *testing.T) {
			var ids []string
			token := ""
			for pages := 1; ; pages++ {
				resp, err := c.ListOrganizations(ctx, connect.NewRequest(&environmentv1.ListOrganizationsRequest{PageSize: 1, PageToken: token}))
				if err != nil {
					t.Fatalf("ListOrganizations page %d: %v", pages, err)
				}
				if n := len(resp.Msg.GetOrganizations()); n != 1 {
					t.Fatalf("page %d has %d organizations, want 1", pages, n)
				}
				ids = append(ids, resp.Msg.GetOrganizations()[0].GetId())
				if token = resp.Msg.GetNextPageToken(); token == "" {
					break
				}
				if pages > len(want) {
					t.Fatalf("more pages than organizations: %q", ids)
				}
			}
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("organizations walked (-want +got):\n%s", diff)
			}
		})
		t.Run("one default page", func(t *testing.T) {
			resp, err := c.ListOrganizations(ctx, connect.NewRequest(&environmentv1.ListOrganizationsRequest{}))
			if err != nil {
				t.Fatalf("ListOrganizations: %v", err)
			}
			if diff := cmp.Diff([]*environmentv1.Organization{acme, beta, gamma}, resp.Msg.GetOrganizations(), protocmp.Transform()); diff != "" {
				t.Errorf("ListOrganizations (-want +got):\n%s", diff)
			}
			if resp.Msg.GetNextPageToken() != "" {
				t.Errorf("next_page_token = %q on the last page", resp.Msg.GetNextPageToken())
			}
		})
		t.Run("garbage page token", func(t *testing.T) {
			_, err := c.ListOrganizations(ctx, connect.NewRequest(&environmentv1.ListOrganizationsRequest{PageToken: "not-a-token"}))
			apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonInvalidPageToken)
			apptest.WantFieldViolation(t, err, "page_token")
		})
	})
}

func TestEnvironmentLifecycle(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		acme := createOrg(t, c, "acme")
		beta := createOrg(t, c, "beta")

		// The first environment becomes the default; its hostname is generated.
		dev := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: acme.GetId(), Slug: "dev", Driver: "memory",
		})
		wantDev := &environmentv1.Environment{
			Id: dev.GetId(), OrganizationId: acme.GetId(), Slug: "dev", DisplayName: "dev",
			Type: "development", Driver: "memory", Status: "active", IsDefault: true,
			Hostname: "acme-dev.localhost", DatabaseUrl: "memory:" + dev.GetId(),
			CreateTime: dev.GetCreateTime(), UpdateTime: dev.GetUpdateTime(), ProvisionTime: dev.GetProvisionTime(),
			HostnameVerification: &environmentv1.HostnameVerification{
				State: "verified", Method: "generated", VerifyTime: dev.GetHostnameVerification().GetVerifyTime(),
			},
		}
		if diff := diffEnv(wantDev, dev); diff != "" {
			t.Errorf("created dev (-want +got):\n%s", diff)
		}
		if dev.GetCreateTime() == nil || dev.GetProvisionTime() == nil {
			t.Errorf("dev lacks create_time or provision_time: %v", dev)
		}

		// The second is not the default; sqlite gets its own file.
		stagingReq := &environmentv1.CreateEnvironmentRequest{
			OrganizationId: acme.GetId(), Slug: "staging", DisplayName: "Staging", Type: "staging",
			Driver: "sqlite", Region: "eu-west", StorageLimitMb: 512, RequestId: "create-staging",
		}
		staging := createEnv(t, c, stagingReq)
		if staging.GetIsDefault() || staging.GetStatus() != "active" || staging.GetHostname() != "acme-staging.localhost" ||
			staging.GetDatabaseUrl() != "sqlite:"+staging.GetId() || staging.GetRegion() != "eu-west" || staging.GetStorageLimitMb() != 512 {
			t.Errorf("created staging = %v", staging)
		}
		wantFile(t, env.SQLitePath(staging.GetId()), true)

		t.Run("create retried with the same request_id", func(t *testing.T) {
			again := createEnv(t, c, stagingReq)
			if diff := diffEnv(staging, again); diff != "" {
				t.Errorf("retried create (-first +retry):\n%s", diff)
			}
			other := clone(stagingReq)
			other.Region = "us-east"
			_, err := c.CreateEnvironment(ctx, connect.NewRequest(other))
			apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonRequestIDReused)
		})
		wantOneDefault(t, c, acme.GetId(), "dev")

		// is_default on create moves the default; a custom hostname is normalized.
		preview := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: acme.GetId(), Slug: "preview", Type: "preview", Driver: "memory",
			Hostname: proto.String("Preview.Acme.Example."), IsDefault: proto.Bool(true),
		})
		if !preview.GetIsDefault() || preview.GetHostname() != "preview.acme.example" {
			t.Errorf("created preview = %v", preview)
		}
		wantOneDefault(t, c, acme.GetId(), "preview")

		t.Run("first environment with is_default=false", func(t *testing.T) {
			e := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
				OrganizationId: beta.GetId(), Slug: "dev", Driver: "memory", IsDefault: proto.Bool(false),
			})
			if e.GetIsDefault() || e.GetHostname() != "beta-dev.localhost" {
				t.Errorf("created beta dev = %v", e)
			}
			if got := defaults(listEnvs(t, c, beta.GetId())); len(got) != 0 {
				t.Errorf("beta defaults = %q, want none", got)
			}
		})

		t.Run("list pages", func(t *testing.T) {
			var slugs []string
			token := ""
			for {
				resp, err := c.ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{
					OrganizationId: acme.GetId(), PageSize: 1, PageToken: token,
				}))
				if err != nil {
					t.Fatalf("ListEnvironments: %v", err)
				}
				if len(resp.Msg.GetEnvironments()) != 1 {
					t.Fatalf("page of %d environments, want 1", len(resp.Msg.GetEnvironments()))
				}
				slugs = append(slugs, resp.Msg.GetEnvironments()[0].GetSlug())
				if token = resp.Msg.GetNextPageToken(); token == "" {
					break
				}
				if len(slugs) > 3 {
					t.Fatalf("more pages than environments: %q", slugs)
				}
				// A token belongs to the query it came from.
				_, err = c.ListEnvironments(ctx, connect.NewRequest(&environmentv1.ListEnvironmentsRequest{
					OrganizationId: beta.GetId(), PageSize: 1, PageToken: token,
				}))
				apptest.WantError(t, err, connect.CodeInvalidArgument, environment.ReasonInvalidPageToken)
			}
			if diff := cmp.Diff([]string{"dev", "staging", "preview"}, slugs); diff != "" {
				t.Errorf("environments walked (-want +got):\n%s", diff)
			}
		})

		t.Run("is_default=true on update moves the default", func(t *testing.T) {
			got := updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: staging.GetId(), IsDefault: proto.Bool(true)})
			if !got.GetIsDefault() {
				t.Errorf("updated staging is not the default: %v", got)
			}
			wantOneDefault(t, c, acme.GetId(), "staging")
		})

		t.Run("update changes only the present fields", func(t *testing.T) {
			before := getEnv(t, c, staging.GetId())
			got := updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: staging.GetId(), DisplayName: proto.String("Staging EU")})
			want := clone(before)
			want.DisplayName = "Staging EU"
			if diff := diffEnv(want, got); diff != "" {
				t.Errorf("UpdateEnvironment (-want +got):\n%s", diff)
			}
			if got.GetUpdateTime().AsTime().Before(before.GetUpdateTime().AsTime()) {
				t.Errorf("update_time went back: %v → %v", before.GetUpdateTime().AsTime(), got.GetUpdateTime().AsTime())
			}
			if diff := diffEnv(got, getEnv(t, c, staging.GetId())); diff != "" {
				t.Errorf("GetEnvironment after update (-update +get):\n%s", diff)
			}
		})

		t.Run("suspend and reactivate", func(t *testing.T) {
			got := updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Status: proto.String("suspended")})
			if got.GetStatus() != "suspended" {
				t.Errorf("status after suspend = %q", got.GetStatus())
			}
			if s := getEnv(t, c, dev.GetId()).GetStatus(); s != "suspended" {
				t.Errorf("GetEnvironment status = %q, want suspended", s)
			}
			got = updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: dev.GetId(), Status: proto.String("active")})
			if got.GetStatus() != "active" {
				t.Errorf("status after reactivate = %q", got.GetStatus())
			}
		})

		t.Run("resolve hostname", func(t *testing.T) {
			lookups := []string{"acme-staging.localhost", "ACME-Staging.LocalHost."}
			if portInPath(p) {
				lookups = append(lookups, "acme-staging.localhost:8080")
			}
			for _, h := range lookups {
				resp, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: h}))
				if err != nil {
					t.Errorf("ResolveHostname(%q): %v", h, err)
					continue
				}
				m := resp.Msg
				if m.GetHostname() != "acme-staging.localhost" || m.GetEnvironmentId() != staging.GetId() ||
					m.GetOrganizationId() != acme.GetId() || m.GetEnvironment().GetId() != staging.GetId() {
					t.Errorf("ResolveHostname(%q) = %v", h, m)
				}
			}
			_, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: "nobody.localhost"}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonHostnameNotFound)
		})

		t.Run("memory and sqlite have no credential to rotate", func(t *testing.T) {
			_, err := c.RotateCredential(ctx, connect.NewRequest(&environmentv1.RotateCredentialRequest{Id: staging.GetId()}))
			apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonCredentialNotRotatable)
		})

		prod := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: acme.GetId(), Slug: "prod", Type: "production", Driver: "sqlite",
		})
		wantFile(t, env.SQLitePath(prod.GetId()), true)

		t.Run("delete refuses the default and production without force", func(t *testing.T) {
			for _, e := range []*environmentv1.Environment{staging, prod} {
				_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: e.GetId()}))
				apptest.WantError(t, err, connect.CodeFailedPrecondition, environment.ReasonEnvironmentProtected)
				if got := getEnv(t, c, e.GetId()); got.GetStatus() != "active" {
					t.Errorf("%s after refused delete: status %q", e.GetSlug(), got.GetStatus())
				}
				wantFile(t, env.SQLitePath(e.GetId()), true)
			}
		})

		t.Run("delete with force", func(t *testing.T) {
			for _, e := range []*environmentv1.Environment{prod, staging} {
				if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: e.GetId(), Force: true})); err != nil {
					t.Fatalf("DeleteEnvironment(%s, force): %v", e.GetSlug(), err)
				}
				_, err := c.GetEnvironment(ctx, connect.NewRequest(&environmentv1.GetEnvironmentRequest{Id: e.GetId()}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
				_, err = c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: e.GetHostname()}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonHostnameNotFound)
				wantFile(t, env.SQLitePath(e.GetId()), false)
				wantFile(t, env.SQLitePath(e.GetId())+"-wal", false)
			}
			if got := defaults(listEnvs(t, c, acme.GetId())); len(got) != 0 {
				t.Errorf("defaults after deleting the default = %q, want none", got)
			}
		})

		t.Run("delete an ordinary environment", func(t *testing.T) {
			if _, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId()})); err != nil {
				t.Fatalf("DeleteEnvironment(dev): %v", err)
			}
			_, err := c.DeleteEnvironment(ctx, connect.NewRequest(&environmentv1.DeleteEnvironmentRequest{Id: dev.GetId()}))
			apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonEnvironmentNotFound)
			var slugs []string
			for _, e := range listEnvs(t, c, acme.GetId()) {
				slugs = append(slugs, e.GetSlug())
			}
			if diff := cmp.Diff([]string{"preview"}, slugs); diff != "" {
				t.Errorf("environments left (-want +got):\n%s", diff)
			}
		})

		// The freed slug and hostname can be used again.
		again := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: acme.GetId(), Slug: "staging", Driver: "sqlite"})
		if again.GetId() == staging.GetId() || again.GetHostname() != "acme-staging.localhost" {
			t.Errorf("re-created staging = %v", again)
		}
		if files := env.EnvFiles(t); len(files) == 0 {
			t.Errorf("no database file for the re-created staging")
		}
	})
}
