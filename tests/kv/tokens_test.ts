/**
 * Named tokens in the key-value state machine: validation of records and
 * commands, the token command applied (add, exists, remove, the limit), the
 * in-memory index kept with the state and rebuilt from it, the reserved
 * keyspace no client command reaches, conflicts, backups carrying tokens.
 */

import assert from "node:assert/strict";
import { accessesConflict } from "../../src/core/conflict.ts";
import type { Execution } from "../../src/core/types.ts";
import {
  describeKvCommand,
  isKvCommand,
  keyProblem,
  type KvCommand,
  kvConflicts,
  listPrefixProblem,
} from "../../src/kv/commands.ts";
import { stateKeyProblem } from "../../src/kv/database_keys.ts";
import { backupStream, entryLine, parseEntryLine, readBackup } from "../../src/kv/backup.ts";
import { KvStateMachine } from "../../src/kv/state_machine.ts";
import { isTokenKey, tokenKey, tokenNameProblem } from "../../src/kv/token_keys.ts";
import {
  encodeTokenRecord,
  MAX_TOKENS,
  summarizeToken,
  tokenHash,
  TokenIndex,
  type TokenRecord,
  tokenRecordProblem,
} from "../../src/kv/tokens.ts";
import { expireCommandProblem, snapshotCommandProblem } from "../../src/kv/txn_commands.ts";

let requests = 0;

function recordOf(name: string, extra: Partial<TokenRecord> = {}): TokenRecord {
  return {
    name,
    hash: tokenHash(`secret-of-${name}`),
    prefixes: [{ prefix: "app/", access: "read" }],
    databases: [],
    ops: false,
    created: 1_700_000_000_000,
    ...extra,
  };
}

function add(record: TokenRecord): KvCommand {
  return { op: "token", request: `t${requests++}`, name: record.name, record };
}

function remove(name: string): KvCommand {
  return { op: "token", request: `t${requests++}`, name, record: null };
}

let numbers = 1;
function executed(...commands: KvCommand[]): Execution<KvCommand> {
  return { owner: 0, number: numbers++, command: commands, local: true };
}

Deno.test("token names: the characters of a path segment, 1 to 64 of them", () => {
  for (const good of ["ci", "prometheus", "a.b-c_D9", "x".repeat(64)]) {
    assert.equal(tokenNameProblem(good), undefined, good);
  }
  for (const bad of ["", ".", "..", "a/b", "a b", "é", "x".repeat(65), "a\u0000"]) {
    assert.notEqual(tokenNameProblem(bad), undefined, JSON.stringify(bad));
  }
});

Deno.test("token records: a table of valid and invalid ones", () => {
  const valid = recordOf("ci");
  assert.equal(tokenRecordProblem(valid), undefined);
  assert.equal(tokenRecordProblem(recordOf("ops", { prefixes: [], ops: true })), undefined);
  assert.equal(
    tokenRecordProblem(
      recordOf("db", { prefixes: [], databases: [{ database: "main", access: "read-write" }] }),
    ),
    undefined,
  );
  assert.equal(
    tokenRecordProblem(recordOf("all", { prefixes: [{ prefix: "", access: "read" }] })),
    undefined,
  );
  const cases: [unknown, RegExp][] = [
    [null, /not an object/],
    [{ ...valid, extra: 1 }, /fields other than/],
    [{ ...valid, name: "a/b" }, /Token name may hold only/],
    [{ ...valid, hash: "ABC" }, /SHA-256/],
    [{ ...valid, hash: "A".repeat(64) }, /lowercase hex/],
    [{ ...valid, prefixes: "app/" }, /prefix grants are not a list/],
    [{ ...valid, prefixes: [{ prefix: "app/", access: "write" }] }, /"read" or "read-write"/],
    [{ ...valid, prefixes: [{ prefix: "app/" }] }, /not \{prefix, access\}/],
    [{ ...valid, prefixes: [{ prefix: "\ufffe", access: "read" }] }, /Invalid prefix/],
    [
      {
        ...valid,
        prefixes: [{ prefix: "a", access: "read" }, { prefix: "a", access: "read-write" }],
      },
      /granted twice/,
    ],
    [
      {
        ...valid,
        prefixes: Array.from({ length: 33 }, (_, i) => ({ prefix: `${i}`, access: "read" })),
      },
      /Too many prefix grants/,
    ],
    [{ ...valid, databases: [{ database: "a/b", access: "read" }] }, /Database name/],
    [{ ...valid, ops: "yes" }, /ops is not a boolean/],
    [{ ...valid, prefixes: [], databases: [], ops: false }, /at least one grant/],
    [{ ...valid, created: -1 }, /creation time/],
  ];
  for (const [value, pattern] of cases) {
    assert.match(tokenRecordProblem(value) ?? "(none)", pattern, JSON.stringify(value));
  }
});

Deno.test("token commands are validated as peers' commands: a malformed one is refused", () => {
  assert.ok(isKvCommand(add(recordOf("ci"))));
  assert.ok(isKvCommand(remove("ci")));
  const bad: unknown[] = [
    { op: "token", request: "r", name: "ci", record: recordOf("other") },
    { op: "token", request: "r", name: "a/b", record: null },
    { op: "token", request: "r", name: "ci" },
    { op: "token", request: "r", name: "ci", record: { ...recordOf("ci"), hash: "x" } },
    { op: "token", name: "ci", record: null },
  ];
  for (const value of bad) assert.equal(isKvCommand(value), false, JSON.stringify(value));
});

Deno.test("add, a second add of the name, remove, remove again: results, mutations, the index", () => {
  const state = new KvStateMachine();
  const record = recordOf("ci");
  const added = state.apply(executed(add(record)));
  assert.deepEqual(added.results[0]!.result, { op: "token", ok: true, existed: false });
  assert.equal(added.mutations.length, 1);
  assert.equal(added.mutations[0]!.key, tokenKey("ci"));
  assert.deepEqual(state.tokens.byHash(record.hash), record);
  assert.deepEqual(state.tokens.byName("ci"), record);
  assert.equal(state.tokens.size, 1);

  const again = state.apply(executed(add(recordOf("ci", { hash: tokenHash("another") }))));
  assert.deepEqual(again.results[0]!.result, { op: "token", ok: false, failure: "exists" });
  assert.deepEqual(again.mutations, []);
  assert.equal(state.tokens.byHash(tokenHash("another")), undefined, "the old one stays");

  const removed = state.apply(executed(remove("ci")));
  assert.deepEqual(removed.results[0]!.result, { op: "token", ok: true, existed: true });
  assert.deepEqual(removed.mutations, [{ kind: "delete", key: tokenKey("ci") }]);
  assert.equal(state.tokens.size, 0);
  assert.equal(state.tokens.byHash(record.hash), undefined);

  const missing = state.apply(executed(remove("ci")));
  assert.deepEqual(missing.results[0]!.result, { op: "token", ok: true, existed: false });
  assert.deepEqual(missing.mutations, []);
});

Deno.test("a token command in a batch with writes: each applies, mutations for all", () => {
  const state = new KvStateMachine();
  const applied = state.apply(executed(
    { op: "put", request: "p1", key: "app/a", value: new Uint8Array([1]) },
    add(recordOf("ci")),
    add(recordOf("ci")),
  ));
  assert.deepEqual(applied.results.map((r) => r.result.ok), [true, true, false]);
  assert.deepEqual(applied.mutations.map((m) => m.key).sort(), ["app/a", tokenKey("ci")].sort());
  assert.equal(state.tokens.size, 1);
});

Deno.test(`past ${MAX_TOKENS} tokens an add fails and changes nothing`, () => {
  const state = new KvStateMachine();
  for (let i = 0; i < MAX_TOKENS; i++) state.apply(executed(add(recordOf(`t${i}`))));
  assert.equal(state.tokens.size, MAX_TOKENS);
  const digest = state.digest;
  const over = state.apply(executed(add(recordOf("one-more"))));
  assert.deepEqual(over.results[0]!.result, { op: "token", ok: false, failure: "limit" });
  assert.equal(state.digest, digest);
  state.apply(executed(remove("t0")));
  assert.equal(state.apply(executed(add(recordOf("one-more")))).results[0]!.result.ok, true);
});

Deno.test("the index is rebuilt with the state (a load, a snapshot installed), and replicas agree", () => {
  const first = new KvStateMachine();
  first.apply(executed(add(recordOf("ci")), add(recordOf("scrape", { prefixes: [], ops: true }))));
  first.apply(executed({ op: "put", request: "p", key: "k", value: new Uint8Array([2]) }));
  const rebuilt = new KvStateMachine(first.entries());
  assert.equal(rebuilt.digest, first.digest);
  assert.deepEqual(rebuilt.tokens.records(), first.tokens.records());
  assert.deepEqual(rebuilt.tokens.records().map((r) => r.name), ["ci", "scrape"]);
  // An entry whose value is no record (only a damaged file could hold one) is not a token.
  const damaged = new KvStateMachine([[tokenKey("bad"), {
    value: new Uint8Array([1]),
    version: "1.0.0",
  }]]);
  assert.equal(damaged.tokens.size, 0);
});

Deno.test("the tokens' keys are out of every client's reach", () => {
  const state = new KvStateMachine();
  state.apply(executed(add(recordOf("ci"))));
  state.apply(executed({ op: "put", request: "p", key: "zzz", value: new Uint8Array([1]) }));
  const key = tokenKey("ci");
  assert.ok(isTokenKey(key));
  // Not a curl key, prefix, list entry; not a Deno KV range; never expired.
  assert.notEqual(keyProblem(key), undefined);
  assert.notEqual(listPrefixProblem(key), undefined);
  assert.deepEqual(state.list("", undefined, 1000).entries.map((e) => e.key), ["zzz"]);
  assert.notEqual(
    snapshotCommandProblem({
      op: "snapshot",
      ranges: [{ start: "\ufffe\u0000", end: "\ufffe\u0001", limit: 10, reverse: false }],
    }),
    undefined,
  );
  assert.notEqual(
    expireCommandProblem({ op: "expire", keys: [{ key, version: "1.0.0" }] }),
    undefined,
  );
  // But a state key a backup and a snapshot file may hold.
  assert.equal(stateKeyProblem(key), undefined);
  assert.notEqual(stateKeyProblem("\ufffe\u0000tbad/name"), undefined);
  assert.notEqual(stateKeyProblem("\ufffe\u0000x"), undefined);
});

Deno.test("token commands conflict with each other (the limit counts them all) and with backups, not with writes", () => {
  const a = kvConflicts.accesses(add(recordOf("a")));
  const b = kvConflicts.accesses(remove("b"));
  const put = kvConflicts.accesses({
    op: "put",
    request: "p",
    key: "app/x",
    value: new Uint8Array(),
  });
  const backup = kvConflicts.accesses({ op: "backup", request: "b" });
  assert.ok(accessesConflict(a, b));
  assert.ok(accessesConflict(a, backup));
  assert.equal(accessesConflict(a, put), false);
});

Deno.test("describe: a token command in one line, without its hash", () => {
  const line = describeKvCommand(add(recordOf("ci", {
    prefixes: [{ prefix: "app/", access: "read" }, { prefix: "", access: "read-write" }],
    databases: [{ database: "main", access: "read-write" }],
    ops: true,
  })));
  assert.equal(line, "token(+ci r:app/ rw:* db-rw:main ops)");
  assert.equal(describeKvCommand(remove("ci")), "token(-ci)");
  assert.equal(summarizeToken(recordOf("ci")).created, "2023-11-14T22:13:20.000Z");
  assert.equal("hash" in summarizeToken(recordOf("ci")), false);
});

Deno.test("backups carry tokens and restore them; a malformed token line is refused", async () => {
  const state = new KvStateMachine();
  state.apply(
    executed(add(recordOf("ci")), {
      op: "put",
      request: "p",
      key: "k",
      value: new Uint8Array([7]),
    }),
  );
  const snapshot = state.snapshot();
  const bytes = new Uint8Array(
    await new Response(backupStream(snapshot.entries, {
      stateDigest: snapshot.digest,
      createdAt: new Date(0),
    })).arrayBuffer(),
  );
  const backup = await readBackup(new Blob([bytes]).stream());
  const restored = new KvStateMachine(backup.entries);
  assert.equal(restored.digest, state.digest);
  assert.deepEqual(restored.tokens.records(), state.tokens.records());

  const entry = state.read(tokenKey("ci"))!;
  assert.equal(typeof parseEntryLine(JSON.parse(entryLine(tokenKey("ci"), entry))), "object");
  const notARecord = { ...entry, value: new TextEncoder().encode("{}") };
  assert.equal(
    parseEntryLine(JSON.parse(entryLine(tokenKey("ci"), notARecord))),
    "invalid token record",
  );
  const otherName = { ...entry, value: encodeTokenRecord(recordOf("other")) };
  assert.equal(
    parseEntryLine(JSON.parse(entryLine(tokenKey("ci"), otherName))),
    "invalid token record",
  );
  const stamped = { ...entry, version: "0".repeat(20) };
  assert.equal(parseEntryLine(JSON.parse(entryLine(tokenKey("ci"), stamped))), "invalid version");
});

Deno.test("TokenIndex: a replaced record drops its old hash; keys outside the space are ignored", () => {
  const index = new TokenIndex();
  const first = recordOf("ci");
  const second = recordOf("ci", { hash: tokenHash("new") });
  index.note(tokenKey("ci"), { value: encodeTokenRecord(first), version: "1.0.0" });
  index.note(tokenKey("ci"), { value: encodeTokenRecord(second), version: "2.0.0" });
  assert.equal(index.byHash(first.hash), undefined);
  assert.deepEqual(index.byHash(second.hash), second);
  index.note("app/x", { value: encodeTokenRecord(first), version: "3.0.0" });
  assert.equal(index.size, 1);
  index.note(tokenKey("ci"), undefined);
  assert.equal(index.size, 0);
});

Deno.test("tokenHash: SHA-256 in hex", () => {
  assert.equal(
    tokenHash("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});
