/**
 * Chaos with Deno KV clients (issue 17): Deno's own `Deno.Kv`, unmodified,
 * at every replica, adding to one counter with atomic sums and setting
 * register keys guarded by versionstamp checks (`kv_workload.ts`), while
 * replicas are killed and restarted or partitioned by the fault layer. The
 * runner checks the check-guarded sets' history for linearizability and
 * convergence; the workload adds the exactly-once check of the sums
 * (`kv_findings.ts`): after healing, the counter read through every replica
 * is at least the acknowledged sums and at most the applications the sums
 * can have had.
 *
 * `kv-sum-duplicate` is the negative check: a test-only client fault commits
 * some sums twice and counts them once, and the run passes only if the
 * exactly-once check catches it.
 *
 * @module
 */

import { KvWorkload } from "./kv_workload.ts";
import { blockLinks, killRandomReplicas } from "./nemeses.ts";
import type { Scenario, ScenarioWorkloadOptions } from "./scenarios.ts";

/** Register keys of the Deno KV scenarios. */
const KV_KEYS = 4;
/** Deno KV clients per replica. */
const KV_CLIENTS_PER_REPLICA = 3;

function kvWorkload(duplicateSumEvery?: number) {
  return (options: ScenarioWorkloadOptions) =>
    new KvWorkload({
      urls: options.urls,
      cluster: options.cluster,
      clients: Math.max(options.clients, options.urls.length * KV_CLIENTS_PER_REPLICA),
      keys: options.keys,
      random: options.random,
      ...(duplicateSumEvery === undefined ? {} : { duplicateSumEvery }),
    });
}

/** Every Deno KV chaos scenario (`deno task chaos --scenario NAME`). */
export const KV_SCENARIOS: readonly Scenario[] = [
  {
    name: "kv-sum-kill",
    description:
      "Deno KV clients (atomic sums, check-guarded sets); SIGKILL a random replica with commits in flight, restart it; twice",
    availableDuringFault: true,
    keys: KV_KEYS,
    workload: kvWorkload(),
    inject: (context) => killRandomReplicas(context, 2),
  },
  {
    name: "kv-sum-partition",
    description:
      "Deno KV clients (atomic sums, check-guarded sets); isolate one replica, heal, isolate another",
    availableDuringFault: true,
    keys: KV_KEYS,
    workload: kvWorkload(),
    async inject(context) {
      const first = context.random.int(context.replicas);
      for (const isolated of [first, (first + 1) % context.replicas]) {
        context.note(`isolate replica ${isolated}`);
        await blockLinks(context, (from, to) => from === isolated || to === isolated);
        await context.sleep(context.faultMs * 0.35);
        context.note(`heal replica ${isolated}`);
        await blockLinks(context, () => false);
        await context.sleep(context.faultMs * 0.15);
      }
    },
  },
  {
    name: "kv-sum-duplicate",
    description:
      "negative check: Deno KV clients commit every 10th sum twice and count it once; the exactly-once check must catch it",
    availableDuringFault: true,
    keys: KV_KEYS,
    workload: kvWorkload(10),
    async inject(context) {
      await context.sleep(context.faultMs);
    },
  },
];
