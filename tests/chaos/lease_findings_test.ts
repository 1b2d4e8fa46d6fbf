/**
 * What the lease chaos scenarios measure (src/chaos/lease_findings.ts), on
 * small recorded histories whose answers are known.
 */

import assert from "node:assert/strict";
import type { KvEvent } from "../../src/check/mod.ts";
import {
  leaseEndFindings,
  maxWriteGap,
  readsAnsweredBetween,
  timedOperations,
  writeStallBoundMs,
} from "../../src/chaos/lease_findings.ts";

/** A put by `process` from `invokedAt` to `completedAt`, ok. */
function put(process: number, key: string, invokedAt: number, completedAt: number): KvEvent[] {
  return [
    { process, type: "invoke", f: "put", key, value: `v${invokedAt}`, time: invokedAt },
    { process, type: "ok", f: "put", key, value: `v${invokedAt}`, time: completedAt },
  ];
}

/** A get by `process` that read `value`. */
function get(process: number, invokedAt: number, completedAt: number, value: string): KvEvent[] {
  return [
    { process, type: "invoke", f: "get", key: "k", time: invokedAt },
    { process, type: "ok", f: "get", key: "k", value, time: completedAt },
  ];
}

Deno.test("timedOperations pairs each invocation with its process's completion", () => {
  const events: KvEvent[] = [
    { process: 1, type: "invoke", f: "put", key: "a", value: "x", time: 10 },
    { process: 2, type: "invoke", f: "get", key: "a", time: 11 },
    { process: 2, type: "ok", f: "get", key: "a", value: null, time: 12 },
    { process: 1, type: "info", f: "put", key: "a", value: "x", time: 40 },
    { process: 2, type: "invoke", f: "cas", key: "a", from: null, to: "y", time: 41 },
  ];
  assert.deepEqual(timedOperations(events), [
    {
      process: 1,
      f: "put",
      key: "a",
      invokedAt: 10,
      completedAt: 40,
      outcome: "info",
      value: "x",
    },
    {
      process: 2,
      f: "get",
      key: "a",
      invokedAt: 11,
      completedAt: 12,
      outcome: "ok",
      value: null,
    },
    {
      process: 2,
      f: "cas",
      key: "a",
      invokedAt: 41,
      completedAt: undefined,
      outcome: undefined,
      value: undefined,
    },
  ]);
  assert.throws(
    () => timedOperations([{ process: 1, type: "invoke", f: "get", key: "a" }]),
    /time/,
  );
});

Deno.test("maxWriteGap measures from the last acknowledgement before the fault to the first after it", () => {
  const operations = timedOperations([
    ...put(1, "a", 0, 900), // last before the fault at 1000
    ...put(2, "b", 950, 3500), // released after the holder's promise ran out
    ...put(1, "a", 3500, 3600),
    ...put(3, "c", 100, 200), // another replica's client: not counted
    ...put(1, "a", 3600, 9000), // after the window ends at 5000: counted whole
  ]);
  const counted = (operation: { process: number | string }) => operation.process !== 3;
  assert.deepEqual(maxWriteGap(operations, { from: 1000, to: 5000, counted }), {
    gapMs: 5400,
    endsAt: 9000,
  });
  assert.deepEqual(maxWriteGap(operations, { from: 1000, to: 3550, counted }), {
    gapMs: 2600,
    endsAt: 3500,
  });
  // Nothing acknowledged before: the gap counts from the fault.
  assert.deepEqual(
    maxWriteGap(operations, {
      from: 1000,
      to: 3550,
      counted: (operation) => operation.process === 2,
    }),
    { gapMs: 2500, endsAt: 3500 },
  );
  // Nothing acknowledged after the fault began: no figure.
  assert.equal(maxWriteGap(operations, { from: 9500, to: 9900, counted }), undefined);
});

Deno.test("maxWriteGap counts only acknowledged writes: not reads, failed cas or unknown outcomes", () => {
  const operations = timedOperations([
    ...put(1, "a", 0, 100),
    ...get(1, 100, 1500, "v0"),
    { process: 1, type: "invoke", f: "cas", key: "a", from: "q", to: "r", time: 1500 },
    { process: 1, type: "fail", f: "cas", key: "a", from: "q", to: "r", time: 1600 },
    { process: 2, type: "invoke", f: "put", key: "a", value: "z", time: 1000 },
    { process: 2, type: "info", f: "put", key: "a", value: "z", time: 1700 },
    ...put(1, "a", 1600, 2100),
  ]);
  assert.deepEqual(maxWriteGap(operations, { from: 500, to: 3000, counted: () => true }), {
    gapMs: 2000,
    endsAt: 2100,
  });
});

Deno.test("readsAnsweredBetween: reads invoked in the window and answered within it", () => {
  const operations = timedOperations([
    ...get(1, 100, 150, "x"), // before
    ...get(1, 2100, 2110, "x"), // inside
    ...get(2, 2200, 2210, "x"), // another client
    ...get(1, 2300, 6000, "x"), // answered after the window
  ]);
  const found = readsAnsweredBetween(operations, {
    from: 2000,
    to: 5000,
    counted: (operation) => operation.process === 1,
  });
  assert.deepEqual(found.map((operation) => operation.invokedAt), [2100]);
});

Deno.test("leaseEndFindings judges by when each sample was sent, however late it was answered", () => {
  const samples = [
    { sentAt: 0, valid: true, localReads: 10 },
    { sentAt: 1000, valid: true, localReads: 30 },
    // Sent before the end: valid or not, it says nothing against the holder.
    { sentAt: 1990, valid: true, localReads: 35 },
    { sentAt: 2100, valid: false, localReads: 36 },
    { sentAt: 4000, valid: false, localReads: 36 },
  ];
  assert.deepEqual(leaseEndFindings(samples, 2000), {
    invalidAt: 2100,
    validAfterEnd: 0,
    localReadsAfterEnd: 0,
  });
  // A holder that went on saying valid and serving after its lease ended.
  const serving = [...samples.slice(0, 4), { sentAt: 4000, valid: true, localReads: 50 }];
  assert.deepEqual(leaseEndFindings(serving, 2000), {
    invalidAt: 2100,
    validAfterEnd: 1,
    localReadsAfterEnd: 14,
  });
  // Never sampled after the end: unknown, not zero.
  assert.deepEqual(leaseEndFindings(samples.slice(0, 3), 2000), {
    invalidAt: undefined,
    validAfterEnd: 0,
    localReadsAfterEnd: undefined,
  });
});

Deno.test("writeStallBoundMs is the lease stretched twice by the drift, plus a second", () => {
  assert.equal(writeStallBoundMs(2000, 0.01), 2000 * 1.01 * 1.01 + 1000);
  assert.ok(Math.abs(writeStallBoundMs(2000, 0.01) - 3040.2) < 1e-9);
});
