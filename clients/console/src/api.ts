// The console's view of the envplane API: typed clients over Connect JSON
// (fetch under the hood, as any browser page would call it), one plain REST
// write, and the reduction of every failure to what a user can act on — a
// Connect code and a google.rpc.ErrorInfo reason.
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AccessService } from "@envplane/client/envplane/access/v1/access_pb";
import { DataService } from "@envplane/client/envplane/data/v1/data_pb";
import { EnvironmentService } from "@envplane/client/envplane/environment/v1/environment_pb";
import { MetadataService } from "@envplane/client/envplane/metadata/v1/metadata_pb";
import { ErrorInfoSchema } from "@envplane/client/google/rpc/error_details_pb";

/** timeoutMs bounds every call, so an unreachable server fails instead of hanging. */
const timeoutMs = 15_000;

/** HeaderEnvironmentID names the environment of a call and, on the answer, the one that served it. */
export const HeaderEnvironmentID = "X-Environment-Id";

/** HeaderRequestID is the id the server logged the call under. */
export const HeaderRequestID = "X-Request-Id";

/**
 * Failure is an error as the console shows it. kind "api" is an answer of
 * the server; "network" means no answer reached the page: the server is
 * down, or the browser refused the answer because the server does not allow
 * this page's origin (CORS), which scripts cannot tell apart.
 */
export type Failure = {
  kind: "api" | "network";
  /** code is the Connect code name, e.g. "invalid_argument". */
  code: string;
  /** reason is the ErrorInfo reason, e.g. "OBJECT_NOT_DEFINED", or "". */
  reason: string;
  message: string;
  requestId: string;
};

/** Written is a record the console created, with how and where. */
export type Written = {
  record: JsonObject;
  via: "connect" | "rest";
  /** environmentId is the X-Environment-Id of the answer: the environment that stored the record. */
  environmentId: string;
  requestId: string;
};

/** Api holds the clients of one server with one token. */
export class Api {
  readonly baseUrl: string;
  readonly environments: Client<typeof EnvironmentService>;
  readonly access: Client<typeof AccessService>;
  readonly metadata: Client<typeof MetadataService>;
  readonly data: Client<typeof DataService>;
  private readonly token: string;

  constructor(baseUrl: string, token: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    const bearer: Interceptor = (next) => (req) => {
      req.header.set("Authorization", `Bearer ${token}`);
      return next(req);
    };
    const transport = createConnectTransport({
      baseUrl: this.baseUrl,
      useBinaryFormat: false,
      interceptors: [bearer],
      defaultTimeoutMs: timeoutMs,
    });
    this.environments = createClient(EnvironmentService, transport);
    this.access = createClient(AccessService, transport);
    this.metadata = createClient(MetadataService, transport);
    this.data = createClient(DataService, transport);
  }

  /** inEnvironment routes an environment-scoped call by header, as a client without the id in its path does. */
  static inEnvironment(environmentId: string, onHeader?: (h: Headers) => void): CallOptions {
    return { headers: { [HeaderEnvironmentID]: environmentId }, onHeader };
  }

  /** createRecordConnect writes a record with DataService.CreateRecord over Connect JSON. */
  async createRecordConnect(environmentId: string, object: string, record: JsonObject): Promise<Written> {
    let header = new Headers();
    const res = await this.data.createRecord(
      { object, record },
      Api.inEnvironment(environmentId, (h) => {
        header = h;
      }),
    );
    return {
      record: res.record ?? {},
      via: "connect",
      environmentId: header.get(HeaderEnvironmentID) ?? "",
      requestId: header.get(HeaderRequestID) ?? "",
    };
  }

  /**
   * createRecordREST writes a record with a plain fetch POST to the REST
   * route, the way a page without the generated client would: the body is
   * the record and so is the answer.
   */
  async createRecordREST(environmentId: string, object: string, record: JsonObject): Promise<Written> {
    const path = `/api/v1/environments/${encodeURIComponent(environmentId)}/data/${encodeURIComponent(object)}`;
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
        body: JSON.stringify(record),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw networkFailure(err);
    }
    const requestId = res.headers.get(HeaderRequestID) ?? "";
    const body: unknown = await res.json().catch(() => undefined);
    if (!res.ok) {
      throw restFailure(res.status, body, requestId);
    }
    if (!isObject(body)) {
      throw { kind: "api", code: "internal", reason: "", message: `the answer of ${path} is not a JSON object`, requestId } satisfies Failure;
    }
    return { record: body as JsonObject, via: "rest", environmentId: res.headers.get(HeaderEnvironmentID) ?? "", requestId };
  }
}

/** failureOf reduces anything a call threw to a Failure. */
export function failureOf(err: unknown): Failure {
  if (isFailure(err)) {
    return err;
  }
  const ce = ConnectError.from(err);
  // connect-web wraps fetch's TypeError ("Failed to fetch"): no HTTP answer reached the page.
  if (ce.cause instanceof TypeError) {
    return networkFailure(ce.cause);
  }
  const info = ce.findDetails(ErrorInfoSchema)[0];
  return {
    kind: "api",
    code: codeName(ce.code),
    reason: info?.reason ?? "",
    message: ce.rawMessage,
    requestId: ce.metadata.get(HeaderRequestID) ?? "",
  };
}

function networkFailure(err: unknown): Failure {
  const detail = err instanceof Error ? err.message : String(err);
  if (err instanceof DOMException && err.name === "TimeoutError") {
    return { kind: "network", code: "deadline_exceeded", reason: "", message: `no answer in ${timeoutMs / 1000}s`, requestId: "" };
  }
  return {
    kind: "network",
    code: "unavailable",
    reason: "",
    message: `no answer reached this page (${detail}): the server is unreachable, or it does not allow this origin (${location.origin}) — start it with --cors-origins=${location.origin}`,
    requestId: "",
  };
}

/** restFailure reads the google.rpc.Status body of a failed REST call. */
function restFailure(status: number, body: unknown, requestId: string): Failure {
  if (!isObject(body) || typeof body["code"] !== "number") {
    return { kind: "api", code: "unknown", reason: "", message: `HTTP ${status}`, requestId };
  }
  const details = Array.isArray(body["details"]) ? body["details"] : [];
  const info = details.find((d): d is Record<string, unknown> => isObject(d) && String(d["@type"]).endsWith("/google.rpc.ErrorInfo"));
  return {
    kind: "api",
    code: codeName(body["code"]),
    reason: typeof info?.["reason"] === "string" ? info["reason"] : "",
    message: typeof body["message"] === "string" ? body["message"] : `HTTP ${status}`,
    requestId,
  };
}

/** codeName is the Connect protocol's name of a code: Code.InvalidArgument is "invalid_argument". */
export function codeName(code: number): string {
  const name = (Code as unknown as Record<number, string | undefined>)[code];
  return name ? name.replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase()) : `code_${code}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isFailure(v: unknown): v is Failure {
  return isObject(v) && (v["kind"] === "api" || v["kind"] === "network") && typeof v["code"] === "string";
}
