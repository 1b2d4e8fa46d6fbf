/**
 * Bearer credentials, read and compared one way for every route that needs
 * them: the peer route checks the cluster credential, the admin route too,
 * the client routes the client token.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";

const encoder = new TextEncoder();

/** The token of an `Authorization: Bearer <token>` header, or `undefined` if there is none. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  return match?.[1];
}

/**
 * Compares a presented secret with the expected one in time that does not
 * depend on where they differ (only on the presented length). Synchronous: it
 * runs on every peer request.
 */
export function sameSecret(candidate: string, expected: Uint8Array): boolean {
  const presented = encoder.encode(candidate);
  let difference = presented.length ^ expected.length;
  for (let i = 0; i < presented.length; i++) {
    difference |= presented[i]! ^ (expected[i % expected.length] ?? 0);
  }
  return difference === 0;
}

/**
 * Middleware that lets a request through only with `Authorization: Bearer
 * <secret>`; any other gets 401 with `WWW-Authenticate: Bearer realm=...` and
 * `{"error": refusal(presented)}`, `presented` telling whether a bearer token
 * was there at all, and nothing else is done.
 */
export function requireBearer(
  secret: Uint8Array,
  options: { readonly realm: string; readonly refusal: (presented: boolean) => string },
): MiddlewareHandler {
  return async (c, next) => {
    const token = bearerToken(c.req.header("authorization"));
    if (token === undefined || !sameSecret(token, secret)) {
      c.header("WWW-Authenticate", `Bearer realm="${options.realm}"`);
      return c.json({ error: options.refusal(token !== undefined) }, 401);
    }
    await next();
    return undefined;
  };
}
