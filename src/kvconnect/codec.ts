/**
 * The protobuf messages of KV Connect's data path (denokv's
 * `proto/schema/datapath.proto`, generated into `./gen/` by `deno task
 * proto` on `@bufbuild/protobuf`), and the framing of a watch stream.
 *
 * Decoding a request body that is not its message answers 400 with denokv's
 * wording (`Request protobuf is invalid: …`); nothing is proposed.
 *
 * @module
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ClientRequestError } from "../errors.ts";
import {
  type AtomicWrite,
  type AtomicWriteOutput,
  AtomicWriteOutputSchema,
  AtomicWriteSchema,
  AtomicWriteStatus,
  KvEntrySchema,
  type SnapshotRead,
  type SnapshotReadOutput,
  SnapshotReadOutputSchema,
  SnapshotReadSchema,
  SnapshotReadStatus,
  type Watch,
  WatchKeyOutputSchema,
  type WatchOutput,
  WatchOutputSchema,
  WatchSchema,
} from "./gen/datapath_pb.ts";

export {
  type AtomicWrite,
  AtomicWriteStatus,
  type Check,
  type Mutation,
  MutationType,
  type ReadRange,
  type SnapshotRead,
  SnapshotReadStatus,
  ValueEncoding,
  type Watch,
} from "./gen/datapath_pb.ts";

/** An entry as KV Connect carries it: binary key, value bytes, encoding tag, 10-byte versionstamp. */
export interface WireEntry {
  /** The key, in Deno KV's order-preserving encoding. */
  readonly key: Uint8Array;
  /** The value's bytes. */
  readonly value: Uint8Array;
  /** `ValueEncoding`: 1 V8, 2 LE64, 3 bytes. */
  readonly encoding: number;
  /** The commit's versionstamp, 10 bytes. */
  readonly versionstamp: Uint8Array;
}

function decode<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new ClientRequestError(
      `Request protobuf is invalid: ${what}: ${(error as Error).message}.`,
      400,
    );
  }
}

/**
 * Decodes a `SnapshotRead` request body.
 *
 * @throws {ClientRequestError} (400) if it is not one.
 */
export function decodeSnapshotRead(body: Uint8Array): SnapshotRead {
  return decode("SnapshotRead", () => fromBinary(SnapshotReadSchema, body));
}

/**
 * Decodes an `AtomicWrite` request body.
 *
 * @throws {ClientRequestError} (400) if it is not one.
 */
export function decodeAtomicWrite(body: Uint8Array): AtomicWrite {
  return decode("AtomicWrite", () => fromBinary(AtomicWriteSchema, body));
}

/**
 * Decodes a `Watch` request body.
 *
 * @throws {ClientRequestError} (400) if it is not one.
 */
export function decodeWatch(body: Uint8Array): Watch {
  return decode("Watch", () => fromBinary(WatchSchema, body));
}

function wireEntry(entry: WireEntry) {
  return create(KvEntrySchema, {
    key: entry.key,
    value: entry.value,
    encoding: entry.encoding,
    versionstamp: entry.versionstamp,
  });
}

/**
 * A successful `SnapshotReadOutput`: the ranges in request order, strongly
 * consistent, and `status = SR_SUCCESS` (1). proto3 leaves a 0 out of the
 * wire, and Deno's client (protocol v3) reads a missing status as
 * `SR_UNSPECIFIED`, an error: the status must be set.
 */
export function encodeSnapshotReadOutput(ranges: readonly (readonly WireEntry[])[]): Uint8Array {
  const output: SnapshotReadOutput = create(SnapshotReadOutputSchema, {
    ranges: ranges.map((entries) => ({ values: entries.map(wireEntry) })),
    readDisabled: false,
    readIsStronglyConsistent: true,
    status: SnapshotReadStatus.SR_SUCCESS,
  });
  return toBinary(SnapshotReadOutputSchema, output);
}

/** An `AtomicWriteOutput`: `AW_SUCCESS` with the commit's versionstamp, or `AW_CHECK_FAILURE`. */
export function encodeAtomicWriteOutput(
  outcome: { readonly versionstamp: Uint8Array } | { readonly checkFailed: true },
): Uint8Array {
  const output: AtomicWriteOutput = "versionstamp" in outcome
    ? create(AtomicWriteOutputSchema, {
      status: AtomicWriteStatus.AW_SUCCESS,
      versionstamp: outcome.versionstamp,
    })
    : create(AtomicWriteOutputSchema, { status: AtomicWriteStatus.AW_CHECK_FAILURE });
  return toBinary(AtomicWriteOutputSchema, output);
}

/** One watched key in a watch frame: unchanged, or changed to `entry` (`null`: now absent). */
export type WatchKeyUpdate =
  | { readonly changed: false }
  | { readonly changed: true; readonly entry: WireEntry | null };

/**
 * One frame of a watch stream: the `WatchOutput` (`status = SR_SUCCESS`, a
 * key per watched key, in request order) prefixed by its length as a u32
 * little-endian (kv-connect.md, "Watch Request").
 */
export function encodeWatchFrame(keys: readonly WatchKeyUpdate[]): Uint8Array {
  const output: WatchOutput = create(WatchOutputSchema, {
    status: SnapshotReadStatus.SR_SUCCESS,
    keys: keys.map((key) =>
      create(WatchKeyOutputSchema, {
        changed: key.changed,
        ...(key.changed && key.entry !== null ? { entryIfChanged: wireEntry(key.entry) } : {}),
      })
    ),
  });
  const message = toBinary(WatchOutputSchema, output);
  const frame = new Uint8Array(4 + message.length);
  new DataView(frame.buffer).setUint32(0, message.length, true);
  frame.set(message, 4);
  return frame;
}

/** The keep-alive frame of a watch stream: a length of zero and nothing after it. */
export function keepAliveFrame(): Uint8Array {
  return new Uint8Array(4);
}
