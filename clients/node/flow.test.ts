// The TypeScript client (@envplane/client) against a real server, once over
// Connect JSON and once over gRPC-Web: organizations, environments, object
// definitions, records isolated per environment, environment selection by
// X-Environment-Id and by Host, optimistic concurrency with etags, and errors
// told apart by their google.rpc.ErrorInfo reason.
//
// clients/node_test.go starts the server, bundles this file and runs it with
// ENVPLANE_URL (http://127.0.0.1:port) and ENVPLANE_TOKEN (a platform-admin
// token) set.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";

import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import type { JsonObject } from "@bufbuild/protobuf";

import { AccessService } from "@envplane/client/envplane/access/v1/access_pb";
import { DataService } from "@envplane/client/envplane/data/v1/data_pb";
import { EnvironmentService } from "@envplane/client/envplane/environment/v1/environment_pb";
import { MetadataService } from "@envplane/client/envplane/metadata/v1/metadata_pb";
import { BadRequestSchema, ErrorInfoSchema } from "@envplane/client/google/rpc/error_details_pb";

const baseUrl = requireEnv("ENVPLANE_URL");
const token = requireEnv("ENVPLANE_TOKEN");
const port = new URL(baseUrl).port;

function requireEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this file through go test -run TestNode ./clients/`);
  }
  return value;
}

// bearer sends `Authorization: Bearer <secret>` on every call of a transport.
function bearer(secret: string): Interceptor {
  return (next) => (req) => {
    req.header.set("Authorization", `Bearer ${secret}`);
    return next(req);
  };
}

// The transports every step runs over, each with its own slugs and hostnames
// so that both flows share one server without meeting.
const transports: { name: string; slug: string; make: (secret: string) => Transport }[] = [
  {
    name: "Connect JSON",
    slug: "node-connect",
    make: (secret) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors: [bearer(secret)] }),
  },
  {
    name: "gRPC-Web",
    slug: "node-grpcweb",
    make: (secret) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(secret)] }),
  },
];

// rejects awaits call, requires it to fail with code and an ErrorInfo of
// reason in the envplane.dev domain, and returns the error for more checks.
async function rejects(call: Promise<unknown>, code: Code, reason: string): Promise<ConnectError> {
  let err: ConnectError;
  try {
    await call;
  } catch (e) {
    err = ConnectError.from(e);
    assert.equal(Code[err.code], Code[code], `code of "${err.message}"`);
    const infos = err.findDetails(ErrorInfoSchema);
    assert.equal(infos.length, 1, `ErrorInfo details of "${err.message}"`);
    assert.equal(infos[0].reason, reason, `reason of "${err.message}"`);
    assert.equal(infos[0].domain, "envplane.dev");
    return err;
  }
  assert.fail(`want ${Code[code]} ${reason}, the call succeeded`);
}

// names returns the name field of each record, in order.
function names(records: JsonObject[]): unknown[] {
  return records.map((r) => r.name);
}

// recordId returns a record's id, failing unless it has one.
function recordId(record: JsonObject | undefined): string {
  const id = record?.id;
  assert.equal(typeof id, "string", `record id of ${JSON.stringify(record)}`);
  return id as string;
}

for (const { name, slug, make } of transports) {
  describe(name, () => {
    const transport = make(token);
    const environments = createClient(EnvironmentService, transport);
    const metadata = createClient(MetadataService, transport);
    const data = createClient(DataService, transport);
    const access = createClient(AccessService, transport);

    // inEnv selects an environment by the X-Environment-Id header.
    const inEnv = (id: string) => ({ headers: { "X-Environment-Id": id } });
    const devHostname = `${slug}-dev.envplane.test`;

    let orgId = "";
    let devId = "";
    let stagingId = "";
    let adaId = "";

    it("creates an organization, retried by requestId without a second one", async () => {
      const req = { slug, displayName: `${name} test`, requestId: `${slug}-org` };
      const { organization } = await environments.createOrganization(req);
      assert.ok(organization?.id);
      assert.equal(organization.slug, slug);
      orgId = organization.id;

      const again = await environments.createOrganization(req);
      assert.equal(again.organization?.id, orgId);
    });

    it("creates dev and staging environments on sqlite", async () => {
      const dev = await environments.createEnvironment({
        organizationId: orgId,
        slug: "dev",
        driver: "sqlite",
        requestId: `${slug}-dev`,
      });
      const staging = await environments.createEnvironment({
        organizationId: orgId,
        slug: "staging",
        type: "staging",
        driver: "sqlite",
        requestId: `${slug}-staging`,
      });
      for (const env of [dev.environment, staging.environment]) {
        assert.equal(env?.status, "active", `${env?.slug}: ${env?.statusMessage}`);
        assert.equal(env.driver, "sqlite");
        assert.equal(env.organizationId, orgId);
      }
      devId = dev.environment!.id;
      stagingId = staging.environment!.id;
      assert.equal(dev.environment?.isDefault, true, "the first environment becomes the default");
      assert.equal(staging.environment?.isDefault, false);

      const { environments: listed } = await environments.listEnvironments({ organizationId: orgId });
      assert.deepEqual(listed.map((e) => e.slug), ["dev", "staging"]);
    });

    it("defines customers in both environments and invoices only in dev", async () => {
      const customers = {
        fields: [
          { name: "name", type: "text", required: true },
          { name: "plan", type: "select", options: ["free", "pro"] },
        ],
      };
      for (const id of [devId, stagingId]) {
        const put = await metadata.putObject({ name: "customers", object: customers }, inEnv(id));
        assert.equal(put.applied, true);
        assert.equal(put.object?.name, "customers");
        assert.deepEqual(put.object?.fields.map((f) => f.name), ["name", "plan"]);

        const again = await metadata.putObject({ name: "customers", object: customers }, inEnv(id));
        assert.equal(again.applied, false, "the same definition again changes nothing");
      }
      await metadata.putObject({ name: "invoices", object: { fields: [{ name: "total", type: "number" }] } }, inEnv(devId));

      const dev = await metadata.listObjects({}, inEnv(devId));
      assert.deepEqual(dev.objects.map((o) => o.name), ["customers", "invoices"]);
      const staging = await metadata.listObjects({}, inEnv(stagingId));
      assert.deepEqual(staging.objects.map((o) => o.name), ["customers"]);
    });

    it("keeps each environment's records in its own database", async () => {
      let echoed = "";
      const ada = await data.createRecord(
        { object: "customers", record: { name: "Ada" } },
        { ...inEnv(devId), onHeader: (h) => (echoed = h.get("X-Environment-Id") ?? "") },
      );
      assert.equal(echoed, devId, "the response names the resolved environment");
      adaId = recordId(ada.record);
      assert.equal(ada.record?.plan, null, "a select left out without a default is null");
      assert.equal(typeof ada.record?.etag, "string");
      await data.createRecord({ object: "customers", record: { name: "Grace", plan: "pro" } }, inEnv(devId));
      await data.createRecord({ object: "customers", record: { name: "Linus" } }, inEnv(stagingId));

      const dev = await data.listRecords({ object: "customers", orderBy: "name", showTotalSize: true }, inEnv(devId));
      assert.deepEqual(names(dev.records), ["Ada", "Grace"]);
      assert.equal(dev.totalSize, 2n);
      const staging = await data.listRecords({ object: "customers", orderBy: "name" }, inEnv(stagingId));
      assert.deepEqual(names(staging.records), ["Linus"]);

      const pro = await data.listRecords({ object: "customers", filter: 'plan = "pro"' }, inEnv(devId));
      assert.deepEqual(names(pro.records), ["Grace"]);

      const got = await data.getRecord({ object: "customers", id: adaId }, inEnv(devId));
      assert.equal(got.record?.name, "Ada");
      await rejects(data.getRecord({ object: "customers", id: adaId }, inEnv(stagingId)), Code.NotFound, "RECORD_NOT_FOUND");
    });

    it("selects dev by its hostname in the Host header alone", async () => {
      // A platform-admin token has no organization default to fall back on.
      await rejects(
        data.listRecords({ object: "customers" }),
        Code.FailedPrecondition,
        "ENVIRONMENT_NOT_RESOLVED",
      );

      const { environment } = await environments.updateEnvironment({ id: devId, hostname: `${devHostname.toUpperCase()}.` });
      assert.equal(environment?.hostname, devHostname, "hostnames are stored normalized");
      const resolved = await environments.resolveHostname({ hostname: devHostname });
      assert.equal(resolved.environmentId, devId);

      let echoed = "";
      const byHost = { headers: { Host: `${devHostname}:${port}` }, onHeader: (h: Headers) => (echoed = h.get("X-Environment-Id") ?? "") };
      const created = await data.createRecord({ object: "customers", record: { name: "Barbara" } }, byHost);
      assert.equal(echoed, devId);
      const listed = await data.listRecords({ object: "customers", orderBy: "name" }, byHost);
      assert.deepEqual(names(listed.records), ["Ada", "Barbara", "Grace"]);
      const got = await data.getRecord({ object: "customers", id: recordId(created.record) }, inEnv(devId));
      assert.equal(got.record?.name, "Barbara", "the record written by Host is in dev");

      // A Host and an X-Environment-Id naming different environments are a conflict, never a preference.
      await rejects(
        data.listRecords({ object: "customers" }, { ...byHost, headers: { ...byHost.headers, "X-Environment-Id": stagingId } }),
        Code.InvalidArgument,
        "ENVIRONMENT_HINTS_CONFLICT",
      );
    });

    it("updates a record with its etag and refuses a stale one", async () => {
      const { record: before } = await data.getRecord({ object: "customers", id: adaId }, inEnv(devId));
      const staleEtag = before?.etag as string;
      assert.ok(staleEtag);

      const { record: after } = await data.updateRecord(
        { object: "customers", id: adaId, record: { plan: "pro" }, etag: staleEtag },
        inEnv(devId),
      );
      assert.equal(after?.plan, "pro");
      assert.equal(after?.name, "Ada");
      assert.notEqual(after?.etag, staleEtag, "an update changes the etag");

      await rejects(
        data.updateRecord({ object: "customers", id: adaId, record: { plan: "free" }, etag: staleEtag }, inEnv(devId)),
        Code.Aborted,
        "ETAG_MISMATCH",
      );
      await rejects(
        data.deleteRecord({ object: "customers", id: adaId, etag: staleEtag }, inEnv(devId)),
        Code.Aborted,
        "ETAG_MISMATCH",
      );
      const { record: kept } = await data.getRecord({ object: "customers", id: adaId }, inEnv(devId));
      assert.equal(kept?.plan, "pro", "a refused write changes nothing");
    });

    it("tells errors apart by their ErrorInfo reason", async () => {
      const notDefined = await rejects(
        metadata.getObject({ name: "invoices" }, inEnv(stagingId)),
        Code.NotFound,
        "OBJECT_NOT_DEFINED",
      );
      assert.equal(notDefined.findDetails(ErrorInfoSchema)[0].metadata.object, "invoices");
      assert.equal(notDefined.metadata.get("X-Environment-Id"), stagingId, "errors name the resolved environment too");
      await rejects(data.listRecords({ object: "invoices" }, inEnv(stagingId)), Code.NotFound, "OBJECT_NOT_DEFINED");

      await rejects(
        environments.updateEnvironment({ id: stagingId, hostname: devHostname }),
        Code.AlreadyExists,
        "HOSTNAME_TAKEN",
      );
      await rejects(
        environments.createEnvironment({ organizationId: orgId, slug: "other", hostname: devHostname }),
        Code.AlreadyExists,
        "HOSTNAME_TAKEN",
      );
      await rejects(
        environments.createEnvironment({ organizationId: orgId, slug: "dev" }),
        Code.AlreadyExists,
        "ENVIRONMENT_SLUG_TAKEN",
      );
      const { environments: listed } = await environments.listEnvironments({ organizationId: orgId });
      assert.deepEqual(listed.map((e) => e.slug), ["dev", "staging"], "a refused create leaves nothing behind");
      await rejects(
        data.listRecords({ object: "customers" }, inEnv(randomUUID())),
        Code.NotFound,
        "ENVIRONMENT_NOT_FOUND",
      );
      const invalid = await rejects(
        environments.createOrganization({ slug: "Not A Slug" }),
        Code.InvalidArgument,
        "VALIDATION_FAILED",
      );
      const fields = invalid.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => v.field));
      assert.deepEqual(fields, ["slug"]);
    });

    it("refuses calls without a valid token", async () => {
      // A well-formed secret of the right length that the server never issued.
      const unknown = token.slice(0, 5) + (token[5] === "A" ? "B" : "A") + token.slice(6);
      const cases = [
        { secret: unknown, reason: "TOKEN_UNKNOWN" },
        { secret: "not-a-token", reason: "TOKEN_MALFORMED" },
      ];
      for (const { secret, reason } of cases) {
        const bad = make(secret);
        const err = await rejects(createClient(AccessService, bad).whoAmI({}), Code.Unauthenticated, reason);
        assert.match(err.metadata.get("WWW-Authenticate") ?? "", /^Bearer /);
        await rejects(
          createClient(DataService, bad).listRecords({ object: "customers" }, inEnv(devId)),
          Code.Unauthenticated,
          reason,
        );
      }

      const who = await access.whoAmI({});
      assert.equal(who.platformAdmin, true, "the real token still works");
    });
  });
}
