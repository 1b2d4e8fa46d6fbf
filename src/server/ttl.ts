/**
 * Time to live on the curl API (issue 17 item 6): `PUT /kv/KEY?ttl=30s` and a
 * `POST /txn` put's `"ttl"`. A TTL is made absolute by the replica that takes
 * the request (its wall clock, `ReplicaDriver.wallClockMs`) and stored as the
 * entry's `expiresAt`; replicas delete the key some time after
 * (src/driver/expiry.ts). Answers show it as RFC 3339 text in UTC with
 * milliseconds (`Kv-Expires: 2025-01-01T00:00:30.000Z`), the form KV
 * Connect's metadata uses for its own expiry.
 *
 * @module
 */

/** Shortest TTL accepted, ms: one scan interval of expiry. */
export const MIN_TTL_MS = 1000;
/** Longest TTL accepted, ms: 365 days. */
export const MAX_TTL_MS = 365 * 24 * 60 * 60 * 1000;

/** The header that tells a key's expiry. */
export const EXPIRES_HEADER = "Kv-Expires";

const TTL_PATTERN = /^(\d{1,12})(s|m|h)?$/;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000 };

/**
 * The TTL `text` gives, in ms: a whole number of seconds (`30`, `30s`),
 * minutes (`5m`) or hours (`2h`), from 1 s to 365 days; or a problem to
 * answer 400 with.
 */
export function parseTtl(text: string): { readonly ms: number } | { readonly problem: string } {
  const match = TTL_PATTERN.exec(text.trim());
  const usage = "ttl must be a whole number of seconds (30 or 30s), minutes (5m) or hours (2h), " +
    "from 1s to 365 days (8760h)";
  if (match === null) return { problem: `${usage}; got ${JSON.stringify(text.slice(0, 32))}` };
  const ms = Number(match[1]) * UNIT_MS[match[2] ?? "s"]!;
  if (ms < MIN_TTL_MS || ms > MAX_TTL_MS) return { problem: `${usage}; got ${text.trim()}` };
  return { ms };
}

/** The `expiresAt` of a write made now (`nowMs`, the replica's wall clock) with a TTL of `ttlMs`. */
export function expiresAtOf(nowMs: number, ttlMs: number): number {
  // A whole number of ms (the state machine takes nothing else), never before now + TTL.
  return Math.ceil(nowMs + ttlMs);
}

/** An `expiresAt` as answers show it: RFC 3339 in UTC with milliseconds. */
export function formatExpiry(expiresAt: number): string {
  return new Date(expiresAt).toISOString();
}
