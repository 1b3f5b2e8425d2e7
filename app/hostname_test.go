package app_test

import (
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/envplane/envplane/app/apptest"
	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
	"github.com/envplane/envplane/services/environment"
)

// longName returns a valid hostname of exactly n characters ending in
// ".example", made of labels of at most 63 characters.
func longName(n int) string {
	name := "example"
	for len(name) < n {
		name = strings.Repeat("a", min(63, n-len(name)-1)) + "." + name
	}
	return name
}

func TestHostnameNormalization(t *testing.T) {
	t.Parallel()
	label63 := strings.Repeat("b", 63)
	if len(longName(253)) != 253 || len(longName(254)) != 254 {
		t.Fatalf("longName is off: %d, %d", len(longName(253)), len(longName(254)))
	}
	writes := []struct {
		name   string
		in     string
		want   string       // the stored hostname when the write succeeds
		code   connect.Code // otherwise
		reason string
	}{
		{name: "lowercase", in: "Foo.Example", want: "foo.example"},
		{name: "trailing dot", in: "bar.example.", want: "bar.example"},
		{name: "IDN to punycode", in: "bücher.example", want: "xn--bcher-kva.example"},
		{name: "IDN uppercase", in: "MÜNCHEN.Example.", want: "xn--mnchen-3ya.example"},
		{name: "single label", in: "intranet", code: connect.CodeInvalidArgument, reason: environment.ReasonHostnameReserved},
		{name: "253 characters", in: longName(253), want: longName(253)},
		{name: "63-character label", in: label63 + ".example", want: label63 + ".example"},
		{name: "port", in: "port.example:8080", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "IPv4", in: "127.0.0.1", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "IPv6", in: "::1", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "bracketed IPv6", in: "[2001:db8::1]", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "numeric last label", in: "foo.123", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "254 characters", in: longName(254), code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "64-character label", in: "c" + label63 + ".example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "underscore", in: "foo_bar.example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "space", in: "foo bar.example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "leading hyphen", in: "-foo.example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "empty label", in: "foo..example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		{name: "taken", in: "taken.example", code: connect.CodeAlreadyExists, reason: environment.ReasonHostnameTaken},
		{name: "taken but for case", in: "TAKEN.Example", code: connect.CodeAlreadyExists, reason: environment.ReasonHostnameTaken},
		{name: "taken but for a trailing dot", in: "taken.example.", code: connect.CodeAlreadyExists, reason: environment.ReasonHostnameTaken},
		{name: "generated name", in: "Acme-Gen.LOCALHOST", code: connect.CodeInvalidArgument, reason: environment.ReasonHostnameInPlatform},
	}

	forEachProtocol(t, func(t *testing.T, env *apptest.Env, p apptest.Protocol, c client) {
		ctx := t.Context()
		org := createOrg(t, c, "acme")
		taken := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{
			OrganizationId: org.GetId(), Slug: "taken", Driver: "memory", Hostname: proto.String("taken.example"),
		})
		createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "gen", Driver: "memory"})
		// victim is the environment the failing updates aim at.
		victim := createEnv(t, c, &environmentv1.CreateEnvironmentRequest{OrganizationId: org.GetId(), Slug: "victim", Driver: "memory"})

		ids := map[string]string{} // stored hostname → environment id
		for i, tc := range writes {
			t.Run(tc.name, func(t *testing.T) {
				slug := fmt.Sprintf("w%d", i)
				resp, err := c.CreateEnvironment(ctx, connect.NewRequest(&environmentv1.CreateEnvironmentRequest{
					OrganizationId: org.GetId(), Slug: slug, Driver: "memory", Hostname: proto.String(tc.in),
				}))
				if tc.want == "" {
					apptest.WantError(t, err, tc.code, tc.reason)
					if connect.CodeOf(err) == connect.CodeInvalidArgument {
						apptest.WantFieldViolation(t, err, "hostname")
					}
					_, err = c.UpdateEnvironment(ctx, connect.NewRequest(&environmentv1.UpdateEnvironmentRequest{
						Id: victim.GetId(), Hostname: proto.String(tc.in),
					}))
					apptest.WantError(t, err, tc.code, tc.reason)
					if diff := diffEnv(victim, getEnv(t, c, victim.GetId())); diff != "" {
						t.Errorf("a refused update changed the environment (-before +after):\n%s", diff)
					}
					return
				}
				if err != nil {
					t.Fatalf("CreateEnvironment(hostname %q): %v", tc.in, err)
				}
				created := resp.Msg.GetEnvironment()
				if created.GetHostname() != tc.want {
					t.Errorf("created hostname = %q, want %q", created.GetHostname(), tc.want)
				}
				ids[tc.want] = created.GetId()

				// The update path normalizes the same way: move away and back.
				moved := updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: created.GetId(), Hostname: proto.String(slug + ".moved.example")})
				if moved.GetHostname() != slug+".moved.example" {
					t.Errorf("moved hostname = %q", moved.GetHostname())
				}
				back := updateEnv(t, c, &environmentv1.UpdateEnvironmentRequest{Id: created.GetId(), Hostname: proto.String(tc.in)})
				if back.GetHostname() != tc.want {
					t.Errorf("updated hostname = %q, want %q", back.GetHostname(), tc.want)
				}
				// The old name is free again.
				_, err = c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: slug + ".moved.example"}))
				apptest.WantError(t, err, connect.CodeNotFound, environment.ReasonHostnameNotFound)
			})
		}

		lookups := []struct {
			in     string
			want   string // the normalized hostname it resolves to
			code   connect.Code
			reason string
			port   bool // the value holds a colon (see portInPath)
		}{
			{in: "foo.example", want: "foo.example"},
			{in: "FOO.EXAMPLE", want: "foo.example"},
			{in: "foo.example.", want: "foo.example"},
			{in: "foo.example:8080", want: "foo.example", port: true},
			{in: "Foo.Example.:443", want: "foo.example", port: true},
			{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
			{in: "XN--BCHER-KVA.EXAMPLE.", want: "xn--bcher-kva.example"},
			{in: "bücher.example", want: "xn--bcher-kva.example"},
			{in: "BÜCHER.example", want: "xn--bcher-kva.example"},
			{in: "münchen.example:80", want: "xn--mnchen-3ya.example", port: true},
			{in: "Taken.Example.", want: "taken.example"},
			{in: "acme-victim.localhost", want: "acme-victim.localhost"},
			{in: "nobody.example", code: connect.CodeNotFound, reason: environment.ReasonHostnameNotFound},
			{in: "127.0.0.1", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
			{in: "[::1]:8080", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname, port: true},
			{in: "foo.example:http", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname, port: true},
			{in: "foo_bar.example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
			{in: "c" + label63 + ".example", code: connect.CodeInvalidArgument, reason: environment.ReasonInvalidHostname},
		}
		ids["taken.example"] = taken.GetId()
		ids["acme-victim.localhost"] = victim.GetId()
		for _, tc := range lookups {
			if tc.port && !portInPath(p) {
				continue
			}
			t.Run("resolve "+tc.in, func(t *testing.T) {
				resp, err := c.ResolveHostname(ctx, connect.NewRequest(&environmentv1.ResolveHostnameRequest{Hostname: tc.in}))
				if tc.want == "" {
					apptest.WantError(t, err, tc.code, tc.reason)
					return
				}
				if err != nil {
					t.Fatalf("ResolveHostname: %v", err)
				}
				if m := resp.Msg; m.GetHostname() != tc.want || m.GetEnvironmentId() != ids[tc.want] ||
					m.GetEnvironment().GetHostname() != tc.want || m.GetOrganizationId() != org.GetId() {
					t.Errorf("ResolveHostname = %v, want hostname %q of environment %s", m, tc.want, ids[tc.want])
				}
			})
		}
	})
}
