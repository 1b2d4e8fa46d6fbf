/**
 * What the lease chaos scenarios measure from a run's history and from the
 * replicas' `/status` (`leases`): the longest stall of acknowledged writes,
 * and whether a cut-off holder stopped serving reads when its lease ended.
 * Pure functions over recorded data, so that they are tested on their own
 * (tests/chaos/lease_findings_test.ts).
 *
 * @module
 */

import type { KvEvent, KvFunction } from "../check/mod.ts";

/** One operation of a recorded history, with the times of its invocation and completion. */
export interface TimedOperation {
  /** The client. */
  readonly process: number | string;
  /** What it did. */
  readonly f: KvFunction;
  /** The key. */
  readonly key: string;
  /** When it was invoked (ms, the recorder's clock). */
  readonly invokedAt: number;
  /** When it completed, or undefined if it never did (outstanding at the end). */
  readonly completedAt: number | undefined;
  /** How it completed. */
  readonly outcome: "ok" | "fail" | "info" | undefined;
  /** A get's value read, a put's value written. */
  readonly value: string | null | undefined;
}

/**
 * Pairs each invocation with its process's next completion. Events must carry
 * `time` (the chaos workload's recorder stamps every one).
 *
 * @throws {Error} if an event has no `time`.
 */
export function timedOperations(events: readonly KvEvent[]): TimedOperation[] {
  const open = new Map<number | string, { event: KvEvent; index: number }>();
  const operations: TimedOperation[] = [];
  const timeOf = (event: KvEvent) => {
    if (event.time === undefined) throw new Error("Every event needs its time");
    return event.time;
  };
  for (const event of events) {
    if (event.type === "invoke") {
      open.set(event.process, { event, index: operations.length });
      operations.push({
        process: event.process,
        f: event.f,
        key: event.key,
        invokedAt: timeOf(event),
        completedAt: undefined,
        outcome: undefined,
        value: event.f === "put" ? event.value : undefined,
      });
      continue;
    }
    const invoked = open.get(event.process);
    if (invoked === undefined) continue;
    open.delete(event.process);
    const operation = operations[invoked.index]!;
    operations[invoked.index] = {
      ...operation,
      completedAt: timeOf(event),
      outcome: event.type,
      ...(event.f === "get" ? { value: event.value } : {}),
    };
  }
  return operations;
}

/** A time window (ms, the recorder's clock) and the clients whose operations count in it. */
export interface ClientWindow {
  /** Start of the window. */
  readonly from: number;
  /** End of the window. */
  readonly to: number;
  /** Whether an operation's client counts. */
  counted(operation: TimedOperation): boolean;
}

/**
 * The longest time, around `[from, to]`, between two consecutive
 * acknowledgements of writes (put, or cas that applied) by the clients
 * `counted` selects: from the last one at or before `from` to the first one
 * after `to`, so a stall that lasts past `to` counts whole. Undefined when
 * no write was acknowledged after `from`.
 */
export function maxWriteGap(
  operations: readonly TimedOperation[],
  window: ClientWindow,
): { gapMs: number; endsAt: number } | undefined {
  const acknowledged = operations
    .filter((operation) =>
      (operation.f === "put" || operation.f === "cas") && operation.outcome === "ok" &&
      operation.completedAt !== undefined && window.counted(operation)
    )
    .map((operation) => operation.completedAt!)
    .sort((a, b) => a - b);
  const before = acknowledged.filter((at) => at <= window.from);
  const inside = acknowledged.filter((at) => at > window.from && at <= window.to);
  const after = acknowledged.find((at) => at > window.to);
  const times = [
    before.length === 0 ? window.from : before[before.length - 1]!,
    ...inside,
    ...(after === undefined ? [] : [after]),
  ];
  if (times.length < 2) return undefined;
  let gap = { gapMs: 0, endsAt: times[0]! };
  for (let i = 1; i < times.length; i++) {
    if (times[i]! - times[i - 1]! > gap.gapMs) {
      gap = { gapMs: times[i]! - times[i - 1]!, endsAt: times[i]! };
    }
  }
  return gap;
}

/**
 * Reads by the clients `counted` selects that were invoked at or after
 * `from` and answered (ok) by `to`: for a holder that can reach no quorum,
 * every one of them was served locally.
 */
export function readsAnsweredBetween(
  operations: readonly TimedOperation[],
  window: ClientWindow,
): TimedOperation[] {
  return operations.filter((operation) =>
    operation.f === "get" && operation.outcome === "ok" && operation.invokedAt >= window.from &&
    operation.completedAt !== undefined && operation.completedAt <= window.to &&
    window.counted(operation)
  );
}

/** One sample of a replica's `/status` `leases`. */
export interface LeaseSample {
  /**
   * When the request was sent (ms, the recorder's clock): the replica
   * evaluated its lease at this time or later.
   */
  readonly sentAt: number;
  /** Whether the replica could read locally then. */
  readonly valid: boolean;
  /** Reads it had served locally so far. */
  readonly localReads: number;
}

/**
 * What samples of a cut-off holder say about its lease, which ended at
 * `leaseEnd` at the latest: when it was first seen invalid (the send time
 * of that sample), how many samples sent from `leaseEnd` on still said
 * valid, and how many reads it served locally after the first such sample
 * was taken. Send times make this exact under scheduling delays: a sample
 * sent after the end was evaluated after it, however late its answer came.
 */
export function leaseEndFindings(
  samples: readonly LeaseSample[],
  leaseEnd: number,
): {
  invalidAt: number | undefined;
  validAfterEnd: number;
  localReadsAfterEnd: number | undefined;
} {
  const after = samples.filter((sample) => sample.sentAt >= leaseEnd);
  const first = after[0];
  const last = after[after.length - 1];
  return {
    invalidAt: samples.find((sample) => !sample.valid)?.sentAt,
    validAfterEnd: after.filter((sample) => sample.valid).length,
    localReadsAfterEnd: first === undefined || last === undefined
      ? undefined
      : last.localReads - first.localReads,
  };
}

/** The longest a write may wait on a silent holder: the lease stretched twice by the drift, plus 1 s. */
export function writeStallBoundMs(leaseMs: number, drift: number): number {
  return leaseMs * (1 + drift) ** 2 + 1000;
}
