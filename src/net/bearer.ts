/**
 * Bearer credentials, read and compared one way for every route that needs
 * them: the peer route checks the cluster credential, the client routes the
 * client token.
 *
 * @module
 */

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
