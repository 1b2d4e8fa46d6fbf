import assert from "node:assert/strict";
import { type Execution } from "../../src/core/types.ts";
import { isBlindWrite } from "../../src/driver/answer.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import {
  databaseDataSpan,
  databaseKey,
  databaseRange,
  isStampBucketKey,
  stampBucketKey,
  stampBucketOf,
  versionstampCounter,
  versionstampOf,
  versionstampSuffix,
} from "../../src/kv/database_keys.ts";
import { ExpiryIndex } from "../../src/kv/expiry_index.ts";
import {
  type AtomicCommand,
  type AtomicMutation,
  type SnapshotRange,
} from "../../src/kv/txn_commands.ts";
import {
  type KvEntry,
  type KvMutation,
  type KvResult,
  KvStateMachine,
  versionOf,
} from "../../src/kv/state_machine.ts";

// ---------------------------------------------------------------------------
// Helpers

const bytes = (...values: number[]) => new Uint8Array(values);
const u64 = (n: bigint | number) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
};
const MAX_U64 = (1n << 64n) - 1n;
const key = (...values: number[]) => databaseKey("db", bytes(...values));

let requests = 0;
const nextRequest = () => `t${requests++}`;
let instances = 0;

function atomic(
  mutations: AtomicMutation[],
  fields: Partial<Omit<AtomicCommand, "op" | "request" | "mutations">> = {},
): AtomicCommand {
  return { op: "atomic", request: nextRequest(), database: "db", checks: [], mutations, ...fields };
}

function set(k: string, value: Uint8Array, extra: Partial<AtomicMutation> = {}): AtomicMutation {
  return { kind: "set", key: k, value, encoding: 3, ...extra } as AtomicMutation;
}

function sum(k: string, n: bigint | number, kind: "sum" | "min" | "max" = "sum"): AtomicMutation {
  return { kind, key: k, value: u64(n), encoding: 2 };
}

function execution(commands: readonly KvCommand[], owner = 0): Execution<KvCommand> {
  return { owner, number: ++instances, command: commands, local: true };
}

/** Applies `command` alone and returns its result and mutations. */
function run(
  machine: KvStateMachine,
  command: KvCommand,
): { result: KvResult; mutations: readonly KvMutation[] } {
  const applied = machine.apply(execution([command]));
  return { result: applied.results[0]!.result, mutations: applied.mutations };
}

function okStamp(result: KvResult): string {
  assert.ok(result.op === "atomic" && result.ok, `expected success: ${Deno.inspect(result)}`);
  return result.version;
}

function snapshot(
  machine: KvStateMachine,
  ...ranges: SnapshotRange[]
): (KvEntry & { key: string })[][] {
  const { result } = run(machine, { op: "snapshot", request: nextRequest(), ranges });
  assert.ok(result.op === "snapshot");
  return result.ranges.map((range) => [...range]);
}

function everything(limit = 1000, reverse = false): SnapshotRange {
  return { ...databaseDataSpan("db"), limit, reverse };
}

function dataEntries(machine: KvStateMachine): [string, KvEntry][] {
  return [...machine.entries()].filter(([k]) => !isStampBucketKey(k)).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0
  );
}

// ---------------------------------------------------------------------------
// Atomic commands

Deno.test("checks: all must hold; a failure reports every check's current version", () => {
  const machine = new KvStateMachine();
  const first = okStamp(run(machine, atomic([set(key(1), bytes(7))])).result);
  // Absent and present, as expected: applied.
  okStamp(
    run(
      machine,
      atomic([set(key(3), bytes(1))], {
        checks: [{ key: key(1), version: first }, { key: key(2), version: null }],
      }),
    ).result,
  );
  const before = dataEntries(machine);
  const failed = run(
    machine,
    atomic([set(key(2), bytes(9))], {
      checks: [
        { key: key(1), version: first },
        { key: key(3), version: null },
        { key: key(4), version: versionstampOf(1) },
      ],
    }),
  );
  assert.deepEqual(failed.result, {
    op: "atomic",
    ok: false,
    failure: "check",
    current: [first, machine.read(key(3))!.version, null],
  });
  assert.deepEqual(failed.mutations, [], "nothing to persist");
  assert.deepEqual(dataEntries(machine), before, "nothing applied");
});

Deno.test("each mutation kind, in order, every written key with the command's one versionstamp", () => {
  const machine = new KvStateMachine();
  okStamp(run(machine, atomic([set(key(2), bytes(1)), sum(key(3), 5)])).result);
  const { result, mutations } = run(
    machine,
    atomic([
      set(key(1), bytes(1, 2), { encoding: 1, expiresAt: 1_800_000_000_000 }),
      { kind: "delete", key: key(2) },
      sum(key(3), 10),
      sum(key(4), 6, "min"),
      sum(key(4), 4, "min"),
      sum(key(5), 6, "max"),
      sum(key(5), 9, "max"),
      { kind: "setSuffixVersionstamped", key: key(6), value: bytes(42), encoding: 3 },
      set(key(7), bytes(1)),
      { kind: "delete", key: key(7) },
    ]),
  );
  const stamp = okStamp(result);
  const suffixed = key(6) + versionstampSuffix(stamp);
  assert.deepEqual(dataEntries(machine), [
    [key(1), { value: bytes(1, 2), version: stamp, encoding: 1, expiresAt: 1_800_000_000_000 }],
    [key(3), { value: u64(15), version: stamp, encoding: 2 }],
    [key(4), { value: u64(4), version: stamp, encoding: 2 }],
    [key(5), { value: u64(9), version: stamp, encoding: 2 }],
    [suffixed, { value: bytes(42), version: stamp, encoding: 3 }],
  ]);
  // The versionstamped key: the prefix, then a string part of the 20 hex digits.
  assert.equal(suffixed, `${key(6)}\u0002${stamp}\u0000`);
  // What to persist is the net state of each changed key, buckets included.
  const persisted = new Map(mutations.map((m) => [m.key, m.kind === "set" ? m.entry : undefined]));
  for (const k of [key(1), key(2), key(3), key(4), key(5), suffixed, key(7)]) {
    assert.ok(persisted.has(k), `mutation of ${JSON.stringify(k)}`);
    assert.deepEqual(persisted.get(k), machine.read(k));
  }
  for (const k of [key(1), key(2), key(3), key(4), key(5), key(7)]) {
    const bucket = stampBucketKey("db", stampBucketOf("db", k));
    assert.equal(persisted.get(bucket)?.version, stamp, "bucket set to the stamp");
  }
});

Deno.test("sum wraps mod 2^64, min and max compare unsigned, an absent key takes the operand", () => {
  const machine = new KvStateMachine();
  okStamp(run(machine, atomic([sum(key(1), MAX_U64), sum(key(1), 2)])).result);
  assert.deepEqual(machine.read(key(1))!.value, u64(1));
  okStamp(run(machine, atomic([sum(key(2), 1n << 63n, "max"), sum(key(2), 1, "max")])).result);
  assert.deepEqual(machine.read(key(2))!.value, u64(1n << 63n), "2^63 is the larger unsigned");
  okStamp(run(machine, atomic([sum(key(3), 1n << 63n, "min"), sum(key(3), 1, "min")])).result);
  assert.deepEqual(machine.read(key(3))!.value, u64(1));
  // An expiry on a sum is dropped (denokv's mutate_le64 stores none).
  okStamp(run(machine, atomic([{ ...sum(key(4), 3), expiresAt: 5 } as AtomicMutation])).result);
  assert.equal(machine.read(key(4))!.expiresAt, undefined);
});

Deno.test("sum/min/max on a value that is not a U64 fails the whole command with denokv's words", () => {
  for (const kind of ["sum", "min", "max"] as const) {
    const machine = new KvStateMachine();
    const stamp = okStamp(
      run(machine, atomic([set(key(1), bytes(1, 2, 3)), set(key(2), u64(1), { encoding: 1 })]))
        .result,
    );
    const before = [...machine.entries()];
    const highest = machine.highestStamp;
    for (const target of [key(1), key(2)]) {
      const { result, mutations } = run(
        machine,
        atomic([
          set(key(9), bytes(1)),
          // The other existing key: its delete must not apply either.
          { kind: "delete", key: target === key(1) ? key(2) : key(1) },
          sum(target, 1, kind),
        ]),
      );
      assert.deepEqual(result, {
        op: "atomic",
        ok: false,
        failure: "invalid",
        message: `Failed to perform '${kind}' mutation on a non-U64 value in the database`,
      });
      assert.deepEqual(mutations, []);
    }
    assert.deepEqual([...machine.entries()], before, "all or nothing");
    assert.equal(machine.highestStamp, highest, "no versionstamp spent");
    assert.equal(machine.read(key(1))!.version, stamp);
  }
  // A U64 set earlier in the same command is summed; a V8 value set earlier refuses.
  const machine = new KvStateMachine();
  okStamp(run(machine, atomic([set(key(1), u64(2), { encoding: 2 }), sum(key(1), 3)])).result);
  assert.deepEqual(machine.read(key(1))!.value, u64(5));
  const refused = run(machine, atomic([set(key(1), u64(2), { encoding: 1 }), sum(key(1), 3)]));
  assert.ok(refused.result.op === "atomic" && !refused.result.ok);
  assert.deepEqual(machine.read(key(1))!.value, u64(5));
});

Deno.test("an empty commit succeeds with a fresh versionstamp above the floor", () => {
  const machine = new KvStateMachine();
  assert.equal(okStamp(run(machine, atomic([])).result), versionstampOf(1));
  assert.equal(okStamp(run(machine, atomic([], { floor: 41 })).result), versionstampOf(42));
  assert.equal(machine.highestStamp, 42);
  assert.deepEqual([...machine.entries()], []);
});

Deno.test("a cluster seeded from a backup gives versionstamps the old cluster cannot have given", () => {
  // The buckets come back with the backup, so counters go on from it; the
  // old cluster may have given the same counters after the backup was taken.
  const old = new KvStateMachine();
  const restored = new KvStateMachine(undefined, { versionTag: "rabcdef012345" });
  const oldStamp = okStamp(run(old, atomic([])).result);
  const newStamp = okStamp(run(restored, atomic([])).result);
  assert.equal(oldStamp, versionstampOf(1));
  assert.equal(newStamp, versionstampOf(1, "abcd"));
  assert.notEqual(oldStamp, newStamp, "a check holding the old cluster's stamp must fail");
  assert.equal(restored.highestStamp, 1, "the counter is the suffix-free part");
  const set = (machine: KvStateMachine) =>
    okStamp(run(machine, atomic([{ kind: "set", key: key(1), value: u64(1) }])).result);
  const first = set(restored);
  assert.equal(first, versionstampOf(1, "abcd"));
  assert.equal(set(restored), versionstampOf(2, "abcd"), "per key, order is the counter's");
  assert.ok(set(old) < first, "the suffix orders after the counter");
});

Deno.test("curl atomic commands: every written key gets the instance's version, like a put", () => {
  const machine = new KvStateMachine(undefined, { versionTag: "rabcdef012345" });
  const curl = (mutations: AtomicMutation[], checks: AtomicCommand["checks"] = []) =>
    ({ op: "atomic", request: nextRequest(), checks, mutations }) as AtomicCommand;
  const applied = machine.apply({
    owner: 2,
    number: 9,
    local: true,
    command: [
      { op: "put", request: nextRequest(), key: "p", value: bytes(1) },
      curl([
        { kind: "set", key: "a", value: bytes(1) },
        { kind: "sum", key: "n", value: u64(5) },
      ]),
      curl([{ kind: "sum", key: "n", value: u64(1) }], [{ key: "a", version: null }]),
    ],
  });
  const version = versionOf(2, 9, 1, "rabcdef012345");
  assert.deepEqual(applied.results[1]!.result, { op: "atomic", ok: true, version });
  assert.deepEqual(machine.read("a"), { value: bytes(1), version });
  assert.deepEqual(machine.read("n"), { value: u64(5), version }, "no encoding on curl values");
  assert.deepEqual(applied.results[2]!.result, {
    op: "atomic",
    ok: false,
    failure: "check",
    current: [version],
  });
  assert.equal(machine.highestStamp, 0);
  assert.deepEqual(
    applied.mutations.map((m) => m.key).sort(),
    ["a", "n", "p"],
    "no stamp buckets for curl keys",
  );
});

// ---------------------------------------------------------------------------
// Versionstamps

Deno.test("versionstamps increase per key, across a delete and a re-creation, and per bucket", () => {
  const machine = new KvStateMachine();
  // Push one key's bucket up, then delete the key and write others.
  let last = "";
  for (let i = 0; i < 5; i++) last = okStamp(run(machine, atomic([set(key(1), bytes(i))])).result);
  okStamp(run(machine, atomic([{ kind: "delete", key: key(1) }])).result);
  assert.equal(machine.read(key(1)), undefined);
  // A write of another key (another bucket) proposed with no floor starts low…
  const other = okStamp(run(machine, atomic([set(key(200), bytes(1))])).result);
  assert.ok(other < last, "keys in other buckets are not ordered with it");
  // …but the re-created key is stamped above every stamp it ever had.
  const recreated = okStamp(run(machine, atomic([set(key(1), bytes(9))])).result);
  assert.ok(recreated > last, `${recreated} > ${last}`);
  // Through one replica, the floor orders keys: above the highest executed.
  const floor = machine.highestStamp;
  const next = okStamp(run(machine, atomic([set(key(201), bytes(1))], { floor })).result);
  assert.ok(versionstampCounter(next)! > floor);
});

Deno.test("a versionstamped key's later writes are stamped above its creation", () => {
  const machine = new KvStateMachine();
  const stamp = okStamp(
    run(
      machine,
      atomic([{ kind: "setSuffixVersionstamped", key: key(5), value: bytes(1) }], {
        floor: 1000,
      }),
    ).result,
  );
  const created = key(5) + versionstampSuffix(stamp);
  okStamp(run(machine, atomic([{ kind: "delete", key: created }])).result);
  const again = okStamp(run(machine, atomic([set(created, bytes(2))])).result);
  assert.ok(again > stamp, `${again} > ${stamp}`);
});

Deno.test("stamp buckets are state but never read: snapshots and curl lists skip them", () => {
  const machine = new KvStateMachine();
  okStamp(run(machine, atomic([set(key(1), bytes(1)), set(key(2), bytes(2))])).result);
  run(machine, { op: "put", request: nextRequest(), key: "curl", value: bytes(3) });
  assert.ok([...machine.entries()].some(([k]) => isStampBucketKey(k)));
  const [all] = snapshot(machine, everything());
  assert.deepEqual(all!.map((e) => e.key), [key(1), key(2)]);
  const list = machine.list("", undefined, 100);
  assert.deepEqual(list.entries.map((e) => e.key), ["curl"], "a curl list stops at U+FFFE");
  assert.deepEqual(machine.list("\ufffe", undefined, 100).entries, []);
  // A state machine built from the entries knows the highest stamp again.
  const rebuilt = new KvStateMachine(machine.entries());
  assert.equal(rebuilt.highestStamp, machine.highestStamp);
  assert.equal(rebuilt.digest, machine.digest);
});

Deno.test("the digest tells apart database states that differ only in which key has a stamp", () => {
  const entry = (version: string): KvEntry => ({ value: bytes(1), version });
  const a = new KvStateMachine([[key(1), entry(versionstampOf(1))], [
    key(2),
    entry(versionstampOf(2)),
  ]]);
  const b = new KvStateMachine([[key(1), entry(versionstampOf(2))], [
    key(2),
    entry(versionstampOf(1)),
  ]]);
  assert.notEqual(a.digest, b.digest);
  // Curl states keep the digest they always had (the version alone).
  const curl = new KvStateMachine([["k", entry("1.0.0")]]);
  const moved = new KvStateMachine([["j", entry("1.0.0")]]);
  assert.equal(curl.digest, moved.digest);
});

// ---------------------------------------------------------------------------
// Snapshot reads

Deno.test("snapshot ranges: [start, end), forward or reverse, at most limit, all at one point", () => {
  const machine = new KvStateMachine();
  okStamp(run(machine, atomic([1, 2, 3, 4, 5].map((i) => set(key(i), bytes(i))))).result);
  const keysOf = (entries: { key: string }[]) => entries.map((e) => e.key);
  const range = (from: number, to: number, limit: number, reverse = false): SnapshotRange => ({
    ...databaseRange("db", bytes(from), bytes(to)),
    limit,
    reverse,
  });
  const [forward, reverse, limited, limitedReverse, empty, inverted] = snapshot(
    machine,
    range(2, 5, 10),
    range(2, 5, 10, true),
    range(1, 6, 2),
    range(1, 6, 2, true),
    range(6, 9, 10),
    range(5, 2, 10),
  );
  assert.deepEqual(keysOf(forward!), [key(2), key(3), key(4)]);
  assert.deepEqual(keysOf(reverse!), [key(4), key(3), key(2)]);
  assert.deepEqual(keysOf(limited!), [key(1), key(2)]);
  assert.deepEqual(keysOf(limitedReverse!), [key(5), key(4)]);
  assert.deepEqual(empty, []);
  assert.deepEqual(inverted, []);
  // Deno's get: [key, key ‖ 0x00), the key alone.
  const [got, missing] = snapshot(
    machine,
    { start: key(3), end: `${key(3)}\u0000`, limit: 1, reverse: false },
    { start: key(9), end: `${key(9)}\u0000`, limit: 1, reverse: false },
  );
  assert.deepEqual(got, [{ key: key(3), ...machine.read(key(3))! }]);
  assert.deepEqual(missing, []);
  // A snapshot not waited for here reads nothing out.
  const quiet = machine.apply(
    execution([{ op: "snapshot", request: nextRequest(), ranges: [everything()] }]),
    false,
  );
  assert.deepEqual(quiet.results, []);
  // Local reads (the driver's lease and quorum reads) give the same.
  assert.deepEqual(machine.snapshotRead([range(2, 5, 10)]).ranges[0], forward);
});

// ---------------------------------------------------------------------------
// Expiry

Deno.test("expiry: due entries are found, deleted only at the version that expired", () => {
  const machine = new KvStateMachine();
  assert.deepEqual(machine.expiredEntries(Number.MAX_SAFE_INTEGER, 10), []);
  const stamp = okStamp(
    run(
      machine,
      atomic([
        set(key(1), bytes(1), { expiresAt: 100 }),
        set(key(2), bytes(2), { expiresAt: 200 }),
        set(key(3), bytes(3)),
      ]),
    ).result,
  );
  run(machine, { op: "put", request: nextRequest(), key: "ttl", value: bytes(4), expiresAt: 150 });
  const curlVersion = machine.read("ttl")!.version;
  assert.deepEqual(machine.expiredEntries(99, 10), []);
  assert.deepEqual(machine.expiredEntries(150, 10), [
    { key: key(1), version: stamp },
    { key: "ttl", version: curlVersion },
  ]);
  assert.deepEqual(machine.expiredEntries(1000, 1), [{ key: key(1), version: stamp }]);
  // key(2) is written again before its expire command runs: the later write stays.
  const later = okStamp(run(machine, atomic([set(key(2), bytes(9), { expiresAt: 5000 })])).result);
  const expired = machine.expiredEntries(1000, 10);
  assert.deepEqual(expired, [{ key: key(1), version: stamp }, {
    key: "ttl",
    version: curlVersion,
  }]);
  const { result, mutations } = run(machine, {
    op: "expire",
    request: nextRequest(),
    keys: [...expired, { key: key(2), version: stamp }],
  });
  assert.deepEqual(result, { op: "expire", ok: true, deleted: 2 });
  assert.deepEqual(mutations.map((m) => [m.kind, m.key]), [
    ["delete", key(1)],
    ["delete", "ttl"],
  ]);
  assert.equal(machine.read(key(1)), undefined);
  assert.equal(machine.read(key(2))!.version, later);
  assert.deepEqual(machine.expiredEntries(1000, 10), []);
  assert.deepEqual(machine.expiredEntries(5000, 10), [{ key: key(2), version: later }]);
  // Rebuilt when a state machine is built from entries (load, snapshot install).
  assert.deepEqual(new KvStateMachine(machine.entries()).expiredEntries(5000, 10), [
    { key: key(2), version: later },
  ]);
  // A write without an expiry ends it.
  okStamp(run(machine, atomic([set(key(2), bytes(1))])).result);
  assert.deepEqual(machine.expiredEntries(Number.MAX_SAFE_INTEGER, 10), []);
});

Deno.test("a put with a TTL is still a blind write", () => {
  assert.ok(
    isBlindWrite({ op: "put", request: "r", key: "k", value: bytes(1), expiresAt: 5 }),
  );
});

Deno.test("the expiry index stays bounded under overwrites and finds due entries anywhere in it", () => {
  const index = new ExpiryIndex();
  let entry: KvEntry = { value: bytes(), version: "v", expiresAt: 1 };
  for (let i = 0; i < 10_000; i++) {
    entry = { value: bytes(), version: `v${i}`, expiresAt: 1_000_000 - i };
    index.note("k", entry);
  }
  assert.equal(index.size, 1);
  assert.ok(index.nodes <= 2 * index.size + 64, `${index.nodes} nodes`);
  assert.deepEqual(index.due(1_000_000, 10).map((e) => e.version), ["v9999"]);
  // Many keys, due at random times: every due one is found, earliest first.
  const many = new ExpiryIndex();
  const due: string[] = [];
  for (let i = 0; i < 500; i++) {
    const at = (i * 7919) % 1000;
    many.note(`k${i}`, { value: bytes(), version: `${i}`, expiresAt: at + 1 });
    if (at + 1 <= 300) due.push(`k${i}`);
  }
  const found = many.due(300, 1000);
  assert.deepEqual(found.map((e) => e.key).sort(), due.sort());
  for (let i = 1; i < found.length; i++) assert.ok(found[i - 1]!.expiresAt <= found[i]!.expiresAt);
  assert.equal(many.due(300, 7).length, 7);
  // Deleted keys are never reported.
  for (const k of due) many.note(k, undefined);
  assert.deepEqual(many.due(300, 1000), []);
  assert.equal(many.size, 500 - due.length);
});
