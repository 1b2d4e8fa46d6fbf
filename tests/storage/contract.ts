/**
 * The storage contract (`src/storage/types.ts`) as one suite, run against
 * every implementation, in the style of Hono's `common.case.test.ts`: a
 * function that takes a factory and registers the tests.
 *
 * `MemoryStorage` is also the reference model: every expected state is what a
 * fresh `MemoryStorage` holds after the same batches.
 *
 * @module
 */

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import fc from "fast-check";
import { instanceKey } from "../../src/core/instance.ts";
import {
  NOP,
  type Payload,
  type StorageRecord,
  type StoredInstance,
} from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import type { KvEntry, KvMutation } from "../../src/kv/state_machine.ts";
import { entryOf } from "../../src/kv/entry.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { LoadedState, PersistBatch, ReplicaStorage } from "../../src/storage/types.ts";

/** Cluster size used by every test. */
export const REPLICAS = 3;

/** One store under test, across restarts. */
export interface StorageSubject {
  /** The current storage (replaced by {@linkcode StorageSubject.reopen}). */
  readonly storage: ReplicaStorage<KvCommand>;
  /** Closes the storage and opens the same store again, as a restart does. */
  reopen(): Promise<void>;
  /**
   * Commits `batch` but crashes after `step` steps (whatever the
   * implementation's crash granularity is), then restarts. Returns whether
   * the crash came before the batch was complete.
   */
  crashDuring(batch: PersistBatch<KvCommand>, step: number): Promise<boolean>;
  /** Releases everything, files included. */
  dispose(): Promise<void>;
}

/** Makes fresh, empty stores of one implementation. */
export interface StorageFactory {
  /** Implementation name, prefixed to test names. */
  readonly name: string;
  /** A fresh, empty store. */
  create(): Promise<StorageSubject>;
  /** Runs for the fast-check property (keep the suite fast). */
  readonly propertyRuns: number;
}

// --- Builders ---------------------------------------------------------------

const bytes = (length: number, seed = 1): Uint8Array => {
  const value = new Uint8Array(length);
  for (let i = 0; i < length; i++) value[i] = (i * 31 + seed) & 0xff;
  return value;
};

/** A put command. */
export function put(key: string, value: Uint8Array): KvCommand {
  return { op: "put", request: `r-${key.slice(0, 16)}`, key, value };
}

/** An instance id, `[owner, number]`. */
export type Id = readonly [owner: number, number: number];

/** An instance record; `fields` override the defaults. */
export function instance(
  [owner, number]: Id,
  fields: Partial<Omit<StoredInstance<KvCommand>, "kind" | "owner" | "number">> = {},
): StoredInstance<KvCommand> {
  return {
    kind: "instance",
    owner,
    number,
    phase: 1,
    ballot: 0,
    acceptedBallot: 0,
    executed: false,
    ...fields,
  };
}

/**
 * A committed, executed instance of a cluster of `rows` rows (3 unless given)
 * carrying `command`, with deps `[number - 1, 0, ...]` and `seq` 1.
 */
export function executed(
  id: Id,
  command: Payload<KvCommand>,
  rows = 3,
): StoredInstance<KvCommand> {
  const deps = [id[1] - 1, ...new Array<number>(rows - 1).fill(0), 1];
  return instance(id, {
    phase: 3,
    executed: true,
    command,
    deps,
    initialCommand: command,
    initialDeps: deps,
  });
}

/** A set mutation, at version 1.0.0 unless told. */
export function set(
  key: string,
  value: Uint8Array,
  options: { version?: string } = {},
): KvMutation {
  return { kind: "set", key, entry: { value, version: options.version ?? "1.0.0" } };
}

/** A delete mutation. */
export function del(key: string): KvMutation {
  return { kind: "delete", key };
}

/** A batch. */
export function batch(
  records: StorageRecord<KvCommand>[],
  effects: [owner: number, number: number, mutations: KvMutation[]][] = [],
): PersistBatch<KvCommand> {
  return {
    records,
    effects: new Map(effects.map(([owner, number, m]) => [instanceKey(owner, number), m])),
  };
}

// --- Comparison -------------------------------------------------------------

/**
 * A loaded state in a canonical form: records and entries sorted, `kind` tags
 * dropped; `configuration` only when there is one.
 */
export function normalize(state: LoadedState<KvCommand>): unknown {
  const records = state.records.map((record) => {
    const { kind: _, ...rest } = record as StoredInstance<KvCommand>;
    return rest;
  }).sort((a, b) => a.owner - b.owner || a.number - b.number);
  const entries = [...state.entries].map(([key, entry]) =>
    [key, entryOf(new Uint8Array(entry.value), entry.version, entry)] as const
  ).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const normal = { records, pruneFloor: state.pruneFloor, entries };
  return state.configuration === undefined
    ? normal
    : { ...normal, configuration: state.configuration };
}

/** A batch committed, cut after `units` atomic units (all of them if infinite). */
export type Committed = readonly [batch: PersistBatch<KvCommand>, units: number];

/** What a fresh `MemoryStorage` holds after `history`. */
export function reference(history: readonly Committed[]): unknown {
  const memory = new MemoryStorage<KvCommand>();
  for (const [b, units] of history) memory.commitSync(b, units);
  return normalize(memory.loadSync());
}

/** `batches`, each committed whole. */
export function whole(...batches: PersistBatch<KvCommand>[]): Committed[] {
  return batches.map((b) => [b, Number.POSITIVE_INFINITY] as const);
}

/** Number of atomic units in a batch (one per record, one per leftover set of effects). */
export function unitCount(b: PersistBatch<KvCommand>): number {
  const withRecord = new Set<number>();
  for (const record of b.records) {
    if (record.kind === "instance") withRecord.add(instanceKey(record.owner, record.number));
  }
  let leftovers = 0;
  for (const key of b.effects.keys()) if (!withRecord.has(key)) leftovers++;
  return b.records.length + leftovers + (b.snapshot === undefined ? 0 : 1);
}

/** `b` carrying a snapshot of the state after `history` and then `b` whole. */
export function withSnapshot(
  history: readonly Committed[],
  b: PersistBatch<KvCommand>,
): PersistBatch<KvCommand> {
  const memory = new MemoryStorage<KvCommand>();
  for (const [earlier, units] of history) memory.commitSync(earlier, units);
  memory.commitSync(b);
  return { ...b, snapshot: memory.loadSync().entries };
}

/** Where to look for the prefix in {@linkcode prefixOf}. */
export interface PrefixQuery {
  /** Batches committed before, with how much of each. */
  readonly before: readonly Committed[];
  /** The batch cut short. */
  readonly last: PersistBatch<KvCommand>;
  /** Smallest prefix to consider (a later crash never keeps less). */
  readonly atLeast?: number;
}

/**
 * The `k` such that `state` is the state after `before` plus the first `k`
 * units of `last`, or fails.
 */
export function prefixOf(state: LoadedState<KvCommand>, query: PrefixQuery): number {
  const actual = normalize(state);
  const units = unitCount(query.last);
  for (let k = query.atLeast ?? 0; k <= units; k++) {
    // A boolean comparison: a failed assertion would render both states.
    if (isDeepStrictEqual(actual, reference([...query.before, [query.last, k]]))) return k;
  }
  assert.fail("Loaded state is not the state before the batch plus a prefix of its units");
}

async function withSubject(
  factory: StorageFactory,
  run: (subject: StorageSubject) => Promise<void>,
): Promise<void> {
  const subject = await factory.create();
  try {
    await run(subject);
  } finally {
    await subject.dispose();
  }
}

/** Commits `batches` to the subject and checks it holds what the reference holds, before and after a restart. */
async function commitAndCompare(
  subject: StorageSubject,
  batches: readonly PersistBatch<KvCommand>[],
): Promise<void> {
  for (const b of batches) await subject.storage.commit(b);
  const expected = reference(whole(...batches));
  assert.deepStrictEqual(normalize(await subject.storage.load()), expected);
  await subject.reopen();
  assert.deepStrictEqual(normalize(await subject.storage.load()), expected);
}

// --- Fixtures ---------------------------------------------------------------

const KIB = 1024;

/**
 * A batch whose units span several atomic commits (by key bytes: keys of
 * about 1 KiB, 80 KiB of them per commit), with a record of two chunks and one
 * unit too large for any single commit (100 KiB of keys), at little I/O.
 */
function crashBatch(): PersistBatch<KvCommand> {
  const longKey = (name: string) => name.padEnd(1000, ".");
  const records: StorageRecord<KvCommand>[] = [executed([0, 1], [put("k1", bytes(10))])];
  const effects: [number, number, KvMutation[]][] = [[0, 1, [del("k1")]]];
  for (let n = 1; n <= 24; n++) {
    records.push(executed([1, n], [put(`long-${n}`, bytes(4, n))]));
    const sets = Array.from({ length: 10 }, (_, i) => set(longKey(`${n}-${i}`), bytes(4, i)));
    effects.push([1, n, sets]);
  }
  records.push(executed([1, 30], [put("a", bytes(40 * KIB)), put("b", bytes(40 * KIB, 2))]));
  effects.push([1, 30, [set("ab", bytes(8))]]);
  records.push({ kind: "delete", owner: 0, from: 2, to: 3 });
  records.push(executed([2, 1], [put("huge", bytes(5))]));
  effects.push([2, 1, Array.from({ length: 100 }, (_, i) => set(longKey(`huge-${i}`), bytes(3)))]);
  records.push({ kind: "floor", pruneFloor: [3, 0, 0] });
  for (let n = 40; n <= 45; n++) records.push(instance([1, n], { command: [put("s", bytes(3))] }));
  effects.push([2, 7, [set("late", bytes(5), { version: "7.2.0" })]], [0, 4, [del("k4")]]);
  return batch(records, effects);
}

function baseBatch(): PersistBatch<KvCommand> {
  const records: StorageRecord<KvCommand>[] = [];
  const effects: [number, number, KvMutation[]][] = [];
  for (let n = 1; n <= 5; n++) {
    records.push(executed([0, n], [put(`k${n}`, bytes(8, n))]));
    effects.push([0, n, [set(`k${n}`, bytes(8, n), { version: `${n}.0.0` })]]);
  }
  records.push({ kind: "floor", pruneFloor: [0, 0, 0] });
  return batch(records, effects);
}

// --- Random batches ---------------------------------------------------------

const KEYS = ["a", "b", "c", "\u0000", "é", "😀", "a/b"];

const commandArb: fc.Arbitrary<KvCommand> = fc.oneof(
  fc.record({
    op: fc.constant("put" as const),
    request: fc.constantFrom("r1", "r2"),
    key: fc.constantFrom(...KEYS),
    value: fc.uint8Array({ maxLength: 8 }),
  }),
  fc.record({
    op: fc.constant("get" as const),
    request: fc.constantFrom("r3"),
    key: fc.constantFrom(...KEYS),
  }),
  fc.record({
    op: fc.constant("delete" as const),
    request: fc.constantFrom("r4"),
    key: fc.constantFrom(...KEYS),
    ifVersion: fc.option(fc.constantFrom("1.0.0", "2.1.0"), { nil: null }),
  }),
  // fast-check builds records without a prototype; commands decoded from disk have one.
).map((command) => ({ ...command }));
const payloadArb: fc.Arbitrary<Payload<KvCommand>> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(NOP) },
  { weight: 4, arbitrary: fc.array(commandArb, { minLength: 1, maxLength: 3 }) },
);
const depsArb = fc.array(fc.nat(9), { minLength: REPLICAS, maxLength: REPLICAS });
/** An instance's dependencies: the rows, then its `seq`. */
const instanceDepsArb = fc.array(fc.nat(9), { minLength: REPLICAS + 1, maxLength: REPLICAS + 1 });
const ownerArb = fc.nat(REPLICAS - 1);
const numberArb = fc.integer({ min: 1, max: 8 });

const instanceArb: fc.Arbitrary<StoredInstance<KvCommand>> = fc.record({
  owner: ownerArb,
  number: numberArb,
  phase: fc.constantFrom(0 as const, 1 as const, 2 as const, 3 as const),
  ballot: fc.nat(50),
  acceptedBallot: fc.nat(50),
  executed: fc.boolean(),
  command: fc.option(payloadArb, { nil: undefined }),
  deps: fc.option(instanceDepsArb, { nil: undefined }),
  initial: fc.constantFrom("none", "same", "other"),
  other: payloadArb,
  otherDeps: instanceDepsArb,
}).map(({ initial, other, otherDeps, command, deps, ...rest }) => {
  const record: Record<string, unknown> = { kind: "instance", ...rest };
  if (command !== undefined) record.command = command;
  if (deps !== undefined) record.deps = deps;
  if (initial === "same") {
    if (command !== undefined) record.initialCommand = command;
    if (deps !== undefined) record.initialDeps = deps;
  } else if (initial === "other") {
    record.initialCommand = other;
    record.initialDeps = otherDeps;
  }
  return record as unknown as StoredInstance<KvCommand>;
});

const recordArb: fc.Arbitrary<StorageRecord<KvCommand>> = fc.oneof(
  { weight: 6, arbitrary: instanceArb },
  {
    weight: 1,
    arbitrary: fc.record({ owner: ownerArb, from: numberArb, span: fc.nat(4) }).map((
      { owner, from, span },
    ) => ({ kind: "delete" as const, owner, from, to: from + span - 1 })),
  },
  {
    weight: 1,
    arbitrary: depsArb.map((pruneFloor) => ({ kind: "floor" as const, pruneFloor })),
  },
);

const entryArb: fc.Arbitrary<KvEntry> = fc.record({
  // Now and then a large value, so that a batch needs several atomic commits.
  value: fc.oneof(
    { weight: 9, arbitrary: fc.uint8Array({ maxLength: 16 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 300 }).map((n) => bytes(n * 200, n)) },
    // A Deno KV database's largest value: split across snapshot pages.
    { weight: 1, arbitrary: fc.constant(bytes(65_536, 7)) },
  ),
  version: fc.constantFrom("1.0.0", "2.1.3", "9.2.0", "00000000000000070000"),
  // A Deno KV entry's fields, absent from most entries.
  encoding: fc.constantFrom(1, 2, 3),
  expiresAt: fc.integer({ min: 1, max: 2 ** 45 }),
}, { requiredKeys: ["value", "version"] });
const mutationArb: fc.Arbitrary<KvMutation> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), key: fc.constantFrom(...KEYS), entry: entryArb }),
  fc.record({ kind: fc.constant("delete" as const), key: fc.constantFrom(...KEYS) }),
);

const batchArb: fc.Arbitrary<PersistBatch<KvCommand>> = fc.record({
  records: fc.array(recordArb, { maxLength: 10 }),
  effects: fc.array(
    fc.tuple(ownerArb, numberArb, fc.array(mutationArb, { maxLength: 3 })),
    { maxLength: 4 },
  ),
}).map(({ records, effects }) => batch(records, effects));

const stepArb = fc.record({
  batch: batchArb,
  // "crash" cuts the commit after `crashAt` steps; "reopen" restarts after it.
  action: fc.constantFrom("commit", "commit", "reopen", "crash"),
  crashAt: fc.nat(4),
  // Whether the batch carries a snapshot of the state after it.
  snapshot: fc.boolean(),
});

// --- The suite --------------------------------------------------------------

/** Registers the contract tests for one implementation. */
export function runStorageContract(factory: StorageFactory): void {
  const test = (name: string, fn: (subject: StorageSubject) => Promise<void>) =>
    Deno.test(`${factory.name}: ${name}`, () => withSubject(factory, fn));

  test("an empty store loads empty", async (subject) => {
    const state = await subject.storage.load();
    assert.deepStrictEqual(normalize(state), { records: [], pruneFloor: undefined, entries: [] });
  });

  test("every record kind round-trips", async (subject) => {
    const command = [put("x", bytes(5)), {
      op: "delete",
      request: "d",
      key: "y",
      ifVersion: null,
    } as KvCommand, { op: "list", request: "l", prefix: "p", limit: 10 } as KvCommand];
    await commitAndCompare(subject, [
      batch([
        instance([0, 1]),
        instance([1, 2], {
          phase: 2,
          ballot: 7,
          acceptedBallot: 7,
          command: NOP,
          deps: [0, 1, 0, 0],
        }),
        executed([2, 3], command),
        instance([0, 4], {
          command,
          deps: [1, 2, 3, 4],
          initialCommand: [put("z", bytes(1))],
          initialDeps: [0, 0, 1, 3],
        }),
        instance([1, 5], { command: NOP, initialCommand: NOP }),
        { kind: "floor", pruneFloor: [0, 1, 0] },
        instance([2, 9]),
        { kind: "delete", owner: 2, from: 9, to: 9 },
      ], [[2, 3, [set("x", bytes(5), { version: "3.2.0" }), del("y")]]]),
    ]);
  });

  test("the latest record of an instance wins, within and across batches", async (subject) => {
    await commitAndCompare(subject, [
      batch([instance([0, 1]), instance([0, 1], { phase: 2, ballot: 3 }), instance([1, 1])]),
      batch([instance([1, 1], { phase: 3, command: NOP, deps: [0, 0, 0, 0] })]),
      batch([{ kind: "floor", pruneFloor: [1, 0, 0] }, { kind: "floor", pruneFloor: [2, 0, 0] }]),
    ]);
  });

  test("deletes remove ranges, gaps included, and only their row", async (subject) => {
    const numbers = [1, 2, 4, 7, 8];
    const records = numbers.flatMap((n) => [instance([0, n]), instance([1, n])]);
    await commitAndCompare(subject, [
      batch(records),
      batch([
        { kind: "delete", owner: 0, from: 2, to: 7 },
        { kind: "delete", owner: 1, from: 20, to: 30 },
        { kind: "delete", owner: 1, from: 5, to: 4 },
      ]),
    ]);
    const state = await subject.storage.load();
    assert.deepStrictEqual(
      state.records.map((r) => `${r.owner}.${r.number}`).sort(),
      ["0.1", "0.8", "1.1", "1.2", "1.4", "1.7", "1.8"],
    );
  });

  test("deletes see records written earlier in the same batch, and not later ones", async (subject) => {
    await commitAndCompare(subject, [
      batch([instance([0, 1])]),
      batch([
        instance([0, 2]),
        instance([0, 3]),
        { kind: "delete", owner: 0, from: 1, to: 2 },
        instance([0, 2], { phase: 2 }),
      ]),
    ]);
  });

  test("effects apply with their instance, leftovers after every record", async (subject) => {
    await commitAndCompare(subject, [
      batch(
        [
          executed([0, 1], [put("a", bytes(1))]),
          executed([0, 1], [put("a", bytes(1))]),
          executed([1, 1], [put("b", bytes(2))]),
        ],
        [
          // Leftover (no record in the batch): applied after every record's unit.
          [2, 5, [set("a", bytes(9), { version: "5.2.0" })]],
          [0, 1, [
            set("a", bytes(1), { version: "1.0.0" }),
            set("c", bytes(3), { version: "1.0.1" }),
          ]],
          [1, 1, [set("b", bytes(2), { version: "1.1.0" }), del("c")]],
        ],
      ),
      batch([], [[0, 2, [del("b")]]]),
    ]);
    const entries = new Map((await subject.storage.load()).entries);
    assert.deepStrictEqual([...entries.keys()], ["a"]);
    assert.equal(entries.get("a")!.version, "5.2.0");
  });

  test("the prune floor persists and the latest one wins", async (subject) => {
    await commitAndCompare(subject, [
      batch([{ kind: "floor", pruneFloor: [1, 2, 3] }]),
      batch([instance([0, 9]), { kind: "floor", pruneFloor: [4, 2, 3] }]),
    ]);
    assert.deepStrictEqual((await subject.storage.load()).pruneFloor, [4, 2, 3]);
  });

  test("state survives a restart, and commits continue after it", async (subject) => {
    const first = baseBatch();
    await subject.storage.commit(first);
    await subject.reopen();
    const second = batch([executed([0, 6], [put("k6", bytes(6))])], [[0, 6, [
      set("k6", bytes(6)),
    ]]]);
    await subject.storage.commit(second);
    await subject.reopen();
    assert.deepStrictEqual(
      normalize(await subject.storage.load()),
      reference(whole(first, second)),
    );
  });

  Deno.test(`${factory.name}: a crash leaves the state before plus a prefix of units`, async () => {
    const base = baseBatch();
    const crash = crashBatch();
    const after = batch([instance([0, 30])], [[0, 30, [set("after", bytes(2))]]]);
    const units = unitCount(crash);
    let previous = 0;
    let crashed = true;
    // One step more than there are units bounds any implementation whose
    // steps are at most units (atomic commits or units themselves) plus the redo work.
    for (let step = 0; crashed; step++) {
      assert.ok(step <= 4 * units, "the batch never completes");
      await withSubject(factory, async (subject) => {
        await subject.storage.commit(base);
        crashed = await subject.crashDuring(crash, step);
        // Searching from the previous step's prefix also checks that it never shrinks.
        const k = prefixOf(await subject.storage.load(), {
          before: whole(base),
          last: crash,
          atLeast: previous,
        });
        if (!crashed) assert.equal(k, units, `step ${step} completed but kept ${k} units`);
        previous = k;
        // The store stays usable: the next batch lands on the prefix.
        await subject.storage.commit(after);
        await subject.reopen();
        const expected = new MemoryStorage<KvCommand>();
        expected.commitSync(base);
        expected.commitSync(crash, k);
        expected.commitSync(after);
        assert.deepStrictEqual(
          normalize(await subject.storage.load()),
          normalize(expected.loadSync()),
        );
      });
    }
  });

  test("a snapshot keeps the state, and later changes apply on top of it", async (subject) => {
    const first = baseBatch();
    const second = withSnapshot(
      whole(first),
      batch([executed([1, 7], [put("k7", bytes(7))])], [[1, 7, [set("k7", bytes(7)), del("k1")]]]),
    );
    const third = batch([executed([1, 8], [put("k8", bytes(8))])], [[1, 8, [set("k8", bytes(8))]]]);
    await commitAndCompare(subject, [first, second]);
    await subject.storage.commit(third);
    await subject.reopen();
    assert.deepStrictEqual(
      normalize(await subject.storage.load()),
      reference(whole(first, second, third)),
    );
  });

  Deno.test(`${factory.name}: a crash during a snapshot leaves the same state`, async () => {
    const base = baseBatch();
    // Enough entries for several snapshot pages.
    const many: KvMutation[] = [];
    for (let i = 0; i < 400; i++) many.push(set(`bulk-${i}`, bytes(500, i)));
    const filled = batch([executed([2, 1], [put("bulk", bytes(1))])], [[2, 1, many]]);
    const snapshotting = withSnapshot(
      whole(base, filled),
      batch([], [[2, 2, [del("bulk-0"), set("bulk-1", bytes(3))]]]),
    );
    let crashed = true;
    for (let step = 0; crashed; step++) {
      assert.ok(step <= 100, "the batch never completes");
      await withSubject(factory, async (subject) => {
        await subject.storage.commit(base);
        await subject.storage.commit(filled);
        crashed = await subject.crashDuring(snapshotting, step);
        const k = prefixOf(await subject.storage.load(), {
          before: whole(base, filled),
          last: snapshotting,
        });
        // A second snapshot after the crash finds and replaces any leftovers.
        const after = withSnapshot(
          [...whole(base, filled), [snapshotting, k]],
          batch([], [[2, 3, [set("after", bytes(4))]]]),
        );
        await subject.storage.commit(after);
        await subject.reopen();
        assert.deepStrictEqual(
          normalize(await subject.storage.load()),
          reference([...whole(base, filled), [snapshotting, k], ...whole(after)]),
        );
      });
    }
  });

  test("large batches: many records, long keys, large values, huge units", async (subject) => {
    const many: StorageRecord<KvCommand>[] = [];
    const manyEffects: [number, number, KvMutation[]][] = [];
    for (let n = 1; n <= 3000; n++) {
      many.push(executed([n % REPLICAS, Math.ceil(n / REPLICAS)], [put(`key-${n}`, bytes(20, n))]));
      manyEffects.push([n % REPLICAS, Math.ceil(n / REPLICAS), [set(`key-${n}`, bytes(20, n))]]);
    }
    // Keys of 1024 UTF-8 bytes, NULs (which Deno KV's key encoding doubles) and multi-byte ones.
    const longKeys = [
      "\u0000".repeat(1024),
      "é".repeat(512),
      "😀".repeat(256),
      ...Array.from({ length: 150 }, (_, i) => `${i}`.padEnd(1024, "k")),
    ];
    const longKeyEffects = longKeys.map((key, i) =>
      set(key, bytes(100, i), { version: `${i}.0.0` })
    );
    // 14 values of 60 KiB: a record over 800 KiB, too large for one atomic commit.
    const values = Array.from({ length: 14 }, (_, i) => bytes(60 * KIB, i));
    const bigRecord = executed([1, 2000], values.slice(0, 2).map((v, i) => put(`v${i}`, v)));
    const hugeRecord = executed([2, 2000], values.map((v, i) => put(`v${i}`, v)));
    await commitAndCompare(subject, [
      batch(many, manyEffects),
      batch([executed([0, 2000], [put("long", bytes(1))])], [[0, 2000, longKeyEffects]]),
      batch([bigRecord, hugeRecord], [
        [1, 2000, values.slice(0, 2).map((v, i) => set(`v${i}`, v))],
        [2, 2000, values.slice(0, 3).map((v, i) => set(`w${i}`, v))],
      ]),
      // A delete of more instances than one atomic commit can hold.
      batch([{ kind: "delete", owner: 0, from: 1, to: 2000 }], [
        [0, 3000, longKeys.map((key) => del(key))],
      ]),
    ]);
  });

  Deno.test(`${factory.name}: matches MemoryStorage on random batches`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 5 }), async (steps) => {
        await withSubject(factory, async (subject) => {
          const history: Committed[] = [];
          for (const step of steps) {
            const { action, crashAt } = step;
            const b = step.snapshot ? withSnapshot(history, step.batch) : step.batch;
            if (action === "crash") {
              await subject.crashDuring(b, crashAt);
              const kept = prefixOf(await subject.storage.load(), { before: history, last: b });
              history.push([b, kept]);
            } else {
              await subject.storage.commit(b);
              if (action === "reopen") await subject.reopen();
              history.push([b, Number.POSITIVE_INFINITY]);
            }
            assert.deepStrictEqual(normalize(await subject.storage.load()), reference(history));
          }
        });
      }),
      { numRuns: factory.propertyRuns },
    );
  });
}
