/**
 * The peer wire format: one MessagePack map per batch,
 * `{ v: 1, from: <replica>, messages: [<message>, ...] }`, each message the
 * core's own object (see `src/core/types.ts`). Decoding is bounded (string,
 * binary, array and map sizes) and all-or-nothing: a batch with one malformed
 * message is refused whole, so that a bad request changes nothing.
 *
 * @module
 */

import { decode } from "@msgpack/msgpack";
import { MsgpackWriter } from "../codec/msgpack.ts";
import type { Message } from "../core/types.ts";
import { describeValue, validateMessage } from "../core/validate.ts";

/** The batch format version. */
export const BATCH_FORMAT = 1;
/** Largest encoded batch a replica accepts, in bytes. */
export const MAX_BATCH_BYTES = 16 * 1024 * 1024;
/** Most messages in one batch. */
export const MAX_BATCH_MESSAGES = 65_536;

/** A decoded batch of peer messages. */
export interface PeerBatch<C> {
  /** The sending replica. */
  readonly from: number;
  /** Its messages, in the order sent. */
  readonly messages: readonly Message<C>[];
}

/** Why a batch was refused, with the HTTP status the peer route answers. */
export class BatchError extends Error {
  /** 413: too large; 403: the sender is not a replica of this cluster; 400: malformed. */
  readonly status: 400 | 403 | 413;
  /** Creates a refusal with a reason fit for the answer. */
  constructor(message: string, status: 400 | 403 | 413 = 400) {
    super(message);
    this.name = "BatchError";
    this.status = status;
  }
}

const batchWriter = new MsgpackWriter();

/**
 * Encodes a batch (a fresh copy). Payloads are copied in as encoded once per
 * instance (`src/codec/msgpack.ts`); the bytes are those of the library's
 * `encode` with `ignoreUndefined`.
 */
export function encodeBatch<C>(batch: PeerBatch<C>): Uint8Array {
  const writer = batchWriter.reset().mapHeader(3).value("v").value(BATCH_FORMAT)
    .value("from").value(batch.from).value("messages").arrayHeader(batch.messages.length);
  for (const message of batch.messages) {
    writer.object(message as unknown as Readonly<Record<string, unknown>>);
  }
  return writer.copy();
}

/** Settings for {@linkcode decodeBatch}. */
export interface DecodeBatchOptions<C> {
  /** Cluster size. */
  readonly replicas: number;
  /** The receiving replica: every message must be addressed to it. */
  readonly self: number;
  /** Whether a value is a well-formed command. */
  readonly isCommand: (value: unknown) => value is C;
}

/**
 * Decodes and validates a batch.
 *
 * @throws {BatchError} with a clear reason if anything about it is wrong.
 */
export function decodeBatch<C>(bytes: Uint8Array, options: DecodeBatchOptions<C>): PeerBatch<C> {
  if (bytes.length > MAX_BATCH_BYTES) {
    throw new BatchError(`Batch is larger than ${MAX_BATCH_BYTES} bytes`, 413);
  }
  let value: unknown;
  try {
    value = decode(bytes, {
      maxStrLength: 1 << 20,
      maxBinLength: 1 << 20,
      maxArrayLength: MAX_BATCH_MESSAGES,
      maxMapLength: 64,
      maxExtLength: 0,
    });
  } catch (error) {
    throw new BatchError(`Batch is not valid MessagePack: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BatchError("Batch is not a map");
  }
  const batch = value as Record<string, unknown>;
  if (batch.v !== BATCH_FORMAT) {
    throw new BatchError(`Batch format ${describeValue(batch.v)} is not ${BATCH_FORMAT}`);
  }
  const from = batch.from;
  if (!Number.isInteger(from) || (from as number) < 0 || (from as number) >= options.replicas) {
    throw new BatchError("Batch sender is not a replica of this cluster", 403);
  }
  if (!Array.isArray(batch.messages)) throw new BatchError("Batch has no message list");
  const messages: Message<C>[] = [];
  for (let index = 0; index < batch.messages.length; index++) {
    const checked = validateMessage(batch.messages[index], options);
    if (!checked.ok) throw new BatchError(`Message ${index}: ${checked.reason}`);
    if (checked.message.from !== from) {
      throw new BatchError(`Message ${index} claims sender ${checked.message.from}, not ${from}`);
    }
    if (checked.message.to !== options.self) {
      throw new BatchError(
        `Message ${index} is addressed to ${checked.message.to}, not ${options.self}`,
      );
    }
    messages.push(checked.message);
  }
  return { from: from as number, messages };
}
