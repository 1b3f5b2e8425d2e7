// console.test.mjs drives the console (clients/console) in Debian's headless
// Chromium against a real envplane server, the way a person would: from an
// origin the server allows it lists environments, opens one, writes a record
// over Connect JSON and one with a plain REST fetch, and shows failures with
// their code and reason; from an origin the server does not allow, the
// browser refuses every answer and the page says so.
//
// clients/browser_test.go starts the server and both origins and runs it:
//
//   CONSOLE_ALLOWED_URL, CONSOLE_REFUSED_URL  the page, served from each origin
//   ENVPLANE_URL, ENVPLANE_TOKEN              the API and a platform-admin token
//   CONSOLE_EXPECT                            JSON: {environments, writeEnvironmentId, object, records}
//   CONSOLE_SCREENSHOT                        where to save the allowed page after the writes
//                                             (and beside it -refused.png, or -failure.png)
//
// It prints one line "CONSOLE_RESULT {json}" with the ids of the records it
// wrote, for the Go test to look for in the environments' databases.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

/** stepTimeoutMs bounds each wait and action; totalTimeoutMs the whole run. */
const stepTimeoutMs = 15_000;
const totalTimeoutMs = 120_000;

const watchdog = setTimeout(() => {
  console.error(`console test: not done after ${totalTimeoutMs / 1000}s`);
  process.exit(2);
}, totalTimeoutMs);

function required(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set`);
  }
  return v;
}

const allowedURL = required("CONSOLE_ALLOWED_URL");
const refusedURL = required("CONSOLE_REFUSED_URL");
const apiURL = required("ENVPLANE_URL");
const token = required("ENVPLANE_TOKEN");
const expect = JSON.parse(required("CONSOLE_EXPECT"));
const screenshot = required("CONSOLE_SCREENSHOT");

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  timeout: stepTimeoutMs,
});

/** sibling is path with a suffix before its extension: console.png, "refused" → console-refused.png. */
function sibling(path, suffix) {
  return path.replace(/(\.png)?$/, `-${suffix}.png`);
}

/** open loads the console from origin with ?api= set, and records what the page logs. */
async function open(origin) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(stepTimeoutMs);
  page.setDefaultNavigationTimeout(stepTimeoutMs);
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`uncaught: ${e.message}`));
  const url = new URL(origin);
  url.searchParams.set("api", apiURL);
  await page.goto(url.href);
  await page.locator("body[data-ready=true]").waitFor();
  return { page, logs };
}

/** idle waits until no action of the page is running. */
async function idle(page) {
  await page.waitForFunction(() => document.body.dataset.busy === undefined, null, { timeout: stepTimeoutMs });
}

async function connect(page) {
  await page.locator("#token").fill(token);
  await page.locator("#connect").click();
  await idle(page);
}

/** noUncaught fails on any exception the page's own code let escape. */
function noUncaught(logs) {
  const uncaught = logs.filter((l) => l.startsWith("uncaught: "));
  assert.deepEqual(uncaught, [], "uncaught exceptions in the page");
}

/** shownError is what #error shows, or null when it is hidden. */
async function shownError(page) {
  return page.locator("#error").evaluate((e) =>
    e.hidden ? null : { kind: e.dataset.kind, code: e.dataset.code, reason: e.dataset.reason, text: e.textContent.replace(/\s+/g, " ").trim() },
  );
}

async function noError(page) {
  const err = await shownError(page);
  assert.equal(err, null, `the page shows an error: ${JSON.stringify(err)}`);
}

/** environmentRows reads the environments table as the user sees it. */
async function environmentRows(page) {
  return page.locator("[data-testid=environment]").evaluateAll((rows) =>
    rows.map((r) => {
      const cell = (c) => r.querySelector(`[data-col=${c}]`).textContent;
      return {
        id: r.dataset.environmentId,
        slug: cell("slug"),
        type: cell("type"),
        driver: cell("driver"),
        status: cell("status"),
        hostname: cell("hostname"),
        isDefault: cell("default") === "default",
      };
    }),
  );
}

/** write fills the record form and submits it with button (#write-connect or #write-rest). */
async function write(page, button, record) {
  for (const [field, value] of Object.entries(record)) {
    const control = page.locator(`#field-${field}`);
    if ((await control.evaluate((e) => e.tagName)) === "SELECT") {
      await control.selectOption(String(value));
    } else {
      await control.fill(String(value));
    }
  }
  await page.locator(button).click();
  await idle(page);
}

/** inPageFetch calls the API with the page's own fetch, from the page's origin. */
async function inPageFetch(page) {
  return page.evaluate(
    async ({ apiURL, token }) => {
      try {
        const res = await fetch(`${apiURL}/api/v1/cloud/whoami`, { headers: { Authorization: `Bearer ${token}` } });
        return { status: res.status, requestId: res.headers.get("X-Request-Id") };
      } catch (e) {
        return { error: e.name };
      }
    },
    { apiURL, token },
  );
}

let current;
const result = {};
try {
  // ---- from the allowed origin ------------------------------------------------
  const allowed = await open(allowedURL);
  current = allowed;
  const { page } = allowed;
  assert.equal(await page.locator("#api-url").inputValue(), apiURL, "the API URL comes from ?api=");
  await connect(page);
  await noError(page);
  assert.equal(await page.locator("[data-testid=whoami]").textContent(), "platform admin");

  const want = [...expect.environments].sort((a, b) => a.slug.localeCompare(b.slug));
  const got = (await environmentRows(page)).sort((a, b) => a.slug.localeCompare(b.slug));
  assert.deepEqual(got, want, "the environments table");
  const row = (id) => page.locator(`[data-testid=environment][data-environment-id="${id}"]`);

  // Every environment but the one written to has no objects.
  for (const env of expect.environments.filter((e) => e.id !== expect.writeEnvironmentId)) {
    await row(env.id).locator("[data-testid=open-environment]").click();
    await idle(page);
    await noError(page);
    await page.locator("#objects-empty").waitFor({ state: "visible" });
    assert.equal(await page.locator("[data-testid=object]").count(), 0, `objects of ${env.slug}`);
  }

  await row(expect.writeEnvironmentId).locator("[data-testid=open-environment]").click();
  await idle(page);
  await noError(page);
  assert.match(await row(expect.writeEnvironmentId).getAttribute("class"), /selected/);
  await page.locator(`[data-testid=object][data-object="${expect.object}"]`).click();
  await idle(page);
  await noError(page);
  assert.equal(await page.locator("[data-testid=records-count]").textContent(), "0 of 0");

  // A record without its required field fails alike over both paths, with
  // the code and ErrorInfo reason shown.
  for (const button of ["#write-connect", "#write-rest"]) {
    await write(page, button, {});
    const err = await shownError(page);
    assert.ok(err, `${button} of an empty record shows no error`);
    assert.equal(err.kind, "api", `${button}: ${err.text}`);
    assert.equal(err.code, "invalid_argument", `${button}: ${err.text}`);
    assert.equal(err.reason, expect.emptyRecordReason, `${button}: ${err.text}`);
    assert.ok(err.text.includes(expect.emptyRecordReason), `${button}: the reason is not shown: ${err.text}`);
  }

  const writes = [
    ["connect", "#write-connect", expect.records.connect],
    ["rest", "#write-rest", expect.records.rest],
  ];
  for (const [via, button, record] of writes) {
    await write(page, button, record);
    await noError(page);
    const shown = page.locator(`#write-result[data-via=${via}]`);
    await shown.waitFor({ state: "visible" });
    const id = await shown.getAttribute("data-record-id");
    assert.ok(id, `${via}: no record id shown`);
    // The answer's X-Environment-Id is readable: the server exposes it to the page.
    assert.equal(await shown.getAttribute("data-environment-id"), expect.writeEnvironmentId, `${via}: environment of the answer`);
    const listed = page.locator(`[data-testid=record][data-record-id="${id}"]`);
    await listed.waitFor({ state: "visible" });
    assert.equal(await listed.locator("[data-col=name]").textContent(), record.name);
    result[via] = id;
  }
  assert.notEqual(result.connect, result.rest);
  assert.equal(await page.locator("[data-testid=record]").count(), 2);
  assert.equal(await page.locator("[data-testid=records-count]").textContent(), "2 of 2");
  await page.screenshot({ path: screenshot, fullPage: true });

  const fetched = await inPageFetch(page);
  assert.equal(fetched.status, 200, `fetch from the allowed origin: ${JSON.stringify(fetched)}`);
  assert.ok(fetched.requestId, "X-Request-Id is not exposed to the page");

  // A reload keeps the API URL and token (sessionStorage) and connects again.
  await page.goto(allowedURL);
  await page.locator("body[data-ready=true]").waitFor();
  assert.equal(await page.locator("#api-url").inputValue(), apiURL);
  assert.equal(await page.locator("#token").inputValue(), token);
  await page.locator("[data-testid=environment]").first().waitFor();
  await idle(page);
  assert.equal(await page.locator("[data-testid=environment]").count(), expect.environments.length);

  noUncaught(allowed.logs);

  // ---- from an origin the server does not allow --------------------------------
  const refused = await open(refusedURL);
  current = refused;
  await connect(refused.page);
  const err = await shownError(refused.page);
  assert.ok(err, "the refused origin shows no error");
  assert.equal(err.kind, "network", err.text);
  assert.ok(err.text.includes("--cors-origins="), `the error does not name the fix: ${err.text}`);
  assert.ok(await refused.page.locator("#environments-panel").isHidden(), "environments are shown to a refused origin");
  assert.equal(await refused.page.locator("[data-testid=environment]").count(), 0);
  assert.ok(
    refused.logs.some((l) => l.includes("blocked by CORS policy")),
    `Chromium did not report a CORS refusal; page logs:\n${refused.logs.join("\n")}`,
  );
  assert.deepEqual(await inPageFetch(refused.page), { error: "TypeError" }, "fetch from the refused origin");
  await refused.page.screenshot({ path: sibling(screenshot, "refused"), fullPage: true });
  noUncaught(refused.logs);

  console.log("CONSOLE_RESULT " + JSON.stringify(result));
} catch (err) {
  if (current) {
    console.error(`page logs:\n${current.logs.join("\n")}`);
    await current.page
      .screenshot({ path: sibling(screenshot, "failure"), fullPage: true })
      .catch((e) => console.error(`failure screenshot: ${e.message}`));
  }
  throw err;
} finally {
  await browser.close();
  clearTimeout(watchdog);
}
