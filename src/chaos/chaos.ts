/**
 * One chaos run: start real replica processes (with the fault layer enabled),
 * run the workload, apply one nemesis in a fault phase, heal everything, keep
 * the load on for a while, then require convergence and check:
 * - the history is linearizable (with final reads of every key, so an
 *   acknowledged write that was lost shows up as a violation);
 * - every replica holds the same state (`stateDigest` in `/status`) and the
 *   same executed frontier, and every key reads the same locally everywhere;
 * - the cluster committed during the fault phase when the scenario leaves a
 *   quorum (the throughput timeline shows it).
 *
 * @module
 */

import { describeKeyFailure } from "../check/mod.ts";
import { SeededRandom } from "../runtime/random.ts";
import type { FaultConfig } from "../transport/faults.ts";
import {
  answers,
  type ProcessCluster,
  replicaStatus,
  startProcessCluster,
  waitUntil,
} from "./process_cluster.ts";
import type { FinishedRun, Scenario, ScenarioFindings } from "./scenarios.ts";
import { type ChaosWorkload, Workload, type WorkloadOptions } from "./workload.ts";

/** Settings of one run. */
export interface ChaosOptions {
  /** The scenario. */
  readonly scenario: Scenario;
  /** Total duration of load, in seconds (warm-up, fault, recovery). */
  readonly durationSeconds: number;
  /** Replicas (a scenario may fix its own). */
  readonly replicas: number;
  /** Seed for every choice of the run. */
  readonly seed: number;
  /** Concurrent clients (default two per replica). */
  readonly clients?: number;
  /** Keys the clients share (default: the scenario's, else 5). */
  readonly keys?: number;
  /** Writes the timeline as CSV here, if given. */
  readonly timelineCsv?: string;
  /**
   * Writes the history (JSON lines, the checker's format) here when a check
   * fails, and each replica's log beside it.
   */
  readonly historyOnFailure?: string;
  /** Start replicas with `--log-messages` (every message and execution logged). */
  readonly trace?: boolean;
  /** Receives progress lines. */
  readonly log?: (line: string) => void;
  /**
   * Slack added to a scenario's timing bounds (such as the longest write
   * stall under leases), for machines that stall processes by themselves
   * (a shared CI machine); default 0: the bounds as stated.
   */
  readonly timingSlackMs?: number;
}

/** What one run found. */
export interface ChaosReport {
  /** Scenario name. */
  readonly scenario: string;
  /** Replicas. */
  readonly replicas: number;
  /** Seed. */
  readonly seed: number;
  /** Whether every check passed. */
  readonly ok: boolean;
  /** What failed, if anything. */
  readonly failures: readonly string[];
  /** Operations completed (ok or definite fail). */
  readonly operations: number;
  /** Operations with an unknown outcome. */
  readonly indeterminate: number;
  /** Successful operations per second during the fault phase. */
  readonly throughputDuring: number;
  /** Successful operations per second after healing. */
  readonly throughputAfter: number;
  /** Successful operations in each second of the run. */
  readonly timeline: readonly number[];
  /** The fault phase, in seconds since the start. */
  readonly faultWindow: readonly [number, number];
  /** What the scenario measured (its own verdict's figures), by name. */
  readonly figures: Readonly<Record<string, number>>;
  /** Events of the run. */
  readonly events: readonly string[];
}

async function putFaults(
  cluster: ProcessCluster,
  id: number,
  config: FaultConfig | undefined,
): Promise<void> {
  const url = `${cluster.urls[id]}/ops/faults`;
  try {
    const response = await fetch(url, {
      method: config === undefined ? "DELETE" : "PUT",
      headers: { authorization: `Bearer ${cluster.secret}`, "content-type": "application/json" },
      ...(config === undefined ? {} : { body: JSON.stringify(config) }),
      signal: AbortSignal.timeout(3000),
    });
    await response.body?.cancel();
  } catch {
    // A replica that is down has no faults to set or clear.
  }
}

async function converged(urls: readonly string[]): Promise<boolean> {
  const all = await Promise.all(urls.map((url) => replicaStatus(url)));
  if (all.some((s) => s === undefined)) return false;
  const digests = new Set(all.map((s) => s!.stateDigest));
  const frontiers = new Set(
    all.map((s) => JSON.stringify((s!.frontiers as { executed: number[] }).executed)),
  );
  const pending = all.every((s) => (s!.pending as { instances: number }).instances === 0);
  return digests.size === 1 && frontiers.size === 1 && pending;
}

/** Runs one chaos scenario and reports what it found. */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const scenario = options.scenario;
  const replicas = scenario.replicas ?? options.replicas;
  const keys = options.keys ?? scenario.keys ?? 5;
  const random = new SeededRandom(options.seed);
  const events: string[] = [];
  const failures: string[] = [];
  const log = options.log ?? (() => {});
  const durationMs = options.durationSeconds * 1000;
  const warmupMs = Math.max(2000, durationMs * 0.15);
  const faultMs = durationMs * 0.5;
  const recoveryMs = Math.max(3000, durationMs - warmupMs - faultMs);
  // Wide-area emulation and the fault layer share the peer transport's hook:
  // a scenario has one or the other.
  const wanMatrix = scenario.wanMatrix === undefined
    ? undefined
    : await Deno.realPath(scenario.wanMatrix);
  const cluster = await startProcessCluster(replicas, {
    spares: scenario.spareSlots ?? 0,
    extraArgs: [
      ...(wanMatrix === undefined ? ["--enable-fault-injection"] : ["--emulate-wan", wanMatrix]),
      ...(options.trace ? ["--log-messages"] : []),
      ...(scenario.replicaArgs ?? []),
    ],
    ...(scenario.replicaArgsFor === undefined
      ? {}
      : { extraArgsFor: (id: number) => scenario.replicaArgsFor!(id, replicas) }),
    ...(wanMatrix === undefined ? {} : { readFiles: [wanMatrix] }),
    ...(scenario.leases === undefined ? {} : { leases: scenario.leases }),
  });
  // The slots a scenario ends with as members: the first `replicas`.
  const members = cluster.urls.slice(0, replicas);
  const workloadOptions: WorkloadOptions = {
    // The cluster's members at the start (spare slots join later, if at all).
    urls: cluster.urls.slice(0, replicas),
    clients: options.clients ?? replicas * 2,
    keys,
    timeoutMs: 10_000,
    random: random.fork(),
    ...(scenario.readersPerReplica === undefined
      ? {}
      : { readersPerReplica: scenario.readersPerReplica }),
  };
  const workload: ChaosWorkload = scenario.workload?.({ ...workloadOptions, cluster }) ??
    new Workload(workloadOptions);
  const note = (line: string) => {
    const stamped = `${workload.elapsedSeconds().toFixed(1)}s ${line}`;
    events.push(stamped);
    log(`  ${stamped}`);
  };
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  let faultWindow: [number, number] = [0, 0];
  let verdict: ((run: FinishedRun) => ScenarioFindings) | undefined;
  let figures: Record<string, number> = {};
  try {
    log(`${scenario.name}: ${scenario.description} (${replicas} replicas, seed ${options.seed})`);
    workload.start();
    await sleep(warmupMs);
    const faultStart = workload.elapsedSeconds();
    note("fault phase begins");
    try {
      verdict = (await scenario.inject({
        cluster,
        replicas,
        random,
        faultMs,
        setFaults: (id, config) => putFaults(cluster, id, config),
        sleep,
        note,
        history: workload.recorder,
        keys,
        elapsedMs: () => workload.elapsedSeconds() * 1000,
      })) ?? undefined;
    } catch (error) {
      failures.push(`${scenario.name}: ${(error as Error).message}`);
    }
    const faultEnd = workload.elapsedSeconds();
    faultWindow = [faultStart, faultEnd];
    note("heal: clear faults, restart and resume every replica");
    for (let id = 0; id < replicas; id++) {
      if (!cluster.running(id)) await cluster.start(id);
      await cluster.kill(id, "SIGCONT");
    }
    await waitUntil(
      async () => (await Promise.all(members.map((url) => answers(`${url}/livez`)))).every(Boolean),
      { deadlineMs: 30_000, what: "every replica to answer after healing" },
    );
    await Promise.all(members.map((_, id) => putFaults(cluster, id, undefined)));
    await sleep(recoveryMs);
    note("stop the load");
    await workload.stop();
    try {
      await waitUntil(() => converged(members), {
        deadlineMs: 60_000,
        what: "replicas to converge",
      });
      note("converged");
    } catch (error) {
      failures.push((error as Error).message);
    }
    await workload.finalReads(members);
    workload.close();
    const locals = await Promise.all(members.map(async (url) => {
      const values: (string | null)[] = [];
      for (let key = 0; key < keys; key++) {
        try {
          const response = await fetch(`${url}/kv/chaos-${key}?consistency=local`, {
            signal: AbortSignal.timeout(3000),
          });
          values.push(
            response.status === 200 ? await response.text() : (await response.body?.cancel(), null),
          );
        } catch {
          values.push("<unreachable>");
        }
      }
      return JSON.stringify(values);
    }));
    if (new Set(locals).size !== 1) {
      failures.push(`replicas hold different values: ${locals.join(" / ")}`);
    }
    const checked = workload.recorder.check({ maxStepsPerKey: 200_000_000 });
    if (checked.verdict !== "linearizable") {
      const failed = checked.keys.find((key) => key.verdict !== "linearizable");
      const detail = failed === undefined
        ? ""
        : describeKeyFailure(workload.recorder.toHistory(), failed).slice(0, 8).join("; ");
      const finding = `history is ${checked.verdict}${
        failed ? ` on key ${failed.key}` : ""
      }: ${detail}`;
      // A negative scenario breaks a stated assumption: the checker must see it.
      if (scenario.negative) note(`caught, as a negative check must be: ${finding}`);
      else failures.push(finding);
    } else if (scenario.negative) {
      failures.push(
        "negative check not caught: the history is linearizable although the scenario breaks " +
          "an assumption the system states",
      );
    }
    if (verdict !== undefined) {
      const found = verdict({
        events: workload.recorder.events,
        replicaOf: (process) => workload.replicaOf(process),
        faultWindowMs: [faultWindow[0] * 1000, faultWindow[1] * 1000],
        timingSlackMs: options.timingSlackMs ?? 0,
      });
      failures.push(...found.failures);
      figures = { ...found.figures };
    }
    const own = workload.findings?.();
    if (own !== undefined) {
      for (const line of own.notes ?? []) note(line);
      failures.push(...own.failures);
      figures = { ...figures, ...own.figures };
    }
    if (Object.keys(figures).length > 0) {
      note(`figures: ${Object.entries(figures).map(([k, v]) => `${k}=${v}`).join(" ")}`);
    }
  } finally {
    if (failures.length > 0 && options.historyOnFailure !== undefined) {
      for (let id = 0; id < replicas; id++) {
        await Deno.copyFile(
          `${cluster.root}/replica-${id}.log`,
          `${options.historyOnFailure}.replica-${id}.log`,
        )
          .catch(() => {});
      }
    }
    await cluster.stop();
  }
  const timeline = workload.timeline;
  const window = (from: number, to: number) => {
    const start = Math.max(0, Math.floor(from));
    const end = Math.min(timeline.length, Math.ceil(to));
    if (end <= start) return 0;
    let sum = 0;
    for (let second = start; second < end; second++) sum += timeline[second] ?? 0;
    return sum / (end - start);
  };
  const throughputDuring = window(faultWindow[0], faultWindow[1]);
  const throughputAfter = window(faultWindow[1] + 1, timeline.length - 1);
  if (scenario.availableDuringFault && throughputDuring === 0) {
    failures.push("nothing committed during the fault phase although a quorum remained");
  }
  if (failures.length > 0 && options.historyOnFailure !== undefined) {
    for (const [reason, count] of workload.cancelReasons) {
      failures.push(`cancelled ${count}x: ${reason}`);
    }
    await Deno.writeTextFile(options.historyOnFailure, workload.recorder.toJsonLines());
    failures.push(`history written to ${options.historyOnFailure}`);
  }
  if (options.timelineCsv !== undefined) {
    const rows = timeline.map((ops, second) =>
      `${second},${ops},${
        second >= faultWindow[0] && second < faultWindow[1]
          ? "fault"
          : second < faultWindow[0]
          ? "before"
          : "after"
      }`
    );
    await Deno.writeTextFile(options.timelineCsv, `second,ops,phase\n${rows.join("\n")}\n`);
  }
  return {
    scenario: scenario.name,
    replicas,
    seed: options.seed,
    ok: failures.length === 0,
    failures,
    operations: workload.counts.ok + workload.counts.fail,
    indeterminate: workload.counts.info,
    throughputDuring,
    throughputAfter,
    timeline,
    faultWindow,
    events,
    figures,
  };
}
