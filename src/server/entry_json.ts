/**
 * A key's entry as the curl API's JSON answers show it: list items, watch
 * events.
 *
 * @module
 */

import type { KvEntry } from "../kv/state_machine.ts";
import { formatExpiry } from "./ttl.ts";

/**
 * A list item: the value as text when it is UTF-8, else as base64; the
 * version; and `expiresAt` (RFC 3339) when the key has a TTL.
 */
export function entryJson(key: string, entry: KvEntry): Record<string, unknown> {
  let text: string | undefined;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(entry.value);
  } catch {
    text = undefined;
  }
  const item: Record<string, unknown> = text === undefined
    ? { key, valueBase64: btoa(String.fromCharCode(...entry.value)), version: entry.version }
    : { key, value: text, version: entry.version };
  if (entry.expiresAt !== undefined) item.expiresAt = formatExpiry(entry.expiresAt);
  return item;
}
