/**
 * Values over Deno KV's 64 KiB value limit, split into chunks under
 * consecutive keys, and put back together.
 *
 * A value of `n` bytes is written under `[...prefix, 0]`, `[...prefix, 1]`,
 * ... as chunks of at most {@linkcode CHUNK_BYTES} bytes; chunk 0 starts with
 * the chunk count (uint32, big-endian), so a reader knows where the value ends
 * even when a longer earlier version left higher chunks behind. Instance
 * records, effects log entries and the redo log are chunked this way.
 *
 * @module
 */

import { type Write, write } from "./writes.ts";

/** Largest chunk payload of a record or redo log, in bytes (Deno KV's 64 KiB value limit, less the 4-byte count). */
export const CHUNK_BYTES = 65536 - 4;

/** `bytes` as chunk sets under `prefix`, chunk 0 prefixed with the chunk count. */
export function chunkWrites(prefix: readonly (string | number)[], bytes: Uint8Array): Write[] {
  const count = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
  const writes: Write[] = [];
  for (let chunk = 0; chunk < count; chunk++) {
    const part = bytes.subarray(chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES);
    let value: Uint8Array;
    if (chunk === 0) {
      value = new Uint8Array(4 + part.length);
      new DataView(value.buffer).setUint32(0, count);
      value.set(part, 4);
    } else {
      value = part.slice();
    }
    writes.push(write([...prefix, chunk], value));
  }
  return writes;
}

/** The chunk count that chunk 0 starts with (it must have at least 4 bytes). */
export function chunkCount(first: Uint8Array): number {
  return new DataView(first.buffer, first.byteOffset, 4).getUint32(0);
}

/** Reassembles chunks written by {@linkcode chunkWrites}. */
export function assembleChunks(
  chunks: readonly Uint8Array[],
  fail: (reason: string) => Error,
): Uint8Array {
  const first = chunks[0]!;
  if (first.length < 4) throw fail("chunk 0 has no count");
  const count = chunkCount(first);
  if (count < 1) throw fail("chunk count is 0");
  const parts: Uint8Array[] = [];
  for (let chunk = 0; chunk < count; chunk++) {
    const part = chunks[chunk];
    if (part === undefined) throw fail(`chunk ${chunk} of ${count} is missing`);
    parts.push(part);
  }
  return concat(parts, 4);
}

/** The parts joined, without the first `skip` bytes of the first part. */
export function concat(parts: readonly Uint8Array[], skip: number): Uint8Array {
  if (parts.length === 1) return parts[0]!.subarray(skip);
  let length = -skip;
  for (const part of parts) length += part.length;
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = i === 0 ? parts[i]!.subarray(skip) : parts[i]!;
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}
