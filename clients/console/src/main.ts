// The envplane console: pick an organization, see its environments, open
// one to see its objects and records, and write a record over Connect JSON
// or plain REST. Everything is rendered with textContent, never innerHTML:
// records hold whatever users put in them.
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Environment, Organization } from "@envplane/client/envplane/environment/v1/environment_pb";
import type { Field, ObjectDefinition } from "@envplane/client/envplane/metadata/v1/metadata_pb";
import { Api, failureOf, type Failure, type Written } from "./api.js";

/** storage keys of what survives a reload of the tab (and only of the tab). */
const keyToken = "envplane.token";
const keyApi = "envplane.api";

/** maxPages bounds a list walked page by page, so a runaway token cannot loop forever. */
const maxPages = 20;

/** leadColumns and trailColumns are system fields of every record, shown around the object's own. */
const leadColumns = ["id"];
const trailColumns = ["created_at", "updated_at"];

type State = {
  api?: Api;
  environment?: Environment;
  object?: ObjectDefinition;
};

const state: State = {};

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) {
    throw new Error(`#${id} is missing from index.html`);
  }
  return e as T;
}

function make<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, attrs: Record<string, string> = {}): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) {
    e.textContent = text;
  }
  for (const [k, v] of Object.entries(attrs)) {
    e.setAttribute(k, v);
  }
  return e;
}

// ---- errors -----------------------------------------------------------------

function showFailure(f: Failure): void {
  const box = el("error");
  box.dataset["kind"] = f.kind;
  box.dataset["code"] = f.code;
  box.dataset["reason"] = f.reason;
  el("error-code").textContent = f.kind === "network" ? `network error (${f.code})` : f.code;
  el("error-reason").textContent = f.reason;
  el("error-reason").hidden = f.reason === "";
  el("error-message").textContent = f.message;
  el("error-request").textContent = f.requestId ? `request ${f.requestId}` : "";
  box.hidden = false;
}

function clearFailure(): void {
  const box = el("error");
  box.hidden = true;
  delete box.dataset["kind"];
  delete box.dataset["code"];
  delete box.dataset["reason"];
}

/** guarded runs an action of the user, showing what fails instead of throwing it away. */
async function guarded(action: () => Promise<void>): Promise<void> {
  clearFailure();
  document.body.dataset["busy"] = "true";
  try {
    await action();
  } catch (err) {
    showFailure(failureOf(err));
  } finally {
    delete document.body.dataset["busy"];
  }
}

// ---- connecting ---------------------------------------------------------------

async function connect(): Promise<void> {
  const apiUrl = el<HTMLInputElement>("api-url").value.trim();
  const token = el<HTMLInputElement>("token").value.trim();
  sessionStorage.setItem(keyApi, apiUrl);
  sessionStorage.setItem(keyToken, token);
  for (const id of ["environments-panel", "objects-panel", "records-panel"]) {
    el(id).hidden = true;
  }
  el("whoami").textContent = "";
  state.api = new Api(apiUrl, token);
  state.environment = undefined;
  state.object = undefined;

  const me = await state.api.access.whoAmI({});
  el("whoami").textContent = me.platformAdmin ? "platform admin" : `${me.role} of organization ${me.organizationId}`;

  const organizations: Organization[] = [];
  let pageToken = "";
  for (let i = 0; i < maxPages; i++) {
    const res = await state.api.environments.listOrganizations({ pageToken });
    organizations.push(...res.organizations);
    pageToken = res.nextPageToken;
    if (!pageToken) {
      break;
    }
  }
  const select = el<HTMLSelectElement>("organization");
  select.replaceChildren(
    ...organizations.map((o) => make("option", o.displayName ? `${o.slug} — ${o.displayName}` : o.slug, { value: o.id })),
  );
  el("environments-panel").hidden = false;
  if (organizations.length === 0) {
    el("environment-rows").replaceChildren();
    el("environments-empty").textContent = "No organizations are visible to this token.";
    el("environments-empty").hidden = false;
    return;
  }
  await loadEnvironments(select.value);
}

// ---- environments -------------------------------------------------------------

async function loadEnvironments(organizationId: string): Promise<void> {
  const api = need(state.api);
  const environments: Environment[] = [];
  let pageToken = "";
  for (let i = 0; i < maxPages; i++) {
    const res = await api.environments.listEnvironments({ organizationId, pageToken });
    environments.push(...res.environments);
    pageToken = res.nextPageToken;
    if (!pageToken) {
      break;
    }
  }
  el("objects-panel").hidden = true;
  el("records-panel").hidden = true;
  el("environment-rows").replaceChildren(...environments.map(environmentRow));
  el("environments-empty").textContent = "This organization has no environments.";
  el("environments-empty").hidden = environments.length > 0;
}

function environmentRow(env: Environment): HTMLTableRowElement {
  const row = make("tr", undefined, { "data-testid": "environment", "data-environment-id": env.id, "data-slug": env.slug });
  const cells: [string, string][] = [
    ["slug", env.slug],
    ["type", env.type],
    ["driver", env.driver],
    ["status", env.status],
    ["hostname", env.hostname],
    ["default", env.isDefault ? "default" : ""],
  ];
  for (const [col, text] of cells) {
    const td = make("td", text, { "data-col": col });
    if (col === "status") {
      td.classList.add(`status-${env.status}`);
      if (env.statusMessage) {
        td.title = env.statusMessage;
      }
    }
    row.append(td);
  }
  const open = make("button", "Open", { type: "button", "data-testid": "open-environment" });
  open.addEventListener("click", () => void guarded(() => selectEnvironment(env)));
  const td = make("td");
  td.append(open);
  row.append(td);
  return row;
}

async function selectEnvironment(env: Environment): Promise<void> {
  const api = need(state.api);
  state.environment = env;
  state.object = undefined;
  for (const row of el("environment-rows").querySelectorAll("tr")) {
    row.classList.toggle("selected", row.dataset["environmentId"] === env.id);
  }
  el("records-panel").hidden = true;
  el("selected-environment").textContent = env.slug;

  const objects: ObjectDefinition[] = [];
  let pageToken = "";
  for (let i = 0; i < maxPages; i++) {
    const res = await api.metadata.listObjects({ pageToken }, Api.inEnvironment(env.id));
    objects.push(...res.objects);
    pageToken = res.nextPageToken;
    if (!pageToken) {
      break;
    }
  }
  el("objects").replaceChildren(
    ...objects.map((def) => {
      const li = make("li");
      const b = make("button", def.name, { type: "button", "data-testid": "object", "data-object": def.name });
      b.title = `${def.displayName || def.name}, version ${def.version}, ${def.fields.length} fields`;
      b.addEventListener("click", () => void guarded(() => selectObject(def)));
      li.append(b);
      return li;
    }),
  );
  el("objects-empty").hidden = objects.length > 0;
  el("objects-panel").hidden = false;
}

// ---- records ------------------------------------------------------------------

async function selectObject(def: ObjectDefinition): Promise<void> {
  state.object = def;
  for (const b of el("objects").querySelectorAll("button")) {
    b.classList.toggle("selected", b.dataset["object"] === def.name);
  }
  el("selected-object").textContent = def.name;
  el("record-columns").replaceChildren(...columns(def).map((c) => make("th", c)));
  el("record-fields").replaceChildren(...def.fields.map(fieldInput));
  el("write-result").hidden = true;
  await loadRecords();
  el("records-panel").hidden = false;
}

function columns(def: ObjectDefinition): string[] {
  return [...leadColumns, ...def.fields.map((f) => f.name), ...trailColumns];
}

async function loadRecords(): Promise<void> {
  const api = need(state.api);
  const env = need(state.environment);
  const def = need(state.object);
  const res = await api.data.listRecords(
    { object: def.name, orderBy: "created_at desc", pageSize: 50, showTotalSize: true },
    Api.inEnvironment(env.id),
  );
  const cols = columns(def);
  el("record-rows").replaceChildren(
    ...res.records.map((rec) => {
      const row = make("tr", undefined, { "data-testid": "record", "data-record-id": String(rec["id"] ?? "") });
      row.append(...cols.map((c) => make("td", display(rec[c]), { "data-col": c })));
      return row;
    }),
  );
  el("records-count").textContent = `${res.records.length} of ${res.totalSize}`;
}

function display(v: JsonValue | undefined): string {
  if (v === undefined || v === null) {
    return "";
  }
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** fieldInput is the form control of one field, shaped by its type. */
function fieldInput(f: Field): HTMLElement {
  const id = `field-${f.name}`;
  const attrs = { id, name: f.name, "data-testid": id, "data-type": f.type };
  let control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  switch (f.type) {
    case "select":
    case "boolean": {
      const options = f.type === "boolean" ? ["true", "false"] : f.options;
      control = make("select", undefined, attrs);
      control.append(make("option", "", { value: "" }), ...options.map((o) => make("option", o, { value: o })));
      break;
    }
    case "json":
      control = make("textarea", undefined, { ...attrs, rows: "2", placeholder: "JSON" });
      break;
    case "integer":
    case "number":
      control = make("input", undefined, { ...attrs, type: "number", step: f.type === "integer" ? "1" : "any" });
      break;
    default:
      control = make("input", undefined, { ...attrs, type: "text", placeholder: f.type === "text" ? "" : f.type });
  }
  const label = make("label", undefined, { for: id });
  label.append(make("span", f.name + (f.required ? " *" : "")), make("small", f.type), control);
  return label;
}

/** formRecord reads the form into a record; empty controls are left out so that defaults apply. */
function formRecord(def: ObjectDefinition): JsonObject {
  const record: JsonObject = {};
  for (const f of def.fields) {
    const control = document.getElementById(`field-${f.name}`) as HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement | null;
    const raw = control?.value.trim() ?? "";
    if (raw === "") {
      continue;
    }
    switch (f.type) {
      case "integer":
      case "number":
        record[f.name] = Number(raw);
        break;
      case "boolean":
        record[f.name] = raw === "true";
        break;
      case "json":
        try {
          record[f.name] = JSON.parse(raw) as JsonValue;
        } catch {
          throw { kind: "api", code: "invalid_argument", reason: "", message: `${f.name} is not valid JSON`, requestId: "" } satisfies Failure;
        }
        break;
      default:
        record[f.name] = raw;
    }
  }
  return record;
}

async function writeRecord(via: string): Promise<void> {
  const api = need(state.api);
  const env = need(state.environment);
  const def = need(state.object);
  const record = formRecord(def);
  const written: Written =
    via === "rest" ? await api.createRecordREST(env.id, def.name, record) : await api.createRecordConnect(env.id, def.name, record);
  el<HTMLFormElement>("record-form").reset();
  await loadRecords();
  const id = String(written.record["id"] ?? "");
  const result = el("write-result");
  result.dataset["recordId"] = id;
  result.dataset["via"] = written.via;
  result.dataset["environmentId"] = written.environmentId;
  result.textContent =
    `Created ${id} via ${written.via === "rest" ? "REST (fetch)" : "Connect JSON"}` +
    ` in environment ${written.environmentId || "(X-Environment-Id not readable)"}` +
    (written.requestId ? `, request ${written.requestId}` : "");
  result.hidden = false;
}

function need<T>(v: T | undefined): T {
  if (v === undefined) {
    throw { kind: "api", code: "failed_precondition", reason: "", message: "connect first", requestId: "" } satisfies Failure;
  }
  return v;
}

// ---- wiring -------------------------------------------------------------------

function start(): void {
  const params = new URLSearchParams(location.search);
  const apiUrl = el<HTMLInputElement>("api-url");
  const token = el<HTMLInputElement>("token");
  apiUrl.value = params.get("api") ?? sessionStorage.getItem(keyApi) ?? "";
  token.value = sessionStorage.getItem(keyToken) ?? "";

  el("settings").addEventListener("submit", (e) => {
    e.preventDefault();
    void guarded(connect);
  });
  el<HTMLSelectElement>("organization").addEventListener("change", (e) => {
    const id = (e.target as HTMLSelectElement).value;
    void guarded(() => loadEnvironments(id));
  });
  el("record-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const via = ((e as SubmitEvent).submitter as HTMLButtonElement | null)?.value ?? "connect";
    void guarded(() => writeRecord(via));
  });
  document.body.dataset["ready"] = "true";
  if (apiUrl.value && token.value) {
    void guarded(connect);
  }
}

start();
