/**
 * The dashboard of a replica, mounted at `/ui` (issue 18 item 5):
 *
 * - `GET /ui`: the page (HTML, rendered here with Hono's JSX, `page.tsx`):
 *   this replica, the members, round trips between them, commit paths and
 *   latencies, leases and retention, recent configuration changes, and a key
 *   browser on the curl API.
 * - `GET /ui/events`: the live sections as server-sent events, one a second
 *   (`event_stream.ts`), at most {@linkcode MAX_UI_STREAMS} at once (503 with
 *   `Retry-After` beyond).
 * - `GET /ui/app.js`, `GET /ui/app.css`, `GET /ui/favicon.svg`: the page's
 *   script, style and icon (`assets.ts`).
 * - `POST /ui/session` with `Authorization: Bearer <token>`: sets the
 *   session cookie that lets the page's `EventSource` in (`session.ts`);
 *   `DELETE /ui/session` clears it.
 *
 * Access (`dashboard_access.ts`): with client credentials enforced (a client
 * token configured, or a named token), the page's figures and the event
 * stream need the client token or a named token with the operations grant,
 * as a bearer token or through the session cookie; without it `GET /ui`
 * answers 401 with the page's token field and no figure (403 for a token
 * without the grant) (the issue's item 3: `/ui` follows the client
 * credentials). Without any, the dashboard is open, as `/status` is. The
 * key browser's requests go to `/kv` with the token, and `/kv` judges them.
 *
 * Every answer carries a strict Content-Security-Policy (`default-src
 * 'self'`, no inline script or style), `Referrer-Policy: no-referrer` and
 * `X-Content-Type-Options: nosniff`: the page loads and sends nothing to
 * another origin.
 *
 * @module
 */

import { type Context, Hono, type MiddlewareHandler } from "hono";
import { deleteCookie, setCookie } from "hono/cookie";
import { bearerToken } from "../net/bearer.ts";
import { ClientAccess } from "../server/access.ts";
import { problem } from "../server/problem.ts";
import { StreamSlots } from "../server/stream_slots.ts";
import { APP_CSS, APP_JS, FAVICON_SVG } from "./assets.ts";
import { ConfigurationLog } from "./configuration_log.ts";
import { DashboardAccess } from "./dashboard_access.ts";
import { UI_STREAM_LIFETIME_MS, uiEventStream } from "./event_stream.ts";
import { formatTime, renderPage, renderSections } from "./page.tsx";
import { RoundTrips } from "./round_trips.ts";
import { SESSION_COOKIE, SESSION_TTL_MS } from "./session.ts";
import { dashboardView, type DashboardViewOptions } from "./view.ts";

/** Most event streams of the dashboard one replica serves at once. */
export const MAX_UI_STREAMS = 8;

/** The Content-Security-Policy of every answer under `/ui`. */
export const UI_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Settings of {@linkcode uiRoute}. */
export interface UiRouteOptions extends DashboardViewOptions {
  /** If set, the dashboard needs this client token (as a bearer token, or by session cookie). */
  readonly clientToken?: string;
  /**
   * The replica's client credentials (the app's): the client token and the
   * named tokens. Absent: made of `clientToken` and `node`'s tokens.
   */
  readonly access?: ClientAccess;
  /** Most event streams at once (default {@linkcode MAX_UI_STREAMS}). */
  readonly maxUiStreams?: number;
  /** Least time between two events of a stream, ms (default one second; tests shorten it). */
  readonly uiEventIntervalMs?: number;
}

function securityHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next();
    c.header("Content-Security-Policy", UI_CONTENT_SECURITY_POLICY);
    c.header("Referrer-Policy", "no-referrer");
    c.header("X-Content-Type-Options", "nosniff");
    c.header("X-Frame-Options", "DENY");
    if (!c.res.headers.has("Cache-Control")) c.header("Cache-Control", "no-store");
  };
}

/** The dashboard as a Hono sub-app, to mount at `/ui`. */
export function uiRoute(options: UiRouteOptions): Hono {
  const { node } = options;
  const clientAccess = options.access ?? new ClientAccess({
    tokens: () => node.state.tokens,
    ...(options.clientToken === undefined ? {} : { clientToken: options.clientToken }),
  });
  const dashboard = new DashboardAccess(clientAccess, options.secret, options.clientToken);
  const slots = new StreamSlots(options.maxUiStreams ?? MAX_UI_STREAMS);
  const roundTrips = new RoundTrips(options);
  const changes = new ConfigurationLog();
  const observe = () => changes.observe(node.configuration, node.wallClockMs());
  observe();
  // Cheap unless the epoch changed: it runs in the Ready loop.
  node.onApplied(observe);

  const view = () => {
    roundTrips.refresh();
    return dashboardView(options, { roundTrips: roundTrips.matrix(), changes: changes.entries() });
  };
  const access = (c: Context) => dashboard.judge(c);
  const title = `${options.names?.[node.id] ?? `replica-${node.id}`} · epaxos-kv`;

  const route = new Hono();
  route.use("*", securityHeaders());
  route.get("/", async (c) => {
    const allowed = await access(c);
    if (!allowed.ok) {
      if (allowed.status === 401) c.header("WWW-Authenticate", 'Bearer realm="epaxos-kv"');
      return c.html(renderPage({ locked: allowed.reason }, title), allowed.status);
    }
    return c.html(renderPage({ view: view() }, title));
  });
  route.get("/app.js", (c) => {
    c.header("Content-Type", "text/javascript; charset=utf-8");
    c.header("Cache-Control", "no-cache");
    return c.body(APP_JS);
  });
  route.get("/app.css", (c) => {
    c.header("Content-Type", "text/css; charset=utf-8");
    c.header("Cache-Control", "no-cache");
    return c.body(APP_CSS);
  });
  route.get("/favicon.svg", (c) => {
    c.header("Content-Type", "image/svg+xml");
    c.header("Cache-Control", "max-age=86400");
    return c.body(FAVICON_SVG);
  });
  route.get("/events", async (c) => {
    const allowed = await access(c);
    if (!allowed.ok) return problem(c, allowed.status, allowed.reason);
    const release = slots.take();
    if (release === undefined) {
      c.header("Retry-After", "5");
      return problem(
        c,
        503,
        `This replica serves ${options.maxUiStreams ?? MAX_UI_STREAMS} dashboard streams already`,
      );
    }
    const stream = uiEventStream({
      render: () => {
        const current = view();
        return {
          sections: renderSections(current),
          digest: current.replica.stateDigest,
          at: `${formatTime(current.atMs)} UTC`,
        };
      },
      // A stream let in by a session ends with it: the reconnect is judged anew.
      lifetimeMs: allowed.untilMs === undefined
        ? UI_STREAM_LIFETIME_MS
        : Math.max(1000, Math.min(UI_STREAM_LIFETIME_MS, allowed.untilMs - Date.now())),
      ...(options.uiEventIntervalMs === undefined ? {} : { intervalMs: options.uiEventIntervalMs }),
      onEnd: release,
    });
    c.header("Content-Type", "text/event-stream; charset=utf-8");
    c.header("Cache-Control", "no-cache");
    c.header("X-Accel-Buffering", "no");
    return c.body(stream);
  });
  route.post("/session", async (c) => {
    if (!clientAccess.enforcing) return c.body(null, 204); // Open: nothing to hold.
    const presented = bearerToken(c.req.header("authorization"));
    const principal = presented === undefined ? undefined : dashboard.bearer(presented);
    if (principal === undefined || "ok" in principal) {
      c.header("WWW-Authenticate", 'Bearer realm="epaxos-kv"');
      return problem(
        c,
        401,
        principal !== undefined
          ? "The dashboard refused this token"
          : clientAccess.hasClientToken
          ? "A session needs the client token (Authorization: Bearer <token>)"
          : "A session needs a token with the operations grant (Authorization: Bearer <token>)",
      );
    }
    const untilMs = Date.now() + SESSION_TTL_MS;
    const value = await dashboard.session(principal, untilMs);
    if (typeof value !== "string") return problem(c, 403, value.refused);
    setCookie(c, SESSION_COOKIE, value, {
      path: "/ui",
      httpOnly: true,
      sameSite: "Strict",
      secure: new URL(c.req.url).protocol === "https:",
      maxAge: Math.floor(SESSION_TTL_MS / 1000),
    });
    return c.body(null, 204);
  });
  route.delete("/session", (c) => {
    deleteCookie(c, SESSION_COOKIE, { path: "/ui" });
    return c.body(null, 204);
  });
  return route;
}
