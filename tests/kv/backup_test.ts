import assert from "node:assert/strict";
import { bytesOf, streamOf } from "./stream_helpers.ts";
import {
  BACKUP_FORMAT,
  BACKUP_VERSION,
  backupFloor,
  BackupFormatError,
  backupStream,
  entryLine,
  parseEntryLine,
  readBackup,
  versionInstanceNumber,
  versionTagOf,
} from "../../src/kv/backup.ts";
import {
  type KvEntry,
  KvStateMachine,
  stateDigestOf,
  versionOf,
} from "../../src/kv/state_machine.ts";
import { NOP } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { databaseKey, stampBucketKey, versionstampOf } from "../../src/kv/database_keys.ts";

const encoder = new TextEncoder();

function entry(value: string, version: string): KvEntry {
  return { value: encoder.encode(value), version };
}

/** A state with awkward keys and values, and the backup command's result on it. */
function sampleSnapshot(size = 5) {
  const machine = new KvStateMachine([
    ["a", entry("one", "3.0.0")],
    ["é/ü", entry("two", "17.2.4")],
    ["\u{1F600} smile", entry("", "9.1.0")],
    ['quote"and\\slash', entry("line\nbreak", "2.0.1")],
    ...Array.from(
      { length: size },
      (_, i) =>
        [`k${i}`, { value: new Uint8Array(i * 7 + 1).fill(i), version: `${i}.1.0` }] as [
          string,
          KvEntry,
        ],
    ),
  ]);
  return machine.snapshot();
}

async function rejectsWith(bytes: Uint8Array, text: string): Promise<void> {
  await assert.rejects(readBackup(streamOf(bytes)), (error: unknown) => {
    assert.ok(error instanceof BackupFormatError, `expected BackupFormatError, got ${error}`);
    assert.match(error.message, new RegExp(text));
    return true;
  });
}

Deno.test("a backup command reads every entry, with the state's digest", () => {
  const machine = new KvStateMachine([["b", entry("2", "2.0.0")], ["a", entry("1", "1.0.0")]]);
  const applied = machine.apply({
    owner: 1,
    number: 4,
    command: [
      { op: "put", request: "r1", key: "c", value: encoder.encode("3") },
      { op: "backup", request: "r2" },
      { op: "delete", request: "r3", key: "a" },
    ] satisfies KvCommand[],
    local: true,
  });
  const result = applied.results[1]!.result;
  assert.equal(result.op, "backup");
  if (result.op !== "backup") return;
  // The cut is between the put before it and the delete after it.
  assert.deepEqual(result.entries.map(([key]) => key).sort(), ["a", "b", "c"]);
  assert.equal(result.digest, new KvStateMachine(result.entries).digest);
  assert.equal(stateDigestOf(result.entries), result.digest);
  assert.notEqual(result.digest, machine.digest);
  // A Nop reads nothing.
  assert.deepEqual(
    machine.apply({ owner: 0, number: 1, command: NOP, local: false }).results,
    [],
  );
});

Deno.test("a backup round-trips through its file, whatever the chunking", async () => {
  const snapshot = sampleSnapshot(500);
  const bytes = await bytesOf(
    backupStream(snapshot.entries, {
      stateDigest: snapshot.digest,
      createdAt: new Date("2026-12-07T10:00:00Z"),
    }),
  );
  for (const pieces of [1, 7, 1000]) {
    const backup = await readBackup(streamOf(bytes, pieces));
    assert.deepEqual(backup.entries, snapshot.entries);
    assert.equal(backup.header.format, BACKUP_FORMAT);
    assert.equal(backup.header.keys, snapshot.entries.length);
    assert.equal(backup.header.stateDigest, snapshot.digest);
    assert.equal(backup.header.floor, 499);
    assert.equal(backup.header.createdAt, "2026-12-07T10:00:00.000Z");
    assert.match(backup.sha256, /^[0-9a-f]{64}$/);
  }
});

Deno.test("an empty state backs up and reads back", async () => {
  const snapshot = new KvStateMachine().snapshot();
  const bytes = await bytesOf(
    backupStream(snapshot.entries, { stateDigest: snapshot.digest, createdAt: new Date() }),
  );
  const backup = await readBackup(streamOf(bytes));
  assert.deepEqual(backup.entries, []);
  assert.equal(backup.header.floor, 0);
});

Deno.test("a truncated, altered or reordered backup is refused, saying why", async () => {
  const snapshot = sampleSnapshot();
  const bytes = await bytesOf(
    backupStream(snapshot.entries, { stateDigest: snapshot.digest, createdAt: new Date() }),
  );
  const text = new TextDecoder().decode(bytes);
  const lines = text.trimEnd().split("\n");
  const join = (parts: string[]) => encoder.encode(parts.join("\n") + "\n");
  // Truncated: no end line, or cut inside a line.
  await rejectsWith(join(lines.slice(0, -1)), "incomplete");
  await rejectsWith(bytes.slice(0, bytes.length - 40), "not JSON|malformed end");
  await rejectsWith(new Uint8Array(0), "Empty file");
  // One value changed: the SHA-256 no longer matches.
  const altered = [...lines];
  altered[2] = altered[2]!.replace(/"value":"[^"]*"/, '"value":"AAAA"');
  await rejectsWith(join(altered), "SHA-256 mismatch");
  // Two entries swapped: same entries, other bytes.
  const swapped = [...lines];
  [swapped[1], swapped[2]] = [swapped[2]!, swapped[1]!];
  await rejectsWith(join(swapped), "SHA-256 mismatch");
  // An entry twice.
  await rejectsWith(join([lines[0]!, lines[1]!, lines[1]!, ...lines.slice(2)]), "key repeated");
  // Not a backup at all, or another version.
  await rejectsWith(encoder.encode('{"hello": 1}\n'), "not an epaxos-kv-backup");
  await rejectsWith(
    encoder.encode(lines[0]!.replace('"version":1', '"version":7') + "\n"),
    "version 7",
  );
  // An entry whose version is not an instance's.
  const badVersion = [...lines];
  badVersion[1] = badVersion[1]!.replace(/"version":"[^"]*"/, '"version":"x"');
  await rejectsWith(join(badVersion), "invalid version");
  // Data after the end line.
  await rejectsWith(join([...lines, lines[1]!]), "after the end");
  // A line longer than any entry can be.
  await rejectsWith(
    encoder.encode(lines[0] + "\n" + "x".repeat(300 * 1024)),
    "longer than",
  );
});

Deno.test("versions name their instance number; the floor is the highest", () => {
  assert.equal(versionInstanceNumber("12.3.0"), 12);
  assert.equal(versionInstanceNumber(`12.3.0.${versionTagOf("0123456789abcdef")}`), 12);
  assert.equal(versionInstanceNumber("12.3.0.rXYZ"), undefined);
  assert.equal(versionInstanceNumber("0.0.0"), 0);
  assert.equal(versionInstanceNumber("12.3"), undefined);
  assert.equal(versionInstanceNumber("a.1.2"), undefined);
  assert.equal(versionInstanceNumber("1234567890123456.0.0"), undefined);
  assert.equal(
    backupFloor([["a", entry("", "5.0.0")], ["b", entry("", "41.2.7")], ["c", entry("", "7.1.0")]]),
    41,
  );
  assert.equal(backupFloor([]), 0);
});

Deno.test("a backup stream keeps to its rate, and reports its end once", async () => {
  const snapshot = sampleSnapshot(200);
  let closed = 0;
  const started = performance.now();
  const bytes = await bytesOf(
    backupStream(snapshot.entries, {
      stateDigest: snapshot.digest,
      createdAt: new Date(),
      bytesPerSecond: 200_000,
      onClose: () => closed++,
    }),
  );
  const elapsedMs = performance.now() - started;
  // Every chunk but the first waits for its share of time: a lower bound
  // only, which a slow machine meets as well.
  const expectedMs = ((bytes.length - 64 * 1024) / 200_000) * 1000;
  assert.ok(elapsedMs >= expectedMs * 0.9, `${bytes.length} bytes in ${elapsedMs} ms`);
  assert.equal(closed, 1);
  // A cancelled stream reports its end too.
  let cancelled = 0;
  const stream = backupStream(snapshot.entries, {
    stateDigest: snapshot.digest,
    createdAt: new Date(),
    onClose: () => cancelled++,
  });
  const reader = stream.getReader();
  await reader.read();
  await reader.cancel();
  assert.equal(cancelled, 1);
});

Deno.test("a state machine with a version tag tags every version it gives", () => {
  const tag = versionTagOf("feedfacecafe0000");
  const machine = new KvStateMachine([], { versionTag: tag });
  const applied = machine.apply({
    owner: 2,
    number: 9,
    command: [{ op: "put", request: "r", key: "k", value: new Uint8Array([1]) }],
    local: true,
  });
  assert.deepEqual(applied.results[0]!.result, {
    op: "put",
    ok: true,
    version: versionOf(2, 9, 0, tag),
  });
  assert.equal(versionOf(2, 9, 0, tag), "9.2.0.rfeedfacecafe");
  assert.equal(machine.read("k")!.version, "9.2.0.rfeedfacecafe");
});

/** A state holding a Deno KV database's entries (made by atomic commands) beside curl keys. */
function databaseState(): KvStateMachine {
  const machine = new KvStateMachine([["curl", entry("c", "1.0.0")]]);
  const key = (...bytes: number[]) => databaseKey("app", new Uint8Array(bytes));
  machine.apply({
    owner: 0,
    number: 2,
    local: true,
    command: [{
      op: "atomic",
      request: "a1",
      database: "app",
      floor: 7,
      checks: [],
      mutations: [
        {
          kind: "set",
          key: key(0x02, 0x61, 0x00),
          value: new Uint8Array(65_536).fill(9),
          encoding: 3,
        },
        {
          kind: "set",
          key: key(0xff, 0x00),
          value: encoder.encode("x"),
          encoding: 1,
          expiresAt: 99,
        },
        { kind: "sum", key: key(0x21), value: new Uint8Array(8).fill(1), encoding: 2 },
        {
          kind: "setSuffixVersionstamped",
          key: key(0x02, 0x73, 0x00),
          value: new Uint8Array(1),
          encoding: 3,
        },
      ],
    }],
  });
  return machine;
}

Deno.test("a backup carries a database's keys, versionstamps, buckets, encodings and expiries", async () => {
  const machine = databaseState();
  const snapshot = machine.snapshot();
  assert.ok(snapshot.entries.length >= 6, "data keys, stamp buckets and the curl key");
  const bytes = await bytesOf(
    backupStream(snapshot.entries, { stateDigest: snapshot.digest, createdAt: new Date() }),
  );
  const backup = await readBackup(streamOf(bytes, 3));
  assert.deepEqual(backup.entries, snapshot.entries);
  assert.equal(backup.header.floor, 1, "versionstamps name no instance");
  const restored = new KvStateMachine(backup.entries);
  assert.equal(restored.digest, machine.digest);
  assert.equal(restored.highestStamp, 8);
  assert.deepEqual(restored.expiredEntries(100, 10).length, 1);
});

Deno.test("entry lines: the new fields only when present; what a database key may hold", () => {
  assert.equal(
    entryLine("k", { value: new Uint8Array([1]), version: "1.0.0" }),
    '{"key":"k","version":"1.0.0","value":"AQ=="}',
    "an entry without them: the line of before",
  );
  const key = databaseKey("app", new Uint8Array([1]));
  const table: [string, Record<string, unknown>, string | undefined][] = [
    ["a curl entry", { key: "k", version: "1.0.0", value: "" }, undefined],
    [
      "a database entry",
      { key, version: versionstampOf(3), value: "", encoding: 1, expiresAt: 5 },
      undefined,
    ],
    [
      "a stamp bucket",
      { key: stampBucketKey("app", 1), version: versionstampOf(3), value: "" },
      undefined,
    ],
    [
      "a versionstamp on a curl key",
      { key: "k", version: versionstampOf(3), value: "" },
      "invalid version",
    ],
    ["a curl version on a database key", { key, version: "1.0.0", value: "" }, "invalid version"],
    [
      "a key in no database",
      { key: "\ufffe", version: versionstampOf(3), value: "" },
      "invalid key",
    ],
    [
      "an unknown encoding",
      { key, version: versionstampOf(3), value: "", encoding: 7 },
      "invalid encoding or expiry",
    ],
    [
      "a text expiry",
      { key, version: versionstampOf(3), value: "", expiresAt: "soon" },
      "invalid encoding or expiry",
    ],
    [
      "a 65,536-byte database value",
      { key, version: versionstampOf(3), value: new Uint8Array(65_536).toBase64() },
      undefined,
    ],
    [
      "a 65,536-byte curl value",
      { key: "k", version: "1.0.0", value: new Uint8Array(65_536).toBase64() },
      "invalid value",
    ],
  ];
  for (const [what, line, problem] of table) {
    const parsed = parseEntryLine(line);
    if (problem === undefined) assert.notEqual(typeof parsed, "string", what);
    else assert.equal(parsed, problem, what);
  }
});

Deno.test("a backup of another format version is refused naming both versions; its own reads", async () => {
  const snapshot = sampleSnapshot();
  const bytes = await bytesOf(
    backupStream(snapshot.entries, { stateDigest: snapshot.digest, createdAt: new Date() }),
  );
  const [header, ...rest] = new TextDecoder().decode(bytes).split("\n");
  const versioned = (version: number) =>
    encoder.encode(
      [header!.replace(`"version":${BACKUP_VERSION}`, `"version":${version}`), ...rest].join("\n"),
    );
  // A backup written by an earlier build, and by a later one (the file is
  // otherwise whole: the version is what is refused, before the checksum).
  for (const version of [BACKUP_VERSION - 1, BACKUP_VERSION + 1]) {
    await assert.rejects(
      readBackup(streamOf(versioned(version))),
      (error: unknown) =>
        error instanceof BackupFormatError &&
        error.message ===
          `Line 1: backup format version ${version}, but this build reads only version ${BACKUP_VERSION}`,
    );
  }
  assert.deepEqual(
    (await readBackup(streamOf(versioned(BACKUP_VERSION)))).entries,
    snapshot.entries,
  );
});
