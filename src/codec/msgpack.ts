/**
 * MessagePack encoding that encodes each instance's payload once.
 *
 * An instance's payload (its batch of client commands) is by far the largest
 * part of every record and message that carries it, and it never changes: a
 * coordinator persists it with the PreAccept, sends it to the fast quorum,
 * persists it again at commit and sends it to every peer with the Commit; the
 * record is rewritten once more when the instance executes. Encoding it anew
 * each time cost most of the encoding time of a replica under load (`--cpu-prof`
 * of `deno task bench:throughput`). Here the encoded bytes of a payload are
 * kept beside the payload array itself (a `WeakMap`, so they go when the
 * instance does) and copied into every record and batch that carries it.
 *
 * The bytes are exactly those `@msgpack/msgpack`'s `encode(value,
 * { ignoreUndefined: true })` produces for the same value (tests check it), so
 * neither the wire format nor the storage format changes and decoding stays
 * with the library.
 *
 * @module
 */

import { Encoder } from "@msgpack/msgpack";
import { NOP, type Payload } from "../core/types.ts";

// The library's encoder, for every value that is not a payload. Its output is
// copied out before the next use.
const valueEncoder = new Encoder({ ignoreUndefined: true });

/** Encoded payloads, by the identity of their (immutable) command arrays. */
const encodedPayloads = new WeakMap<object, Uint8Array>();

/**
 * A payload's MessagePack bytes, encoded at most once per payload array. The
 * array must not change afterwards (payloads are `readonly` throughout the core).
 */
export function encodePayload<C>(payload: Payload<C>): Uint8Array {
  if (payload === NOP || !Array.isArray(payload)) return valueEncoder.encode(payload);
  let bytes = encodedPayloads.get(payload);
  if (bytes === undefined) {
    bytes = valueEncoder.encode(payload);
    encodedPayloads.set(payload, bytes);
  }
  return bytes;
}

/** Map keys whose values are payloads: `command` and `initialCommand`. */
const PAYLOAD_FIELDS = new Set(["command", "initialCommand"]);

/** Largest buffer a writer keeps between uses; a larger one is dropped after use. */
const RETAINED_BUFFER_BYTES = 1 << 20;

/**
 * Builds one MessagePack value piece by piece: container headers written
 * here, values encoded by the library, payloads copied from
 * {@linkcode encodePayload}. One writer serves one encoding at a time.
 */
export class MsgpackWriter {
  #bytes = new Uint8Array(4096);
  #view = new DataView(this.#bytes.buffer);
  #length = 0;

  /** Starts a new value, reusing the buffer. */
  reset(): this {
    if (this.#bytes.length > RETAINED_BUFFER_BYTES) this.#allocate(4096);
    this.#length = 0;
    return this;
  }

  /** The bytes written, as a view valid until the next `reset`. */
  view(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }

  /** The bytes written, as a fresh copy. */
  copy(): Uint8Array {
    return this.#bytes.slice(0, this.#length);
  }

  /** Appends already encoded MessagePack. */
  raw(bytes: Uint8Array): this {
    this.#reserve(bytes.length);
    this.#bytes.set(bytes, this.#length);
    this.#length += bytes.length;
    return this;
  }

  /** Appends an array header for `count` elements. */
  arrayHeader(count: number): this {
    return this.#header(count, 0x90, 0xdc, 0xdd);
  }

  /** Appends a map header for `count` entries. */
  mapHeader(count: number): this {
    return this.#header(count, 0x80, 0xde, 0xdf);
  }

  /** Appends any value, encoded by the library. */
  value(value: unknown): this {
    return this.raw(valueEncoder.encodeSharedRef(value));
  }

  /** Appends a payload, encoded once per payload (see {@linkcode encodePayload}). */
  payload<C>(payload: Payload<C>): this {
    return this.raw(encodePayload(payload));
  }

  /**
   * Appends a plain object as a map, skipping undefined fields like the
   * library's `ignoreUndefined`, and the values of `command` and
   * `initialCommand` as payloads.
   */
  object(object: Readonly<Record<string, unknown>>): this {
    const keys = Object.keys(object);
    let count = 0;
    for (const key of keys) if (object[key] !== undefined) count++;
    this.mapHeader(count);
    for (const key of keys) {
      const value = object[key];
      if (value === undefined) continue;
      this.raw(encodeKey(key));
      if (PAYLOAD_FIELDS.has(key) && (value === NOP || Array.isArray(value))) {
        this.payload(value as Payload<unknown>);
      } else {
        this.value(value);
      }
    }
    return this;
  }

  #header(count: number, fix: number, wide16: number, wide32: number): this {
    if (!Number.isSafeInteger(count) || count < 0 || count > 0xffff_ffff) {
      throw new RangeError(`Cannot encode a container of ${count} entries`);
    }
    this.#reserve(5);
    if (count < 16) {
      this.#bytes[this.#length++] = fix | count;
    } else if (count <= 0xffff) {
      this.#bytes[this.#length++] = wide16;
      this.#view.setUint16(this.#length, count);
      this.#length += 2;
    } else {
      this.#bytes[this.#length++] = wide32;
      this.#view.setUint32(this.#length, count);
      this.#length += 4;
    }
    return this;
  }

  #reserve(more: number): void {
    const needed = this.#length + more;
    if (needed <= this.#bytes.length) return;
    const old = this.#bytes.subarray(0, this.#length);
    this.#allocate(Math.max(needed, this.#bytes.length * 2));
    this.#bytes.set(old);
  }

  #allocate(size: number): void {
    this.#bytes = new Uint8Array(size);
    this.#view = new DataView(this.#bytes.buffer);
  }
}

/** Encoded map keys: messages and records use a handful of field names. */
const encodedKeys = new Map<string, Uint8Array>();
/** Bound on {@linkcode encodedKeys}; keys past it are encoded each time. */
const MAX_ENCODED_KEYS = 256;

function encodeKey(key: string): Uint8Array {
  let bytes = encodedKeys.get(key);
  if (bytes === undefined) {
    bytes = valueEncoder.encode(key);
    if (encodedKeys.size < MAX_ENCODED_KEYS) encodedKeys.set(key, bytes);
  }
  return bytes;
}
