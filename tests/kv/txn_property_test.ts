import assert from "node:assert/strict";
import fc from "fast-check";
import { accessesConflict } from "../../src/core/conflict.ts";
import type { Execution } from "../../src/core/types.ts";
import { type KvCommand, kvConflicts } from "../../src/kv/commands.ts";
import {
  databaseDataSpan,
  databaseKey,
  isStampBucketKey,
  stampBucketOf,
  versionstampCounter,
  versionstampOf,
  versionstampSuffix,
} from "../../src/kv/database_keys.ts";
import { entryOf, type KvEntry } from "../../src/kv/entry.ts";
import type { AtomicCommand, AtomicMutation } from "../../src/kv/txn_commands.ts";
import { type KvResult, KvStateMachine, versionOf } from "../../src/kv/state_machine.ts";

const u64 = (n: bigint) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n, true);
  return out;
};
const readU64 = (bytes: Uint8Array) =>
  new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
const MASK = (1n << 64n) - 1n;

const KEYS = [0, 1, 2, 3].map((i) => databaseKey("db", new Uint8Array([0x02, 0x61 + i, 0x00])));
const STAMPED = databaseKey("db", new Uint8Array([0x02, 0x73, 0x00]));

// ---------------------------------------------------------------------------
// Atomic commands against a model

type CheckSpec = { readonly key: number; readonly expect: "current" | "absent" | "stale" };
type MutationSpec =
  | { readonly kind: "set"; readonly key: number; readonly u64: boolean; readonly n: bigint }
  | { readonly kind: "delete"; readonly key: number }
  | { readonly kind: "sum" | "min" | "max"; readonly key: number; readonly n: bigint }
  | { readonly kind: "stamped"; readonly n: bigint };
type CommandSpec = {
  readonly checks: readonly CheckSpec[];
  readonly mutations: readonly MutationSpec[];
  readonly floor: number | undefined;
};

const operandArb = fc.oneof(
  fc.bigInt({ min: 0n, max: 5n }),
  fc.constantFrom(MASK, MASK - 1n, 1n << 63n),
);
const keyArb = fc.nat(KEYS.length - 1);
const commandSpecArb: fc.Arbitrary<CommandSpec> = fc.record({
  checks: fc.array(
    fc.record({ key: keyArb, expect: fc.constantFrom("current", "current", "absent", "stale") }),
    { maxLength: 2 },
  ),
  mutations: fc.array(
    fc.oneof(
      fc.record({
        kind: fc.constant("set" as const),
        key: keyArb,
        u64: fc.boolean(),
        n: operandArb,
      }),
      fc.record({ kind: fc.constant("delete" as const), key: keyArb }),
      fc.record({
        kind: fc.constantFrom("sum" as const, "min" as const, "max" as const),
        key: keyArb,
        n: operandArb,
      }),
      fc.record({ kind: fc.constant("stamped" as const), n: operandArb }),
    ),
    { maxLength: 5 },
  ),
  floor: fc.option(fc.nat(40), { nil: undefined }),
});

function toCommand(spec: CommandSpec, model: Map<string, KvEntry>, request: string): AtomicCommand {
  const checks = spec.checks.map(({ key, expect }) => ({
    key: KEYS[key]!,
    version: expect === "current"
      ? model.get(KEYS[key]!)?.version ?? null
      : expect === "absent"
      ? null
      : versionstampOf(999_999),
  }));
  const mutations = spec.mutations.map((m): AtomicMutation => {
    switch (m.kind) {
      case "set":
        return { kind: "set", key: KEYS[m.key]!, value: u64(m.n), encoding: m.u64 ? 2 : 1 };
      case "delete":
        return { kind: "delete", key: KEYS[m.key]! };
      case "stamped":
        return { kind: "setSuffixVersionstamped", key: STAMPED, value: u64(m.n), encoding: 3 };
      default:
        return { kind: m.kind, key: KEYS[m.key]!, value: u64(m.n), encoding: 2 };
    }
  });
  return {
    op: "atomic",
    request,
    database: "db",
    checks,
    mutations,
    ...(spec.floor === undefined ? {} : { floor: spec.floor }),
  };
}

/**
 * The model's outcome: `"check"`, an error message, or the staged writes as
 * functions of the versionstamp (which the model does not predict, only
 * constrains).
 */
function modelOutcome(
  command: AtomicCommand,
  model: Map<string, KvEntry>,
): "check" | { message: string } | ((stamp: string) => Map<string, KvEntry | undefined>) {
  for (const check of command.checks) {
    if ((model.get(check.key)?.version ?? null) !== check.version) return "check";
  }
  // Values first (they do not depend on the stamp), then the entries.
  type Written = { value: Uint8Array; encoding: number };
  const staged = new Map<string, Written | undefined>();
  const stampedValues: Written[] = [];
  const current = (key: string) =>
    staged.has(key) ? staged.get(key) : model.get(key) as Written | undefined;
  for (const m of command.mutations) {
    switch (m.kind) {
      case "set":
        staged.set(m.key, { value: m.value, encoding: m.encoding! });
        break;
      case "delete":
        staged.set(m.key, undefined);
        break;
      case "setSuffixVersionstamped":
        stampedValues.push({ value: m.value, encoding: m.encoding! });
        break;
      default: {
        const old = current(m.key);
        const operand = readU64(m.value);
        let next = operand;
        if (old !== undefined) {
          if (old.encoding !== 2 || old.value.length !== 8) {
            return {
              message: `Failed to perform '${m.kind}' mutation on a non-U64 value in the database`,
            };
          }
          const value = readU64(old.value);
          next = m.kind === "sum"
            ? (value + operand) & MASK
            : m.kind === "min"
            ? (value < operand ? value : operand)
            : (value > operand ? value : operand);
        }
        staged.set(m.key, { value: u64(next), encoding: 2 });
      }
    }
  }
  return (stamp) => {
    const writes = new Map<string, KvEntry | undefined>();
    for (const [key, written] of staged) {
      writes.set(key, written === undefined ? undefined : entryOf(written.value, stamp, written));
    }
    // Every versionstamped write of one command lands on the same key: the last wins.
    const last = stampedValues.at(-1);
    if (last !== undefined) {
      writes.set(STAMPED + versionstampSuffix(stamp), entryOf(last.value, stamp, last));
    }
    return writes;
  };
}

function dataOf(machine: KvStateMachine): Map<string, KvEntry> {
  return new Map([...machine.entries()].filter(([key]) => !isStampBucketKey(key)));
}

Deno.test("property: atomic commands match a model (checks, all or nothing, values, versionstamps)", () => {
  fc.assert(
    fc.property(fc.array(commandSpecArb, { minLength: 1, maxLength: 25 }), (specs) => {
      const machine = new KvStateMachine();
      const model = new Map<string, KvEntry>();
      /** The highest versionstamp each key ever had (deleted keys included). */
      const highestOf = new Map<string, string>();
      specs.forEach((spec, index) => {
        const command = toCommand(spec, model, `p${index}`);
        const expected = modelOutcome(command, model);
        const applied = machine.apply({
          owner: 0,
          number: index + 1,
          command: [command],
          local: true,
        });
        const result = applied.results[0]!.result as KvResult & { op: "atomic" };
        if (expected === "check") {
          assert.deepEqual(result, {
            op: "atomic",
            ok: false,
            failure: "check",
            current: command.checks.map((check) => model.get(check.key)?.version ?? null),
          });
          assert.deepEqual(applied.mutations, []);
        } else if (typeof expected === "object") {
          assert.deepEqual(result, {
            op: "atomic",
            ok: false,
            failure: "invalid",
            message: expected.message,
          });
          assert.deepEqual(applied.mutations, []);
        } else {
          assert.ok(result.ok, Deno.inspect(result));
          const stamp = result.version;
          const counter = versionstampCounter(stamp)!;
          assert.ok(counter > (command.floor ?? 0), "above the floor");
          for (const [key, entry] of expected(stamp)) {
            if (entry === undefined) {
              model.delete(key);
              continue;
            }
            const before = highestOf.get(key);
            assert.ok(
              before === undefined || stamp > before,
              `stamps of a key increase: ${before} then ${stamp}`,
            );
            highestOf.set(key, stamp);
            model.set(key, entry);
          }
          assert.ok(counter <= machine.highestStamp);
        }
        assert.deepEqual(dataOf(machine), model);
      });
    }),
  );
});

// ---------------------------------------------------------------------------
// Determinism under reordering of commands that do not conflict

/**
 * Three keys per database, the first two in one stamp bucket: commands on
 * them conflict only through the bucket, the case the buckets exist for.
 */
function keysOf(name: string): string[] {
  const byBucket = new Map<number, string>();
  for (let i = 0;; i++) {
    const key = databaseKey(name, new Uint8Array([0x02, 0x61 + (i >> 8), i & 255, 0x00]));
    const bucket = stampBucketOf(name, key);
    const seen = byBucket.get(bucket);
    if (seen !== undefined) {
      const other = [...byBucket.values()].find((k) => stampBucketOf(name, k) !== bucket)!;
      return [seen, key, other];
    }
    byBucket.set(bucket, key);
  }
}
const KEYS_OF = new Map(["db", "db2"].map((name) => [name, keysOf(name)]));
const DB_KEYS = [...KEYS_OF.values()].flat();
const CURL_KEYS = ["a", "b", "c"];

const anyCommandArb: fc.Arbitrary<Omit<KvCommand, "request">> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      database: fc.constantFrom("db", "db2"),
      keys: fc.array(fc.nat(2), { minLength: 0, maxLength: 3 }),
      kinds: fc.array(fc.constantFrom("set", "delete", "sum", "max", "stamped"), {
        minLength: 3,
        maxLength: 3,
      }),
      check: fc.option(fc.record({ key: fc.nat(2), counter: fc.nat(6) }), { nil: undefined }),
      floor: fc.option(fc.nat(10), { nil: undefined }),
      expiresAt: fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }),
    }).map(({ database, keys, kinds, check, floor, expiresAt }) => {
      const keyOf = (i: number) => KEYS_OF.get(database)![i]!;
      const mutations = keys.map((k, i): AtomicMutation => {
        const kind = kinds[i]!;
        if (kind === "delete") return { kind, key: keyOf(k) };
        if (kind === "stamped") {
          return { kind: "setSuffixVersionstamped", key: keyOf(k), value: u64(1n), encoding: 3 };
        }
        if (kind === "set") {
          return {
            kind,
            key: keyOf(k),
            value: u64(BigInt(k)),
            encoding: 2,
            ...(expiresAt === undefined ? {} : { expiresAt }),
          };
        }
        return { kind, key: keyOf(k), value: u64(3n), encoding: 2 };
      });
      return {
        op: "atomic" as const,
        database,
        checks: check === undefined ? [] : [{
          key: keyOf(check.key),
          version: check.counter === 0 ? null : versionstampOf(check.counter),
        }],
        mutations,
        ...(floor === undefined ? {} : { floor }),
      };
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ key: fc.constantFrom(...CURL_KEYS), n: fc.nat(3), ttl: fc.boolean() })
      .map(({ key, n, ttl }) => ({
        op: "put" as const,
        key,
        value: u64(BigInt(n)),
        ...(ttl ? { expiresAt: 50 } : {}),
      })),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      key: fc.constantFrom(...CURL_KEYS),
      kind: fc.constantFrom("sum", "set"),
    }).map(({ key, kind }) => ({
      op: "atomic" as const,
      checks: [],
      mutations: [{ kind: kind as "sum" | "set", key, value: u64(1n) }],
    })),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      key: fc.constantFrom(...DB_KEYS, ...CURL_KEYS),
      counter: fc.integer({ min: 1, max: 8 }),
      number: fc.integer({ min: 1, max: 30 }),
    }).map(({ key, counter, number }) => ({
      op: "expire" as const,
      keys: [{
        key,
        version: key.startsWith("\ufffe")
          ? versionstampOf(counter)
          : versionOf((number - 1) % 3, number, 0),
      }],
    })),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      database: fc.constantFrom("db", "db2"),
      reverse: fc.boolean(),
      limit: fc.integer({ min: 1, max: 4 }),
      point: fc.constantFrom(...DB_KEYS),
    }).map(({ database, reverse, limit, point }) => ({
      op: "snapshot" as const,
      ranges: [
        { ...databaseDataSpan(database), limit, reverse },
        { start: "", end: "\ufffe", limit: 10, reverse: false },
        // Deno's get: a point read.
        { start: point, end: `${point}\u0000`, limit: 1, reverse: false },
      ],
    })),
  },
);

/** Runs `commands` in `order` on a fresh machine, each as its own instance (the same one in every order). */
function runInOrder(commands: readonly KvCommand[], order: readonly number[]) {
  const machine = new KvStateMachine();
  const results = new Map<string, KvResult>();
  for (const index of order) {
    const execution: Execution<KvCommand> = {
      owner: index % 3,
      number: index + 1,
      command: [commands[index]!],
      local: true,
    };
    const applied = machine.apply(execution);
    results.set(commands[index]!.request, applied.results[0]!.result);
  }
  const entries = [...machine.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { results, entries, digest: machine.digest, highestStamp: machine.highestStamp };
}

const conflict = (a: KvCommand, b: KvCommand) =>
  accessesConflict(kvConflicts.accesses(a), kvConflicts.accesses(b));

Deno.test("property: reordering only commands with disjoint accesses gives identical states and versionstamps", () => {
  let reorderedRuns = 0;
  fc.assert(
    fc.property(
      fc.array(anyCommandArb, { minLength: 2, maxLength: 30 }),
      fc.array(fc.nat(1000), { minLength: 0, maxLength: 200 }),
      (inputs, swaps) => {
        const commands = inputs.map((input, i) => ({ ...input, request: `d${i}` }) as KvCommand);
        const order = commands.map((_, i) => i);
        const reordered = [...order];
        let swapped = 0;
        for (const swap of swaps) {
          const at = swap % (reordered.length - 1);
          const [a, b] = [reordered[at]!, reordered[at + 1]!];
          if (conflict(commands[a]!, commands[b]!)) continue;
          reordered[at] = b;
          reordered[at + 1] = a;
          swapped++;
        }
        const first = runInOrder(commands, order);
        const second = runInOrder(commands, reordered);
        assert.deepEqual(second.results, first.results);
        assert.deepEqual(second.entries, first.entries);
        assert.equal(second.digest, first.digest);
        assert.equal(second.highestStamp, first.highestStamp);
        if (swapped > 0) reorderedRuns++;
      },
    ),
  );
  // Not vacuous: most runs really ran their commands in another order.
  assert.ok(reorderedRuns > 50, `${reorderedRuns} runs reordered`);
});

Deno.test("negative: two writes of different keys in one bucket, run in both orders, get different stamps", () => {
  // Why the buckets must be conflict accesses: reorder them and the stamps differ.
  const byBucket = new Map<number, string>();
  let pair: [string, string] | undefined;
  for (let i = 0; pair === undefined; i++) {
    const key = databaseKey("db", new Uint8Array([i >> 8, i & 255]));
    const bucket = stampBucketOf("db", key);
    const seen = byBucket.get(bucket);
    if (seen !== undefined) pair = [seen, key];
    else byBucket.set(bucket, key);
  }
  const write = (key: string, request: string): KvCommand => ({
    op: "atomic",
    request,
    database: "db",
    checks: [],
    mutations: [{ kind: "set", key, value: u64(1n), encoding: 2 }],
  });
  const commands = [write(pair[0], "x"), write(pair[1], "y")];
  assert.ok(conflict(commands[0]!, commands[1]!), "the conflict model orders them");
  const forward = runInOrder(commands, [0, 1]);
  const backward = runInOrder(commands, [1, 0]);
  assert.notDeepEqual(forward.results, backward.results);
  // Keys of different buckets do not conflict, and commute.
  const [[, one], [, other]] = [...byBucket.entries()];
  const apart = [write(one!, "p"), write(other!, "q")];
  assert.ok(!conflict(apart[0]!, apart[1]!));
  assert.deepEqual(runInOrder(apart, [0, 1]).results, runInOrder(apart, [1, 0]).results);
});
