/**
 * KV Connect's protobuf codec on byte vectors: answers checked byte by byte
 * against the protobuf wire format by hand, and requests as Deno 2.9.6's own
 * client sent them (captured from `Deno.openKv` against a recording server).
 */

import assert from "node:assert/strict";
import {
  decodeAtomicWrite,
  decodeSnapshotRead,
  decodeWatch,
  encodeAtomicWriteOutput,
  encodeSnapshotReadOutput,
  encodeWatchFrame,
  keepAliveFrame,
  MutationType,
} from "../../src/kvconnect/codec.ts";
import { ClientRequestError } from "../../src/errors.ts";

const fromHex = (hex: string) => Uint8Array.fromHex(hex);
const STAMP_1 = fromHex("00000000000000010000");

Deno.test("a snapshot read's answer sets status = SR_SUCCESS (1) and read_is_strongly_consistent", () => {
  // Field 4 (varint) = 1, field 8 (varint) = 1: proto3 would drop a 0 status,
  // which Deno's client reads as SR_UNSPECIFIED, an error.
  assert.deepEqual(encodeSnapshotReadOutput([]), fromHex("20014001"));
  const entry = {
    key: fromHex("026100"),
    value: fromHex("01"),
    encoding: 3,
    versionstamp: STAMP_1,
  };
  // KvEntry: 0a 03 <key> 12 01 <value> 18 03 22 0a <stamp> (22 bytes);
  // ReadRangeOutput: 0a 16 <entry> (24 bytes); then the two flags.
  assert.deepEqual(
    encodeSnapshotReadOutput([[entry], []]),
    fromHex("0a180a160a03026100120101180322" + "0a00000000000000010000" + "0a00" + "20014001"),
  );
});

Deno.test("an atomic write's answer: AW_SUCCESS (1) with the versionstamp, or AW_CHECK_FAILURE (2)", () => {
  assert.deepEqual(
    encodeAtomicWriteOutput({ versionstamp: STAMP_1 }),
    fromHex("0801120a00000000000000010000"),
  );
  assert.deepEqual(encodeAtomicWriteOutput({ checkFailed: true }), fromHex("0802"));
});

Deno.test("a watch frame is a u32 little-endian length and a WatchOutput with status 1", () => {
  const frame = encodeWatchFrame([{ changed: true, entry: null }, { changed: false }]);
  // WatchOutput: 08 01 (status), 12 02 08 01 (changed, no entry), 12 00 (unchanged).
  assert.deepEqual(frame, fromHex("08000000" + "0801" + "12020801" + "1200"));
  const withEntry = encodeWatchFrame([{
    changed: true,
    entry: { key: fromHex("0261"), value: new Uint8Array(0), encoding: 1, versionstamp: STAMP_1 },
  }]);
  // KvEntry without value: 0a 02 0261, 18 01, 22 0a <stamp> = 18 bytes;
  // WatchKeyOutput: 08 01 12 12 <entry> = 22 bytes; WatchOutput 2 + 24 = 26.
  assert.deepEqual(
    withEntry,
    fromHex(
      "1a000000" + "0801" + "1216" + "0801" + "1212" + "0a020261" + "1801" + "220a" +
        "00000000000000010000",
    ),
  );
  assert.deepEqual(keepAliveFrame(), fromHex("00000000"));
});

Deno.test("Deno's client's snapshot read of kv.get(['a']) and of a reverse prefix list decode", () => {
  const get = decodeSnapshotRead(fromHex("0a0d0a030261001204026100001801"));
  assert.equal(get.ranges.length, 1);
  assert.deepEqual(get.ranges[0]!.start, fromHex("026100"));
  assert.deepEqual(get.ranges[0]!.end, fromHex("02610000"));
  assert.equal(get.ranges[0]!.limit, 1);
  assert.equal(get.ranges[0]!.reverse, false);
  // kv.list({prefix: ["p"]}, {limit: 3, reverse: true})
  const list = decodeSnapshotRead(fromHex("0a100a04027000001204027000ff18032001"));
  assert.deepEqual(list.ranges[0]!.start, fromHex("02700000"));
  assert.deepEqual(list.ranges[0]!.end, fromHex("027000ff"));
  assert.equal(list.ranges[0]!.limit, 3);
  assert.equal(list.ranges[0]!.reverse, true);
});

Deno.test("Deno's client's atomic write with checks, sum, max, min and delete decodes", () => {
  const write = decodeAtomicWrite(fromHex(
    "0a050a03026100" + "0a110a03026200120a00000000000000010000" +
      "12150a03026300120c0a08050000000000000010021803" +
      "12150a03026400120c0a08070000000000000010021804" +
      "12150a03026500120c0a08010000000000000010021805" +
      "120b0a0302660012021003" + "1802",
  ));
  assert.deepEqual(write.checks.map((check) => [check.key, check.versionstamp]), [
    [fromHex("026100"), new Uint8Array(0)],
    [fromHex("026200"), STAMP_1],
  ]);
  assert.deepEqual(write.mutations.map((mutation) => mutation.mutationType), [
    MutationType.M_SUM,
    MutationType.M_MAX,
    MutationType.M_MIN,
    MutationType.M_DELETE,
  ]);
  assert.equal(MutationType.M_MAX, 4);
  assert.equal(MutationType.M_MIN, 5);
  assert.deepEqual(write.mutations[0]!.value?.data, fromHex("0500000000000000"));
  assert.equal(write.mutations[0]!.value?.encoding, 2);
  assert.equal(write.enqueues.length, 0);
  // kv.set(["g"], new Uint8Array([1, 2]), {expireIn: 1000}): expire_at_ms is field 4.
  const expiring = decodeAtomicWrite(fromHex("12160a0302670012060a0201021003180120faa2fc93a534"));
  assert.equal(expiring.mutations[0]!.expireAtMs, 1796680388986n);
  assert.equal(expiring.mutations[0]!.mutationType, MutationType.M_SET);
});

Deno.test("a body that is not the message is a 400 with denokv's wording, not a crash", () => {
  for (const decode of [decodeSnapshotRead, decodeAtomicWrite, decodeWatch]) {
    assert.throws(
      () => decode(fromHex("0aff")),
      (error) =>
        error instanceof ClientRequestError && error.status === 400 &&
        error.message.startsWith("Request protobuf is invalid"),
    );
  }
  assert.deepEqual(decodeWatch(fromHex("0a050a03026100")).keys[0]!.key, fromHex("026100"));
});
