"""flow_test calls a running envplane server over gRPC with the generated
Python stubs (gen/python): two environments of one organization, each with its
own database, selected by the x-environment-id metadata or by the authority
alone, and the errors a client branches on by their ErrorInfo reason.

    ENVPLANE_ADDR=127.0.0.1:8080 ENVPLANE_TOKEN=$(cat .envplane/admin.token) \\
      PYTHONPATH=gen/python /usr/bin/python3 -m unittest -v clients/python/flow_test.py

ENVPLANE_TOKEN is a platform-admin token. Every run makes its own organization,
so the test runs again against the same server.
"""

import os
import unittest
import uuid

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from envplane.access.v1 import access_pb2, access_pb2_grpc
from envplane.data.v1 import data_pb2, data_pb2_grpc
from envplane.environment.v1 import environment_pb2, environment_pb2_grpc
from envplane.metadata.v1 import metadata_pb2, metadata_pb2_grpc

ADDR = os.environ.get("ENVPLANE_ADDR", "")
TOKEN = os.environ.get("ENVPLANE_TOKEN", "")

# TIMEOUT bounds every call, in seconds: a hung server fails the test.
TIMEOUT = 30

# ENVIRONMENT_HEADER names the environment of a call and, on the answer,
# the environment the server resolved.
ENVIRONMENT_HEADER = "x-environment-id"

# DOMAIN is the ErrorInfo domain of every envplane error.
DOMAIN = "envplane.dev"


def channel(authority=None):
    """channel opens a plaintext channel to ADDR, sending authority as the
    :authority (the Host envplane routes by) instead of ADDR when given. No
    proxy from the environment: the server is reached directly."""
    options = [("grpc.enable_http_proxy", 0)]
    if authority:
        options.append(("grpc.default_authority", authority))
    return grpc.insecure_channel(ADDR, options=options)


def metadata(token=TOKEN, environment_id=None):
    """metadata is what a call sends besides its message: the bearer token
    and, when given, the environment."""
    md = []
    if token is not None:
        md.append(("authorization", "Bearer " + token))
    if environment_id:
        md.append((ENVIRONMENT_HEADER, environment_id))
    return md


def record(**fields):
    """record builds the google.protobuf.Struct a record travels in."""
    s = struct_pb2.Struct()
    s.update(fields)
    return s


def header(call, key):
    """header returns the value of key in an answer's initial metadata, or None."""
    return dict(call.initial_metadata() or ()).get(key)


def trailer(err, key):
    """trailer returns the value of key in a failed call's trailing metadata, or None."""
    return dict(err.trailing_metadata() or ()).get(key)


def error_info(err):
    """error_info decodes the google.rpc.Status of a failed call from its
    grpc-status-details-bin trailer and returns its ErrorInfo (None when
    there is none). The Status must agree with the call's own code."""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        if status.code != err.code().value[0]:
            raise AssertionError(f"status details say code {status.code}, the call says {err.code()}")
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info
    return None


class FlowTest(unittest.TestCase):
    """FlowTest shares one organization with two sqlite environments: dev
    defines customers and notes, staging only customers. Each test adds what
    it changes to that world and no test depends on another."""

    @classmethod
    def setUpClass(cls):
        if not ADDR or not TOKEN:
            raise RuntimeError("set ENVPLANE_ADDR (host:port) and ENVPLANE_TOKEN (a platform-admin token)")
        cls.channel = channel()
        cls.environments = environment_pb2_grpc.EnvironmentServiceStub(cls.channel)
        cls.metadata_service = metadata_pb2_grpc.MetadataServiceStub(cls.channel)
        cls.data = data_pb2_grpc.DataServiceStub(cls.channel)

        cls.run_id = uuid.uuid4().hex[:10]
        cls.org = cls.create_organization()
        cls.dev = cls.create_environment("dev")
        cls.staging = cls.create_environment("staging")

        customers = metadata_pb2.ObjectDefinition(
            fields=[
                metadata_pb2.Field(name="name", type="text", required=True),
                metadata_pb2.Field(name="plan", type="select", options=["free", "pro"]),
            ]
        )
        notes = metadata_pb2.ObjectDefinition(fields=[metadata_pb2.Field(name="body", type="text")])
        for env, name, definition in [
            (cls.dev, "customers", customers),
            (cls.staging, "customers", customers),
            (cls.dev, "notes", notes),
        ]:
            put = cls.metadata_service.PutObject(
                metadata_pb2.PutObjectRequest(name=name, object=definition),
                metadata=metadata(environment_id=env.id),
                timeout=TIMEOUT,
            )
            assert put.applied and put.object.version == 1, put

        cls.dev_ids = {cls.create_customer(cls.dev, name) for name in ("Ada", "Grace")}
        cls.staging_ids = {cls.create_customer(cls.staging, "Linus")}

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    @classmethod
    def create_organization(cls):
        """create_organization creates this run's organization; the same
        request id each time, so a second call returns the first's."""
        return cls.environments.CreateOrganization(
            environment_pb2.CreateOrganizationRequest(
                slug="py-" + cls.run_id,
                display_name="Python flow",
                request_id="py-org-" + cls.run_id,
            ),
            metadata=metadata(),
            timeout=TIMEOUT,
        ).organization

    @classmethod
    def create_environment(cls, slug):
        env = cls.environments.CreateEnvironment(
            environment_pb2.CreateEnvironmentRequest(
                organization_id=cls.org.id,
                slug=slug,
                driver="sqlite",
                request_id=f"py-{slug}-{cls.run_id}",
            ),
            metadata=metadata(),
            timeout=TIMEOUT,
        ).environment
        assert env.status == "active", env
        return env

    @classmethod
    def create_customer(cls, env, name):
        """create_customer writes a customer in env, selected by the
        x-environment-id metadata, and checks the answer names env."""
        resp, call = cls.data.CreateRecord.with_call(
            data_pb2.CreateRecordRequest(object="customers", record=record(name=name)),
            metadata=metadata(environment_id=env.id),
            timeout=TIMEOUT,
        )
        assert header(call, ENVIRONMENT_HEADER) == env.id, call.initial_metadata()
        assert resp.record["name"] == name, resp.record
        return resp.record["id"]

    def list_customer_ids(self, stub=None, **md):
        resp, call = (stub or self.data).ListRecords.with_call(
            data_pb2.ListRecordsRequest(object="customers", order_by="name"),
            metadata=metadata(**md),
            timeout=TIMEOUT,
        )
        return {r["id"] for r in resp.records}, header(call, ENVIRONMENT_HEADER)

    def assert_error(self, ctx, code, reason):
        """assert_error checks the RpcError caught by ctx: its code, and the
        reason of the ErrorInfo in its status details."""
        err = ctx.exception
        self.assertEqual(err.code(), code, err.details())
        info = error_info(err)
        self.assertIsNotNone(info, f"{err.code()} carries no ErrorInfo: {err.trailing_metadata()}")
        self.assertEqual(info.reason, reason, err.details())
        self.assertEqual(info.domain, DOMAIN)
        return info

    def test_request_id_makes_creates_idempotent(self):
        again = self.create_organization()
        self.assertEqual(again.id, self.org.id)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.environments.CreateOrganization(
                environment_pb2.CreateOrganizationRequest(
                    slug="py-other-" + self.run_id,
                    request_id="py-org-" + self.run_id,
                ),
                metadata=metadata(),
                timeout=TIMEOUT,
            )
        self.assert_error(ctx, grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")

    def test_each_environment_sees_only_its_records(self):
        self.assertEqual(len(self.dev_ids), 2)
        for env, own, other in [
            (self.dev, self.dev_ids, self.staging_ids),
            (self.staging, self.staging_ids, self.dev_ids),
        ]:
            with self.subTest(environment=env.slug):
                ids, resolved = self.list_customer_ids(environment_id=env.id)
                self.assertEqual(ids, own)
                self.assertEqual(resolved, env.id)
                for record_id in own:
                    got = self.data.GetRecord(
                        data_pb2.GetRecordRequest(object="customers", id=record_id),
                        metadata=metadata(environment_id=env.id),
                        timeout=TIMEOUT,
                    )
                    self.assertEqual(got.record["id"], record_id)
                for record_id in other:
                    with self.assertRaises(grpc.RpcError) as ctx:
                        self.data.GetRecord(
                            data_pb2.GetRecordRequest(object="customers", id=record_id),
                            metadata=metadata(environment_id=env.id),
                            timeout=TIMEOUT,
                        )
                    self.assert_error(ctx, grpc.StatusCode.NOT_FOUND, "RECORD_NOT_FOUND")

    def test_the_authority_alone_selects_an_environment(self):
        hostname = f"dev-{self.run_id}.python.example"
        updated = self.environments.UpdateEnvironment(
            environment_pb2.UpdateEnvironmentRequest(id=self.dev.id, hostname=hostname.upper() + "."),
            metadata=metadata(),
            timeout=TIMEOUT,
        ).environment
        self.assertEqual(updated.hostname, hostname)
        resolved = self.environments.ResolveHostname(
            environment_pb2.ResolveHostnameRequest(hostname=hostname),
            metadata=metadata(),
            timeout=TIMEOUT,
        )
        self.assertEqual(resolved.environment_id, self.dev.id)

        with channel(authority=hostname) as by_host:
            data = data_pb2_grpc.DataServiceStub(by_host)
            ids, echoed = self.list_customer_ids(stub=data)
            self.assertEqual(ids, self.dev_ids)
            self.assertEqual(echoed, self.dev.id)
            # An authority and an x-environment-id naming different
            # environments are a conflict, never a preference.
            with self.assertRaises(grpc.RpcError) as caught:
                self.list_customer_ids(stub=data, environment_id=self.staging.id)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_a_stale_etag_is_aborted(self):
        md = metadata(environment_id=self.dev.id)
        created = self.data.CreateRecord(
            data_pb2.CreateRecordRequest(object="notes", record=record(body="first")),
            metadata=md,
            timeout=TIMEOUT,
        ).record
        updated = self.data.UpdateRecord(
            data_pb2.UpdateRecordRequest(
                object="notes", id=created["id"], record=record(body="second"), etag=created["etag"]
            ),
            metadata=md,
            timeout=TIMEOUT,
        ).record
        self.assertEqual(updated["body"], "second")
        self.assertNotEqual(updated["etag"], created["etag"])

        with self.assertRaises(grpc.RpcError) as ctx:
            self.data.UpdateRecord(
                data_pb2.UpdateRecordRequest(
                    object="notes", id=created["id"], record=record(body="third"), etag=created["etag"]
                ),
                metadata=md,
                timeout=TIMEOUT,
            )
        self.assert_error(ctx, grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
        got = self.data.GetRecord(
            data_pb2.GetRecordRequest(object="notes", id=created["id"]), metadata=md, timeout=TIMEOUT
        ).record
        self.assertEqual(got["body"], "second")

    def test_an_object_of_another_environment_is_not_defined(self):
        md = metadata(environment_id=self.staging.id)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.metadata_service.GetObject(metadata_pb2.GetObjectRequest(name="notes"), metadata=md, timeout=TIMEOUT)
        self.assert_error(ctx, grpc.StatusCode.NOT_FOUND, "OBJECT_NOT_DEFINED")
        with self.assertRaises(grpc.RpcError) as ctx:
            self.data.ListRecords(data_pb2.ListRecordsRequest(object="notes"), metadata=md, timeout=TIMEOUT)
        info = self.assert_error(ctx, grpc.StatusCode.NOT_FOUND, "OBJECT_NOT_DEFINED")
        self.assertEqual(info.metadata["object"], "notes")
        self.assertEqual(trailer(ctx.exception, ENVIRONMENT_HEADER), self.staging.id)

        defined = self.metadata_service.GetObject(
            metadata_pb2.GetObjectRequest(name="notes"),
            metadata=metadata(environment_id=self.dev.id),
            timeout=TIMEOUT,
        ).object
        self.assertEqual(defined.name, "notes")

    def test_a_bad_token_is_unauthenticated(self):
        well_formed = "envp_" + "A" * 43
        for name, token, reason in [
            ("unknown", well_formed, "TOKEN_UNKNOWN"),
            ("malformed", "not-a-token", "TOKEN_MALFORMED"),
            ("missing", None, "TOKEN_MISSING"),
        ]:
            with self.subTest(token=name):
                with self.assertRaises(grpc.RpcError) as ctx:
                    access_pb2_grpc.AccessServiceStub(self.channel).WhoAmI(
                        access_pb2.WhoAmIRequest(), metadata=metadata(token=token), timeout=TIMEOUT
                    )
                self.assert_error(ctx, grpc.StatusCode.UNAUTHENTICATED, reason)
                with self.assertRaises(grpc.RpcError) as ctx:
                    self.data.ListRecords(
                        data_pb2.ListRecordsRequest(object="customers"),
                        metadata=metadata(token=token, environment_id=self.dev.id),
                        timeout=TIMEOUT,
                    )
                self.assert_error(ctx, grpc.StatusCode.UNAUTHENTICATED, reason)

        who = access_pb2_grpc.AccessServiceStub(self.channel).WhoAmI(
            access_pb2.WhoAmIRequest(), metadata=metadata(), timeout=TIMEOUT
        )
        self.assertTrue(who.platform_admin)


if __name__ == "__main__":
    unittest.main(verbosity=2)
