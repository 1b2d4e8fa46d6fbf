/**
 * KV Connect's metadata exchange (kv-connect.md, "Metadata Exchange"): the
 * protocol version both sides speak, the database's id, the data-path
 * endpoint and the token the data path then requires.
 *
 * Nothing here needs consensus: Deno's client repeats the exchange at least
 * once a minute per open database, so it must stay cheap. The database id is
 * derived from the name and the token is a stateless HMAC of the database
 * and its expiry under the cluster secret, so every replica gives the same id
 * and accepts a token any replica issued.
 *
 * @module
 */

import { bearerToken, sameSecret } from "../net/bearer.ts";

const encoder = new TextEncoder();

/** Protocol versions this server speaks (v1 lacks the headers that name the database). */
export type ProtocolVersion = 2 | 3;

/** How long an issued token (and the metadata that carries it) lasts. */
export const TOKEN_LIFETIME_MS = 60 * 60 * 1000;

/**
 * How long after its expiry a token is still accepted: replicas' clocks may
 * differ, and a client uses its metadata until the expiry its own clock reads.
 */
export const TOKEN_GRACE_MS = 5 * 60 * 1000;

/**
 * The protocol version to speak with a client whose exchange body is `body`
 * (parsed JSON, `undefined` if there was none), or why none fits. denokv's
 * schema lists only versions 1 and 2, and Deno 2.x sends `[1, 2, 3]`: the
 * body is read loosely (any numbers, other fields ignored).
 */
export function negotiateVersion(
  body: unknown,
): { readonly version: ProtocolVersion } | { readonly problem: string } {
  const versions = typeof body === "object" && body !== null
    ? (body as { supportedVersions?: unknown }).supportedVersions
    : undefined;
  if (!Array.isArray(versions)) {
    // denokv's wording: a body without versions is a version 1 client.
    return {
      problem: "The server requires at least protocol version 2. Use Deno 1.38.0 or newer.",
    };
  }
  if (versions.includes(3)) return { version: 3 };
  if (versions.includes(2)) return { version: 2 };
  return {
    problem:
      "The server could not negotiate a protocol version. The server requires protocol version 2 or 3.",
  };
}

/**
 * The id of database `name`: a UUID (version 8, RFC 9562 §5.8) made of the
 * SHA-256 of the name, so every replica gives the same one and no table is
 * needed.
 */
export async function databaseIdOf(name: string): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", encoder.encode(`epaxos-kv database ${name}`)),
  );
  const bytes = digest.slice(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x80; // version 8
  bytes[8] = (bytes[8]! & 0x3f) | 0x80; // variant 10
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20)
  }`;
}

/** Most verified tokens remembered (a bounded cache: cleared when full). */
export const VERIFIED_TOKENS_KEPT = 4096;

/** Issues and checks data-path tokens under the cluster secret. */
export class TokenIssuer {
  readonly #key: Promise<CryptoKey>;
  /**
   * Tokens whose MAC was checked, by database and token, with their expiry:
   * every data-path request carries one, and an HMAC costs ~60 µs.
   */
  readonly #verified = new Map<string, number>();

  /** Tokens signed with `secret` (the cluster secret, the same on every replica). */
  constructor(secret: string) {
    this.#key = crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
  }

  async #mac(database: string, expiresAtMs: number): Promise<string> {
    const mac = await crypto.subtle.sign(
      "HMAC",
      await this.#key,
      encoder.encode(`epaxos-kv kvconnect token\0${database}\0${expiresAtMs}`),
    );
    return btoa(String.fromCharCode(...new Uint8Array(mac)))
      .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  }

  /** A token for `database` that expires at `expiresAtMs`: `v1.<expiry>.<mac>`. */
  async issue(database: string, expiresAtMs: number): Promise<string> {
    return `v1.${expiresAtMs}.${await this.#mac(database, expiresAtMs)}`;
  }

  /**
   * Whether `token` was issued for `database` and has not expired at
   * `nowMs` (with {@linkcode TOKEN_GRACE_MS}).
   */
  async verify(token: string, database: string, nowMs: number): Promise<boolean> {
    const cacheKey = `${database}\0${token}`;
    const known = this.#verified.get(cacheKey);
    if (known !== undefined) return known + TOKEN_GRACE_MS >= nowMs;
    const match = /^v1\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (match === null) return false;
    const expiresAtMs = Number(match[1]);
    if (expiresAtMs + TOKEN_GRACE_MS < nowMs) return false;
    if (!sameSecret(match[2]!, encoder.encode(await this.#mac(database, expiresAtMs)))) {
      return false;
    }
    if (this.#verified.size >= VERIFIED_TOKENS_KEPT) this.#verified.clear();
    this.#verified.set(cacheKey, expiresAtMs);
    return true;
  }
}

/** The metadata a successful exchange answers (`kv-metadata-exchange-response.v2.json`, and v3 alike). */
export interface DatabaseMetadata {
  /** The protocol version chosen. */
  readonly version: ProtocolVersion;
  /** The database's UUID. */
  readonly databaseId: string;
  /** The data path: relative to the exchange's URL, no trailing `/`; strong, so every read goes there. */
  readonly endpoints: readonly { readonly url: string; readonly consistency: "strong" }[];
  /** The token the data path requires. */
  readonly token: string;
  /** When the metadata (and the token) expires, RFC 3339. */
  readonly expiresAt: string;
}

/**
 * Why the exchange's `Authorization` header is refused, or `undefined`.
 * Without a client token any bearer token is taken (a local cluster: the
 * client insists on sending one); with one, it must be that token.
 */
export function exchangeAuthProblem(
  header: string | undefined,
  clientToken: Uint8Array | undefined,
): string | undefined {
  const token = bearerToken(header);
  if (token === undefined) return "Malformed authorization header.";
  if (clientToken !== undefined && !sameSecret(token, clientToken)) return "Invalid access token.";
  return undefined;
}
