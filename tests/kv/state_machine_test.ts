import assert from "node:assert/strict";
import fc from "fast-check";
import { accessesConflict, batchAccesses, ConflictIndex } from "../../src/core/conflict.ts";
import { type Execution, NOP } from "../../src/core/types.ts";
import {
  type KvCommand,
  kvConflicts,
  MAX_LIST_LIMIT,
  type VersionCondition,
} from "../../src/kv/commands.ts";
import {
  type AppliedInstance,
  type KvEntry,
  type KvMutation,
  type KvResult,
  KvStateMachine,
  versionOf,
} from "../../src/kv/state_machine.ts";

// ---------------------------------------------------------------------------
// Helpers

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);

let requests = 0;
const nextRequest = () => `r${requests++}`;

function put(key: string, value: string, ifVersion?: VersionCondition): KvCommand {
  return ifVersion === undefined
    ? { op: "put", request: nextRequest(), key, value: bytes(value) }
    : { op: "put", request: nextRequest(), key, value: bytes(value), ifVersion };
}

function get(key: string): KvCommand {
  return { op: "get", request: nextRequest(), key };
}

function del(key: string, ifVersion?: VersionCondition): KvCommand {
  return ifVersion === undefined
    ? { op: "delete", request: nextRequest(), key }
    : { op: "delete", request: nextRequest(), key, ifVersion };
}

function list(prefix: string, limit: number, after?: string): KvCommand {
  return after === undefined
    ? { op: "list", request: nextRequest(), prefix, limit }
    : { op: "list", request: nextRequest(), prefix, after, limit };
}

function execution(
  owner: number,
  number: number,
  commands: readonly KvCommand[] | typeof NOP,
  local = true,
): Execution<KvCommand> {
  return { owner, number, command: commands, local };
}

/** Applies `command` alone as instance `owner.number` and returns its result. */
function one(
  machine: KvStateMachine,
  owner: number,
  number: number,
  command: KvCommand,
): KvResult {
  const applied = machine.apply(execution(owner, number, [command]));
  assert.equal(applied.results.length, 1);
  assert.equal(applied.results[0]!.request, command.request);
  return applied.results[0]!.result;
}

function okVersion(result: KvResult): string {
  assert.ok(result.op === "put" && result.ok, `expected a successful put: ${Deno.inspect(result)}`);
  return result.version;
}

function sortedEntries(entries: Iterable<readonly [string, KvEntry]>): [string, KvEntry][] {
  return [...entries].map(([key, entry]): [string, KvEntry] => [key, entry]).sort((a, b) =>
    a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0
  );
}

function listedKeys(result: KvResult): string[] {
  assert.ok(result.op === "list" && result.ok);
  return result.entries.map((entry) => entry.key);
}

function replay(state: Map<string, KvEntry>, mutations: readonly KvMutation[]): void {
  for (const mutation of mutations) {
    if (mutation.kind === "set") state.set(mutation.key, mutation.entry);
    else state.delete(mutation.key);
  }
}

function parseVersion(version: string): [number, number, number] {
  const parts = version.split(".").map(Number);
  assert.equal(parts.length, 3, version);
  return parts as [number, number, number];
}

function conflicts(a: readonly KvCommand[], b: readonly KvCommand[]): boolean {
  return accessesConflict(batchAccesses(kvConflicts, a), batchAccesses(kvConflicts, b));
}

// ---------------------------------------------------------------------------
// Put, get, delete, versions

Deno.test("put then get returns the value and the version of the writing instance", () => {
  const machine = new KvStateMachine();
  const version = okVersion(one(machine, 2, 7, put("k", "v1")));
  assert.equal(version, "7.2.0");
  assert.equal(version, versionOf(2, 7, 0));
  const result = one(machine, 0, 1, get("k"));
  assert.ok(result.op === "get" && result.ok && result.entry !== undefined);
  assert.equal(decoder.decode(result.entry.value), "v1");
  assert.equal(result.entry.version, "7.2.0");
  assert.deepEqual(one(machine, 0, 2, get("missing")), { op: "get", ok: true, entry: undefined });
  assert.equal(machine.size, 1);
  assert.equal(machine.read("k")?.version, "7.2.0");
  assert.equal(machine.read("missing"), undefined);
});

Deno.test("a blind put overwrites, and delete reports whether the key existed", () => {
  const machine = new KvStateMachine();
  okVersion(one(machine, 0, 1, put("k", "a")));
  const second = okVersion(one(machine, 1, 1, put("k", "b")));
  assert.equal(second, "1.1.0");
  assert.equal(decoder.decode(machine.read("k")!.value), "b");
  assert.equal(machine.size, 1);
  assert.deepEqual(one(machine, 0, 2, del("k")), { op: "delete", ok: true, existed: true });
  assert.equal(machine.read("k"), undefined);
  assert.equal(machine.size, 0);
  assert.deepEqual(one(machine, 0, 3, del("k")), { op: "delete", ok: true, existed: false });
});

Deno.test("versions are number.owner.index, increasing along a row and within a batch", () => {
  assert.equal(versionOf(3, 12, 5), "12.3.5");
  const machine = new KvStateMachine();
  const seen: string[] = [];
  for (let number = 1; number <= 4; number++) {
    const applied = machine.apply(
      execution(1, number, [put("a", "x"), get("a"), put("b", "y"), del("c"), put("a", "z")]),
    );
    const versions = applied.results.flatMap(({ result }) =>
      result.op === "put" && result.ok ? [result.version] : []
    );
    assert.deepEqual(versions, [`${number}.1.0`, `${number}.1.2`, `${number}.1.4`]);
    seen.push(...versions);
    // The last write of the batch wins and keeps its own index.
    assert.equal(machine.read("a")!.version, `${number}.1.4`);
  }
  assert.equal(new Set(seen).size, seen.length, "versions are unique");
  for (let i = 1; i < seen.length; i++) {
    const [number0, owner0, index0] = parseVersion(seen[i - 1]!);
    const [number1, owner1, index1] = parseVersion(seen[i]!);
    assert.equal(owner0, 1);
    assert.equal(owner1, 1);
    assert.ok(number1 > number0 || (number1 === number0 && index1 > index0), seen[i]);
  }
  // Same number, other rows: still distinct.
  const other = new KvStateMachine();
  const fromRow0 = okVersion(one(other, 0, 1, put("k", "v")));
  const fromRow2 = okVersion(one(other, 2, 1, put("k", "v")));
  assert.notEqual(fromRow0, fromRow2);
});

Deno.test("every command of a batch gets a result, in command order, seeing earlier ones", () => {
  const machine = new KvStateMachine();
  const commands = [
    put("k", "v"),
    get("k"),
    list("", 10),
    put("k", "w", "nope"),
    del("k"),
    get("k"),
    del("k", "3.0.0"),
  ];
  const applied = machine.apply(execution(0, 3, commands));
  assert.deepEqual(
    applied.results.map((entry) => entry.request),
    commands.map((command) => command.request),
  );
  const results = applied.results.map((entry) => entry.result);
  assert.deepEqual(results[0], { op: "put", ok: true, version: "3.0.0" });
  assert.deepEqual(results[1], {
    op: "get",
    ok: true,
    entry: { value: bytes("v"), version: "3.0.0" },
  });
  assert.deepEqual(results[2], {
    op: "list",
    ok: true,
    entries: [{ key: "k", value: bytes("v"), version: "3.0.0" }],
  });
  assert.deepEqual(results[3], { op: "put", ok: false, current: "3.0.0" });
  assert.deepEqual(results[4], { op: "delete", ok: true, existed: true });
  assert.deepEqual(results[5], { op: "get", ok: true, entry: undefined });
  assert.deepEqual(results[6], { op: "delete", ok: false, current: null });
});

Deno.test("a Nop applies nothing and answers nothing", () => {
  const machine = new KvStateMachine();
  okVersion(one(machine, 0, 1, put("k", "v")));
  const digest = machine.digest;
  const applied = machine.apply(execution(1, 1, NOP));
  assert.deepEqual(applied, { results: [], mutations: [] });
  assert.equal(machine.digest, digest);
  assert.equal(machine.size, 1);
});

Deno.test("without wantResults an instance still applies and reports its mutations", () => {
  const quiet = new KvStateMachine();
  const loud = new KvStateMachine();
  const command = put("k", "v");
  const applied = quiet.apply(execution(1, 4, [command], false), false);
  const answered = loud.apply(execution(1, 4, [command], true), true);
  assert.deepEqual(applied.results, []);
  assert.equal(answered.results.length, 1);
  assert.deepEqual(applied.mutations, answered.mutations);
  assert.equal(quiet.digest, loud.digest);
  assert.equal(quiet.read("k")?.version, "4.1.0");
});

// ---------------------------------------------------------------------------
// Compare-and-set

Deno.test("put with ifVersion succeeds only when the current version matches", () => {
  const machine = new KvStateMachine();
  // Absent key: a version condition fails and reports that nothing is there.
  assert.deepEqual(one(machine, 0, 1, put("k", "x", "1.0.0")), {
    op: "put",
    ok: false,
    current: null,
  });
  assert.equal(machine.read("k"), undefined);
  // ifVersion null is "must not exist" (If-None-Match: *).
  const v1 = okVersion(one(machine, 0, 2, put("k", "a", null)));
  assert.deepEqual(one(machine, 0, 3, put("k", "b", null)), { op: "put", ok: false, current: v1 });
  assert.equal(decoder.decode(machine.read("k")!.value), "a");
  // Matching version: the write happens and gets a new version.
  const v2 = okVersion(one(machine, 1, 1, put("k", "b", v1)));
  assert.notEqual(v2, v1);
  assert.equal(decoder.decode(machine.read("k")!.value), "b");
  // The old version no longer matches.
  assert.deepEqual(one(machine, 1, 2, put("k", "c", v1)), { op: "put", ok: false, current: v2 });
  assert.equal(decoder.decode(machine.read("k")!.value), "b");
  // A version that names another key's write does not match either.
  const other = okVersion(one(machine, 1, 3, put("other", "o")));
  assert.deepEqual(one(machine, 1, 4, put("k", "c", other)), {
    op: "put",
    ok: false,
    current: v2,
  });
});

Deno.test("a key deleted and created again never matches a version of its old incarnation", () => {
  const machine = new KvStateMachine();
  const v1 = okVersion(one(machine, 0, 1, put("k", "a")));
  assert.deepEqual(one(machine, 0, 2, del("k", v1)), { op: "delete", ok: true, existed: true });
  const v3 = okVersion(one(machine, 0, 3, put("k", "a")));
  assert.notEqual(v3, v1);
  assert.deepEqual(one(machine, 0, 4, put("k", "b", v1)), { op: "put", ok: false, current: v3 });
  assert.deepEqual(one(machine, 0, 5, del("k", v1)), { op: "delete", ok: false, current: v3 });
  assert.equal(machine.read("k")?.version, v3);
});

Deno.test("delete with ifVersion: matches the current version, or null for an absent key", () => {
  const machine = new KvStateMachine();
  // Absent key: null holds (nothing to delete), a version does not.
  assert.deepEqual(one(machine, 0, 1, del("k", null)), { op: "delete", ok: true, existed: false });
  assert.deepEqual(one(machine, 0, 2, del("k", "0.0.0")), {
    op: "delete",
    ok: false,
    current: null,
  });
  const v = okVersion(one(machine, 0, 3, put("k", "a")));
  assert.deepEqual(one(machine, 0, 4, del("k", null)), { op: "delete", ok: false, current: v });
  assert.deepEqual(one(machine, 0, 5, del("k", "3.0.1")), { op: "delete", ok: false, current: v });
  assert.equal(machine.read("k")?.version, v);
  assert.deepEqual(one(machine, 0, 6, del("k", v)), { op: "delete", ok: true, existed: true });
  assert.equal(machine.read("k"), undefined);
});

Deno.test("a list of versions holds when the current version is any of them (If-Match list)", () => {
  const machine = new KvStateMachine();
  // Absent key: no list holds, and the failure says nothing is there.
  assert.deepEqual(one(machine, 0, 1, put("k", "a", ["1.0.0", "2.0.0"])), {
    op: "put",
    ok: false,
    current: null,
  });
  assert.deepEqual(one(machine, 0, 2, del("k", ["1.0.0", "2.0.0"])), {
    op: "delete",
    ok: false,
    current: null,
  });
  const v1 = okVersion(one(machine, 0, 3, put("k", "a")));
  // The current version anywhere in the list: the write happens.
  const v2 = okVersion(one(machine, 0, 4, put("k", "b", ["9.9.9", v1])));
  assert.equal(decoder.decode(machine.read("k")!.value), "b");
  // A list without the current version (v1 is stale now): nothing changes.
  const digest = machine.digest;
  const failed = machine.apply(execution(0, 5, [put("k", "c", [v1, "9.9.9"])]));
  assert.deepEqual(failed.results[0]!.result, { op: "put", ok: false, current: v2 });
  assert.deepEqual(failed.mutations, []);
  assert.equal(machine.digest, digest);
  assert.deepEqual(one(machine, 0, 6, del("k", [v1, "9.9.9"])), {
    op: "delete",
    ok: false,
    current: v2,
  });
  assert.deepEqual(one(machine, 0, 7, del("k", [v2, v1])), {
    op: "delete",
    ok: true,
    existed: true,
  });
  assert.equal(machine.read("k"), undefined);
});

Deno.test("a failed condition changes nothing: no mutation, same digest", () => {
  const machine = new KvStateMachine();
  const v = okVersion(one(machine, 0, 1, put("k", "a")));
  const digest = machine.digest;
  for (
    const command of [
      put("k", "b", "9.9.9"),
      put("k", "b", null),
      del("k", "9.9.9"),
      del("k", null),
    ]
  ) {
    const applied = machine.apply(execution(0, 2, [command]));
    assert.deepEqual(applied.mutations, []);
    assert.equal(applied.results[0]!.result.ok, false);
  }
  const batch = machine.apply(execution(0, 3, [put("k", "b", "9.9.9"), del("k", null)]));
  assert.deepEqual(batch.mutations, []);
  assert.equal(machine.digest, digest);
  assert.equal(machine.read("k")?.version, v);
});

// ---------------------------------------------------------------------------
// List

const LIST_KEYS = ["b", "a/2", "\uff5e", "a", "a/10", "\u{1F600}", "ab", "é", "a/1"];
// UTF-16 code unit order: "\u{1F600}" is "\ud83d\ude00", before "\uff5e".
const LIST_ORDER = ["a", "a/1", "a/10", "a/2", "ab", "b", "é", "\u{1F600}", "\uff5e"];

function listMachine(): KvStateMachine {
  const machine = new KvStateMachine();
  machine.apply(execution(0, 1, LIST_KEYS.map((key) => put(key, `value of ${key}`))));
  return machine;
}

Deno.test("list returns keys with the prefix in code unit order, with values and versions", () => {
  const machine = listMachine();
  const all = one(machine, 1, 1, list("", 100));
  assert.deepEqual(listedKeys(all), LIST_ORDER);
  assert.ok(all.op === "list" && all.ok);
  assert.equal(all.next, undefined);
  assert.ok(!("next" in all), "the last page has no cursor at all");
  for (const entry of all.entries) {
    assert.equal(decoder.decode(entry.value), `value of ${entry.key}`);
    assert.equal(entry.version, versionOf(0, 1, LIST_KEYS.indexOf(entry.key)));
  }
  assert.deepEqual(listedKeys(one(machine, 1, 2, list("a", 100))), [
    "a",
    "a/1",
    "a/10",
    "a/2",
    "ab",
  ]);
  assert.deepEqual(listedKeys(one(machine, 1, 3, list("a/", 100))), ["a/1", "a/10", "a/2"]);
  assert.deepEqual(listedKeys(one(machine, 1, 4, list("a/1", 100))), ["a/1", "a/10"]);
  assert.deepEqual(listedKeys(one(machine, 1, 5, list("\ud83d", 100))), ["\u{1F600}"]);
  assert.deepEqual(listedKeys(one(machine, 1, 6, list("c", 100))), []);
  assert.deepEqual(listedKeys(one(machine, 1, 7, list("zzz", 100))), []);
  // A list is a read: nothing to persist.
  assert.deepEqual(machine.apply(execution(1, 8, [list("", 3)])).mutations, []);
});

Deno.test("list pages through a prefix with exclusive cursors", () => {
  const machine = listMachine();
  for (const limit of [1, 2, 3, 4, 9, 10]) {
    for (const prefix of ["", "a", "a/"]) {
      const expected = LIST_ORDER.filter((key) => key.startsWith(prefix));
      const got: string[] = [];
      let after: string | undefined;
      for (let page = 0; page < 20; page++) {
        const result = one(machine, 1, page + 1, list(prefix, limit, after));
        assert.ok(result.op === "list" && result.ok);
        assert.ok(result.entries.length <= limit);
        got.push(...listedKeys(result));
        if (result.next === undefined) break;
        assert.equal(result.entries.length, limit, "only full pages have a cursor");
        assert.equal(result.next, result.entries[result.entries.length - 1]!.key);
        after = result.next;
      }
      assert.deepEqual(got, expected, `prefix ${prefix} limit ${limit}`);
    }
  }
});

Deno.test("list cursor edge cases: exact fit, cursor outside the prefix, missing cursor key", () => {
  const machine = listMachine();
  // Exactly `limit` matching keys, followed by keys outside the prefix: no cursor.
  const exact = one(machine, 1, 1, list("a/", 3));
  assert.deepEqual(listedKeys(exact), ["a/1", "a/10", "a/2"]);
  assert.ok(exact.op === "list" && exact.next === undefined);
  // One short of them: a cursor.
  const short = one(machine, 1, 2, list("a/", 2));
  assert.ok(short.op === "list" && short.next === "a/10");
  // A cursor before the prefix starts at the prefix; after it, nothing.
  assert.deepEqual(listedKeys(one(machine, 1, 3, list("b", 10, "a"))), ["b"]);
  assert.deepEqual(listedKeys(one(machine, 1, 4, list("a", 10, "b"))), []);
  // The cursor is exclusive, even when it equals the prefix.
  assert.deepEqual(listedKeys(one(machine, 1, 5, list("a", 2, "a"))), ["a/1", "a/10"]);
  // A cursor naming a key that is gone (deleted between pages) still works.
  assert.deepEqual(listedKeys(one(machine, 1, 6, list("a/", 10, "a/0"))), ["a/1", "a/10", "a/2"]);
  assert.deepEqual(listedKeys(one(machine, 1, 7, list("a/", 10, "a/15"))), ["a/2"]);
  one(machine, 1, 8, del("a/10"));
  assert.deepEqual(listedKeys(one(machine, 1, 9, list("a/", 10, "a/10"))), ["a/2"]);
});

Deno.test("list sees keys created and deleted since the previous list", () => {
  const machine = listMachine();
  assert.deepEqual(listedKeys(one(machine, 1, 1, list("a/", 10))), ["a/1", "a/10", "a/2"]);
  one(machine, 1, 2, put("a/0", "new"));
  one(machine, 1, 3, del("a/10"));
  assert.deepEqual(listedKeys(one(machine, 1, 4, list("a/", 10))), ["a/0", "a/1", "a/2"]);
  // Overwriting keeps the key where it is and shows the new value.
  one(machine, 1, 5, put("a/1", "changed"));
  const result = one(machine, 1, 6, list("a/", 10));
  assert.ok(result.op === "list");
  assert.deepEqual(result.entries[1], { key: "a/1", value: bytes("changed"), version: "5.1.0" });
  // Within one batch too.
  const batch = machine.apply(execution(2, 1, [put("a/3", "x"), list("a/", 10), del("a/0")]));
  assert.deepEqual(listedKeys(batch.results[1]!.result), ["a/0", "a/1", "a/2", "a/3"]);
  assert.deepEqual(listedKeys(one(machine, 2, 2, list("a/", 10))), ["a/1", "a/2", "a/3"]);
});

Deno.test("list honours the limit bounds: 1 and MAX_LIST_LIMIT", () => {
  const machine = new KvStateMachine();
  const keys = Array.from(
    { length: MAX_LIST_LIMIT + 1 },
    (_, i) => `k${String(i).padStart(4, "0")}`,
  );
  machine.apply(execution(0, 1, keys.map((key) => put(key, "v"))));
  assert.equal(machine.size, MAX_LIST_LIMIT + 1);
  const first = one(machine, 0, 2, list("k", MAX_LIST_LIMIT));
  assert.ok(first.op === "list");
  assert.equal(first.entries.length, MAX_LIST_LIMIT);
  assert.equal(first.next, keys[MAX_LIST_LIMIT - 1]);
  const second = one(machine, 0, 3, list("k", MAX_LIST_LIMIT, first.next));
  assert.deepEqual(listedKeys(second), [keys[MAX_LIST_LIMIT]]);
  assert.ok(second.op === "list" && second.next === undefined);
  const single = one(machine, 0, 4, list("k", 1));
  assert.ok(single.op === "list");
  assert.deepEqual(listedKeys(single), ["k0000"]);
  assert.equal(single.next, "k0000");
});

Deno.test("the local list answers what a committed list would", () => {
  const machine = listMachine();
  for (
    const [prefix, after, limit] of [["", undefined, 4], ["a", "a/1", 2], [
      "é",
      undefined,
      1,
    ]] as const
  ) {
    const local = machine.list(prefix, after, limit);
    const committed = one(machine, 3, 1, list(prefix, limit, after));
    assert.deepEqual(local, committed);
  }
});

// ---------------------------------------------------------------------------
// Mutations and digest

Deno.test("mutations are the net change per key of an instance", () => {
  const machine = new KvStateMachine();
  one(machine, 0, 1, put("b", "old"));
  one(machine, 0, 2, put("d", "kept"));
  const applied = machine.apply(
    execution(1, 1, [
      put("a", "1"),
      put("a", "2"),
      del("b"),
      put("c", "x"),
      del("c"),
      put("d", "no", "9.9.9"),
      get("d"),
      del("missing"),
    ]),
  );
  const byKey = [...applied.mutations].sort((x, y) => x.key < y.key ? -1 : 1);
  assert.deepEqual(byKey, [
    { kind: "set", key: "a", entry: { value: bytes("2"), version: "1.1.1" } },
    { kind: "delete", key: "b" },
    { kind: "delete", key: "c" },
    { kind: "delete", key: "missing" },
  ]);
  // Single-command instances report their one change the same way.
  assert.deepEqual(machine.apply(execution(1, 2, [put("e", "v")])).mutations, [
    { kind: "set", key: "e", entry: { value: bytes("v"), version: "2.1.0" } },
  ]);
  assert.deepEqual(machine.apply(execution(1, 3, [del("e")])).mutations, [
    { kind: "delete", key: "e" },
  ]);
  assert.deepEqual(machine.apply(execution(1, 4, [get("e")])).mutations, []);
});

Deno.test("the digest follows the set of live writes, not the order they were applied in", () => {
  const empty = new KvStateMachine().digest;
  assert.equal(empty, "0:00000000");
  const first = new KvStateMachine();
  const second = new KvStateMachine();
  first.apply(execution(0, 1, [put("a", "x")]));
  first.apply(execution(1, 1, [put("b", "y")]));
  second.apply(execution(1, 1, [put("b", "y")]));
  second.apply(execution(0, 1, [put("a", "x")]));
  assert.equal(first.digest, second.digest);
  assert.match(first.digest, /^2:[0-9a-f]{8}$/);
  // Another write to a key changes it; deleting back to empty restores the empty digest.
  const before = first.digest;
  first.apply(execution(0, 2, [put("a", "x")]));
  assert.notEqual(first.digest, before);
  first.apply(execution(0, 3, [del("a"), del("b")]));
  assert.equal(first.digest, empty);
  // A machine loaded from storage has the digest of the one that wrote it.
  assert.equal(new KvStateMachine(second.entries()).digest, second.digest);
});

// ---------------------------------------------------------------------------
// Conflicts, through the model the core uses

Deno.test("kv conflicts: same key and a write, or a write inside a listed prefix", () => {
  const cases: [KvCommand, KvCommand, boolean][] = [
    [put("a", "x"), put("a", "y"), true],
    [put("a", "x"), del("a"), true],
    [del("a"), del("a"), true],
    [put("a", "x"), get("a"), true],
    [del("a"), get("a"), true],
    [get("a"), get("a"), false],
    [put("a", "x"), put("b", "y"), false],
    [put("a", "x"), get("b"), false],
    [put("a", "x"), get("ab"), false],
    [put("ab", "x"), list("a", 10), true],
    [put("a", "x"), list("a", 10), true],
    [del("a/b/c"), list("a/", 10), true],
    [put("b", "x"), list("a", 10), false],
    [put("a", "x"), list("ab", 10), false],
    [put("\u{1F600}", "x"), list("\ud83d", 10), true],
    [put("k", "x"), list("", 10), true],
    [get("ab"), list("a", 10), false],
    [list("a", 10), list("a", 10), false],
    [list("", 10), list("a", 10), false],
    [put("a", "x", "1.0.0"), get("a"), true],
  ];
  for (const [a, b, expected] of cases) {
    assert.equal(conflicts([a], [b]), expected, `${Deno.inspect(a)} vs ${Deno.inspect(b)}`);
    assert.equal(conflicts([b], [a]), expected, "conflicts are symmetric");
  }
  // A batch conflicts with whatever any of its members conflicts with.
  assert.ok(conflicts([get("a"), put("b", "x")], [get("b")]));
  assert.ok(conflicts([get("a"), put("a", "x")], [get("a")]));
  assert.ok(!conflicts([get("a"), get("b"), list("", 5)], [get("a"), list("b", 5)]));
  assert.ok(conflicts([get("z"), list("a", 5)], [put("a/1", "x")]));
});

// ---------------------------------------------------------------------------
// Properties against a reference model

const KEYS = ["a", "ab", "abc", "b", "ba", "é", "\u{1F600}"];
const PREFIXES = ["", "a", "ab", "b", "c", "\ud83d"];

/** `anyOf`: a list holding the current version; `staleList`: a list that may miss it. */
type ConditionSpec = "none" | "absent" | "current" | "stale" | "anyOf" | "staleList";

type CommandSpec =
  | {
    readonly op: "put";
    readonly key: string;
    readonly value: string;
    readonly cond: ConditionSpec;
  }
  | { readonly op: "get"; readonly key: string }
  | { readonly op: "delete"; readonly key: string; readonly cond: ConditionSpec }
  | {
    readonly op: "list";
    readonly prefix: string;
    readonly after: string | undefined;
    readonly limit: number;
  }
  | { readonly op: "backup" };

const keyArbitrary = fc.constantFrom(...KEYS);
const conditionArbitrary = fc.constantFrom<ConditionSpec>(
  "none",
  "absent",
  "current",
  "stale",
  "anyOf",
  "staleList",
);
const commandSpecArbitrary: fc.Arbitrary<CommandSpec> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("put" as const),
      key: keyArbitrary,
      value: fc.string({ maxLength: 3 }),
      cond: conditionArbitrary,
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("get" as const), key: keyArbitrary }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("delete" as const),
      key: keyArbitrary,
      cond: conditionArbitrary,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("list" as const),
      prefix: fc.constantFrom(...PREFIXES),
      after: fc.option(fc.constantFrom(...KEYS, "", "a0", "zz"), { nil: undefined }),
      limit: fc.integer({ min: 1, max: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("backup" as const) }) },
);

/** An instance to execute: a Nop or a batch, in some row. */
interface InstanceSpec {
  readonly owner: number;
  readonly batch: readonly CommandSpec[] | undefined;
}

const instanceSpecArbitrary: fc.Arbitrary<InstanceSpec> = fc.record({
  owner: fc.nat(2),
  batch: fc.option(fc.array(commandSpecArbitrary, { minLength: 1, maxLength: 4 }), {
    nil: undefined,
    freq: 10,
  }),
});

/** The reference: a plain Map of key to entry. */
type Model = Map<string, KvEntry>;

function modelCondition(
  condition: string | null | readonly string[] | undefined,
  current: KvEntry | undefined,
) {
  if (condition === undefined) return true;
  if (condition === null) return current === undefined;
  if (Array.isArray(condition)) return condition.some((version) => current?.version === version);
  return current?.version === condition;
}

function modelApply(model: Model, command: KvCommand, version: string): KvResult {
  switch (command.op) {
    case "reconf":
      return { op: "reconf", ok: true, epoch: command.configuration.epoch };
    case "get":
      return { op: "get", ok: true, entry: model.get(command.key) };
    case "put": {
      const current = model.get(command.key);
      if (!modelCondition(command.ifVersion, current)) {
        return { op: "put", ok: false, current: current?.version ?? null };
      }
      model.set(command.key, { value: command.value, version });
      return { op: "put", ok: true, version };
    }
    case "delete": {
      const current = model.get(command.key);
      if (!modelCondition(command.ifVersion, current)) {
        return { op: "delete", ok: false, current: current?.version ?? null };
      }
      model.delete(command.key);
      return { op: "delete", ok: true, existed: current !== undefined };
    }
    case "list": {
      const after = command.after;
      const matching = sortedEntries(model).filter(([key]) =>
        key.startsWith(command.prefix) && (after === undefined || key > after)
      );
      const entries = matching.slice(0, command.limit).map(([key, entry]) => ({ key, ...entry }));
      return matching.length > command.limit
        ? { op: "list", ok: true, entries, next: entries[entries.length - 1]!.key }
        : { op: "list", ok: true, entries };
    }
    case "backup":
      return {
        op: "backup",
        ok: true,
        // The state's own order: a Map's, as the machine's.
        entries: Array.from(model),
        digest: new KvStateMachine(model).digest,
      };
    case "atomic":
    case "snapshot":
    case "expire":
    case "token":
      // Not generated here: tests/kv/txn_apply_test.ts and tokens_test.ts have theirs.
      throw new Error(`The model does not apply ${command.op}`);
  }
}

/** Turns a spec into a command, its condition chosen against `model`. */
function resolve(spec: CommandSpec, model: Model, issued: readonly string[]): KvCommand {
  const request = nextRequest();
  const condition = (cond: ConditionSpec, key: string): VersionCondition | undefined => {
    const stale = issued.length === 0 ? "0.0.0" : issued[(key.length * 7) % issued.length]!;
    switch (cond) {
      case "none":
        return undefined;
      case "absent":
        return null;
      case "current":
        return model.get(key)?.version ?? "0.0.0";
      case "stale":
        return stale;
      // Lists of distinct versions; "9.9.9" names no write (owners are 0 to 2).
      case "anyOf":
        return [...new Set([stale, model.get(key)?.version ?? "0.0.0", "9.9.9"])];
      case "staleList":
        return [...new Set([stale, "9.9.9"])];
    }
  };
  switch (spec.op) {
    case "get":
      return { op: "get", request, key: spec.key };
    case "backup":
      return { op: "backup", request };
    case "list":
      return spec.after === undefined
        ? { op: "list", request, prefix: spec.prefix, limit: spec.limit }
        : { op: "list", request, prefix: spec.prefix, after: spec.after, limit: spec.limit };
    case "put": {
      const ifVersion = condition(spec.cond, spec.key);
      const value = bytes(spec.value);
      return ifVersion === undefined
        ? { op: "put", request, key: spec.key, value }
        : { op: "put", request, key: spec.key, value, ifVersion };
    }
    case "delete": {
      const ifVersion = condition(spec.cond, spec.key);
      return ifVersion === undefined
        ? { op: "delete", request, key: spec.key }
        : { op: "delete", request, key: spec.key, ifVersion };
    }
  }
}

/**
 * Turns instance specs into executions (numbers rising per row), choosing each
 * condition against the reference state the command will see, so that
 * compare-and-set succeeds as well as fails.
 */
function buildExecutions(specs: readonly InstanceSpec[]): Execution<KvCommand>[] {
  const model: Model = new Map();
  const issued: string[] = [];
  const numbers = [0, 0, 0];
  return specs.map(({ owner, batch }) => {
    const number = ++numbers[owner]!;
    if (batch === undefined) return execution(owner, number, NOP);
    const commands = batch.map((spec, index) => {
      const command = resolve(spec, model, issued);
      const result = modelApply(model, command, versionOf(owner, number, index));
      if (result.op === "put" && result.ok) issued.push(result.version);
      return command;
    });
    return execution(owner, number, commands);
  });
}

function modelResults(model: Model, exec: Execution<KvCommand>): AppliedInstance["results"] {
  if (exec.command === NOP) return [];
  return exec.command.map((command, index) => ({
    request: command.request,
    result: modelApply(model, command, versionOf(exec.owner, exec.number, index)),
  }));
}

Deno.test("property: the state machine agrees with a Map, results and mutations included", () => {
  fc.assert(
    fc.property(fc.array(instanceSpecArbitrary, { minLength: 5, maxLength: 40 }), (specs) => {
      const executions = buildExecutions(specs);
      const machine = new KvStateMachine();
      const model: Model = new Map();
      const replayed = new Map<string, KvEntry>();
      for (const exec of executions) {
        const applied = machine.apply(exec);
        assert.deepEqual(applied.results, modelResults(model, exec));
        replay(replayed, applied.mutations);
        const mutatedKeys = applied.mutations.map((mutation) => mutation.key);
        assert.equal(new Set(mutatedKeys).size, mutatedKeys.length, "one mutation per key");
        assert.deepEqual(sortedEntries(machine.entries()), sortedEntries(model));
        assert.deepEqual(sortedEntries(replayed), sortedEntries(model));
        assert.equal(machine.size, model.size);
      }
      for (const key of KEYS) assert.deepEqual(machine.read(key), model.get(key));
      // What storage persisted loads into a machine with the same state and digest.
      const restored = new KvStateMachine(replayed);
      assert.equal(restored.digest, machine.digest);
      assert.deepEqual(restored.list("", undefined, 100), machine.list("", undefined, 100));
    }),
    { numRuns: 150 },
  );
});

Deno.test("property: two machines fed the same executions agree on results and digest", () => {
  fc.assert(
    fc.property(fc.array(instanceSpecArbitrary, { maxLength: 25 }), (specs) => {
      const executions = buildExecutions(specs);
      const first = new KvStateMachine();
      const second = new KvStateMachine();
      for (const exec of executions) {
        assert.deepEqual(first.apply(exec), second.apply(exec));
        assert.equal(first.digest, second.digest);
      }
      // The digest does not depend on the order entries were loaded in.
      const reversed = sortedEntries(first.entries()).reverse();
      assert.equal(new KvStateMachine(reversed).digest, first.digest);
    }),
    { numRuns: 100 },
  );
});

Deno.test("property: wantResults never changes state or mutations", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(instanceSpecArbitrary, fc.boolean()), { maxLength: 25 }),
      (pairs) => {
        const executions = buildExecutions(pairs.map(([spec]) => spec));
        const answering = new KvStateMachine();
        const quiet = new KvStateMachine();
        executions.forEach((exec, i) => {
          const want = pairs[i]![1];
          const a = answering.apply(exec, true);
          const b = quiet.apply({ ...exec, local: want }, want);
          assert.deepEqual(b.mutations, a.mutations);
          if (want) assert.deepEqual(b.results, a.results);
        });
        assert.equal(quiet.digest, answering.digest);
        assert.deepEqual(sortedEntries(quiet.entries()), sortedEntries(answering.entries()));
      },
    ),
    { numRuns: 100 },
  );
});

function writes(command: KvCommand): boolean {
  return command.op === "put" || command.op === "delete";
}

function hasKeyOrPrefix(
  command: KvCommand,
): command is KvCommand & { op: "put" | "get" | "delete" | "list" } {
  return command.op === "put" || command.op === "get" || command.op === "delete" ||
    command.op === "list";
}

/**
 * Whether the keys two commands touch overlap (a list touches every key with
 * its prefix, a backup every key).
 */
function overlaps(a: KvCommand, b: KvCommand): boolean {
  if (a.op === "backup" || b.op === "backup" || a.op === "reconf" || b.op === "reconf") {
    return true;
  }
  if (!hasKeyOrPrefix(a) || !hasKeyOrPrefix(b)) {
    throw new Error("Multi-key commands are not generated here (tests/kv/txn_commands_test.ts)");
  }
  if (a.op === "list") {
    return b.op === "list"
      ? a.prefix.startsWith(b.prefix) || b.prefix.startsWith(a.prefix)
      : b.key.startsWith(a.prefix);
  }
  return b.op === "list" ? a.key.startsWith(b.prefix) : a.key === b.key;
}

Deno.test("property: the conflict model matches same-key-or-prefix with a write", () => {
  fc.assert(
    fc.property(commandSpecArbitrary, commandSpecArbitrary, (x, y) => {
      const a = resolve(x, new Map(), []);
      const b = resolve(y, new Map(), []);
      const expected = (writes(a) || writes(b)) && overlaps(a, b);
      assert.equal(conflicts([a], [b]), expected);
      assert.equal(conflicts([b], [a]), expected);
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: commands that do not conflict commute", () => {
  let independent = 0;
  fc.assert(
    fc.property(
      fc.array(instanceSpecArbitrary, { maxLength: 8 }),
      fc.array(commandSpecArbitrary, { minLength: 1, maxLength: 3 }),
      fc.array(commandSpecArbitrary, { minLength: 1, maxLength: 3 }),
      (prefix, x, y) => {
        const history = buildExecutions(prefix);
        const start = new KvStateMachine();
        for (const exec of history) start.apply(exec);
        const model: Model = new Map(start.entries());
        const a = x.map((spec) => resolve(spec, model, []));
        const b = y.map((spec) => resolve(spec, model, []));
        if (conflicts(a, b)) return;
        independent++;
        const ea = execution(0, 100, a);
        const eb = execution(1, 100, b);
        const ab = new KvStateMachine(start.entries());
        const ba = new KvStateMachine(start.entries());
        const abA = ab.apply(ea);
        const abB = ab.apply(eb);
        const baB = ba.apply(eb);
        const baA = ba.apply(ea);
        assert.deepEqual(abA.results, baA.results);
        assert.deepEqual(abB.results, baB.results);
        assert.deepEqual(abA.mutations, baA.mutations);
        assert.deepEqual(abB.mutations, baB.mutations);
        assert.equal(ab.digest, ba.digest);
        assert.deepEqual(sortedEntries(ab.entries()), sortedEntries(ba.entries()));
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(independent > 20, `only ${independent} independent pairs were tried`);
});

Deno.test("property: the core's conflict index finds every earlier kv command that conflicts", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(2), commandSpecArbitrary), { minLength: 1, maxLength: 20 }),
      commandSpecArbitrary,
      (earlier, last) => {
        const index = new ConflictIndex(3);
        const numbers = [0, 0, 0];
        const added: { owner: number; number: number; command: KvCommand }[] = [];
        for (const [owner, spec] of earlier) {
          const command = resolve(spec, new Map(), []);
          const number = ++numbers[owner]!;
          index.add(owner, number, batchAccesses(kvConflicts, [command]), 0);
          added.push({ owner, number, command });
        }
        const command = resolve(last, new Map(), []);
        const deps = [0, 0, 0, 0];
        index.collect(batchAccesses(kvConflicts, [command]), deps);
        for (const other of added) {
          if (!conflicts([command], [other.command])) continue;
          assert.ok(
            deps[other.owner]! >= other.number,
            `${Deno.inspect(command)} misses ${other.owner}.${other.number}`,
          );
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("determinism: the same executions on fresh machines give identical outcomes", () => {
  const build = () => [
    execution(0, 1, [put("a", "1"), put("b", "2"), put("c/1", "3")]),
    execution(1, 1, [get("a"), list("c", 5), del("b")]),
    execution(2, 1, NOP),
    execution(0, 2, [put("a", "4", "1.0.0"), put("c/2", "5", null), list("", 2)]),
    execution(2, 2, [del("a", "0.0.0"), get("c/2")]),
  ];
  const executions = build();
  const outcomes = [new KvStateMachine(), new KvStateMachine()].map((machine) => ({
    applied: executions.map((exec) => machine.apply(exec)),
    digest: machine.digest,
    entries: sortedEntries(machine.entries()),
  }));
  assert.deepEqual(outcomes[0], outcomes[1]);
  assert.equal(outcomes[0]!.entries.length, 3);
  assert.deepEqual(outcomes[0]!.applied[3]!.results[0]!.result, {
    op: "put",
    ok: true,
    version: "2.0.0",
  });
});
