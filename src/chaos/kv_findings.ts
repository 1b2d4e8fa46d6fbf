/**
 * The exactly-once check of the Deno KV chaos scenarios (`kv_scenarios.ts`):
 * clients add 1 to one counter with `kv.atomic().sum(key, new
 * Deno.KvU64(1n)).commit()` under faults; after healing, the counter read
 * through every replica must account for every sum.
 *
 * A sum adds 1 once for each time it is applied, so the counter lies between
 * the sums that are certainly applied and the most applications every sum
 * can have had:
 *
 * - acknowledged (its commit answered ok): applied at least once;
 * - unknown (an error, such as our 409 "outcome unknown", or no answer by the
 *   end): applied at most once;
 * - either, when Deno's client resent it to a restarted replica: Deno's
 *   client retries a 5xx or a lost connection with the identical request,
 *   forever, to the same replica (denokv `remote/lib.rs`), and KV Connect
 *   carries no idempotency key, so each incarnation of the replica that
 *   received the request may have proposed it once. No server can tell the
 *   resent request from a new one; the check allows it and counts it
 *   (`sums_resent_to_restarted`), and a scenario without restarts has none.
 *
 * So `acknowledged <= counter <= mostApplications`, where a sum answered once
 * by a replica that stayed up counts 1 in both bounds: exactly once.
 *
 * @module
 */

import type { WorkloadFindings } from "./workload.ts";

/** What the clients learned of their sums (counters, so the tally stays small however long the run). */
export interface SumTally {
  /** Sums whose commit was answered ok. */
  readonly acknowledged: number;
  /** Sums whose commit failed (a 4xx, such as 409 "outcome unknown") or was never answered. */
  readonly unknown: number;
  /**
   * The most applications of every sum together: per sum, 1 for the replica
   * process that ran when it was sent plus 1 for each restart of that
   * replica before it was answered (or given up).
   */
  readonly mostApplications: number;
  /** Sums sent while a restart of their replica could let Deno's client resend them (most > 1). */
  readonly resentToRestarted: number;
}

/** A counter read after healing: its value, or why it could not be read. */
export type CounterRead = { readonly value: bigint } | { readonly error: string };

/**
 * The exactly-once findings: every replica reads the same counter, and it
 * lies between `tally.acknowledged` and `tally.mostApplications` (see the
 * module documentation). An absent counter reads 0.
 */
export function exactlyOnceFindings(
  tally: SumTally,
  finals: readonly CounterRead[],
): WorkloadFindings {
  const failures: string[] = [];
  const figures: Record<string, number> = {
    sums_acknowledged: tally.acknowledged,
    sums_unknown: tally.unknown,
    sums_resent_to_restarted: tally.resentToRestarted,
    sums_most_applications: tally.mostApplications,
  };
  const unreadable = finals.flatMap((read, replica) =>
    "error" in read ? [`replica ${replica}: ${read.error}`] : []
  );
  if (finals.length === 0) failures.push("the counter was read through no replica");
  if (unreadable.length > 0) {
    failures.push(`the counter could not be read: ${unreadable.join("; ")}`);
  }
  const values = finals.flatMap((read) => "value" in read ? [read.value] : []);
  if (new Set(values).size > 1) {
    failures.push(`replicas read different counters: ${values.join(" / ")}`);
  }
  const counter = values[0];
  if (counter === undefined) return { failures, figures };
  figures.counter_final = Number(counter);
  // Each sum applied at all counts 1 at most once among acknowledged + unknown:
  // anything above is a sum applied more than once (a resent copy, or a bug).
  figures.extra_applications_at_least = Math.max(
    0,
    Number(counter) - tally.acknowledged - tally.unknown,
  );
  if (counter < BigInt(tally.acknowledged)) {
    failures.push(
      `the counter is ${counter} but ${tally.acknowledged} sums were acknowledged: ` +
        `${BigInt(tally.acknowledged) - counter} acknowledged sums are lost`,
    );
  }
  if (counter > BigInt(tally.mostApplications)) {
    failures.push(
      `the counter is ${counter} but the sums can have been applied at most ` +
        `${tally.mostApplications} times (${tally.acknowledged} acknowledged, ${tally.unknown} ` +
        `unknown, ${tally.resentToRestarted} resent to a restarted replica): ` +
        `${counter - BigInt(tally.mostApplications)} applications too many`,
    );
  }
  return { failures, figures };
}
