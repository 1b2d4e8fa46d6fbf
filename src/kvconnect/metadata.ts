/**
 * KV Connect's metadata exchange (kv-connect.md, "Metadata Exchange"): the
 * protocol version both sides speak, the database's id, the data-path
 * endpoint and the token the data path then requires.
 *
 * Nothing here needs consensus: Deno's client repeats the exchange at least
 * once a minute per open database, so it must stay cheap. The database id is
 * derived from the name and the token is a stateless HMAC of the database,
 * its expiry and its holder under the cluster secret, so every replica gives
 * the same id and accepts a token any replica issued.
 *
 * The holder is whom the exchange's bearer token named (`src/server/access.ts`):
 * `open` (no credentials enforced), `client` (the client token) or a named
 * token's SHA-256. Each data-path request looks the holder up again in the
 * replica's current tokens and checks its grant on the database
 * ({@linkcode dataPathRefusal}): a token removed, or enforcement turned on,
 * stops the data path at once, not at the data-path token's expiry.
 *
 * @module
 */

import { bearerToken, sameSecret } from "../net/bearer.ts";
import { type ClientAccess, type Principal, refusalMessage } from "../server/access.ts";

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

/**
 * Whom a data-path token was issued to: `open`, `client`, a named token's
 * SHA-256 (64 hex digits), or `v1` for a token of the format before holders
 * (issued to whoever the exchange took then).
 */
export type TokenHolder = string;

const HOLDER_PATTERN = /^(open|client|[0-9a-f]{64})$/;

/** Issues and checks data-path tokens under the cluster secret. */
export class TokenIssuer {
  readonly #key: Promise<CryptoKey>;
  /**
   * Tokens whose MAC was checked, by database and token, with their expiry
   * and holder: every data-path request carries one, and an HMAC costs ~60 µs.
   */
  readonly #verified = new Map<string, { expiresAtMs: number; holder: TokenHolder }>();

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

  async #mac(database: string, expiresAtMs: number, holder?: TokenHolder): Promise<string> {
    const mac = await crypto.subtle.sign(
      "HMAC",
      await this.#key,
      encoder.encode(
        holder === undefined
          ? `epaxos-kv kvconnect token\0${database}\0${expiresAtMs}`
          : `epaxos-kv kvconnect token v2\0${database}\0${expiresAtMs}\0${holder}`,
      ),
    );
    return btoa(String.fromCharCode(...new Uint8Array(mac)))
      .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  }

  /**
   * A token for `holder` (`open`, `client` or a named token's SHA-256) on
   * `database` that expires at `expiresAtMs`: `v2.<expiry>.<holder>.<mac>`.
   */
  async issue(database: string, expiresAtMs: number, holder: TokenHolder): Promise<string> {
    if (!HOLDER_PATTERN.test(holder)) throw new RangeError(`Not a token holder: ${holder}`);
    return `v2.${expiresAtMs}.${holder}.${await this.#mac(database, expiresAtMs, holder)}`;
  }

  /**
   * The holder of `token` if it was issued for `database` and has not
   * expired at `nowMs` (with {@linkcode TOKEN_GRACE_MS}), else `undefined`.
   * A token of the format before holders (`v1.<expiry>.<mac>`, which a
   * replica of the previous version issued) answers `v1`.
   */
  async verify(token: string, database: string, nowMs: number): Promise<TokenHolder | undefined> {
    const cacheKey = `${database}\0${token}`;
    const known = this.#verified.get(cacheKey);
    if (known !== undefined) {
      return known.expiresAtMs + TOKEN_GRACE_MS >= nowMs ? known.holder : undefined;
    }
    const match = /^v1\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(token) ??
      /^v2\.(\d{1,16})\.(open|client|[0-9a-f]{64})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (match === null) return undefined;
    const expiresAtMs = Number(match[1]);
    if (expiresAtMs + TOKEN_GRACE_MS < nowMs) return undefined;
    const holder = match.length === 4 ? match[2]! : undefined;
    const mac = match.length === 4 ? match[3]! : match[2]!;
    if (!sameSecret(mac, encoder.encode(await this.#mac(database, expiresAtMs, holder)))) {
      return undefined;
    }
    if (this.#verified.size >= VERIFIED_TOKENS_KEPT) this.#verified.clear();
    this.#verified.set(cacheKey, { expiresAtMs, holder: holder ?? "v1" });
    return holder ?? "v1";
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

/** A refusal of KV Connect: its status and its plain-text message. */
export interface KvConnectRefusal {
  /** 401 (no valid credentials) or 403 (not allowed). */
  readonly status: 401 | 403;
  /** The message, plain text as the protocol has it. */
  readonly message: string;
}

/**
 * The holder a data-path token for `database` is issued to after an exchange
 * with `Authorization` header `header`, or why the exchange is refused: the
 * client always sends a bearer token (any will do while no credentials are
 * enforced), and with credentials enforced it must be the client token or
 * a named token with a grant on the database (read is enough to connect:
 * each data-path request is checked again, `dataPathRefusal`).
 */
export function exchangeHolder(
  header: string | undefined,
  access: ClientAccess,
  database: string,
): { readonly holder: TokenHolder } | KvConnectRefusal {
  const token = bearerToken(header);
  if (token === undefined) return { status: 401, message: "Malformed authorization header." };
  const principal = access.principalOf(token);
  if (principal === undefined) return { status: 401, message: "Invalid access token." };
  const refusal = kvConnectRefusal(access, principal, "connect", database, false);
  if (refusal !== undefined) return refusal;
  return {
    holder: principal.kind === "token" ? principal.record.hash : principal.kind,
  };
}

function kvConnectRefusal(
  access: ClientAccess,
  principal: Principal,
  operation: string,
  database: string,
  write: boolean,
): KvConnectRefusal | undefined {
  const refusal = access.refusal(principal, operation, [{ kind: "database", database, write }]);
  return refusal === undefined
    ? undefined
    : { status: 403, message: `${refusalMessage(refusal, "")}.` };
}

/**
 * Why a data-path request (`operation`: `snapshot_read`, `watch`, or
 * `atomic_write` with `write`) of `database` with a token issued to `holder`
 * is refused now, or `undefined`: the holder must still be what it was (no
 * enforcement for `open`, the client token configured for `client`, the
 * named token still there) and allowed the operation.
 */
export function dataPathRefusal(
  holder: TokenHolder,
  access: ClientAccess,
  operation: string,
  database: string,
  write: boolean,
): KvConnectRefusal | undefined {
  const invalid: KvConnectRefusal = { status: 401, message: "Invalid access token." };
  let principal: Principal;
  if (holder === "open" || (holder === "v1" && !access.hasClientToken)) {
    if (access.enforcing) return invalid;
    principal = { kind: "open" };
  } else if (holder === "client" || holder === "v1") {
    if (!access.hasClientToken) return invalid;
    principal = { kind: "client" };
  } else {
    const record = access.tokenByHash(holder);
    if (record === undefined) return invalid;
    principal = { kind: "token", record };
  }
  return kvConnectRefusal(access, principal, operation, database, write);
}
