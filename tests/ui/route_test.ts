/**
 * The dashboard's routes in process: the page and its headers, access with a
 * client token and the session cookie, the event stream's pacing and bound,
 * and the round-trip matrix's rows from the other members.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { createApp } from "../../src/server/app.ts";
import { APP_CSS, APP_JS } from "../../src/ui/assets.ts";
import { uiEventStream } from "../../src/ui/event_stream.ts";
import { roundTripsOfMembers } from "../../src/ui/round_trips.ts";
import { UI_CONTENT_SECURITY_POLICY, uiRoute, type UiRouteOptions } from "../../src/ui/route.ts";
import { SESSION_COOKIE } from "../../src/ui/session.ts";
import { TEST_SECRET, withClusterApp } from "../server/app_helpers.ts";
import { waitFor } from "../wait.ts";
import { waitUntil } from "../../src/chaos/process_cluster.ts";

const TOKEN = "client-token-for-the-dashboard";

/** The events of an event stream, read one chunk at a time. */
class EventReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event's name and parsed data. */
  async next(): Promise<{ event: string; data: Record<string, unknown> }> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event !== undefined && data !== undefined) return { event, data: JSON.parse(data) };
        continue;
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("The stream ended");
      this.#buffer += value;
    }
  }

  /** Stops reading: the server's stream is cancelled. */
  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }
}

/** The dashboard alone, at `/ui`, with `options` (an app's are the defaults). */
function uiApp(options: UiRouteOptions): Hono {
  return new Hono().route("/ui", uiRoute(options));
}

/** Every `src`, `href` and `action` of `html`. */
function resourceUrls(html: string): string[] {
  return [...html.matchAll(/\b(?:src|href|action)="([^"]*)"/g)].map((match) => match[1]!);
}

Deno.test("GET /ui renders the dashboard with strict headers and nothing of other origins", async () => {
  await withClusterApp(async ({ app, node }) => {
    assert.equal((await app.request("/kv/hello", { method: "PUT", body: "world" })).status, 200);
    const response = await app.request("/ui");
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type")!, /^text\/html/);
    assert.equal(response.headers.get("content-security-policy"), UI_CONTENT_SECURITY_POLICY);
    assert.match(UI_CONTENT_SECURITY_POLICY, /^default-src 'self'; script-src 'self'/);
    assert.equal(response.headers.get("referrer-policy"), "no-referrer");
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    const html = await response.text();
    assert.match(html, /^<!DOCTYPE html>/);
    // One row per member of the configuration, by id.
    const ids = [...html.matchAll(/data-member-id="(\d+)"/g)].map((match) => Number(match[1]));
    assert.deepEqual(ids, node.configuration.members.map((member) => member.id));
    assert.match(html, /<dd data-figure="keys">1<\/dd>/);
    assert.match(html, /<dd data-figure="epoch">1<\/dd>/);
    // Every resource is this origin's, by a path (no scheme, no `//host`),
    // and no inline script or style.
    const urls = resourceUrls(html);
    assert.ok(urls.length >= 2);
    for (const url of urls) assert.match(url, /^\/[^/]/, url);
    assert.doesNotMatch(html, /<script>|<style|style="/);
    for (const asset of [APP_JS, APP_CSS]) {
      assert.doesNotMatch(asset, /:\/\/|url\(|@import/);
    }
    const script = await app.request("/ui/app.js");
    assert.match(script.headers.get("content-type")!, /^text\/javascript/);
    assert.equal(await script.text(), APP_JS);
    assert.equal(script.headers.get("x-content-type-options"), "nosniff");
  });
});

Deno.test("with a client token, the dashboard needs it: as a bearer token or a session cookie", async () => {
  await withClusterApp(async ({ app }) => {
    // Without: 401, the page with its token field and no figure.
    const locked = await app.request("/ui");
    assert.equal(locked.status, 401);
    const lockedHtml = await locked.text();
    assert.match(lockedHtml, /id="token-input"/);
    assert.match(lockedHtml, /needs the client token/);
    assert.doesNotMatch(lockedHtml, /data-figure=|data-member-id=/);
    assert.equal((await app.request("/ui/events")).status, 401);
    // The script and style hold no data: open.
    assert.equal((await app.request("/ui/app.js")).status, 200);

    const bearer = { authorization: `Bearer ${TOKEN}` };
    assert.equal((await app.request("/ui", { headers: bearer })).status, 200);
    assert.equal(
      (await app.request("/ui", { headers: { authorization: "Bearer wrong" } })).status,
      401,
    );

    // A session: refused without the token or with another, set with it.
    for (const headers of [{}, { authorization: "Bearer wrong" }] as Record<string, string>[]) {
      const refused = await app.request("/ui/session", { method: "POST", headers });
      assert.equal(refused.status, 401);
      assert.equal(refused.headers.get("set-cookie"), null);
    }
    const made = await app.request("/ui/session", { method: "POST", headers: bearer });
    assert.equal(made.status, 204);
    const setCookie = made.headers.get("set-cookie")!;
    assert.match(setCookie, new RegExp(`^${SESSION_COOKIE}=`));
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.match(setCookie, /Path=\/ui/);
    const cookie = { cookie: setCookie.split(";")[0]! };
    assert.equal((await app.request("/ui", { headers: cookie })).status, 200);
    const events = await app.request("/ui/events", { headers: cookie });
    assert.equal(events.status, 200);
    assert.match(events.headers.get("content-type")!, /^text\/event-stream/);
    await events.body!.cancel();
    // A forged cookie gets nothing; the cookie is no key to /kv.
    const forged = { cookie: `${SESSION_COOKIE}=99999999999999.AAAA` };
    assert.equal((await app.request("/ui", { headers: forged })).status, 401);
    assert.equal((await app.request("/kv/a", { headers: cookie })).status, 401);
    // DELETE clears it.
    const cleared = await app.request("/ui/session", { method: "DELETE" });
    assert.match(cleared.headers.get("set-cookie")!, /Max-Age=0/);
  }, { app: { clientToken: TOKEN } });
});

Deno.test("GET /ui/events sends the live sections, paced, and a change shows in the next", async () => {
  await withClusterApp(async ({ app: kvApp, node }) => {
    const app = uiApp({ node, secret: TEST_SECRET, uiEventIntervalMs: 50 });
    const response = await app.request("/ui/events");
    assert.equal(response.status, 200);
    const reader = new EventReader(response.body!);
    try {
      const first = await reader.next();
      assert.equal(first.event, "view");
      const sections = first.data.sections as Record<string, string>;
      assert.deepEqual(Object.keys(sections).sort(), [
        "changes-body",
        "commits-body",
        "leases-body",
        "members-body",
        "round-trips-body",
        "summary-body",
      ]);
      assert.match(sections["summary-body"]!, /data-figure="keys">0</);
      const startedMs = Date.now();
      assert.equal((await kvApp.request("/kv/k", { method: "PUT", body: "v" })).status, 200);
      let event = await reader.next();
      // The put may land between two renders: at most one event later.
      if (
        !/data-figure="keys">1</.test(
          (event.data.sections as Record<string, string>)["summary-body"]!,
        )
      ) {
        event = await reader.next();
      }
      assert.match(
        (event.data.sections as Record<string, string>)["summary-body"]!,
        /data-figure="keys">1</,
      );
      assert.notEqual(event.data.digest, first.data.digest);
      assert.ok(Date.now() - startedMs >= 40, "events come no faster than the interval");
    } finally {
      await reader.cancel();
    }
  });
});

Deno.test("GET /ui/events serves at most its bound of streams; a closed one frees its slot", async () => {
  await withClusterApp(async ({ node }) => {
    const app = uiApp({ node, secret: TEST_SECRET, maxUiStreams: 2 });
    const open = [await app.request("/ui/events"), await app.request("/ui/events")];
    for (const response of open) assert.equal(response.status, 200);
    const refused = await app.request("/ui/events");
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "5");
    assert.match((await refused.json()).error, /2 dashboard streams/);
    await open[0]!.body!.cancel();
    const again = await app.request("/ui/events");
    assert.equal(again.status, 200);
    await again.body!.cancel();
    await open[1]!.body!.cancel();
  });
});

Deno.test("a dashboard stream renders nothing for a client that does not read", async () => {
  let renders = 0;
  let ended = 0;
  const unread = uiEventStream({
    render: () => ++renders,
    intervalMs: 10,
    onEnd: () => ended++,
  });
  const read = new EventReader(uiEventStream({ render: () => 0, intervalMs: 10, onEnd: () => {} }));
  // The first event is produced at once; then nothing until it is read,
  // while another stream on the same interval sends five.
  assert.equal(renders, 1);
  for (let i = 0; i < 5; i++) await read.next();
  assert.equal(renders, 1);
  const reader = new EventReader(unread);
  assert.equal((await reader.next()).data, 1);
  assert.equal((await reader.next()).data, 2);
  await reader.cancel();
  await read.cancel();
  assert.equal(ended, 1, "cancelling ends it once");
});

Deno.test("a dashboard stream closes after its lifetime", async () => {
  let ended = false;
  const reader = new EventReader(
    uiEventStream({ render: () => 0, intervalMs: 10, lifetimeMs: 50, onEnd: () => ended = true }),
  );
  await reader.next();
  await assert.rejects(async () => {
    for (let i = 0; i < 100; i++) await reader.next();
  }, /The stream ended/);
  assert.ok(ended);
});

Deno.test("the round-trip matrix has this replica's row and the rows other members report", async () => {
  await withClusterApp(async ({ cluster }) => {
    const urls = cluster.nodes.map((_, id) => `http://replica-${id}.test`);
    const requested: string[] = [];
    const apps: Hono[] = cluster.nodes.map((node) =>
      createApp({
        node,
        replicas: 3,
        secret: TEST_SECRET,
        urls,
        fetch: (url: string, init: RequestInit): Promise<Response> => {
          requested.push(url);
          const target: Hono = apps[urls.findIndex((base) => url.startsWith(base))]!;
          return Promise.resolve(target.request(url, init));
        },
      })
    );
    const matrixOf = async () => {
      const response = await apps[0]!.request("/ui");
      return [...(await response.text()).matchAll(/<tr data-from="(\d)">(.*?)<\/tr>/g)]
        .map((match) => [...match[2]!.matchAll(/data-to="\d">([^<]*)</g)].map((cell) => cell[1]));
    };
    const before = await matrixOf();
    assert.equal(before.length, 3);
    assert.deepEqual(before[0], ["·", "0.0 ms", "0.0 ms"], "its own row, from its transport");
    // The render asked each other member once for its row (with the secret).
    await waitFor(() => requested.length === 2, 2000, "two rows asked for");
    assert.deepEqual(requested.sort(), [
      "http://replica-1.test/admin/members",
      "http://replica-2.test/admin/members",
    ]);
    let after: (string | undefined)[][] = [];
    await waitUntil(async () => {
      after = await matrixOf();
      return after[1]![0] !== "—" && after[2]![0] !== "—";
    }, { deadlineMs: 2000, what: "the other members' rows", intervalMs: 10 });
    assert.deepEqual(after[1], ["0.0 ms", "·", "0.0 ms"]);
    assert.deepEqual(after[2], ["0.0 ms", "0.0 ms", "·"]);
    // Rendering again at once asks nobody: rows are asked for at most every few seconds.
    assert.equal(requested.length, 2);
  });
});

Deno.test("roundTripsOfMembers reads a members answer and refuses other shapes", () => {
  assert.deepEqual(
    roundTripsOfMembers({
      members: [{ id: 0, roundTripMs: null }, { id: 1, roundTripMs: 12.5 }, { id: 2 }],
    }),
    new Map([[1, 12.5]]),
  );
  for (
    const bad of [null, 3, {}, { members: 1 }, { members: [{ id: "1" }] }, { members: [null] }]
  ) {
    assert.equal(roundTripsOfMembers(bad), undefined, JSON.stringify(bad));
  }
  assert.deepEqual(roundTripsOfMembers({ members: [{ id: 1, roundTripMs: -1 }] }), new Map());
});
