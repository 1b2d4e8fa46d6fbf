/**
 * The epoch part of the `install` contract (`ReplicaStorage.install` in
 * `src/storage/types.ts`): a snapshot of a later epoch replaces every record,
 * the floor and the configuration; one of an earlier epoch, or of the same
 * epoch with another configuration, is refused. Run against every
 * implementation next to `runInstallContract` (`install_contract.ts`, whose
 * fixtures and oracle it uses).
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Configuration, type Member, positionCount } from "../../src/core/configuration.ts";
import type { StorageRecord } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { MalformedSnapshotError } from "../../src/storage/snapshot_check.ts";
import {
  type ReplicaSnapshot,
  SnapshotBelowFloorError,
  SnapshotEpochError,
} from "../../src/storage/types.ts";
import {
  batch,
  type Committed,
  del,
  executed,
  instance,
  normalize,
  put,
  set,
  type StorageFactory,
  type StorageSubject,
  whole,
} from "./contract.ts";
import {
  bytes,
  entry,
  heldHistory,
  heldSnapshot,
  installAndCompare,
  referenceWith,
  refused,
  snapshotOf,
} from "./install_contract.ts";

/**
 * A configuration of `epoch`: `voters` voters (ids `0..voters-1`, the rows),
 * then `learners` learners; every member at `incarnation` (1 unless told).
 */
export function configurationOf(
  epoch: number,
  voters: number,
  options: { readonly learners?: number; readonly incarnation?: number } = {},
): Configuration {
  const total = voters + (options.learners ?? 0);
  const members: Member[] = Array.from({ length: total }, (_, id) => ({
    id,
    incarnation: options.incarnation ?? 1,
    url: `http://10.0.0.${id + 1}:7000`,
    role: id < voters ? "voter" : "learner",
  }));
  return { epoch, members, nextId: total };
}

/** Instance ids of `records`, `owner.number`, sorted. */
function ids(records: readonly { owner: number; number: number }[]): string[] {
  return records.map((r) => `${r.owner}.${r.number}`).sort();
}

/** Registers the epoch tests of the `install` contract for one implementation. */
export function runEpochInstallContract(factory: StorageFactory): void {
  const test = (name: string, fn: (subject: StorageSubject) => Promise<void>) =>
    Deno.test(`${factory.name}: install of an epoch: ${name}`, async () => {
      const subject = await factory.create();
      try {
        await fn(subject);
      } finally {
        await subject.dispose();
      }
    });

  test("a later epoch drops every record, own uncommitted ones above the prefix too, and sets the floor to its prefix below the old one", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    await subject.storage.commit(batch([{ kind: "floor", pruneFloor: [4, 2, 2] }]));
    const configuration = configurationOf(2, 3, { incarnation: 2 });
    const snapshot = snapshotOf({
      prefix: [1, 0, 3],
      configuration,
      records: [
        // The same keys as held records of the old epoch: 0.8 uncommitted,
        // 1.2 of two chunks, 2.4 executed of two chunks.
        executed([0, 8], [put("eight", bytes(8))]),
        executed([1, 2], [put("two", bytes(2))]),
        executed([2, 4], [put("four", bytes(4))]),
      ],
      entries: [entry("eight", bytes(8), "2.0.0"), entry("k2", bytes(3), "2.0.1")],
    });
    await installAndCompare(subject, snapshot);
    const state = await subject.storage.load();
    assert.deepStrictEqual(ids(state.records), ["0.8", "1.2", "2.4"]);
    for (const record of state.records) assert.equal(record.executed, true);
    assert.deepStrictEqual(state.records.find((r) => r.owner === 1)!.command, [
      put("two", bytes(2)),
    ]);
    assert.deepStrictEqual(state.pruneFloor, [1, 0, 3]);
    assert.deepStrictEqual(state.configuration, configuration);
    assert.deepStrictEqual(state.entries.map(([key]) => key).sort(), ["eight", "k2"]);
  });

  test("into a fresh store, and with no records and a prefix of zeros (a replica's own barrier)", async (subject) => {
    const configuration = configurationOf(2, 3);
    await installAndCompare(
      subject,
      snapshotOf({ prefix: [0, 0, 0], configuration, entries: [entry("a", bytes(1))] }),
    );
    await subject.storage.commit(batch([instance([0, 1], { phase: 1 })]));
    const own = snapshotOf({ prefix: [0, 0, 0], configuration: configurationOf(3, 3) });
    await installAndCompare(subject, own);
    const state = await subject.storage.load();
    assert.deepStrictEqual(state.records, []);
    assert.deepStrictEqual(state.pruneFloor, [0, 0, 0]);
    assert.deepStrictEqual(state.entries, []);
    assert.equal(state.configuration?.epoch, 3);
  });

  test("rows follow the new configuration: five voters, then commits, prunes and restarts", async (subject) => {
    const held = heldHistory();
    for (const b of held) await subject.storage.commit(b);
    const snapshot = snapshotOf({
      prefix: [2, 0, 0, 1, 0],
      configuration: configurationOf(2, 5),
      records: [
        executed([3, 2], [put("three", bytes(3))], 5),
        executed([4, 1], [put("four", bytes(4))], 5),
      ],
      entries: [entry("three", bytes(3), "3.0.0"), entry("four", bytes(4), "4.0.0")],
    });
    await installAndCompare(subject, snapshot);
    const history: (Committed | ReplicaSnapshot<KvCommand>)[] = [...whole(...held), snapshot];
    const steps = [
      batch(
        [
          executed([4, 2], [put("more", bytes(5))], 5),
          instance([3, 3], { phase: 1, command: [put("x", bytes(1))] }),
          { kind: "floor", pruneFloor: [2, 0, 0, 1, 0] },
        ] as StorageRecord<KvCommand>[],
        [[4, 2, [set("more", bytes(5)), del("three")]]],
      ),
      batch([
        { kind: "floor", pruneFloor: [2, 0, 0, 2, 2] },
        { kind: "delete", owner: 3, from: 1, to: 2 },
        { kind: "delete", owner: 4, from: 1, to: 2 },
      ]),
    ];
    for (const b of steps) {
      await subject.storage.commit(b);
      history.push(...whole(b));
      assert.deepStrictEqual(normalize(await subject.storage.load()), referenceWith(history));
    }
    await subject.reopen();
    const state = await subject.storage.load();
    assert.deepStrictEqual(normalize(state), referenceWith(history));
    assert.deepStrictEqual(ids(state.records), ["3.3"]);
    assert.deepStrictEqual(state.pruneFloor, [2, 0, 0, 2, 2]);
    // A same-epoch snapshot has five rows from now on.
    const same = snapshotOf({
      prefix: [2, 0, 0, 2, 2],
      configuration: configurationOf(2, 5),
    });
    await installAndCompare(subject, same);
    await refused(
      subject.storage.install(snapshotOf({ prefix: [2, 2, 2], configuration: same.configuration })),
      MalformedSnapshotError,
      "has 5 positions",
    );
  });

  test("an earlier epoch is refused and changes nothing; in the same epoch the floor holds", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    await subject.storage.install(snapshotOf({
      prefix: [3, 3, 3],
      configuration: configurationOf(3, 3),
      records: [executed([0, 4], [put("a", bytes(1))])],
      entries: [entry("a", bytes(1), "4.0.0")],
    }));
    await subject.storage.commit(
      batch([instance([1, 5], { phase: 2, command: [put("b", bytes(2))] })]),
    );
    const before = normalize(await subject.storage.load());
    const cases: [ReplicaSnapshot<KvCommand>, new (message: string) => Error, string][] = [
      [
        snapshotOf({ prefix: [9, 9, 9], configuration: configurationOf(2, 3) }),
        SnapshotEpochError,
        "Snapshot of epoch 2 is older than this replica's epoch 3",
      ],
      [
        snapshotOf({ prefix: [9, 9, 9] }),
        SnapshotEpochError,
        "Snapshot of epoch 1 (it carries no configuration) is older than this replica's epoch 3",
      ],
      [heldSnapshot(), SnapshotEpochError, "older than this replica's epoch 3"],
      [
        snapshotOf({ prefix: [3, 2, 3], configuration: configurationOf(3, 3) }),
        SnapshotBelowFloorError,
        "in row 1",
      ],
    ];
    for (const [snapshot, type, text] of cases) {
      await refused(subject.storage.install(snapshot), type, text);
      assert.deepStrictEqual(normalize(await subject.storage.load()), before, text);
    }
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), before);
    // A later epoch still installs, skipping epochs.
    await installAndCompare(
      subject,
      snapshotOf({ prefix: [1, 1, 1], configuration: configurationOf(5, 3) }),
    );
    assert.equal((await subject.storage.load()).configuration?.epoch, 5);
  });

  test("the same epoch with another configuration is refused; with the same one it installs as before", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    const stored = configurationOf(2, 3, { learners: 1 });
    // A row per position: the learner (id 3) has one too.
    await subject.storage.install(snapshotOf({ prefix: [6, 2, 2, 0], configuration: stored }));
    // Own records of the epoch above the prefix: kept by a same-epoch install.
    await subject.storage.commit(batch(
      [
        executed([0, 7], [put("seven", bytes(7))]),
        instance([1, 3], { phase: 1, command: [put("b", bytes(2))] }),
      ],
      [[0, 7, [set("seven", bytes(7))]]],
    ));
    const before = normalize(await subject.storage.load());
    const members = stored.members;
    const others: Configuration[] = [
      { ...stored, nextId: 9 },
      { ...stored, members: members.map((m) => m.id === 1 ? { ...m, incarnation: 2 } : m) },
      {
        ...stored,
        members: members.map((m) => m.id === 2 ? { ...m, url: "http://10.9.9.9:7000" } : m),
      },
      { ...stored, members: members.slice(0, 3), nextId: 4 },
      {
        ...stored,
        members: [...members, {
          id: 4,
          incarnation: 1,
          url: "http://10.0.0.9:7000",
          role: "learner",
        }],
        nextId: 5,
      },
      {
        ...stored,
        members: members.map((m) =>
          m.id === 3 ? { ...m, role: "voter" } : m.id === 2 ? { ...m, role: "learner" } : m
        ),
      },
    ];
    for (const configuration of others) {
      // A row per position of each, so that only the configuration differs.
      const prefix = [6, 2, 2, ...new Array(positionCount(configuration) - 3).fill(0)];
      const snapshot = snapshotOf({ prefix, configuration });
      await refused(subject.storage.install(snapshot), SnapshotEpochError, "is not this replica's");
      assert.deepStrictEqual(normalize(await subject.storage.load()), before);
    }
    // An equal copy: today's install, keeping the records above the prefix.
    const same = snapshotOf({
      prefix: [6, 2, 2, 0],
      configuration: structuredClone(stored),
      records: [executed([2, 3], [put("c", bytes(3))], 4)],
      entries: [entry("c", bytes(3), "3.0.0")],
    });
    await installAndCompare(subject, same);
    const state = await subject.storage.load();
    assert.deepStrictEqual(ids(state.records), ["0.7", "1.3", "2.3"]);
    assert.equal(state.records.find((r) => r.owner === 0)!.executed, false);
    assert.deepStrictEqual(state.configuration, stored);
  });

  test("a prefix whose rows are not the positions of its configuration, or an invalid configuration, is refused", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    const before = normalize(await subject.storage.load());
    const cases: [ReplicaSnapshot<KvCommand>, string][] = [
      [
        snapshotOf({ prefix: [1, 1, 1], configuration: configurationOf(2, 5) }),
        "Snapshot prefix has 3 rows, but its configuration e2 [0v1 1v1 2v1 3v1 4v1] has 5 positions",
      ],
      [
        // Learners have rows too: five positions.
        snapshotOf({
          prefix: [1, 1, 1],
          configuration: configurationOf(2, 3, { learners: 2 }),
        }),
        "has 5 positions",
      ],
      [
        // Epoch 1 with none stored: also a row per replica of the current epoch.
        snapshotOf({ prefix: [1, 1, 1, 1, 1], configuration: configurationOf(1, 5) }),
        "Snapshot prefix has 5 rows, but the cluster has 3",
      ],
      [
        snapshotOf({ prefix: [1, 1], configuration: configurationOf(2, 2) }),
        "Snapshot configuration is invalid: configuration must have an odd number of voters, has 2",
      ],
      [
        snapshotOf({ prefix: [1, 1, 1], configuration: { ...configurationOf(2, 3), epoch: 0 } }),
        "configuration epoch must be an integer",
      ],
      [
        { ...snapshotOf({ prefix: [1, 1, 1] }), configuration: null as unknown as Configuration },
        "configuration must be an object",
      ],
      [
        snapshotOf({
          prefix: [1, 1, 1],
          configuration: configurationOf(2, 3),
          records: [executed([3, 2], [put("a", bytes(1))])],
        }),
        "names no instance of the cluster: 3.2",
      ],
    ];
    for (const [snapshot, text] of cases) {
      await refused(subject.storage.install(snapshot), MalformedSnapshotError, text);
      assert.deepStrictEqual(normalize(await subject.storage.load()), before, text);
    }
    await subject.reopen();
    assert.deepStrictEqual(normalize(await subject.storage.load()), before);
  });

  test("with none stored, a snapshot of epoch 1 carrying its configuration installs as before and stores none", async (subject) => {
    for (const b of heldHistory()) await subject.storage.commit(b);
    const snapshot = { ...heldSnapshot(), configuration: configurationOf(1, 3) };
    await installAndCompare(subject, snapshot);
    assert.equal((await subject.storage.load()).configuration, undefined);
    assert.equal("configuration" in (await subject.storage.load()), false);
  });

  test("startEpoch starts a later epoch in place: effects applied, records dropped, a zero floor over its positions, its configuration; refused for an epoch not later", async (subject) => {
    if (subject.storage.startEpoch === undefined) return;
    for (const b of heldHistory()) await subject.storage.commit(b);
    const before = normalize(await subject.storage.load());
    for (const epoch of [1]) {
      await refused(
        subject.storage.startEpoch({ configuration: configurationOf(epoch, 3), effects: [] }),
        SnapshotEpochError,
        "is not later",
      );
      assert.deepStrictEqual(normalize(await subject.storage.load()), before);
    }
    const entriesBefore = new Map((await subject.storage.load()).entries);
    // Learners have rows too: five positions.
    const configuration = configurationOf(2, 3, { learners: 2 });
    await subject.storage.startEpoch({
      configuration,
      effects: [[set("new", bytes(9)), set("k0", bytes(1))], [del("k0")]],
    });
    const check = async () => {
      const state = await subject.storage.load();
      assert.deepStrictEqual(state.records, []);
      assert.deepStrictEqual(state.pruneFloor, [0, 0, 0, 0, 0]);
      assert.deepStrictEqual(state.configuration, configuration);
      const expected = new Map(entriesBefore);
      expected.set("new", { value: bytes(9), version: "x" });
      expected.delete("k0");
      assert.deepStrictEqual(
        state.entries.map(([key]) => key).sort(),
        [...expected.keys()].sort(),
      );
      assert.deepStrictEqual(
        state.entries.find(([key]) => key === "new")?.[1].value,
        bytes(9),
      );
    };
    await check();
    await subject.reopen();
    await check();
    // The new epoch goes on from there: its records, and a later epoch again.
    await subject.storage.commit(batch([instance([3, 1], { phase: 1 })]));
    assert.deepStrictEqual(ids((await subject.storage.load()).records), ["3.1"]);
    await refused(
      subject.storage.startEpoch({ configuration, effects: [] }),
      SnapshotEpochError,
      "is not later",
    );
    await subject.storage.startEpoch({ configuration: configurationOf(3, 3), effects: [] });
    const third = await subject.storage.load();
    assert.deepStrictEqual(third.records, []);
    assert.deepStrictEqual(third.pruneFloor, [0, 0, 0]);
    assert.equal(third.configuration?.epoch, 3);
  });
}
