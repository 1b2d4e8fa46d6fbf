/**
 * Requests no route takes: 405 Method Not Allowed with `Allow` when the path
 * exists under other methods (RFC 9110 §15.5.6: "the origin server MUST
 * generate an Allow header field"), else 404; a JSON error either way.
 *
 * The methods of a path come from the app's own router, so every route any
 * file adds is covered without a list to keep in step with it.
 *
 * @module
 */

import type { Hono, NotFoundHandler } from "hono";
import { problem } from "./problem.ts";

/** The methods a route of the replica may have, in the order `Allow` lists them. */
const ROUTE_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"] as const;

/**
 * The methods `app` has a route for at `path`, in a fixed order, with `HEAD`
 * after `GET` (Hono answers `HEAD` with the `GET` route). Middleware (routes
 * of every method, such as a bearer check) does not count: it answers no
 * request by itself.
 */
export function allowedMethods(app: Hono, path: string): string[] {
  const allowed: string[] = [];
  for (const method of ROUTE_METHODS) {
    const [matches] = app.router.match(method, path);
    if (matches.some(([[, route]]) => route.method === method)) {
      allowed.push(method);
      if (method === "GET") allowed.push("HEAD");
    }
  }
  return allowed;
}

/**
 * The app's not-found handler: 405 with `Allow` and `{"error", "allowed"}`
 * when `app` has routes for the path under other methods, 404 with
 * `{"error"}` when it has none. Only requests no route answered reach it, so
 * it costs nothing on the others.
 */
export function methodNotAllowed(app: Hono): NotFoundHandler {
  return (c) => {
    const { method, path } = c.req;
    const allowed = allowedMethods(app, path);
    if (allowed.length === 0) return problem(c, 404, `No route for ${method} ${path}`);
    c.header("Allow", allowed.join(", "));
    return problem(
      c,
      405,
      `Method ${method} is not allowed on ${path}; it allows ${allowed.join(", ")}`,
      { allowed },
    );
  };
}
