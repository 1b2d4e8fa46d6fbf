/**
 * The `install` part of the storage contract (`ReplicaStorage.install` in
 * `src/storage/types.ts`), run against every implementation next to
 * `runStorageContract` (`contract.ts`, whose builders it uses).
 *
 * The expected state after an install is computed here from the contract
 * ({@linkcode installedState}), not by `MemoryStorage`, which is one of the
 * implementations under test; for commits after an install, `MemoryStorage`
 * (checked against that oracle first) is the reference again.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Configuration } from "../../src/core/configuration.ts";
import { instanceKey } from "../../src/core/instance.ts";
import type { InstanceRecord, StorageRecord } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { type KvEntry, type KvMutation, stateDigestOf } from "../../src/kv/state_machine.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { MalformedSnapshotError } from "../../src/storage/snapshot_check.ts";
import {
  type LoadedState,
  type PersistBatch,
  type ReplicaSnapshot,
  SnapshotBelowFloorError,
} from "../../src/storage/types.ts";
import {
  batch,
  type Committed,
  del,
  executed,
  instance,
  normalize,
  put,
  REPLICAS,
  set,
  type StorageFactory,
  type StorageSubject,
  whole,
} from "./contract.ts";

/** Deterministic bytes. */
export const bytes = (length: number, seed = 1): Uint8Array => {
  const value = new Uint8Array(length);
  for (let i = 0; i < length; i++) value[i] = (i * 7 + seed) & 0xff;
  return value;
};

/** What a snapshot is made of, before its digest. */
export interface SnapshotParts {
  /** The executed prefix (the new prune floor). */
  readonly prefix: readonly number[];
  /** Its records (committed, executed, above the prefix). */
  readonly records?: readonly InstanceRecord<KvCommand>[];
  /** Its key-value state. */
  readonly entries?: readonly (readonly [string, KvEntry])[];
  /** The configuration of its epoch; absent: epoch 1. */
  readonly configuration?: Configuration;
}

/** A well-formed snapshot of `parts`, with the digest of its entries. */
export function snapshotOf(parts: SnapshotParts): ReplicaSnapshot<KvCommand> {
  const entries = parts.entries ?? [];
  const snapshot: ReplicaSnapshot<KvCommand> = {
    barrier: "barrier-1",
    executedPrefix: parts.prefix,
    records: parts.records ?? [],
    entries,
    digest: stateDigestOf(entries),
  };
  return parts.configuration === undefined
    ? snapshot
    : { ...snapshot, configuration: parts.configuration };
}

/** An entry at a version. */
export function entry(key: string, value: Uint8Array, version = "1.0.0"): [string, KvEntry] {
  return [key, { value, version }];
}

/**
 * The state the contract says `load` returns after installing `snapshot` on
 * a store that loaded `before` (the snapshot being of its epoch or a later one).
 */
export function installedState(
  before: LoadedState<KvCommand>,
  snapshot: ReplicaSnapshot<KvCommand>,
): LoadedState<KvCommand> {
  const prefix = snapshot.executedPrefix;
  if ((snapshot.configuration?.epoch ?? 1) > (before.configuration?.epoch ?? 1)) {
    // A later epoch: nothing held is kept.
    return {
      records: [...snapshot.records],
      pruneFloor: [...prefix],
      entries: [...snapshot.entries],
      configuration: snapshot.configuration,
    };
  }
  const inSnapshot = new Set(snapshot.records.map((r) => instanceKey(r.owner, r.number)));
  const kept = before.records
    .filter((r) => r.number > prefix[r.owner]! && !inSnapshot.has(instanceKey(r.owner, r.number)))
    .map((r) => ({ ...r, executed: false }));
  const state = {
    records: [...kept, ...snapshot.records],
    pruneFloor: [...prefix],
    entries: [...snapshot.entries],
  };
  return before.configuration === undefined
    ? state
    : { ...state, configuration: before.configuration };
}

/** What a fresh `MemoryStorage` holds after `history`, with `install` steps among the batches. */
export function referenceWith(
  history: readonly (Committed | ReplicaSnapshot<KvCommand>)[],
): unknown {
  const memory = new MemoryStorage<KvCommand>();
  for (const step of history) {
    if (Array.isArray(step)) memory.commitSync(step[0], step[1]);
    else memory.installSync(step as ReplicaSnapshot<KvCommand>);
  }
  return normalize(memory.loadSync());
}

/** `b` carrying the state after `history` and then `b`, as `PersistBatch.snapshot`. */
function withSnapshotAfter(
  history: readonly (Committed | ReplicaSnapshot<KvCommand>)[],
  b: PersistBatch<KvCommand>,
): PersistBatch<KvCommand> {
  const memory = new MemoryStorage<KvCommand>();
  for (const step of history) {
    if (Array.isArray(step)) memory.commitSync(step[0], step[1]);
    else memory.installSync(step as ReplicaSnapshot<KvCommand>);
  }
  memory.commitSync(b);
  return { ...b, snapshot: memory.loadSync().entries };
}

/** Installs `snapshot`, checks `load` against the contract, then again after a restart. */
export async function installAndCompare(
  subject: StorageSubject,
  snapshot: ReplicaSnapshot<KvCommand>,
): Promise<unknown> {
  const before = await subject.storage.load();
  await subject.storage.install(snapshot);
  const expected = normalize(installedState(before, snapshot));
  assert.deepStrictEqual(normalize(await subject.storage.load()), expected);
  await subject.reopen();
  assert.deepStrictEqual(normalize(await subject.storage.load()), expected);
  return expected;
}

/** Asserts that `promise` rejects with a `type` whose message contains `text`. */
export async function refused(
  promise: PromiseLike<unknown>,
  type: abstract new (...args: never[]) => Error,
  text: string,
): Promise<void> {
  await assert.rejects(Promise.resolve(promise), (error: unknown) => {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${error}`);
    assert.ok(error.message.includes(text), `expected "${text}" in "${error.message}"`);
    return true;
  });
}

// --- Fixtures ---------------------------------------------------------------

/**
 * A store's history with records of every kind around the prefix
 * {@linkcode PREFIX}: executed and not, at, below and above it, one held
 * record the snapshot replaces, one of two chunks, and effects.
 */
export function heldHistory(): PersistBatch<KvCommand>[] {
  const records: StorageRecord<KvCommand>[] = [];
  const effects: [number, number, KvMutation[]][] = [];
  for (let n = 1; n <= 6; n++) {
    records.push(executed([0, n], [put(`k${n}`, bytes(8, n))]));
    effects.push([0, n, [set(`k${n}`, bytes(8, n), { version: `${n}.0.0` })]]);
  }
  records.push(
    { kind: "floor", pruneFloor: [0, 0, 0] },
    executed([1, 1], [put("one", bytes(3))]),
    // Two chunks, at the prefix of its row: deleted whole.
    executed([1, 2], [put("big", bytes(40_000)), put("bigger", bytes(40_000, 2))]),
    // Above the prefix, executed, not in the snapshot: kept, not executed.
    executed([1, 5], [put("five", bytes(5))]),
    // Above, not executed: kept as it is.
    instance([1, 6], { phase: 2, ballot: 4, acceptedBallot: 4, command: [put("six", bytes(6))] }),
    // Above, two chunks, executed: rewritten with executed false.
    executed([2, 4], [put("large", bytes(40_000, 4)), put("larger", bytes(40_000, 5))]),
    // Below, not executed: deleted.
    instance([2, 1], { phase: 1 }),
    // Above, held uncommitted; the snapshot carries it executed.
    instance([0, 8], { phase: 1, command: [put("eight", bytes(8))] }),
  );
  effects.push([1, 1, [set("one", bytes(3))]], [1, 5, [
    set("five", bytes(5)),
    set("k2", bytes(1)),
  ]]);
  return [
    batch(records.slice(0, 7), effects.slice(0, 6)),
    batch(records.slice(7), effects.slice(6)),
  ];
}

/** The prefix of {@linkcode heldSnapshot}. */
export const PREFIX = [6, 2, 2] as const;

/** A snapshot over {@linkcode heldHistory}: other entries, records above {@linkcode PREFIX}. */
export function heldSnapshot(): ReplicaSnapshot<KvCommand> {
  return snapshotOf({
    prefix: PREFIX,
    records: [
      executed([0, 8], [put("eight", bytes(8))]),
      executed([0, 9], [put("nine", bytes(9))]),
      executed([2, 3], [put("three", bytes(3))]),
    ],
    entries: [
      entry("k2", bytes(4, 2), "7.1.0"),
      entry("eight", bytes(8), "8.0.0"),
      entry("nine", bytes(9), "9.0.0"),
      entry("", bytes(0), "9.0.1"),
    ],
  });
}

/** `count` entries of `valueBytes` each. */
export function manyEntries(count: number, valueBytes: number): [string, KvEntry][] {
  return Array.from(
    { length: count },
    (_, i) => entry(`key/${String(i).padStart(6, "0")}`, bytes(valueBytes, i), `${i + 1}.0.0`),
  );
}

// --- The suite --------------------------------------------------------------

/**
 * Registers the `install` contract tests for one implementation (those of
 * epochs are `runEpochInstallContract`, `epoch_install_contract.ts`).
 */
export function runInstallContract(factory: StorageFactory): void {
  const test = (name: string, fn: (subject: StorageSubject) => Promise<void>) =>
    Deno.test(`${factory.name}: install: ${name}`, async () => {
      const subject = await factory.create();
      try {
        await fn(subject);
      } finally {
        await subject.dispose();
      }
    });

  test("into a fresh store, load returns the snapshot", async (subject) => {
    const snapshot = snapshotOf({
      prefix: [3, 2, 0],
      records: [executed([0, 4], [put("a", bytes(1))]), executed([2, 1], [put("b", bytes(2))])],
      entries: [entry("a", bytes(1), "4.0.0"), entry("b", bytes(2), "1.2.0")],
    });
    await installAndCompare(subject, snapshot);
    const state = await subject.storage.load();
    assert.deepStrictEqual(state.pruneFloor, [3, 2, 0]);
    assert.deepStrictEqual(state.records.map((r) => `${r.owner}.${r.number}`).sort(), [
      "0.4",
      "2.1",
    ]);
    assert.deepStrictEqual(state.entries.map(([key]) => key).sort(), ["a", "b"]);
  });

  test("replaces what a store held, as the contract says", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    const snapshot = heldSnapshot();
    await installAndCompare(subject, snapshot);
    const state = await subject.storage.load();
    const records = new Map(state.records.map((r) => [`${r.owner}.${r.number}`, r]));
    // None at or below the prefix.
    for (const record of state.records) assert.ok(record.number > PREFIX[record.owner]!);
    assert.deepStrictEqual([...records.keys()].sort(), ["0.8", "0.9", "1.5", "1.6", "2.3", "2.4"]);
    // Kept records lose `executed`, and only that.
    assert.equal(records.get("1.5")!.executed, false);
    assert.deepStrictEqual(records.get("1.5")!.command, [put("five", bytes(5))]);
    assert.equal(records.get("2.4")!.executed, false);
    assert.equal(records.get("1.6")!.phase, 2);
    // The snapshot's records, the held one of the same instance replaced.
    assert.equal(records.get("0.8")!.executed, true);
    assert.equal(records.get("0.8")!.phase, 3);
    // Entries: the snapshot's, none of the others.
    const entries = new Map(state.entries);
    assert.deepStrictEqual([...entries.keys()].sort(), ["", "eight", "k2", "nine"]);
    assert.equal(entries.get("k2")!.version, "7.1.0");
    assert.deepStrictEqual(state.pruneFloor, [...PREFIX]);
  });

  test("commits after an install apply on top of it, across restarts", async (subject) => {
    const held = heldHistory();
    for (const b of held) await subject.storage.commit(b);
    const snapshot = heldSnapshot();
    await subject.storage.install(snapshot);
    const history: (Committed | ReplicaSnapshot<KvCommand>)[] = [...whole(...held), snapshot];
    // The kept record executes again; new instances; a prune; a snapshot of the state.
    const again = batch(
      [executed([1, 5], [put("five", bytes(5))]), executed([0, 10], [put("ten", bytes(10))])],
      [[1, 5, [set("five", bytes(5), { version: "5.1.0" })]], [0, 10, [
        set("ten", bytes(10)),
        del("nine"),
      ]]],
    );
    const prune = batch([
      { kind: "floor", pruneFloor: [8, 2, 2] },
      { kind: "delete", owner: 0, from: 7, to: 8 },
    ]);
    const snapshotting = withSnapshotAfter(
      [...history, ...whole(again, prune)],
      batch([], [[0, 11, [set("eleven", bytes(11))]]]),
    );
    for (const b of [again, prune, snapshotting]) {
      await subject.storage.commit(b);
      history.push(...whole(b));
      assert.deepStrictEqual(normalize(await subject.storage.load()), referenceWith(history));
    }
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), referenceWith(history));
    // A snapshot written a slice at a time finishes over the next commits.
    for (let n = 12; n < 16; n++) {
      const b = batch([], [[0, n, [set(`n${n}`, bytes(n))]]]);
      await subject.storage.commit(b);
      history.push(...whole(b));
    }
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), referenceWith(history));
  });

  test("MemoryStorage's install matches the contract (it is the reference for later commits)", async (subject) => {
    const held = heldHistory();
    for (const b of held) await subject.storage.commit(b);
    const before = await subject.storage.load();
    const snapshot = heldSnapshot();
    assert.deepStrictEqual(
      referenceWith([...whole(...held), snapshot]),
      normalize(installedState(before, snapshot)),
    );
  });

  test("a second install on top of the first, then a restart", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    await subject.storage.install(heldSnapshot());
    await subject.storage.commit(batch([instance([1, 9], { phase: 1 })]));
    // At the floor in rows 1 and 2 (equal is not below), past it in row 0.
    const second = snapshotOf({
      prefix: [9, 2, 2],
      records: [executed([0, 12], [put("twelve", bytes(12))])],
      entries: [entry("twelve", bytes(12), "12.0.0")],
    });
    const expected = await installAndCompare(subject, second);
    const records = (await subject.storage.load()).records.map((r) => `${r.owner}.${r.number}`);
    assert.deepStrictEqual(records.sort(), ["0.12", "1.5", "1.6", "1.9", "2.3", "2.4"]);
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), expected);
  });

  test("a snapshot below the prune floor in some row is refused and changes nothing", async (subject) => {
    const held = heldHistory();
    for (const b of held) await subject.storage.commit(b);
    const floor = batch([{ kind: "floor", pruneFloor: [4, 2, 2] }]);
    await subject.storage.commit(floor);
    const before = normalize(await subject.storage.load());
    const below = snapshotOf({ prefix: [7, 1, 2], entries: [entry("x", bytes(1))] });
    await refused(subject.storage.install(below), SnapshotBelowFloorError, "in row 1");
    assert.deepStrictEqual(normalize(await subject.storage.load()), before);
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), before);
    // Still usable: a commit, then an install at the floor.
    const after = batch([instance([0, 20], { phase: 1 })]);
    await subject.storage.commit(after);
    const atFloor = snapshotOf({ prefix: [4, 2, 2], entries: [entry("y", bytes(2))] });
    await installAndCompare(subject, atFloor);
    assert.deepStrictEqual(
      normalize(await subject.storage.load()),
      referenceWith([...whole(...held, floor, after), atFloor]),
    );
  });

  test("a malformed snapshot is refused with a clear error and changes nothing", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    const before = normalize(await subject.storage.load());
    const good = heldSnapshot();
    const record = (fields: Partial<Record<string, unknown>>) =>
      ({ ...executed([0, 9], [put("nine", bytes(9))]), ...fields }) as InstanceRecord<KvCommand>;
    const cases: [ReplicaSnapshot<KvCommand>, string][] = [
      [{ ...good, executedPrefix: [6, 2] }, "has 2 rows, but the cluster has 3"],
      [{ ...good, executedPrefix: [6, -1, 2] }, "prefix is not a vector"],
      [{ ...good, executedPrefix: [6, 2.5, 2] }, "prefix is not a vector"],
      [{ ...good, barrier: "" }, "names no barrier"],
      [{ ...good, records: [record({ number: 6 })] }, "record 0.6 is at or below the prefix 6"],
      [{ ...good, records: [record({ phase: 2 })] }, "record 0.9 is not committed"],
      [{ ...good, records: [record({ command: undefined })] }, "record 0.9 is not committed"],
      [{ ...good, records: [record({ executed: false })] }, "record 0.9 is not executed"],
      [{ ...good, records: [record({ owner: REPLICAS })] }, "names no instance of the cluster"],
      [{ ...good, records: [record({}), record({})] }, "two records of 0.9"],
      [{ ...good, digest: "0:00000000" }, "is not that of its entries"],
      [
        snapshotOf({ prefix: PREFIX, entries: [entry("a", bytes(1)), entry("a", bytes(2))] }),
        "two entries of key",
      ],
      [snapshotOf({ prefix: PREFIX, entries: [entry("\ud800", bytes(1))] }), "not well-formed"],
      [
        snapshotOf({ prefix: PREFIX, entries: [entry("a", bytes(1), "")] }),
        'of key "a" is malformed',
      ],
      [
        // No version: the digest cannot be computed; the shape is checked first.
        { ...good, entries: [["a", { value: bytes(1) } as unknown as KvEntry]] },
        'of key "a" is malformed',
      ],
    ];
    for (const [snapshot, text] of cases) {
      await refused(subject.storage.install(snapshot), MalformedSnapshotError, text);
      assert.deepStrictEqual(normalize(await subject.storage.load()), before, text);
    }
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), before);
    await installAndCompare(subject, good);
  });

  test("a large snapshot: 20,000 entries and 1,200 records", async (subject) => {
    const held = heldHistory();
    for (const b of held) await subject.storage.commit(b);
    // Held records around the prefix of a row, more than one atomic commit deletes.
    const many: StorageRecord<KvCommand>[] = [];
    for (let n = 1; n <= 1200; n++) many.push(executed([2, n + 10], [put(`h${n}`, bytes(20, n))]));
    await subject.storage.commit(batch(many));
    const records: InstanceRecord<KvCommand>[] = [];
    for (let n = 1; n <= 1200; n++) {
      records.push(executed([1, n + 2], [put(`s${n}`, bytes(30, n))]));
    }
    const snapshot = snapshotOf({
      prefix: [6, 2, 700],
      records,
      entries: manyEntries(20_000, 100),
    });
    await installAndCompare(subject, snapshot);
    const after = batch([executed([0, 7], [put("z", bytes(1))])], [[0, 7, [set("z", bytes(1))]]]);
    await subject.storage.commit(after);
    await subject.reopen();
    assert.deepStrictEqual(
      normalize(await subject.storage.load()),
      referenceWith([...whole(...held, batch(many)), snapshot, ...whole(after)]),
    );
  });
}
