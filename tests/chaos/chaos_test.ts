/**
 * A CI-sized run of every chaos scenario (issue 4): real replica processes,
 * one nemesis each, then healing and convergence; the history must be
 * linearizable, every replica must hold the same state, and the cluster must
 * keep committing while a quorum remains. About 30 s per scenario.
 *
 * The seed is printed in each test name; set CHAOS_SEED to replay it.
 */

import assert from "node:assert/strict";
import { runChaos } from "../../src/chaos/chaos.ts";
import { SCENARIOS } from "../../src/chaos/scenarios.ts";

const seed = Number(Deno.env.get("CHAOS_SEED") ?? Math.floor(Math.random() * 2 ** 31));

for (const scenario of SCENARIOS) {
  Deno.test({
    name: `chaos ${scenario.name} (seed ${seed})`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const report = await runChaos({ scenario, durationSeconds: 18, replicas: 5, seed });
      assert.ok(
        report.ok,
        `${report.failures.join("\n")}\nevents: ${report.events.join("; ")}\n` +
          `reproduce: deno task chaos --scenario ${scenario.name} --duration 18 --replicas 5 --seed ${seed}`,
      );
      assert.ok(report.operations > 0, "the workload ran");
    },
  });
}
