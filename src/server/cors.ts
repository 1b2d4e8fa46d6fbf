/**
 * Cross-origin requests from browsers (the Fetch standard's CORS protocol):
 * off unless origins are configured (`corsOrigins` in the cluster file,
 * `--cors-origin` on a replica), then answered for exactly those origins.
 * A request from any other origin gets no `Access-Control-*` field, so the
 * browser keeps its answer from the page.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { cors } from "hono/cors";

/** Methods a page of an allowed origin may use (the preflight's `Access-Control-Allow-Methods`). */
export const CORS_METHODS: readonly string[] = ["GET", "HEAD", "PUT", "POST", "DELETE"];
/** Request fields a page may set: the client token and the conditions. */
export const CORS_REQUEST_HEADERS: readonly string[] = [
  "Authorization",
  "Content-Type",
  "If-Match",
  "If-None-Match",
];
/** Answer fields a page may read besides the safelisted ones. */
export const CORS_EXPOSED_HEADERS: readonly string[] = [
  "ETag",
  "Kv-Version",
  "Kv-Expires",
  "Retry-After",
];
/** How long a browser may keep a preflight's answer, in seconds. */
export const CORS_MAX_AGE_SECONDS = 600;

/**
 * Middleware for the CORS protocol with `origins` allowed (each a serialized
 * origin, `https://app.example`; see `corsOriginProblem`). Requests from
 * those origins go through `hono/cors`: a preflight (`OPTIONS`) is answered
 * 204 with the methods, request fields and max age; other requests get
 * `Access-Control-Allow-Origin` and the exposed fields on whatever the route
 * answers, errors included. Requests from other origins, or none, pass
 * untouched: `hono/cors` would set the exposed and allowed fields and answer
 * every `OPTIONS` for them too. Every answer varies by `Origin`.
 */
export function corsMiddleware(origins: readonly string[]): MiddlewareHandler {
  const allowed = new Set(origins);
  const forAllowed = cors({
    origin: (origin) => allowed.has(origin) ? origin : null,
    allowMethods: [...CORS_METHODS],
    allowHeaders: [...CORS_REQUEST_HEADERS],
    exposeHeaders: [...CORS_EXPOSED_HEADERS],
    maxAge: CORS_MAX_AGE_SECONDS,
  });
  return async (c, next) => {
    const origin = c.req.header("origin");
    if (origin !== undefined && allowed.has(origin)) return await forAllowed(c, next);
    await next();
    c.header("Vary", "Origin", { append: true });
  };
}
