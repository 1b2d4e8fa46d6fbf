/**
 * CI-sized runs of the Deno KV chaos scenarios (issue 17,
 * src/chaos/kv_scenarios.ts): Deno's own client, unmodified, at every
 * replica of three real replica processes, adding to one counter with atomic
 * sums and setting keys guarded by versionstamp checks, while a replica is
 * killed and restarted, or isolated; the check-guarded sets' history must be
 * linearizable and the counter, read through every replica after healing,
 * must count every acknowledged sum exactly once. The negative check commits
 * some sums twice and counts them once: it must be caught. About 50 s in all.
 *
 * Deno's client prints "KV Connect failed to call ..." for each retry of a
 * request to a killed replica: expected output of the kill scenario.
 *
 * The seed is printed in each test name; set CHAOS_SEED to replay it.
 */

import assert from "node:assert/strict";
import { runChaos } from "../../src/chaos/chaos.ts";
import { scenarioNamed } from "../../src/chaos/scenarios.ts";

const seed = Number(Deno.env.get("CHAOS_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const REPLICAS = 3;

const CI_RUNS: readonly {
  readonly name: string;
  readonly durationSeconds: number;
  check(figures: Record<string, number>, events: readonly string[]): void;
}[] = [
  {
    name: "kv-sum-kill",
    durationSeconds: 12,
    check(figures) {
      assert.ok(figures.sums_acknowledged! > 0, "sums were acknowledged");
    },
  },
  {
    name: "kv-sum-partition",
    durationSeconds: 12,
    check(figures) {
      assert.ok(figures.sums_acknowledged! > 0, "sums were acknowledged");
      // No replica restarted: every acknowledged sum counted exactly once.
      assert.equal(figures.sums_resent_to_restarted, 0);
      assert.equal(figures.extra_applications_at_least, 0);
    },
  },
  {
    name: "kv-sum-duplicate",
    durationSeconds: 10,
    check(figures, events) {
      assert.ok(figures.extra_applications_at_least! > 0, "sums were applied twice");
      assert.ok(events.some((event) => event.includes("caught, as a negative check must be")));
    },
  },
];

for (const run of CI_RUNS) {
  Deno.test({
    name: `kv chaos ${run.name} (seed ${seed})`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const scenario = scenarioNamed(run.name);
      assert.ok(scenario !== undefined, `scenario ${run.name} exists`);
      const report = await runChaos({
        scenario,
        durationSeconds: run.durationSeconds,
        replicas: REPLICAS,
        seed,
      });
      const context = `${report.failures.join("\n")}\nevents: ${report.events.join("; ")}\n` +
        `reproduce: deno task chaos --scenario ${run.name} --duration ${run.durationSeconds} ` +
        `--replicas ${REPLICAS} --seed ${seed}`;
      assert.ok(report.ok, context);
      assert.ok(report.operations > 0, "the workload ran");
      run.check({ ...report.figures }, report.events);
    },
  });
}
