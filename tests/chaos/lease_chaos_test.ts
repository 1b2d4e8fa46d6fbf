/**
 * CI-sized runs of the lease chaos scenarios (issue 16, src/chaos/lease_scenarios.ts):
 * real replica processes with leases on every key, reads served locally
 * beside writes, one fault each; the history must be linearizable (or, for
 * the negative clock check, must not be), and each scenario's own findings
 * must hold: writes stall at most a lease, a cut-off holder stops serving
 * reads when its lease ends, a write acknowledged in one emulated region is
 * seen at once in another. About 14 s per scenario on 3 replicas (the
 * wide-area one runs 5); the full-size runs are `deno task chaos --scenario
 * NAME` (src/chaos/lease_scenarios.ts lists them).
 *
 * The seed is printed in each test name; set CHAOS_SEED to replay it.
 */

import assert from "node:assert/strict";
import { runChaos } from "../../src/chaos/chaos.ts";
import { scenarioNamed } from "../../src/chaos/scenarios.ts";

const seed = Number(Deno.env.get("CHAOS_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const DURATION_SECONDS = 12;
const REPLICAS = 3;
/**
 * This machine is shared and has two cores: a replica or this test may be
 * descheduled for hundreds of milliseconds, which the stall bound
 * (leaseMs·(1+drift)² + 1 s) does not allow for. The full runs (`deno task
 * chaos`) hold the bound as stated. A stall that lasts the whole fault (5 s
 * here), as a holder that keeps writes waiting would cause, still fails.
 */
const TIMING_SLACK_MS = 750;

/** The scenarios run here, and what each must have measured besides passing. */
const CI_RUNS: readonly {
  name: string;
  /** Longer than {@linkcode DURATION_SECONDS} where one fault round is too few. */
  durationSeconds?: number;
  check(figures: Record<string, number>): void;
}[] = [
  ...["partition", "pause", "mute", "deaf"].map((fault) => ({
    name: `lease-${fault}-holder`,
    check: stalledAtMostALease,
  })),
  { name: "lease-clock-within-drift", check: stalledAtMostALease },
  {
    name: "lease-grantor-restart",
    check(figures: Record<string, number>) {
      assert.ok(figures.grants_held_at_kill! > 0, "others held the victim's grants when it died");
    },
  },
  {
    name: "lease-wan-read-after-write",
    check(figures: Record<string, number>) {
      assert.equal(figures.stale_reads, 0);
      assert.ok(figures.probes_answered! >= 10, `${figures.probes_answered} probes answered`);
    },
  },
  // The negative check: 12 s give one 4 s cut-off, whose stale window (from
  // the lease's end at the grantors to its end on the slow clock) held no
  // stale read once on a loaded machine; 22 s give two.
  { name: "lease-clock-slow-holder", durationSeconds: 22, check() {} },
];

function stalledAtMostALease(figures: Record<string, number>): void {
  assert.ok(figures.max_write_gap_ms !== undefined, "writes were acknowledged during the fault");
  assert.ok(
    figures.max_write_gap_ms <= figures.write_stall_bound_ms! + TIMING_SLACK_MS,
    `writes stalled ${figures.max_write_gap_ms} ms`,
  );
  assert.equal(figures.local_reads_after_lease_end ?? 0, 0);
  assert.equal(figures.holder_reads_answered_after_lease_end ?? 0, 0);
}

for (const run of CI_RUNS) {
  const scenario = scenarioNamed(run.name);
  Deno.test({
    name: `lease chaos ${run.name} (seed ${seed})`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      assert.ok(scenario !== undefined, `scenario ${run.name} exists`);
      const durationSeconds = run.durationSeconds ?? DURATION_SECONDS;
      const report = await runChaos({
        scenario,
        durationSeconds,
        replicas: REPLICAS,
        seed,
        timingSlackMs: TIMING_SLACK_MS,
      });
      const context = `${report.failures.join("\n")}\nevents: ${report.events.join("; ")}\n` +
        `reproduce: deno task chaos --scenario ${run.name} --duration ${durationSeconds} ` +
        `--replicas ${REPLICAS} --seed ${seed}`;
      assert.ok(report.ok, context);
      assert.ok(report.operations > 0, "the workload ran");
      if (scenario.negative) {
        assert.ok(report.events.some((event) => event.includes("caught")), context);
      }
      run.check({ ...report.figures });
    },
  });
}
