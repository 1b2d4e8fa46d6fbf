/**
 * The numbers of V8's serialization format (what `Deno.Kv` stores a
 * JavaScript value as, encoding 1), as far as denokv's `sum` of V8 values
 * needs them: a Number (`I` int32, `U` uint32, `N` double) or a BigInt (`Z`),
 * after the header `0xFF` and a version.
 *
 * A sum's result is written as denokv writes it: a Number as a double (`N`),
 * a BigInt as `Z`, both after version 15, so that every replica stores the
 * same bytes and Deno's client reads them back (V8's `ValueDeserializer`,
 * v8/src/objects/value-serializer.cc).
 *
 * @module
 */

/** A number or a BigInt read from V8's format. */
export type V8Number =
  | { readonly kind: "Number"; readonly value: number }
  | { readonly kind: "BigInt"; readonly value: bigint };

/** The serialization version written (V8's current, and Deno 2.9's). */
const WRITTEN_VERSION = 15;
/** Oldest version read: the first with the header byte first. */
const OLDEST_VERSION = 13;
const TAG_HEADER = 0xff;
const TAG_PADDING = 0x00;
const TAG_INT32 = 0x49; // "I"
const TAG_UINT32 = 0x55; // "U"
const TAG_DOUBLE = 0x4e; // "N"
const TAG_BIGINT = 0x5a; // "Z"

/** Each byte's two hexadecimal digits. */
const HEX_BYTES = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/** Reads a base-128 varint at `offset`; undefined past the end or beyond 2^53. */
function readVarint(
  bytes: Uint8Array,
  offset: number,
): { readonly value: number; readonly next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = offset; i < bytes.length && i < offset + 8; i++) {
    const byte = bytes[i]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, next: i + 1 };
    scale *= 128;
  }
  return undefined;
}

function writeVarint(value: number, out: number[]): void {
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
}

/**
 * The number or BigInt `bytes` hold in V8's format, or undefined when they
 * hold anything else (another type, a malformed value, bytes left over).
 */
export function decodeV8Number(bytes: Uint8Array): V8Number | undefined {
  if (bytes.length < 3 || bytes[0] !== TAG_HEADER) return undefined;
  const version = readVarint(bytes, 1);
  if (version === undefined || version.value < OLDEST_VERSION) return undefined;
  let offset = version.next;
  // V8 may pad before a value.
  while (offset < bytes.length && bytes[offset] === TAG_PADDING) offset++;
  const tag = bytes[offset++];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (tag) {
    case TAG_INT32:
    case TAG_UINT32: {
      const read = readVarint(bytes, offset);
      if (read === undefined || read.next !== bytes.length || read.value > 0xffff_ffff) {
        return undefined;
      }
      if (tag === TAG_UINT32) return { kind: "Number", value: read.value };
      // Zigzag: 0, -1, 1, -2, ...
      const value = read.value % 2 === 0 ? read.value / 2 : -(read.value + 1) / 2;
      return { kind: "Number", value };
    }
    case TAG_DOUBLE:
      if (offset + 8 !== bytes.length) return undefined;
      return { kind: "Number", value: view.getFloat64(offset, true) };
    case TAG_BIGINT: {
      // The bit field: byte length of the digits times two, plus the sign.
      const read = readVarint(bytes, offset);
      if (read === undefined) return undefined;
      const negative = read.value % 2 === 1;
      const length = Math.floor(read.value / 2);
      if (length % 8 !== 0 || read.next + length !== bytes.length) return undefined;
      // Through hexadecimal, in time linear in the digits: shifting a
      // BigInt up word by word is quadratic (64 ms for a 64 KiB operand).
      const hex = new Array<string>(length);
      for (let i = 0; i < length; i++) hex[length - 1 - i] = HEX_BYTES[bytes[read.next + i]!]!;
      const value = length === 0 ? 0n : BigInt(`0x${hex.join("")}`);
      return { kind: "BigInt", value: negative ? -value : value };
    }
    default:
      return undefined;
  }
}

/** `value` in V8's format, as denokv writes a sum's result (a Number as a double). */
export function encodeV8Number(value: V8Number): Uint8Array {
  if (value.kind === "Number") {
    const bytes = new Uint8Array(11);
    bytes.set([TAG_HEADER, WRITTEN_VERSION, TAG_DOUBLE]);
    new DataView(bytes.buffer).setFloat64(3, value.value, true);
    return bytes;
  }
  const negative = value.value < 0n;
  // Through hexadecimal, linear in the digits (see `decodeV8Number`); the
  // digits are whole 64-bit words, least significant first.
  const magnitude = negative ? -value.value : value.value;
  const text = magnitude === 0n ? "" : magnitude.toString(16);
  const length = Math.ceil(text.length / 16) * 8;
  const hex = text.padStart(length * 2, "0");
  const head: number[] = [TAG_HEADER, WRITTEN_VERSION, TAG_BIGINT];
  writeVarint(length * 2 + (negative ? 1 : 0), head);
  const bytes = new Uint8Array(head.length + length);
  bytes.set(head);
  for (let i = 0; i < length; i++) {
    bytes[head.length + i] = parseInt(hex.slice(hex.length - 2 * (i + 1), hex.length - 2 * i), 16);
  }
  return bytes;
}
