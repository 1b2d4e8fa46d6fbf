import assert from "node:assert/strict";
import type { Access } from "../../src/core/conflict.ts";
import type { LeaseReadVerdict } from "../../src/core/lease_state.ts";
import { type LeaseReadCore, LeaseReads } from "../../src/driver/lease_reads.ts";
import { ManualClock } from "../../src/runtime/clock.ts";

const accesses: readonly Access[] = [{ key: "a", write: false }];

/** A core whose lease is valid until `until` (its clock), with nothing pending. */
function coreValidUntil(until: number): LeaseReadCore {
  return {
    localRead: (_accesses, now): LeaseReadVerdict =>
      now < until ? { verdict: "serve" } : { verdict: "refuse", reason: "no-lease" },
    leaseStillValid: (now) => now < until,
  };
}

Deno.test("a read served locally is reported once, after its state read", () => {
  const clock = new ManualClock(100);
  const served: (readonly Access[])[] = [];
  const reads = new LeaseReads(clock, { served: (read) => served.push(read) });
  const core = coreValidUntil(1000);
  const results: ({ value: string } | undefined)[] = [];
  reads.readThen(() => core, accesses, () => "state", (result) => results.push(result));
  assert.deepEqual(results.slice(), [{ value: "state" }]);
  assert.deepEqual(served, [accesses]);
  // Refused: proposed instead, and not reported.
  reads.readThen(
    () => coreValidUntil(50),
    accesses,
    () => "state",
    (result) => results.push(result),
  );
  assert.deepEqual(results.slice(), [{ value: "state" }, undefined]);
  assert.equal(served.length, 1);
});

for (const unsafe of [false, true]) {
  Deno.test(
    `a read stalled past its lease ${
      unsafe
        ? "is served stale when the lease is checked before the stall only (negative)"
        : "goes through the protocol"
    }`,
    () => {
      const clock = new ManualClock(100);
      let resume: (() => void) | undefined;
      const reads = new LeaseReads(clock, {
        stall: {
          stall: (then) => {
            resume = then;
            return true;
          },
          unsafeCheckBeforeStall: unsafe,
        },
      });
      let stateReads = 0;
      const results: ({ value: number } | undefined)[] = [];
      reads.readThen(
        () => coreValidUntil(1000),
        accesses,
        () => ++stateReads,
        (result) => results.push(result),
      );
      // Stalled between the verdict and the state read.
      assert.equal(stateReads, 0);
      assert.deepEqual(results.slice(), []);
      clock.advance(2000);
      resume!();
      assert.equal(stateReads, 1, "the state is read after the stall");
      if (unsafe) {
        assert.deepEqual(results.slice(), [{ value: 1 }]);
        assert.equal(reads.metrics.localReads, 1);
      } else {
        assert.deepEqual(results.slice(), [undefined]);
        assert.equal(reads.metrics.fallbacks.expiredDuringRead, 1);
      }
    },
  );
}
