/**
 * A small JSON request body, read whole and parsed, for the admin routes
 * that take one (`membership_route.ts`, `token_route.ts`).
 *
 * @module
 */

import type { Context } from "hono";

/**
 * The parsed JSON body of `c`'s request, or the answer refusing it: 413 past
 * `maxBytes` characters, 400 if it is not JSON; `what` names the body in
 * the message ("The change").
 */
export async function jsonBody(
  c: Context,
  maxBytes: number,
  what: string,
): Promise<{ readonly value: unknown } | { readonly refused: Response }> {
  const text = await c.req.text();
  if (text.length > maxBytes) {
    return { refused: c.json({ error: `${what} is larger than ${maxBytes} bytes` }, 413) };
  }
  try {
    return { value: JSON.parse(text) };
  } catch {
    return { refused: c.json({ error: `${what} is not JSON` }, 400) };
  }
}
