import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type InstanceRecord, Phase } from "../../src/core/types.ts";
import type { KvCommand } from "../../src/kv/commands.ts";
import { databaseKey, versionstampOf } from "../../src/kv/database_keys.ts";
import {
  readSnapshot,
  SNAPSHOT_FORMAT,
  SNAPSHOT_VERSION,
  SnapshotFormatError,
  snapshotStream,
} from "../../src/kv/snapshot_file.ts";
import { KvStateMachine } from "../../src/kv/state_machine.ts";
import { encodeRecordShared } from "../../src/storage/codec.ts";
import { record, sampleSnapshot } from "./snapshot_helpers.ts";
import { bytesOf, streamOf } from "./stream_helpers.ts";

const encoder = new TextEncoder();

async function rejectsWith(bytes: Uint8Array, text: string): Promise<void> {
  await assert.rejects(readSnapshot(streamOf(bytes)), (error: unknown) => {
    assert.ok(error instanceof SnapshotFormatError, `expected SnapshotFormatError, got ${error}`);
    assert.match(error.message, new RegExp(text));
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  });
}

/** `lines` (without the end line) and a correct end line, with counts as given. */
function withEnd(lines: readonly string[], entries: number, records: number): Uint8Array {
  const body = lines.map((line) => line + "\n").join("");
  const sha256 = createHash("sha256").update(encoder.encode(body)).digest("hex");
  return encoder.encode(body + JSON.stringify({ end: true, entries, records, sha256 }) + "\n");
}

Deno.test("a snapshot round-trips through its file, bytes values and records included", async () => {
  const snapshot = sampleSnapshot(500);
  const bytes = await bytesOf(snapshotStream(snapshot, { rateMbps: Infinity }));
  const first = JSON.parse(new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(10))));
  assert.equal(first.format, SNAPSHOT_FORMAT);
  assert.equal(first.records, snapshot.records.length);
  assert.equal(first.entries, snapshot.entries.length);
  for (const pieces of [1, 7, 1000]) {
    assert.deepEqual(await readSnapshot(streamOf(bytes, pieces)), snapshot);
  }
  // The same snapshot gives the same bytes, every time.
  assert.deepEqual(await bytesOf(snapshotStream(snapshot, { rateMbps: 1000 })), bytes);
});

Deno.test("an empty snapshot reads back", async () => {
  const empty = new KvStateMachine().snapshot();
  const snapshot = {
    barrier: "b",
    executedPrefix: [0, 0, 0],
    records: [],
    entries: empty.entries,
    digest: empty.digest,
  };
  const bytes = await bytesOf(snapshotStream(snapshot, { rateMbps: Infinity }));
  assert.deepEqual(await readSnapshot(streamOf(bytes)), snapshot);
});

Deno.test("a truncated or altered snapshot is refused, saying why in one line", async () => {
  const snapshot = sampleSnapshot();
  const bytes = await bytesOf(snapshotStream(snapshot, { rateMbps: Infinity }));
  const lines = new TextDecoder().decode(bytes).trimEnd().split("\n");
  const body = lines.slice(0, -1);
  const [header, ...rest] = body;
  const recordLines = rest.slice(0, snapshot.records.length);
  const entryLines = rest.slice(snapshot.records.length);
  const entries = entryLines.length;
  const records = recordLines.length;
  // The unaltered pieces make a valid file.
  assert.deepEqual(await readSnapshot(streamOf(withEnd(body, entries, records))), snapshot);

  // Truncated: no end line, cut inside a line, nothing at all.
  await rejectsWith(encoder.encode(body.join("\n") + "\n"), "incomplete");
  await rejectsWith(bytes.slice(0, bytes.length - 40), "not JSON|malformed end");
  await rejectsWith(bytes.slice(0, 1000), "not JSON|incomplete");
  await rejectsWith(new Uint8Array(0), "Empty snapshot");
  // A flipped byte: in an entry's value, in a record, in the header.
  for (const at of [bytes.length - 200, header!.length + 40, 30]) {
    const flipped = bytes.slice();
    flipped[at] = flipped[at]! ^ 0x01;
    await rejectsWith(flipped, "SHA-256 mismatch|not JSON|malformed|not base64|Line");
  }
  const altered = [...lines];
  altered[altered.length - 2] = altered.at(-2)!.replace(/"value":"[^"]*"/, '"value":"AAAA"');
  await rejectsWith(encoder.encode(altered.join("\n") + "\n"), "SHA-256 mismatch");
  // A wrong SHA-256 in the end line.
  const wrongSha = [...lines];
  const otherSha = createHash("sha256").update("another file").digest("hex");
  wrongSha[wrongSha.length - 1] = wrongSha.at(-1)!.replace(
    /"sha256":"[0-9a-f]*"/,
    `"sha256":"${otherSha}"`,
  );
  await rejectsWith(encoder.encode(wrongSha.join("\n") + "\n"), "SHA-256 mismatch");
  // Wrong counts, each with a correct SHA-256: in the end line, or in the header.
  await rejectsWith(withEnd(body, entries + 1, records), "Count mismatch");
  await rejectsWith(withEnd(body, entries, records - 1), "Count mismatch");
  const moreEntries = header!.replace(`"entries":${entries}`, `"entries":${entries + 1}`);
  await rejectsWith(withEnd([moreEntries, ...rest], entries, records), "Count mismatch");
  const fewerEntries = header!.replace(`"entries":${entries}`, `"entries":${entries - 1}`);
  await rejectsWith(withEnd([fewerEntries, ...rest], entries, records), "more entries than");
  const fewerRecords = header!.replace(`"records":${records}`, `"records":${records - 1}`);
  await rejectsWith(withEnd([fewerRecords, ...rest], entries, records), "more records than");
  // A wrong digest: the header's, or an entry's version (which the digest sums).
  const wrongDigest = header!.replace(/"digest":"[^"]*"/, '"digest":"1:00000000"');
  await rejectsWith(withEnd([wrongDigest, ...rest], entries, records), "State digest mismatch");
  const otherVersion = [...entryLines];
  otherVersion[0] = otherVersion[0]!.replace(/"version":"[^"]*"/, '"version":"999.0.0"');
  await rejectsWith(
    withEnd([header!, ...recordLines, ...otherVersion], entries, records),
    "State digest mismatch",
  );
  // A bad record, each with a correct SHA-256.
  const encode = (r: InstanceRecord<KvCommand>) =>
    JSON.stringify({ record: encodeRecordShared(r).toBase64() });
  const put = { op: "put" as const, request: "q", key: "k", value: new Uint8Array([1]) };
  const badRecords: [string, string][] = [
    [encode(record(0, 20, [put], { phase: Phase.Accepted })), "not committed and executed"],
    [encode(record(0, 20, [put], { executed: false })), "not committed and executed"],
    [encode(record(0, 10, [put])), "within the executed prefix"],
    [encode(record(7, 20, [put])), "invalid owner"],
    [encode(record(0, 20, [{ ...put, key: "" }])), "malformed command"],
    [encode({ ...record(0, 20, [put]), deps: [1, 2] }), "malformed deps"],
    [encode(record(0, 20, [put], { ballot: 2 ** 50 })), "out of range"],
    [recordLines[0]!, "repeated"],
    ['{"record":"!!!"}', "not base64"],
    ['{"record":"AAAA"}', "not an array|MessagePack"],
    ['{"record":17}', "malformed record"],
  ];
  for (const [line, reason] of badRecords) {
    await rejectsWith(
      withEnd([header!, ...recordLines.slice(0, -1), line, ...entryLines], entries, records),
      reason,
    );
  }
  // A record among the entries; a bad entry; an entry twice.
  await rejectsWith(
    withEnd(
      [
        header!.replace(`"records":${records}`, `"records":${records + 1}`),
        ...recordLines,
        entryLines[0]!,
        encode(record(0, 30, [put])),
        ...entryLines.slice(1),
      ],
      entries,
      records + 1,
    ),
    "record after the entries",
  );
  const badKey = [...entryLines];
  badKey[0] = badKey[0]!.replace(/"key":"[^"]*"/, '"key":""');
  await rejectsWith(withEnd([header!, ...recordLines, ...badKey], entries, records), "invalid key");
  await rejectsWith(
    withEnd(
      [header!, ...recordLines, entryLines[0]!, ...entryLines.slice(0, -1)],
      entries,
      records,
    ),
    "key repeated",
  );
  // Not a snapshot, another version, malformed header fields.
  await rejectsWith(encoder.encode('{"hello": 1}\n'), "not an epaxos-kv-snapshot");
  await rejectsWith(
    encoder.encode(header!.replace('"version":1', '"version":7') + "\n"),
    "version 7",
  );
  for (
    const [from, to] of [
      [/"barrier":"[^"]*"/, '"barrier":""'],
      [/"executedPrefix":\[[^\]]*\]/, '"executedPrefix":[1,-2,3]'],
      [/"executedPrefix":\[[^\]]*\]/, '"executedPrefix":[]'],
      [/"records":\d+/, '"records":-1'],
    ] as const
  ) {
    await rejectsWith(withEnd([header!.replace(from, to)], 0, 0), "malformed");
  }
  // Data after the end; a line longer than any entry can be.
  await rejectsWith(
    encoder.encode(lines.join("\n") + "\n" + entryLines[0] + "\n"),
    "after the end",
  );
  await rejectsWith(
    encoder.encode([header, ...recordLines].join("\n") + "\n" + "x".repeat(300 * 1024)),
    "longer than",
  );
});

Deno.test("fromOffset gives exactly the rest of the same bytes", async () => {
  // Large enough for several 64 KiB chunks.
  const snapshot = sampleSnapshot(600);
  let total: number | undefined;
  const bytes = await bytesOf(
    snapshotStream(snapshot, { rateMbps: Infinity, onClose: (bytes) => total = bytes }),
  );
  assert.equal(total, bytes.length);
  assert.ok(bytes.length > 3 * 64 * 1024, `${bytes.length} bytes`);
  for (const offset of [0, 1, 1000, 64 * 1024 - 1, 64 * 1024, 200_000, bytes.length - 1]) {
    const rest = await bytesOf(snapshotStream(snapshot, { rateMbps: 1000, fromOffset: offset }));
    assert.deepEqual(rest, bytes.slice(offset), `from ${offset}`);
    const joined = new Uint8Array(bytes.length);
    joined.set(bytes.subarray(0, offset));
    joined.set(rest, offset);
    assert.deepEqual(await readSnapshot(streamOf(joined)), snapshot);
  }
  assert.equal(
    (await bytesOf(snapshotStream(snapshot, { rateMbps: 1, fromOffset: bytes.length }))).length,
    0,
  );
  // Beyond the end: the stream errors, and says how long the file is.
  let reported: number | undefined;
  await assert.rejects(
    bytesOf(
      snapshotStream(snapshot, {
        rateMbps: Infinity,
        fromOffset: bytes.length + 1,
        onClose: (bytes) => reported = bytes,
      }),
    ),
    RangeError,
  );
  assert.equal(reported, bytes.length);
  assert.throws(() => snapshotStream(snapshot, { rateMbps: Infinity, fromOffset: -1 }), RangeError);
  assert.throws(() => snapshotStream(snapshot, { rateMbps: 0 }), RangeError);
});

Deno.test("an aborted or cancelled snapshot stream ends once, with no length", async () => {
  const snapshot = sampleSnapshot(3000);
  const controller = new AbortController();
  const ends: (number | undefined)[] = [];
  const stream = snapshotStream(snapshot, {
    rateMbps: 0.5,
    signal: controller.signal,
    onClose: (bytes) => ends.push(bytes),
  });
  const reader = stream.getReader();
  await reader.read();
  // The second chunk waits for the rate: the abort ends that wait at once.
  const pending = reader.read();
  controller.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
  assert.deepEqual(ends, [undefined]);
  const cancelled: (number | undefined)[] = [];
  const other = snapshotStream(snapshot, { rateMbps: Infinity, onClose: (b) => cancelled.push(b) })
    .getReader();
  await other.read();
  await other.cancel();
  assert.deepEqual(cancelled, [undefined]);
});

Deno.test("a snapshot carries the configuration of its epoch, checked against its rows", async () => {
  const members = [0, 1, 2].map((id) => ({
    id,
    incarnation: 1,
    url: `http://127.0.0.1:800${id + 1}`,
    role: "voter" as const,
  }));
  const snapshot = {
    ...sampleSnapshot(20),
    configuration: { epoch: 4, members, nextId: 3 },
  };
  const bytes = await bytesOf(snapshotStream(snapshot, { rateMbps: Infinity }));
  assert.deepEqual(await readSnapshot(streamOf(bytes)), snapshot);
  // A configuration whose voters do not match the prefix's rows, or that is
  // not one, is refused.
  const lines = new TextDecoder().decode(bytes).trimEnd().split("\n").slice(0, -1);
  const header = JSON.parse(lines[0]!);
  const tamper = async (configuration: unknown, text: string) => {
    const changed = [JSON.stringify({ ...header, configuration }), ...lines.slice(1)];
    await rejectsWith(withEnd(changed, header.entries, header.records), text);
  };
  const five = [0, 1, 2, 3, 4].map((id) => ({
    ...members[0]!,
    id,
    url: `http://127.0.0.1:81${id}0`,
  }));
  await tamper({ epoch: 4, members: five, nextId: 5 }, "5 positions for 3 rows");
  await tamper({ epoch: 0, members, nextId: 3 }, "malformed configuration");
});

Deno.test("a snapshot carries a database's entries and records of the multi-key commands", async () => {
  const key = (...bytes: number[]) => databaseKey("app", new Uint8Array(bytes));
  const atomic: KvCommand = {
    op: "atomic",
    request: "a1",
    database: "app",
    floor: 3,
    checks: [{ key: key(1), version: null }],
    mutations: [
      {
        kind: "set",
        key: key(1),
        value: new Uint8Array(65_536).fill(7),
        encoding: 3,
        expiresAt: 9,
      },
      { kind: "max", key: key(2), value: new Uint8Array(8).fill(255), encoding: 2 },
      { kind: "setSuffixVersionstamped", key: key(3), value: new Uint8Array([1]), encoding: 1 },
    ],
  };
  const machine = new KvStateMachine();
  machine.apply({ owner: 0, number: 1, command: [atomic], local: true });
  const { entries, digest } = machine.snapshot();
  const snapshot = {
    barrier: "b",
    executedPrefix: [1, 0, 0],
    records: [
      record(1, 1, [
        {
          op: "snapshot",
          request: "s1",
          ranges: [{ start: key(0), end: key(9), limit: 5, reverse: true }],
        },
        { op: "expire", request: "e1", keys: [{ key: key(1), version: versionstampOf(4) }] },
        { ...atomic, request: "a2" },
      ]),
    ],
    entries,
    digest,
  };
  const bytes = await bytesOf(snapshotStream(snapshot, { rateMbps: Infinity }));
  assert.deepEqual(await readSnapshot(streamOf(bytes, 5)), snapshot);
});

Deno.test("a snapshot file of another format version is refused naming both versions; its own reads", async () => {
  const snapshot = sampleSnapshot(20);
  const bytes = await bytesOf(snapshotStream(snapshot, { rateMbps: Infinity }));
  const [header, ...rest] = new TextDecoder().decode(bytes).split("\n");
  const versioned = (version: number) =>
    encoder.encode(
      [header!.replace(`"version":${SNAPSHOT_VERSION}`, `"version":${version}`), ...rest].join(
        "\n",
      ),
    );
  // From a peer of an earlier build, and of a later one: refused before the checksum.
  for (const version of [SNAPSHOT_VERSION - 1, SNAPSHOT_VERSION + 1]) {
    await rejectsWith(
      versioned(version),
      `^Line 1: snapshot format version ${version}, but this build reads only version ${SNAPSHOT_VERSION}$`,
    );
  }
  assert.deepEqual(
    (await readSnapshot(streamOf(versioned(SNAPSHOT_VERSION)))).entries,
    snapshot.entries,
  );
});
