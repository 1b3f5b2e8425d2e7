package idempotency

import (
	"testing"

	environmentv1 "github.com/envplane/envplane/gen/envplane/environment/v1"
)

func TestDigest(t *testing.T) {
	t.Parallel()
	a := &environmentv1.CreateEnvironmentRequest{OrganizationId: "o", Slug: "dev", RequestId: "r", DatabaseSecret: "s1"}
	b := &environmentv1.CreateEnvironmentRequest{OrganizationId: "o", Slug: "dev", RequestId: "r", DatabaseSecret: "s2"}
	c := &environmentv1.CreateEnvironmentRequest{OrganizationId: "o", Slug: "prod", RequestId: "r"}
	if Digest(a, "database_secret") != Digest(b, "database_secret") {
		t.Error("an omitted field changed the digest")
	}
	if Digest(a) == Digest(b) {
		t.Error("a field that is not omitted did not change the digest")
	}
	if Digest(a, "database_secret") == Digest(c, "database_secret") {
		t.Error("different requests share a digest")
	}
	if a.GetDatabaseSecret() != "s1" {
		t.Error("Digest modified its argument")
	}
}
