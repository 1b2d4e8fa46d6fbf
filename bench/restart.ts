/**
 * `deno task bench:restart [--replicas N] [--clients C] [--keys K] [--runs R]
 * [--kind put|get] [--out FILE]`: how long requests stop when a replica is
 * killed and when it comes back (issue 15 asks for write unavailability per
 * kind of change).
 *
 * N replica processes on Deno KV; C closed-loop clients per replica send
 * requests on K shared keys, so every command conflicts with some other
 * replica's: blind PUTs (`--kind put`, answered at commit) or linearizable
 * GETs each after a blind PUT (`--kind get`, the gaps of the GETs: answered
 * after execution, which waits for every conflicting instance before it, a
 * dead replica's included). Each run kills one replica (SIGKILL), waits, starts it again on
 * its data, and waits again. For every client of a replica that stays up, the
 * longest gap between two acknowledged writes is taken in each phase (after
 * the kill, after the restart); the report gives p50 and max over those
 * clients, with the runs' medians, in milliseconds.
 *
 * @module
 */

import { integerOption, option, parseArgs } from "../src/cli/args.ts";
import { answers, startProcessCluster, waitUntil } from "../src/chaos/process_cluster.ts";

const args = parseArgs(Deno.args, {
  options: ["replicas", "clients", "keys", "runs", "kind", "out"],
});
const kind = option(args, "kind", "put")!;
if (kind !== "put" && kind !== "get") throw new Error(`--kind must be put or get, got ${kind}`);
const replicas = integerOption(args, "replicas", { min: 3, max: 7, fallback: 3 })!;
const clients = integerOption(args, "clients", { min: 1, max: 64, fallback: 4 })!;
const keys = integerOption(args, "keys", { min: 1, max: 100_000, fallback: 5 })!;
const runs = integerOption(args, "runs", { min: 1, max: 20, fallback: 3 })!;
const out = option(args, "out");
/** Milliseconds of each phase: steady, after the kill, after the restart. */
const PHASE_MS = 4000;

function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** The longest gap between acknowledgements within `[from, to]`, the edges included. */
function longestGap(acks: readonly number[], from: number, to: number): number {
  let last = from;
  let longest = 0;
  for (const at of acks) {
    if (at < from || at > to) continue;
    longest = Math.max(longest, at - last);
    last = at;
  }
  return Math.max(longest, to - last);
}

interface PhaseFigures {
  readonly p50_ms: number;
  readonly max_ms: number;
}

const cluster = await startProcessCluster(replicas);
const killRuns: PhaseFigures[] = [];
const restartRuns: PhaseFigures[] = [];
try {
  for (let run = 0; run < runs; run++) {
    const victim = (run + 1) % replicas;
    let stop = false;
    const acks: number[][] = [];
    const loops: Promise<void>[] = [];
    for (let replica = 0; replica < replicas; replica++) {
      for (let client = 0; client < clients; client++) {
        const mine: number[] = [];
        if (replica !== victim) acks.push(mine);
        const url = cluster.urls[replica]!;
        loops.push((async () => {
          while (!stop) {
            try {
              const key = `k${Math.floor(Math.random() * keys)}`;
              if (kind === "get") {
                // A write first, so that reads conflict with writes.
                const written = await fetch(`${url}/kv/${key}`, {
                  method: "PUT",
                  body: "v",
                  signal: AbortSignal.timeout(5000),
                });
                await written.body?.cancel();
              }
              const response = await fetch(`${url}/kv/${key}`, {
                method: kind === "put" ? "PUT" : "GET",
                ...(kind === "put" ? { body: "v" } : {}),
                signal: AbortSignal.timeout(5000),
              });
              await response.body?.cancel();
              if (response.ok || response.status === 404) mine.push(performance.now());
              else await new Promise((resolve) => setTimeout(resolve, 20));
            } catch {
              await new Promise((resolve) => setTimeout(resolve, 20));
            }
          }
        })());
      }
    }
    await new Promise((resolve) => setTimeout(resolve, PHASE_MS));
    const killedAt = performance.now();
    await cluster.kill(victim, "SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, PHASE_MS));
    const restartedAt = performance.now();
    await cluster.start(victim);
    await waitUntil(() => answers(`${cluster.urls[victim]}/livez`), {
      deadlineMs: 30_000,
      what: `replica ${victim} to restart`,
    });
    await new Promise((resolve) => setTimeout(resolve, PHASE_MS));
    const endedAt = performance.now();
    stop = true;
    await Promise.all(loops);
    const killGaps = acks.map((mine) => longestGap(mine, killedAt, restartedAt));
    const restartGaps = acks.map((mine) => longestGap(mine, restartedAt, endedAt));
    killRuns.push({ p50_ms: median(killGaps), max_ms: Math.max(...killGaps) });
    restartRuns.push({ p50_ms: median(restartGaps), max_ms: Math.max(...restartGaps) });
    console.log(
      `run ${run + 1}: killed replica ${victim}: longest write gap p50 ${
        median(killGaps).toFixed(0)
      } ms, max ${Math.max(...killGaps).toFixed(0)} ms; after its restart: p50 ${
        median(restartGaps).toFixed(0)
      } ms, max ${Math.max(...restartGaps).toFixed(0)} ms`,
    );
  }
} finally {
  await cluster.stop();
}

const summarize = (figures: readonly PhaseFigures[]) => ({
  p50_ms: Math.round(median(figures.map((f) => f.p50_ms))),
  max_ms: Math.round(median(figures.map((f) => f.max_ms))),
});
const report = {
  kind,
  replicas,
  clients_per_replica: clients,
  keys,
  runs,
  phase_ms: PHASE_MS,
  kill: summarize(killRuns),
  restart: summarize(restartRuns),
  runs_detail: killRuns.map((kill, i) => ({ kill, restart: restartRuns[i] })),
};
console.log(`
| change (${kind}) | longest gap p50 ms | max ms (medians of ${runs} runs) |
|---|---:|---:|
| kill a replica | ${report.kill.p50_ms} | ${report.kill.max_ms} |
| restart it on its data | ${report.restart.p50_ms} | ${report.restart.max_ms} |
`);
if (out !== undefined) await Deno.writeTextFile(out, JSON.stringify(report, null, 2) + "\n");
