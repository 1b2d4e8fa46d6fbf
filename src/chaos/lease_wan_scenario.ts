/**
 * The `lease-wan-read-after-write` chaos scenario (issue 16): under
 * wide-area emulation of the five-region matrix (`bench/wan/aws5.json`,
 * `--emulate-wan`), with leases on every key to every replica, a client
 * writes a key at region A and, as soon as the PUT returns, a client at
 * region B reads it: B must see the value. B may well answer from its own
 * state under its lease; it is the lease gate (every holder knows of a write
 * before it is decided) and the hold on a pending write that make it see
 * the write. Repeated with random A and B for the whole fault phase, with the
 * chaos workload running beside it; every probe goes into the history too.
 *
 * @module
 */

import { replicaStatus, waitUntil } from "./process_cluster.ts";
import type { FinishedRun, NemesisContext, Scenario, ScenarioFindings } from "./scenarios.ts";

/** The matrix this scenario emulates (one region per replica). */
export const LEASE_WAN_MATRIX = new URL("../../bench/wan/aws5.json", import.meta.url).pathname;
/** Keys the probes write, one probe loop each: `lease-probe-0` ... */
const PROBE_KEYS = 4;
/** Probes at most per run (bounds the history whatever the duration). */
const MAX_PROBES = 5000;
/** Per-request deadline of a probe; a wide-area write takes a few hundred ms. */
const PROBE_TIMEOUT_MS = 10_000;

interface LeaseCounters {
  readonly valid: boolean;
  readonly reads: { readonly localReads: number; readonly heldReads: number };
}

async function counters(context: NemesisContext): Promise<LeaseCounters[]> {
  const views = await Promise.all(
    context.cluster.urls.slice(0, context.replicas).map((url) =>
      replicaStatus<{ leases: LeaseCounters }>(url, 3000)
    ),
  );
  return views.map((view) =>
    view?.leases ?? { valid: false, reads: { localReads: 0, heldReads: 0 } }
  );
}

async function send(url: string, init: RequestInit = {}): Promise<Response | undefined> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
  } catch {
    return undefined;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted.length === 0
    ? 0
    : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

async function inject(
  context: NemesisContext,
): Promise<(run: FinishedRun) => ScenarioFindings> {
  const urls = context.cluster.urls.slice(0, context.replicas);
  await waitUntil(async () => (await counters(context)).every((view) => view.valid), {
    deadlineMs: 30_000,
    what: "every region to hold a valid lease",
    intervalMs: 200,
  });
  const before = await counters(context);
  const history = context.history;
  const stale: string[] = [];
  const readMs: number[] = [];
  let probes = 0;
  let unanswered = 0;
  const end = context.elapsedMs() + context.faultMs;
  context.note(
    `probing on ${PROBE_KEYS} keys at once: PUT at region A, then at once GET at region B`,
  );
  // One loop per key: each key has one writer at a time, so the value a
  // read must see is exactly the one just acknowledged.
  const probeLoop = async (slot: number) => {
    const key = `lease-probe-${slot}`;
    const writerProcess = `probe-writer-${slot}`;
    const readerProcess = `probe-reader-${slot}`;
    while (context.elapsedMs() < end && probes < MAX_PROBES) {
      const writer = context.random.int(urls.length);
      const reader = (writer + 1 + context.random.int(urls.length - 1)) % urls.length;
      const value = `probe-${probes}-at-${writer}`;
      probes++;
      history.invoke(writerProcess, { f: "put", key, value });
      const put = await send(`${urls[writer]}/kv/${key}`, { method: "PUT", body: value });
      await put?.body?.cancel();
      if (put === undefined || put.status !== 200) {
        // Unknown outcome: the key may now hold either value, so no read can be judged.
        history.info(writerProcess);
        unanswered++;
        continue;
      }
      history.ok(writerProcess);
      history.invoke(readerProcess, { f: "get", key });
      const started = performance.now();
      const get = await send(`${urls[reader]}/kv/${key}`);
      // 404 reads absence: as stale as any other value but the one written.
      const read = get?.status === 200
        ? await get.text()
        : (await get?.body?.cancel(), get?.status === 404 ? null : undefined);
      if (read === undefined) {
        history.info(readerProcess);
        unanswered++;
        continue;
      }
      readMs.push(performance.now() - started);
      history.ok(readerProcess, { value: read });
      if (read !== value) {
        stale.push(`${key} written at ${writer} as ${value}, read at ${reader} as ${read}`);
      }
    }
  };
  await Promise.all(Array.from({ length: PROBE_KEYS }, (_, slot) => probeLoop(slot)));
  const after = await counters(context);
  context.note(`${probes} probes, ${stale.length} stale, ${unanswered} unanswered`);
  return (): ScenarioFindings => {
    const sorted = [...readMs].sort((a, b) => a - b);
    const sum = (views: LeaseCounters[], field: "localReads" | "heldReads") =>
      views.reduce((total, view) => total + view.reads[field], 0);
    const failures = stale.slice(0, 5).map((line) => `stale read after a write: ${line}`);
    if (probes - unanswered < 10) failures.push(`only ${probes - unanswered} probes were answered`);
    return {
      failures,
      figures: {
        probes,
        probes_answered: probes - unanswered,
        stale_reads: stale.length,
        read_p50_ms: Number(percentile(sorted, 0.5).toFixed(1)),
        read_p99_ms: Number(percentile(sorted, 0.99).toFixed(1)),
        local_reads: sum(after, "localReads") - sum(before, "localReads"),
        held_reads: sum(after, "heldReads") - sum(before, "heldReads"),
      },
    };
  };
}

/** Write in one region, read at once in another, under wide-area emulation. */
export const LEASE_WAN_READ_AFTER_WRITE: Scenario = {
  name: "lease-wan-read-after-write",
  description:
    "five emulated regions, leases on every key: a PUT acknowledged in one region, then at once a GET in another must see it",
  replicas: 5,
  availableDuringFault: true,
  leases: "all",
  wanMatrix: LEASE_WAN_MATRIX,
  inject,
};
