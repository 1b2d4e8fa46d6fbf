/**
 * Hostile input for the peer batch decoder: whatever bytes arrive, `decodeBatch`
 * either returns a well-formed batch or throws `BatchError` (which the peer
 * route turns into a 4xx), and valid batches survive a round trip unchanged.
 */

import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import fc from "fast-check";
import { MAX_BALLOT, MAX_INSTANCE_NUMBER, validateMessage } from "../../src/core/validate.ts";
import { type Message, NOP, type Payload } from "../../src/core/types.ts";
import {
  isKvCommand,
  keyProblem,
  type KvCommand,
  MAX_CONDITION_VERSIONS,
  MAX_KEY_BYTES,
  MAX_LIST_LIMIT,
} from "../../src/kv/commands.ts";
import {
  BatchError,
  decodeBatch,
  type DecodeBatchOptions,
  encodeBatch,
  MAX_BATCH_MESSAGES,
  type PeerBatch,
} from "../../src/transport/codec.ts";

const REPLICAS = 3;
const SELF = 0;
const OPTIONS: DecodeBatchOptions<KvCommand> = {
  replicas: REPLICAS,
  self: SELF,
  isCommand: isKvCommand,
};

/** Checks what a successful decode promises: every message valid, from the sender, to us. */
function assertWellFormed(
  batch: PeerBatch<KvCommand>,
  options: DecodeBatchOptions<KvCommand> = OPTIONS,
): void {
  assert.ok(Number.isInteger(batch.from) && batch.from >= 0 && batch.from < options.replicas);
  assert.ok(Array.isArray(batch.messages));
  for (const message of batch.messages) {
    assert.ok(validateMessage(message, options).ok, "every message passes validation");
    assert.equal(message.from, batch.from);
    assert.equal(message.to, options.self);
  }
}

/** The property: a well-formed batch or a `BatchError` with a reason, nothing else. */
function decodesOrRefuses(
  bytes: Uint8Array,
  options: DecodeBatchOptions<KvCommand> = OPTIONS,
): "accepted" | "refused" {
  let batch: PeerBatch<KvCommand>;
  try {
    batch = decodeBatch(bytes, options);
  } catch (error) {
    assert.ok(
      error instanceof BatchError,
      `decodeBatch threw ${(error as Error)?.name}: ${(error as Error)?.message}`,
    );
    assert.ok(error.message.length > 0, "a refusal says why");
    return "refused";
  }
  assertWellFormed(batch, options);
  return "accepted";
}

function refuses(bytes: Uint8Array, options: DecodeBatchOptions<KvCommand> = OPTIONS): void {
  assert.equal(decodesOrRefuses(bytes, options), "refused");
}

// --- Valid batches, built from the real message shapes ---------------------

const wellFormedString = (maxLength: number) =>
  fc.string({ unit: "binary", maxLength }).filter((text) => text.isWellFormed());
const keyArb = fc.string({ unit: "binary", minLength: 1, maxLength: 24 })
  .filter((key) => keyProblem(key) === undefined);
const requestArb = wellFormedString(40);
const conditionArb = fc.option(
  fc.oneof(
    fc.constant(null),
    fc.string({ minLength: 1, maxLength: 64 }),
    // An If-Match list: 2 to MAX_CONDITION_VERSIONS distinct versions.
    fc.uniqueArray(fc.string({ minLength: 1, maxLength: 64 }), {
      minLength: 2,
      maxLength: MAX_CONDITION_VERSIONS,
    }),
  ),
  { nil: undefined },
);
const commandArb: fc.Arbitrary<KvCommand> = fc.oneof(
  fc.tuple(requestArb, keyArb, fc.uint8Array({ maxLength: 64 }), conditionArb).map((
    [request, key, value, ifVersion],
  ): KvCommand => ({
    op: "put",
    request,
    key,
    value,
    ...(ifVersion === undefined ? {} : { ifVersion }),
  })),
  fc.tuple(requestArb, keyArb).map(([request, key]): KvCommand => ({ op: "get", request, key })),
  fc.tuple(requestArb, keyArb, conditionArb).map(([request, key, ifVersion]): KvCommand => ({
    op: "delete",
    request,
    key,
    ...(ifVersion === undefined ? {} : { ifVersion }),
  })),
  fc.tuple(
    requestArb,
    wellFormedString(MAX_KEY_BYTES).filter((prefix) => !prefix.includes("\uffff")),
    fc.option(wellFormedString(MAX_KEY_BYTES), { nil: undefined }),
    fc.integer({ min: 1, max: MAX_LIST_LIMIT }),
  ).map(([request, prefix, after, limit]): KvCommand => ({
    op: "list",
    request,
    prefix,
    ...(after === undefined ? {} : { after }),
    limit,
  })),
);
const batchArb: fc.Arbitrary<KvCommand[]> = fc.array(commandArb, { minLength: 1, maxLength: 4 });
const payloadArb: fc.Arbitrary<Payload<KvCommand>> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(NOP) },
  { weight: 4, arbitrary: batchArb },
);
const bigNat = (max: number, min = 0) =>
  fc.bigInt({ min: BigInt(min), max: BigInt(max) }).map(Number);
const ballotArb = bigNat(MAX_BALLOT);
const numberArb = bigNat(MAX_INSTANCE_NUMBER, 1);
const depsArb = (replicas: number) =>
  fc.array(fc.maxSafeNat(), { minLength: replicas, maxLength: replicas });
/** An instance's dependencies: the rows, then its `seq`. */
const instanceDepsArb = (replicas: number) => depsArb(replicas + 1);

/** Every message type, with arbitrary valid fields, from `from` to `to`. */
function messageArb(
  replicas: number,
  from: number,
  to: number,
): fc.Arbitrary<Message<KvCommand>> {
  const owner = fc.nat(replicas - 1);
  const about = fc.record({ owner, number: numberArb }).map((ids) => ({ from, to, ...ids }));
  const deps = instanceDepsArb(replicas);
  const rows = depsArb(replicas);
  return fc.oneof(
    fc.tuple(about, batchArb, deps).map(([ids, command, d]): Message<KvCommand> => ({
      type: "preaccept",
      ...ids,
      command,
      deps: d,
    })),
    fc.tuple(about, deps).map(([ids, d]): Message<KvCommand> => ({
      type: "preacceptok",
      ...ids,
      deps: d,
    })),
    fc.tuple(fc.constantFrom("accept", "commit", "validate"), about, ballotArb, payloadArb, deps)
      .map(([type, ids, ballot, command, d]): Message<KvCommand> => ({
        type,
        ...ids,
        ballot,
        command,
        deps: d,
      })),
    fc.tuple(fc.constantFrom("acceptok", "recover", "nack"), about, ballotArb).map((
      [type, ids, ballot],
    ): Message<KvCommand> => ({ type, ...ids, ballot })),
    fc.tuple(
      about,
      ballotArb,
      ballotArb,
      fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<0 | 1 | 2 | 3>,
      fc.option(payloadArb, { nil: undefined }),
      fc.option(deps, { nil: undefined }),
      fc.option(deps, { nil: undefined }),
    ).map(([ids, ballot, acceptedBallot, phase, command, d, initialDeps]): Message<KvCommand> => ({
      type: "recoverok",
      ...ids,
      ballot,
      acceptedBallot,
      phase,
      ...(command === undefined ? {} : { command }),
      ...(d === undefined ? {} : { deps: d }),
      ...(initialDeps === undefined ? {} : { initialDeps }),
    })),
    fc.tuple(
      about,
      ballotArb,
      fc.array(fc.tuple(owner, numberArb, fc.nat(3)), { maxLength: 5 }),
    ).map(([ids, ballot, triples]): Message<KvCommand> => ({
      type: "validateok",
      ...ids,
      ballot,
      invalidators: triples.flat(),
    })),
    fc.tuple(about, fc.nat(replicas)).map(([ids, rmaxSize]): Message<KvCommand> => ({
      type: "waiting",
      ...ids,
      rmaxSize,
    })),
    fc.tuple(about, fc.integer({ min: 1, max: 256 })).map(([ids, count]): Message<KvCommand> => ({
      type: "commitrequest",
      ...ids,
      count,
    })),
    fc.tuple(rows, rows, bigNat(MAX_INSTANCE_NUMBER)).map((
      [executed, pruned, highest],
    ): Message<KvCommand> => ({ type: "frontier", from, to, executed, pruned, highest })),
  );
}

/** A cluster shape, a receiving replica and a valid batch addressed to it. */
const validBatchArb = fc.integer({ min: 1, max: 7 }).chain((replicas) =>
  fc.tuple(fc.nat(replicas - 1), fc.nat(replicas - 1)).chain(([self, from]) =>
    fc.array(messageArb(replicas, from, self), { maxLength: 6 }).map((messages) => ({
      options: { replicas, self, isCommand: isKvCommand } as DecodeBatchOptions<KvCommand>,
      batch: { from, messages } as PeerBatch<KvCommand>,
    }))
  )
);

/** A valid batch for the default cluster (3 replicas, received by replica 0). */
const defaultBatchArb = fc.nat(REPLICAS - 1).chain((from) =>
  fc.array(messageArb(REPLICAS, from, SELF), { minLength: 1, maxLength: 4 })
    .map((messages): PeerBatch<KvCommand> => ({ from, messages }))
);

// --- Properties ------------------------------------------------------------

Deno.test("arbitrary bytes decode to a well-formed batch or a BatchError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
      decodesOrRefuses(bytes);
    }),
    { numRuns: 1000 },
  );
  // Bytes that start like a real batch get further into the decoder.
  const head = encodeBatch<KvCommand>({ from: 1, messages: [] }).subarray(0, -1);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2048 }), (tail) => {
      const bytes = new Uint8Array(head.length + tail.length);
      bytes.set(head);
      bytes.set(tail, head.length);
      decodesOrRefuses(bytes);
    }),
    { numRuns: 500 },
  );
});

Deno.test("MessagePack-encoded garbage is refused with a BatchError", () => {
  const values = fc.oneof(
    fc.anything({ withDate: true, withTypedArray: true, withNullPrototype: true, maxDepth: 4 }),
    fc.jsonValue({ maxDepth: 4 }),
  );
  fc.assert(
    fc.property(values, (value) => {
      decodesOrRefuses(encode(value));
    }),
    { numRuns: 400 },
  );

  // Near misses: the batch envelope with garbage in one place.
  const garbage = fc.anything({ maxDepth: 3, withTypedArray: true });
  const envelope = fc.record({
    v: fc.oneof(fc.constant(1), garbage),
    from: fc.oneof(fc.integer({ min: -2, max: 4 }), garbage),
    messages: fc.oneof(fc.array(garbage, { maxLength: 4 }), garbage),
  }, { requiredKeys: [] });
  fc.assert(
    fc.property(envelope, (value) => {
      decodesOrRefuses(encode(value));
    }),
    { numRuns: 300 },
  );

  // Real messages with one field replaced by garbage, or deleted.
  fc.assert(
    fc.property(defaultBatchArb, fc.nat(), fc.option(garbage), (batch, pick, replacement) => {
      const messages = batch.messages.map((message) => ({ ...message }) as Record<string, unknown>);
      const target = messages[pick % messages.length]!;
      const fields = Object.keys(target);
      const field = fields[pick % fields.length]!;
      if (replacement === null) delete target[field];
      else target[field] = replacement;
      decodesOrRefuses(encode({ v: 1, from: batch.from, messages }));
    }),
    { numRuns: 300 },
  );
});

Deno.test("MessagePack headers with lying lengths, unknown extensions and deep nesting are refused", () => {
  // Length-prefixed types (bin, str, array, map, ext) followed by too little data.
  const lengthPrefixed = [
    0xc4,
    0xc5,
    0xc6,
    0xc7,
    0xc8,
    0xc9,
    0xd4,
    0xd5,
    0xd6,
    0xd7,
    0xd8,
    0xd9,
    0xda,
    0xdb,
    0xdc,
    0xdd,
    0xde,
    0xdf,
  ];
  fc.assert(
    fc.property(
      fc.constantFrom(...lengthPrefixed),
      fc.uint8Array({ minLength: 0, maxLength: 16 }),
      fc.boolean(),
      (type, rest, nested) => {
        const value = new Uint8Array([type, ...rest]);
        decodesOrRefuses(value);
        // The same value as a batch's message list.
        if (nested) decodesOrRefuses(concat(encodeEnvelopeHead(1), value));
      },
    ),
    { numRuns: 300 },
  );
  // Declared sizes far beyond the limits are refused before anything is allocated.
  refuses(new Uint8Array([0xdb, 0xff, 0xff, 0xff, 0xff])); // str32 of 4 GiB
  refuses(new Uint8Array([0xc6, 0xff, 0xff, 0xff, 0xff])); // bin32 of 4 GiB
  refuses(new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff])); // array32 of 4G entries
  refuses(new Uint8Array([0xdf, 0xff, 0xff, 0xff, 0xff])); // map32 of 4G entries
  refuses(new Uint8Array([0xc9, 0x00, 0x00, 0x00, 0x01, 0x05, 0x00])); // ext, not allowed
  refuses(new Uint8Array([0xd6, 0xff, 0, 0, 0, 0])); // a timestamp
  // One message more than a batch may hold.
  const tooMany = MAX_BATCH_MESSAGES + 1;
  const list = new Uint8Array(5 + tooMany).fill(0xc0);
  list.set([0xdd, tooMany >>> 24, (tooMany >>> 16) & 0xff, (tooMany >>> 8) & 0xff, tooMany & 0xff]);
  refuses(concat(encodeEnvelopeHead(1), list));
  // Deep nesting where the version, the sender or a message type belongs.
  for (const depth of [1_000, 200_000]) {
    const deep = new Uint8Array(depth + 1).fill(0x91);
    deep[depth] = 0xc0;
    const started = performance.now();
    refuses(deep);
    refuses(concat(new Uint8Array([0x81, 0xa1, 0x76]), deep)); // { v: [[[...]]] }
    const message = encode({ type: "nack", from: 1, to: 0, owner: 1, number: 1, ballot: 1 });
    // { v: 1, from: 1, messages: [{ ...nack, ballot: [[[...]]] }] }
    refuses(concat(encodeEnvelopeHead(1), new Uint8Array([0x91]), message.subarray(0, -1), deep));
    assert.ok(performance.now() - started < 10_000, `depth ${depth} decodes promptly`);
  }
});

Deno.test("every strict prefix, and any byte flip or splice, of a real batch is handled", () => {
  // Truncation at every length: a strict prefix of a MessagePack value is never complete.
  const samples = fc.sample(defaultBatchArb, { numRuns: 12, seed: 42 });
  for (const batch of samples) {
    const bytes = encodeBatch(batch);
    assertWellFormed(decodeBatch(bytes, OPTIONS));
    for (let length = 0; length < bytes.length; length++) refuses(bytes.subarray(0, length));
    // Trailing bytes are not ignored either.
    refuses(concat(bytes, new Uint8Array([0xc0])));
  }
  const flip = fc.record({ index: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) });
  fc.assert(
    fc.property(defaultBatchArb, fc.array(flip, { minLength: 1, maxLength: 4 }), (batch, flips) => {
      const bytes = encodeBatch(batch).slice();
      for (const { index, xor } of flips) bytes[index % bytes.length]! ^= xor;
      decodesOrRefuses(bytes);
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(
      defaultBatchArb,
      fc.nat(),
      fc.nat(),
      fc.uint8Array({ maxLength: 16 }),
      (batch, at, cut, insert) => {
        const bytes = encodeBatch(batch);
        const start = at % (bytes.length + 1);
        const end = Math.min(bytes.length, start + (cut % 8));
        decodesOrRefuses(concat(bytes.subarray(0, start), insert, bytes.subarray(end)));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("a batch addressed elsewhere, from a stranger or with a forged sender is refused", () => {
  fc.assert(
    fc.property(defaultBatchArb, fc.integer({ min: 1, max: 2 }), (batch, shift) => {
      const elsewhere = batch.messages.map((message) => ({
        ...message,
        to: (SELF + shift) % REPLICAS,
      }));
      refuses(encode({ v: 1, from: batch.from, messages: elsewhere }));
      const forged = batch.messages.map((message) => ({
        ...message,
        from: (batch.from + shift) % REPLICAS,
      }));
      refuses(encode({ v: 1, from: batch.from, messages: forged }));
      refuses(encode({ v: 1, from: REPLICAS + shift, messages: batch.messages }));
      refuses(encode({ v: 1 + shift, from: batch.from, messages: batch.messages }));
    }),
    { numRuns: 200 },
  );
});

Deno.test("valid batches of every message type survive encode and decode unchanged", () => {
  fc.assert(
    fc.property(validBatchArb, ({ options, batch }) => {
      const decoded = decodeBatch(encodeBatch(batch), options);
      assert.deepStrictEqual(decoded, { from: batch.from, messages: batch.messages });
      assertWellFormed(decoded, options);
    }),
    { numRuns: 400 },
  );
});

Deno.test("encodeBatch writes the library's exact bytes, payloads encoded once or not", () => {
  const library = (batch: PeerBatch<KvCommand>) =>
    encode({ v: 1, from: batch.from, messages: batch.messages }, { ignoreUndefined: true });
  fc.assert(
    fc.property(validBatchArb, ({ batch }) => {
      // Twice: the second encoding copies the payloads the first one cached.
      assert.deepStrictEqual(encodeBatch(batch), library(batch));
      assert.deepStrictEqual(encodeBatch(batch), library(batch));
    }),
    { numRuns: 300 },
  );
  // Containers past the fixed-size headers: 16 and 65,536 elements.
  const put = (index: number): KvCommand => ({
    op: "put",
    request: `r${index}`,
    key: `k${index}`,
    value: new Uint8Array([index & 0xff]),
  });
  for (const size of [15, 16, 65_535, 65_536]) {
    const command = Array.from({ length: size }, (_, index) => put(index));
    const batch: PeerBatch<KvCommand> = {
      from: 1,
      messages: [
        { type: "preaccept", from: 1, to: 0, owner: 1, number: 7, command, deps: [0, 6, 0] },
        {
          type: "commit",
          from: 1,
          to: 0,
          owner: 1,
          number: 7,
          ballot: 0,
          command,
          deps: [0, 6, 0],
        },
      ],
    };
    assert.deepStrictEqual(encodeBatch(batch), library(batch), `payload of ${size} commands`);
  }
});

// --- Helpers ---------------------------------------------------------------

function enc(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

/** `{ v: 1, from, messages: ` — a three-entry map missing its last value. */
function encodeEnvelopeHead(from: number): Uint8Array {
  return concat(
    new Uint8Array([0x83, 0xa1]),
    enc("v"),
    new Uint8Array([0x01, 0xa4]),
    enc("from"),
    new Uint8Array([from, 0xa8]),
    enc("messages"),
  );
}
