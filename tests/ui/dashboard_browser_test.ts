/**
 * The dashboard in a real browser (issue 18 item 6): headless Chromium
 * (`browser.ts`) against three replica processes on loopback with a client
 * token. The page loads and takes the token, its member table matches
 * `/status`, a key put through its key browser is read with fetch at another
 * replica, a key put with fetch shows in it, its figures refresh live, and it
 * asks nothing of another origin. A failed step leaves a screenshot under
 * `data/test-artifacts/ui/` and prints its path.
 */

import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { startProcessCluster } from "../../src/chaos/process_cluster.ts";
import { findChromium, launchBrowser, saveScreenshot, screenshotOnFailure } from "./browser.ts";

const TOKEN = "dashboard-browser-test-token";
/** `/status` follows the client credentials (src/server/access.ts). */
const BEARER = { authorization: `Bearer ${TOKEN}` };
const auth = { authorization: `Bearer ${TOKEN}` };
/** Longest a step waits for the page, ms. */
const PAGE_TIMEOUT_MS = 15_000;

const chromiumFound = await findChromium();
if ("missing" in chromiumFound) {
  console.warn(`Skipping the dashboard's browser tests: ${chromiumFound.missing}`);
}

async function putWithFetch(url: string, key: string, value: string): Promise<void> {
  const response = await fetch(`${url}/kv/${key}`, {
    method: "PUT",
    body: value,
    headers: auth,
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(response.status, 200, await response.text());
}

async function getWithFetch(url: string, key: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`${url}/kv/${key}`, {
    headers: auth,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, body: await response.text() };
}

/** Waits (up to the page's timeout) until the element at `selector` has text matching `pattern`. */
async function waitForText(page: Page, selector: string, pattern: RegExp): Promise<void> {
  await page.locator(selector, { hasText: pattern }).waitFor();
}

async function figure(page: Page, name: string): Promise<string> {
  return (await page.textContent(`[data-figure="${name}"]`))!.trim();
}

Deno.test({
  name: "dashboard in headless Chromium against a 3-replica cluster",
  ignore: "missing" in chromiumFound,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const startedMs = performance.now();
    const cluster = await startProcessCluster(3, { clientToken: TOKEN });
    const browser = await launchBrowser((chromiumFound as { path: string }).path);
    const page = await browser.context.newPage();
    page.setDefaultTimeout(PAGE_TIMEOUT_MS);
    const [url0, url1, url2] = cluster.urls as [string, string, string];
    const origin = new URL(url0).origin;
    // Everything the page asks for, and every error it logs (CSP refusals among them).
    const requested: string[] = [];
    const pageErrors: string[] = [];
    page.on("request", (request) => requested.push(request.url()));
    page.on("console", (message) => {
      // The locked page's first load is a 401, which Chromium logs as an error.
      if (message.type() === "error" && !/status of 401/.test(message.text())) {
        pageErrors.push(message.text());
      }
    });
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    try {
      await t.step(
        "the page loads, asks for the token, and shows the cluster with it",
        async () => {
          await screenshotOnFailure(page, "token", async () => {
            const locked = await page.goto(`${url0}/ui`);
            assert.equal(locked!.status(), 401);
            await page.waitForSelector("#locked-reason");
            assert.match(await page.textContent("#locked-reason") ?? "", /needs the client token/);
            console.log(
              `locked page screenshot: ${await saveScreenshot(page, "dashboard-locked")}`,
            );
            await page.fill("#token-input", TOKEN);
            // The page trades the token for a session cookie, then reloads.
            await Promise.all([
              page.waitForURL(`${url0}/ui`, { waitUntil: "load" }),
              page.waitForSelector("#members-body tr[data-member-id]"),
              page.click("#token-form button[type=submit]"),
            ]);
            assert.equal(await page.getAttribute("body", "data-locked"), "false");
            assert.equal(await page.textContent("#token-state"), "token set (this tab)");
            await waitForText(page, "#live", /^live, updated/);
          });
        },
      );

      await t.step("the member table matches /status", async () => {
        await screenshotOnFailure(page, "members", async () => {
          const status = await (await fetch(`${url0}/status`, { headers: BEARER })).json();
          const expected = [
            { id: status.id, name: `${status.name} (this replica)` },
            ...status.peers.map((peer: { id: number; name: string }) => ({
              id: peer.id,
              name: peer.name,
            })),
          ].sort((a, b) => a.id - b.id);
          const rows = await page.$$eval(
            "#members-body tr[data-member-id]",
            (trs) =>
              trs.map((tr) => ({
                id: Number(tr.getAttribute("data-member-id")),
                name: tr.querySelector("td.name")!.textContent,
                alive: tr.querySelector("td.alive")!.textContent,
                role: tr.querySelector("td.role")!.textContent,
              })),
          );
          assert.deepEqual(rows.map(({ id, name }) => ({ id, name })), expected);
          assert.ok(rows.every((row) => row.alive === "yes" && row.role === "voter"));
          assert.equal(await figure(page, "epoch"), String(status.epoch));
          assert.equal(await figure(page, "configuration"), status.configuration);
          // The round-trip matrix: a row and a column per member.
          assert.equal(await page.locator("#round-trips-body tr[data-from]").count(), 3);
        });
      });

      await t.step(
        "a key put through the key browser is read with fetch at another replica",
        async () => {
          await screenshotOnFailure(page, "put", async () => {
            await page.fill("#kv-put-key", "ui/from-browser");
            await page.fill("#kv-put-value", "put by Chromium");
            await page.click("#kv-put-form button[type=submit]");
            await waitForText(page, "#kv-message", /^put ui\/from-browser: version /);
            assert.deepEqual(await getWithFetch(url1, "ui/from-browser"), {
              status: 200,
              body: "put by Chromium",
            });
            // The key browser views what it put.
            await waitForText(page, "#kv-view-value", /^put by Chromium$/);
          });
        },
      );

      await t.step(
        "a key put with fetch shows in the browser, and a figure refreshes live",
        async () => {
          await screenshotOnFailure(page, "live", async () => {
            // No reload may happen: the marker would be gone.
            await page.evaluate(() => (globalThis as Record<string, unknown>).marker = "same page");
            // The figure as the replica has it now (the browser's put is counted).
            const keysBefore = (await (await fetch(`${url0}/status`, { headers: BEARER })).json())
              .keys as number;
            await waitForText(page, '[data-figure="keys"]', new RegExp(`^${keysBefore}$`));
            await putWithFetch(url2, "ui/from-fetch", "put by fetch");
            await page.waitForSelector('#kv-rows tr[data-key="ui/from-fetch"]');
            await waitForText(page, '[data-figure="keys"]', new RegExp(`^${keysBefore + 1}$`));
            assert.equal(
              await page.evaluate(() => (globalThis as Record<string, unknown>).marker),
              "same page",
            );
            await page.click('#kv-rows tr[data-key="ui/from-fetch"] button');
            await waitForText(page, "#kv-view-value", /^put by fetch$/);
          });
        },
      );

      await t.step("a key deleted through the browser is gone at another replica", async () => {
        await screenshotOnFailure(page, "delete", async () => {
          await page.click("#kv-delete");
          await page.click("#kv-delete"); // The second click within five seconds deletes.
          await waitForText(page, "#kv-message", /^deleted ui\/from-fetch$/);
          assert.equal((await getWithFetch(url1, "ui/from-fetch")).status, 404);
          await page.waitForSelector('#kv-rows tr[data-key="ui/from-fetch"]', {
            state: "detached",
          });
        });
      });

      await t.step("the page asked nothing of another origin and logged no error", async () => {
        const foreign = requested.filter((url) => new URL(url).origin !== origin);
        assert.deepEqual(foreign, []);
        assert.ok(requested.includes(`${origin}/ui/app.js`));
        assert.ok(requested.includes(`${origin}/ui/events`));
        assert.deepEqual(pageErrors, []);
        const path = await saveScreenshot(page, "dashboard");
        console.log(`dashboard screenshot: ${path}`);
      });
    } finally {
      await browser.close();
      await cluster.stop();
      console.log(`browser tests took ${((performance.now() - startedMs) / 1000).toFixed(1)} s`);
    }
  },
});
