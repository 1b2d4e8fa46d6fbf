/**
 * The peer wire format: one MessagePack map per batch,
 * `{ v: 1, from: <replica>, epoch?: <epoch>, incarnation?: <incarnation>,
 * messages: [<message>, ...] }` (epoch and incarnation written when not 1),
 * each message the core's own object (see `src/core/types.ts`). Decoding is bounded (string,
 * binary, array and map sizes) and all-or-nothing: a batch with one malformed
 * message is refused whole, so that a bad request changes nothing.
 *
 * @module
 */

import { decode } from "@msgpack/msgpack";
import { MsgpackWriter } from "../codec/msgpack.ts";
import { MAX_MEMBER_ID } from "../core/configuration.ts";
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
  /** The sending replica (its member id, which is its position in the core). */
  readonly from: number;
  /**
   * The sender's epoch (absent: 1). An epoch is a fresh instance space, so a
   * receiver in another epoch takes none of the messages; it learns from the
   * header that the sender is ahead of it, or behind.
   */
  readonly epoch?: number;
  /**
   * The sender's incarnation (absent: 1): a receiver takes nothing from an
   * incarnation its configuration does not name (a wiped replica replaced by
   * a new incarnation, still running).
   */
  readonly incarnation?: number;
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
  const epoch = batch.epoch ?? 1;
  const incarnation = batch.incarnation ?? 1;
  // Epoch 1 and incarnation 1 leave the header as it was before epochs.
  const extra = (epoch === 1 ? 0 : 1) + (incarnation === 1 ? 0 : 1);
  const writer = batchWriter.reset().mapHeader(3 + extra).value("v").value(BATCH_FORMAT)
    .value("from").value(batch.from);
  if (epoch !== 1) writer.value("epoch").value(epoch);
  if (incarnation !== 1) writer.value("incarnation").value(incarnation);
  writer.value("messages").arrayHeader(batch.messages.length);
  for (const message of batch.messages) {
    writer.object(message as unknown as Readonly<Record<string, unknown>>);
  }
  return writer.copy();
}

/** Settings for {@linkcode decodeBatch}. */
export interface DecodeBatchOptions<C> {
  /** Positions of the receiver's epoch (its highest member id plus one). */
  readonly replicas: number;
  /** The receiving replica: every message must be addressed to it. */
  readonly self: number;
  /** Whether a value is a well-formed command. */
  readonly isCommand: (value: unknown) => value is C;
  /**
   * The receiver's epoch (default 1). A batch of another epoch is returned
   * with its header and no messages, unvalidated: its positions and
   * instances mean nothing here, and the header is what the receiver needs
   * (a peer ahead of it has a snapshot of a later epoch to give).
   */
  readonly epoch?: number;
}

/** Highest epoch or incarnation a batch header may carry. */
const MAX_HEADER_NUMBER = Number.MAX_SAFE_INTEGER;

function headerNumber(value: unknown, field: string): number {
  if (value === undefined) return 1;
  if (
    !Number.isSafeInteger(value) || (value as number) < 1 || (value as number) > MAX_HEADER_NUMBER
  ) {
    throw new BatchError(`Batch ${field} must be an integer ≥ 1, got ${describeValue(value)}`);
  }
  return value as number;
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
  const epoch = headerNumber(batch.epoch, "epoch");
  const incarnation = headerNumber(batch.incarnation, "incarnation");
  if (epoch !== (options.epoch ?? 1)) {
    if (!Number.isInteger(from) || (from as number) < 0 || (from as number) > MAX_MEMBER_ID) {
      throw new BatchError("Batch sender is not a member id", 403);
    }
    return { from: from as number, epoch, incarnation, messages: [] };
  }
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
  // Epoch 1 and incarnation 1 are left implicit, as on the wire.
  return {
    from: from as number,
    ...(epoch === 1 ? {} : { epoch }),
    ...(incarnation === 1 ? {} : { incarnation }),
    messages,
  };
}
