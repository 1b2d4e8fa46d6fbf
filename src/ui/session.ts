/**
 * The dashboard's session cookie: how a page that holds a client token lets
 * its `EventSource` (which cannot set `Authorization`) and its own reloads
 * see the dashboard.
 *
 * The page sends `POST /ui/session` with `Authorization: Bearer <token>`; if
 * the token may see the dashboard, the answer sets a cookie holding an expiry
 * and an HMAC-SHA-256 of it (RFC 2104), keyed by a key derived from the
 * cluster secret and the credential that was checked. The cookie is
 * `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
 * sends it), `Path=/ui` (no other route sees it), `Secure` over https, and
 * lives {@linkcode SESSION_TTL_MS}; the page renews it while open.
 *
 * Why a cookie rather than a signed query parameter: a URL ends up in access
 * logs, proxies and the browser's history, a cookie does not; an
 * `EventSource` reconnects by itself with the cookie, where a short-lived
 * query parameter would have expired. The cookie only ever grants reading the
 * dashboard (`GET /ui`, `GET /ui/events`): the key browser's requests carry
 * the token itself, so a forged cross-site request gains nothing from it.
 * Every replica of a cluster derives the same key, so one session serves
 * them all (browsers share cookies between ports of one host); changing the
 * cluster secret or the client token ends every session.
 *
 * @module
 */

/** The cookie's name. */
export const SESSION_COOKIE = "epaxos_ui";
/** How long a session lasts, ms; the page renews it well before. */
export const SESSION_TTL_MS = 10 * 60_000;

const encoder = new TextEncoder();

function base64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(text)) return undefined;
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") +
    "=".repeat((4 - text.length % 4) % 4);
  try {
    return Uint8Array.from(atob(padded), (char) => char.charCodeAt(0));
  } catch {
    return undefined;
  }
}

async function hmacKey(material: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return await crypto.subtle.importKey(
    "raw",
    material,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
}

/**
 * The key that signs sessions: HMAC-SHA-256 under the cluster `secret` of a
 * label and `credential` (the credential a session stands for, such as the
 * client token), so that changing either ends every session.
 */
export async function sessionKey(secret: string, credential: string): Promise<CryptoKey> {
  const root = await hmacKey(encoder.encode(secret));
  const derived = await crypto.subtle.sign(
    "HMAC",
    root,
    encoder.encode(`epaxos-kv dashboard session v1\u0000${credential}`),
  );
  return await hmacKey(new Uint8Array(derived));
}

/** A session value that expires at `expiresAtMs` (ms since the Unix epoch). */
export async function signSession(key: CryptoKey, expiresAtMs: number): Promise<string> {
  const payload = String(Math.floor(expiresAtMs));
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(payload));
  return `${payload}.${base64Url(new Uint8Array(mac))}`;
}

/**
 * When the session `value` expires (ms since the Unix epoch), if `key`
 * signed it and it has not expired at `nowMs`; `undefined` otherwise
 * (malformed, forged, signed by another key, or expired).
 */
export async function sessionExpiry(
  key: CryptoKey,
  value: string | undefined,
  nowMs: number,
): Promise<number | undefined> {
  if (value === undefined || value.length > 200) return undefined;
  const match = /^(\d{1,16})\.([A-Za-z0-9_-]+)$/.exec(value);
  if (match === null) return undefined;
  const mac = fromBase64Url(match[2]!);
  if (mac === undefined) return undefined;
  // `verify` compares in constant time.
  const genuine = await crypto.subtle.verify("HMAC", key, mac, encoder.encode(match[1]!));
  const expiresAtMs = Number(match[1]);
  return genuine && expiresAtMs > nowMs ? expiresAtMs : undefined;
}
