/**
 * The chaos workload of Deno KV clients (issue 17): each client is Deno's own
 * `Deno.Kv`, unmodified, opened at one replica
 * (`Deno.openKv(".../databases/chaos/connect")`), and in a closed loop:
 *
 * - adds 1 to one counter (`kv.atomic().sum(["counter"], new
 *   Deno.KvU64(1n)).commit()`), tallied for the exactly-once check
 *   (`kv_findings.ts`);
 * - or, on a few register keys, reads a key (`kv.get`) or sets it guarded by
 *   the versionstamp it last read (`kv.atomic().check(seen).set(...)`),
 *   recorded for the linearizability checker as get and compare-and-set
 *   (values are unique, so a versionstamp check is a comparison of the
 *   value).
 *
 * No plain set: Deno's client resends a request whose connection was lost,
 * so a set in flight when its replica is killed can be applied twice, which
 * no register history allows; a check-guarded set is applied at most once
 * (the first application moves the versionstamp its copy checks).
 *
 * Deno's client retries a 5xx or a lost connection forever against the same
 * replica, so a client of a killed replica hangs until the replica is back.
 * Each operation has a deadline: past it, the history records it as
 * indeterminate and the client waits for the answer before its next
 * operation (one request per client at a time, as the checker needs); an
 * answer that comes later still counts for the exactly-once tally, and
 * after `stop` the wait is bounded.
 *
 * How an answer is recorded:
 * - get: the value read (`ok`); any error or a late answer: `info`.
 * - check-guarded set: ok → `ok`; a failed check → `fail`, unless the
 *   client may have resent it to a restarted replica (the first copy may
 *   have applied and the resent one failed its check): `info`; an error
 *   (such as our 409, "outcome unknown") or a late answer: `info`.
 * - sum: acknowledged or unknown in the tally, with the most applications
 *   it can have had ({@linkcode SumTally}).
 *
 * @module
 */

import { HistoryRecorder } from "../check/mod.ts";
import type { SeededRandom } from "../runtime/random.ts";
import { type CounterRead, exactlyOnceFindings, type SumTally } from "./kv_findings.ts";
import type { ProcessCluster } from "./process_cluster.ts";
import type { ChaosWorkload, WorkloadCounts, WorkloadFindings } from "./workload.ts";

/** The database the clients use. */
export const KV_CHAOS_DATABASE = "chaos";
/** The key of the counter the clients add to. */
export const COUNTER_KEY: Deno.KvKey = ["counter"];
/** Default deadline of one operation. */
export const DEFAULT_KV_DEADLINE_MS = 3000;
/** Default wait, after `stop`, for answers that came past their deadline. */
export const DEFAULT_KV_SETTLE_MS = 60_000;
/** Share of operations that are sums; the rest are register reads and check-guarded sets. */
const SUM_SHARE = 0.5;
/** Share of operations that are check-guarded sets (of a key the client has read). */
const CAS_SHARE = 0.3;

/** Settings of a {@linkcode KvWorkload}. */
export interface KvWorkloadOptions {
  /** Replica base URLs. */
  readonly urls: readonly string[];
  /** The replica processes (how often each was started: resent requests). */
  readonly cluster: Pick<ProcessCluster, "pid" | "starts">;
  /** Concurrent clients (client `i` talks to replica `i mod urls.length`). */
  readonly clients: number;
  /** Register keys the clients share (`["reg", 0]` ...). */
  readonly keys: number;
  /** Randomness (seeded, so a run's choices repeat). */
  readonly random: SeededRandom;
  /** Deadline of one operation (default {@linkcode DEFAULT_KV_DEADLINE_MS}). */
  readonly deadlineMs?: number;
  /** Wait after `stop` for late answers (default {@linkcode DEFAULT_KV_SETTLE_MS}). */
  readonly settleMs?: number;
  /**
   * A test-only fault for the negative check: every `n`th sum of a client is
   * committed twice and tallied once, as a server that applied a sum twice
   * would leave it; the exactly-once check must catch it.
   */
  readonly duplicateSumEvery?: number;
}

type Settled<T> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
  readonly error: unknown;
};

/** How one operation ended. */
interface Called<T> {
  /** Its answer, if any came (in time or late); undefined if given up at the end. */
  readonly answer: Settled<T> | undefined;
  /** Whether the answer came within the deadline. */
  readonly inTime: boolean;
  /** The most replica processes that can have received it (see {@linkcode SumTally}). */
  readonly mostReceivers: number;
}

/** The register key `index` for the checker, and for Deno KV. */
function registerKey(index: number): { readonly name: string; readonly key: Deno.KvKey } {
  return { name: `reg-${index}`, key: ["reg", index] };
}

/** Deno KV clients under chaos; see the module documentation. */
export class KvWorkload implements ChaosWorkload {
  readonly recorder: HistoryRecorder;
  readonly counts: WorkloadCounts = { ok: 0, fail: 0, info: 0, cancelled: 0 };
  readonly cancelReasons = new Map<string, number>();
  readonly timeline: number[] = [];
  readonly #options: KvWorkloadOptions;
  readonly #started = performance.now();
  readonly #kvs = new Set<Deno.Kv>();
  #tally: {
    acknowledged: number;
    unknown: number;
    mostApplications: number;
    resentToRestarted: number;
  } = { acknowledged: 0, unknown: 0, mostApplications: 0, resentToRestarted: 0 };
  /** Errors of atomic writes by message (bounded: the first 20 kinds). */
  readonly #errors = new Map<string, number>();
  #finals: CounterRead[] = [];
  #running = false;
  #loops: Promise<void>[] = [];
  #unique = 0;
  #giveUp: Promise<void>;
  #giveUpNow: () => void = () => {};

  /** Creates the workload; nothing runs until `start`. */
  constructor(options: KvWorkloadOptions) {
    this.#options = options;
    this.recorder = new HistoryRecorder({
      now: () => Math.round(performance.now() - this.#started),
    });
    this.#giveUp = new Promise((resolve) => this.#giveUpNow = resolve);
    // Deno's client insists on a token; a cluster without a client token takes any.
    if (Deno.env.get("DENO_KV_ACCESS_TOKEN") === undefined) {
      Deno.env.set("DENO_KV_ACCESS_TOKEN", "chaos");
    }
  }

  /** Seconds since the workload was created. */
  elapsedSeconds(): number {
    return (performance.now() - this.#started) / 1000;
  }

  /** The replica client `process` talks to (undefined for the final reads). */
  replicaOf(process: number | string): number | undefined {
    if (typeof process !== "number" || process >= this.#options.clients) return undefined;
    return process % this.#options.urls.length;
  }

  /** What the clients learned of their sums so far. */
  get tally(): SumTally {
    return { ...this.#tally };
  }

  /** Starts every client. */
  start(): void {
    this.#running = true;
    this.#loops = Array.from(
      { length: this.#options.clients },
      (_, client) => this.#client(client),
    );
  }

  /**
   * Stops issuing operations and waits for the answers still to come, at
   * most `settleMs` (the runner has restarted and healed every replica, so
   * a client held by a dead replica gets its answer).
   */
  async stop(): Promise<void> {
    this.#running = false;
    const timer = setTimeout(
      () => this.#giveUpNow(),
      this.#options.settleMs ?? DEFAULT_KV_SETTLE_MS,
    );
    try {
      await Promise.all(this.#loops);
    } finally {
      clearTimeout(timer);
      // From now on, an answer past its deadline is not waited for.
      this.#giveUpNow();
    }
  }

  /**
   * Reads the counter through every replica in `urls` (a linearizable
   * snapshot read each), and every register key through the first, as one
   * more process, so the checker sees whether an acknowledged set was lost.
   */
  async finalReads(urls: readonly string[]): Promise<void> {
    this.#finals = [];
    for (const [replica, url] of urls.entries()) {
      const kv = await this.#open(url);
      if (kv === undefined) {
        this.#finals.push({ error: `Deno.openKv at ${url} failed` });
        continue;
      }
      const read = await this.#call(replica, () => kv.get<Deno.KvU64>(COUNTER_KEY), 10_000);
      if (read.answer?.ok) {
        const value = read.answer.value.value;
        this.#finals.push(
          value === null
            ? { value: 0n }
            : value instanceof Deno.KvU64
            ? { value: value.value }
            : { error: `the counter holds ${String(value)}, not a KvU64` },
        );
      } else {
        this.#finals.push({ error: read.answer ? String(read.answer.error) : "no answer in 10 s" });
      }
      if (replica !== 0) continue;
      for (let index = 0; index < this.#options.keys; index++) {
        await this.#get("final", { replica, kv, index, known: new Map(), deadlineMs: 10_000 });
      }
    }
  }

  /** Closes every client (after `stop` and `finalReads`). */
  close(): void {
    this.#giveUpNow();
    for (const kv of this.#kvs) {
      try {
        kv.close();
      } catch { /* already closed */ }
    }
    this.#kvs.clear();
  }

  /**
   * The exactly-once check of the sums (`kv_findings.ts`), and, under the
   * test-only duplicate fault, whether it caught the duplicates.
   */
  findings(): WorkloadFindings {
    const found = exactlyOnceFindings(this.#tally, this.#finals);
    const notes = [...this.#errors].map(([message, count]) =>
      `atomic writes failed ${count}x: ${message}`
    );
    if (this.#options.duplicateSumEvery === undefined) return { ...found, notes };
    if (found.failures.length > 0) {
      return {
        failures: [],
        figures: found.figures,
        notes: [...notes, `caught, as a negative check must be: ${found.failures.join("; ")}`],
      };
    }
    return {
      failures: [
        "negative check not caught: sums were applied twice and counted once, and the " +
        "exactly-once check found nothing",
      ],
      figures: found.figures,
      notes,
    };
  }

  async #open(url: string): Promise<Deno.Kv | undefined> {
    const called = await this.#call(
      undefined,
      () => Deno.openKv(`${url}/databases/${KV_CHAOS_DATABASE}/connect`),
      10_000,
    );
    if (!called.answer?.ok) return undefined;
    this.#kvs.add(called.answer.value);
    return called.answer.value;
  }

  async #client(client: number): Promise<void> {
    const options = this.#options;
    const replica = client % options.urls.length;
    let kv: Deno.Kv | undefined = undefined;
    while (this.#running && kv === undefined) {
      kv = await this.#open(options.urls[replica]!);
      if (kv === undefined) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const known = new Map<number, Deno.KvEntryMaybe<string>>();
    let sums = 0;
    while (this.#running && kv !== undefined) {
      const roll = options.random.next();
      const index = options.random.int(options.keys);
      if (roll < SUM_SHARE) {
        const twice = options.duplicateSumEvery !== undefined &&
          ++sums % options.duplicateSumEvery === 0;
        await this.#sum(replica, kv, twice);
      } else if (roll < SUM_SHARE + CAS_SHARE && known.has(index)) {
        await this.#cas(client, { replica, kv, index, known });
      } else {
        await this.#get(client, { replica, kv, index, known });
      }
    }
  }

  /**
   * Runs `operation` at `replica` with a deadline; past it, `onLate` is
   * called and the answer is still awaited, until `stop`'s bound.
   */
  async #call<T>(
    replica: number | undefined,
    operation: () => Promise<T>,
    deadlineMs: number,
    onLate?: () => void,
  ): Promise<Called<T>> {
    const cluster = this.#options.cluster;
    const runningAtStart = replica === undefined || cluster.pid(replica) !== undefined;
    const startsAtStart = replica === undefined ? 0 : cluster.starts(replica);
    const settled: Promise<Settled<T>> = operation().then(
      (value) => ({ ok: true, value }),
      (error) => ({ ok: false, error }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined = undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), deadlineMs);
    });
    let answer = await Promise.race([settled, late]);
    clearTimeout(timer);
    const inTime = answer !== undefined;
    if (!inTime) {
      onLate?.();
      answer = await Promise.race([settled, this.#giveUp.then(() => undefined)]);
    }
    const restarts = replica === undefined ? 0 : cluster.starts(replica) - startsAtStart;
    return { answer, inTime, mostReceivers: (runningAtStart ? 1 : 0) + restarts };
  }

  async #sum(replica: number, kv: Deno.Kv, twice: boolean): Promise<void> {
    const commit = () => kv.atomic().sum(COUNTER_KEY, 1n).commit();
    const called = await this.#call(
      replica,
      async () => {
        const result = await commit();
        // The test-only duplicate: applied again, tallied once.
        if (twice && result.ok) await commit();
        return result;
      },
      this.#options.deadlineMs ?? DEFAULT_KV_DEADLINE_MS,
    );
    const tally = this.#tally;
    const acknowledged = called.answer?.ok === true && called.answer.value.ok;
    if (acknowledged) {
      tally.acknowledged++;
      this.#succeeded();
    } else {
      tally.unknown++;
      this.counts.info++;
      if (called.answer !== undefined && !called.answer.ok) this.#noteError(called.answer.error);
    }
    tally.mostApplications += Math.max(acknowledged ? 1 : 0, called.mostReceivers);
    if (called.mostReceivers > 1) tally.resentToRestarted++;
  }

  async #get(
    process: number | string,
    read: {
      readonly replica: number;
      readonly kv: Deno.Kv;
      readonly index: number;
      readonly known: Map<number, Deno.KvEntryMaybe<string>>;
      readonly deadlineMs?: number;
    },
  ): Promise<void> {
    const { replica, kv, index, known } = read;
    const { name, key } = registerKey(index);
    this.recorder.invoke(process, { f: "get", key: name });
    const called = await this.#call(
      replica,
      () => kv.get<string>(key),
      read.deadlineMs ?? this.#options.deadlineMs ?? DEFAULT_KV_DEADLINE_MS,
      () => this.#info(process),
    );
    if (!called.inTime) return;
    if (called.answer?.ok) {
      known.set(index, called.answer.value);
      this.recorder.ok(process, { value: called.answer.value.value });
      this.#succeeded();
    } else {
      known.delete(index);
      this.#info(process);
    }
  }

  async #cas(
    process: number,
    write: {
      readonly replica: number;
      readonly kv: Deno.Kv;
      readonly index: number;
      readonly known: Map<number, Deno.KvEntryMaybe<string>>;
    },
  ): Promise<void> {
    const { replica, kv, index, known } = write;
    const { name, key } = registerKey(index);
    const seen = known.get(index)!;
    known.delete(index);
    const value = `c${process}-${++this.#unique}`;
    this.recorder.invoke(process, { f: "cas", key: name, from: seen.value, to: value });
    const called = await this.#call(
      replica,
      () => kv.atomic().check(seen).set(key, value).commit(),
      this.#options.deadlineMs ?? DEFAULT_KV_DEADLINE_MS,
      () => this.#info(process),
    );
    if (!called.inTime) return;
    const answer = called.answer!;
    if (!answer.ok) {
      this.#noteError(answer.error);
      this.#info(process);
    } else if (answer.value.ok) {
      known.set(index, { key, value, versionstamp: answer.value.versionstamp });
      this.recorder.ok(process);
      this.#succeeded();
    } else if (called.mostReceivers > 1) {
      // A resent copy failed its check: the first copy may have applied.
      this.#info(process);
    } else {
      this.recorder.fail(process);
      this.counts.fail++;
    }
  }

  #info(process: number | string): void {
    this.recorder.info(process);
    this.counts.info++;
  }

  #succeeded(): void {
    this.counts.ok++;
    const second = Math.floor(this.elapsedSeconds());
    while (this.timeline.length <= second) this.timeline.push(0);
    this.timeline[second]!++;
  }

  #noteError(error: unknown): void {
    const message = (error instanceof Error ? error.message : String(error)).slice(0, 200);
    if (!this.#errors.has(message) && this.#errors.size >= 20) return;
    this.#errors.set(message, (this.#errors.get(message) ?? 0) + 1);
  }
}
