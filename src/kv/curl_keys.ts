/**
 * The rules for keys of the curl API (the HTTP `/kv/{key}` routes): strings of
 * valid Unicode, which share the state's string keyspace with the Deno KV
 * databases (`database_keys.ts`) but never reach into their part of it.
 *
 * Kept apart from `commands.ts` (which re-exports them) so that the
 * multi-key commands (`txn_commands.ts`) can use them without an import
 * circle.
 *
 * @module
 */

/** Longest key accepted, in UTF-8 bytes (Deno KV allows 2 KiB keys; the rest is ours). */
export const MAX_KEY_BYTES = 1024;
/** Largest value accepted, in bytes (Deno KV's 64 KiB value limit, less room for metadata). */
export const MAX_VALUE_BYTES = 60 * 1024;
/** Most entries one list returns. */
export const MAX_LIST_LIMIT = 1000;

/**
 * Where the curl keyspace ends: every state key from here on belongs to a Deno
 * KV database (`database_keys.ts`). No curl key starts with it
 * ({@linkcode keyProblem}), so a curl list, whatever its prefix, stops here.
 */
export const CURL_SPACE_END = "\ufffe";

/** The upper bound of the span of keys starting with `prefix` (keys never contain U+FFFF). */
export function prefixEnd(prefix: string): string {
  return `${prefix}\uffff`;
}

/**
 * The end of the span a curl list of `prefix` reads: the span of the prefix,
 * cut at {@linkcode CURL_SPACE_END} (for the empty prefix, whose span would
 * otherwise hold every database's keys; and for a prefix in the database
 * space, which then reads nothing).
 */
export function curlListEnd(prefix: string): string {
  const end = prefixEnd(prefix);
  return end > CURL_SPACE_END ? CURL_SPACE_END : end;
}

/**
 * The length of `text` in UTF-8 as `TextEncoder` writes it (a lone surrogate
 * becomes U+FFFD, 3 bytes), counted without encoding: every command a replica
 * validates has its key measured, and an encoding per key was an allocation
 * and an op call each (`--cpu-prof` of `bench:throughput`).
 */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else {
        bytes += 3;
      }
    } else {
      bytes += 3;
    }
  }
  return bytes;
}

/** Why `key` is not acceptable as a curl key, or `undefined` if it is. */
export function keyProblem(key: string): string | undefined {
  if (key.length === 0) return "Key must not be empty";
  // URL parsers collapse these path segments (even percent-encoded), so no
  // HTTP client could address them.
  if (key === "." || key === "..") return "Key must not be . or ..";
  // A UTF-16 code unit is at most 3 bytes of UTF-8, so short keys need no count.
  if (
    key.length > MAX_KEY_BYTES ||
    (key.length * 3 > MAX_KEY_BYTES && utf8Length(key) > MAX_KEY_BYTES)
  ) {
    return `Key is longer than ${MAX_KEY_BYTES} bytes`;
  }
  if (key.includes("\uffff")) return "Key must not contain U+FFFF";
  // The Deno KV databases' part of the keyspace (`database_keys.ts`).
  if (key.charCodeAt(0) === 0xfffe) return "Key must not start with U+FFFE";
  if (!key.isWellFormed()) return "Key must be valid Unicode";
  return undefined;
}

/** Why `prefix` is not acceptable as a curl list prefix, or `undefined` if it is. */
export function listPrefixProblem(prefix: string): string | undefined {
  if (prefix.length > MAX_KEY_BYTES) return `Prefix is longer than ${MAX_KEY_BYTES} characters`;
  if (prefix.includes("\uffff")) return "Prefix must not contain U+FFFF";
  if (prefix.charCodeAt(0) === 0xfffe) return "Prefix must not start with U+FFFE";
  return undefined;
}
