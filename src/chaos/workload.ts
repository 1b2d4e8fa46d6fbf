/**
 * The chaos workload: concurrent clients issuing get, put and compare-and-set
 * on a small key set against real replicas, one request per client at a time,
 * with unique written values (etcd robustness-test style), recording a history
 * for the linearizability checker.
 *
 * How outcomes are recorded:
 * - 200 / 204 / 404: `ok` (a 404 read reads absence).
 * - 412 on a compare-and-set: `fail` (the comparison failed).
 * - a refused connection or 503: the request never reached consensus, so it is
 *   withdrawn from the history (`cancel`), and the client backs off a little.
 *   A refusal proves that only because connections are never reused: on a
 *   reused keep-alive connection, Deno's HTTP client retries a request whose
 *   server died after receiving it, and reports the retry's "Connection
 *   refused" (see tests/chaos/http_client_test.ts).
 * - 504, a timeout, or a connection lost after sending: `info` (indeterminate).
 *
 * @module
 */

import { HistoryRecorder } from "../check/mod.ts";
import { failedToConnect } from "../client/client.ts";
import type { SeededRandom } from "../runtime/random.ts";

/** Settings of a workload. */
export interface WorkloadOptions {
  /** Replica base URLs. */
  readonly urls: readonly string[];
  /** Concurrent clients. */
  readonly clients: number;
  /** Keys the clients share. */
  readonly keys: number;
  /** Per-request timeout; longer is indeterminate. */
  readonly timeoutMs: number;
  /** Randomness (seeded, so a run's choices repeat). */
  readonly random: SeededRandom;
  /** The replica each client talks to (default: client number modulo replicas). */
  readonly assign?: (client: number) => number;
  /**
   * Read-only clients per replica besides `clients` (default 0), numbered
   * from `clients` on: they GET a random key, pause `readerPauseMs`, and so
   * on, so that the reads a replica serves alone (under a lease) are seen
   * even while its read-write clients wait on writes it cannot commit.
   */
  readonly readersPerReplica?: number;
  /** The readers' pause between reads (default 20 ms: bounds the history's size). */
  readonly readerPauseMs?: number;
  /**
   * The readers' per-request timeout (default 1000 ms): a read that cannot be
   * served locally and waits on a quorum it cannot reach stops being a
   * reader's only request soon (a timed-out read is indeterminate, which
   * costs the checker nothing: a read changes no state).
   */
  readonly readerTimeoutMs?: number;
}

type Outcome = "ok" | "fail" | "info" | "cancelled";

interface Known {
  readonly value: string | null;
  readonly version: string | null;
}

/** Outcome counts. */
export interface WorkloadCounts {
  /** Operations that completed (ok or a definite fail). */
  ok: number;
  /** Definite failures (not applied, or a failed comparison). */
  fail: number;
  /** Indeterminate operations. */
  info: number;
  /** Requests that never reached consensus (refused connection, 503). */
  cancelled: number;
}

/** What a scenario's own workload reports once the run is over ({@linkcode ChaosWorkload.findings}). */
export interface WorkloadFindings {
  /** Failed checks (the run fails if any). */
  readonly failures: readonly string[];
  /** Measured figures, by name. */
  readonly figures: Readonly<Record<string, number>>;
  /** Lines for the run's events (what a negative check caught, say). */
  readonly notes?: readonly string[];
}

/**
 * What the chaos runner (`chaos.ts`) drives: the curl clients of
 * {@linkcode Workload}, or a scenario's own (`kv_workload.ts`: Deno KV
 * clients).
 */
export interface ChaosWorkload {
  /** The history of the operations whose linearizability the runner checks. */
  readonly recorder: HistoryRecorder;
  /** Outcome counts. */
  readonly counts: WorkloadCounts;
  /** Why operations were withdrawn, with counts (for failure reports). */
  readonly cancelReasons: ReadonlyMap<string, number>;
  /** Successful operations per second since the start. */
  readonly timeline: readonly number[];
  /** Seconds since the workload was created. */
  elapsedSeconds(): number;
  /** The replica (index into the members) client `process` talks to, if it is a client. */
  replicaOf(process: number | string): number | undefined;
  /** Starts every client. */
  start(): void;
  /** Stops issuing new operations and waits (boundedly) for those in flight. */
  stop(): Promise<void>;
  /**
   * Reads every key once more through consensus after convergence, so that
   * the checker verifies no acknowledged write was lost; `urls` are the
   * members' base URLs.
   */
  finalReads(urls: readonly string[]): Promise<void>;
  /** Releases the clients (after `stop` and `finalReads`). */
  close(): void;
  /** The workload's own checks, once `finalReads` is done. */
  findings?(): WorkloadFindings;
}

/** Runs clients until stopped; records the history and a per-second timeline. */
export class Workload implements ChaosWorkload {
  readonly recorder: HistoryRecorder;
  readonly counts: WorkloadCounts = { ok: 0, fail: 0, info: 0, cancelled: 0 };
  /** Why operations were withdrawn, with counts (for failure reports). */
  readonly cancelReasons = new Map<string, number>();
  /** Successful operations per second since the start. */
  readonly timeline: number[] = [];
  readonly #options: WorkloadOptions;
  readonly #started = performance.now();
  /** No connection reuse, so that a refused connection means nothing was sent. */
  readonly #http = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  #running = false;
  #loops: Promise<void>[] = [];
  #unique = 0;

  /** Creates a workload; nothing runs until `start`. */
  constructor(options: WorkloadOptions) {
    this.#options = options;
    this.recorder = new HistoryRecorder({
      now: () => Math.round(performance.now() - this.#started),
    });
  }

  /** Seconds since the workload was created. */
  elapsedSeconds(): number {
    return (performance.now() - this.#started) / 1000;
  }

  /**
   * The replica (index into `urls`) client `process` talks to, or undefined
   * for a process that is not one of this workload's clients.
   */
  replicaOf(process: number | string): number | undefined {
    const options = this.#options;
    if (typeof process !== "number") return undefined;
    if (process < options.clients) {
      return options.assign?.(process) ?? process % options.urls.length;
    }
    const reader = process - options.clients;
    if (reader >= (options.readersPerReplica ?? 0) * options.urls.length) return undefined;
    return reader % options.urls.length;
  }

  /** Starts every client. */
  start(): void {
    this.#running = true;
    const options = this.#options;
    const readers = (options.readersPerReplica ?? 0) * options.urls.length;
    this.#loops = [
      ...Array.from({ length: options.clients }, (_, client) => this.#client(client)),
      ...Array.from({ length: readers }, (_, reader) => this.#reader(options.clients + reader)),
    ];
  }

  /** Stops issuing new operations and waits for those in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#loops);
  }

  /** Releases the HTTP client (after `stop` and `finalReads`). */
  close(): void {
    this.#http.close();
  }

  /**
   * Reads every key once more through consensus, as one more client, through
   * the first of `urls`, so the checker verifies that no acknowledged write
   * was lost.
   */
  async finalReads(urls: readonly string[]): Promise<void> {
    const url = urls[0]!;
    const process = `final`;
    for (let key = 0; key < this.#options.keys; key++) {
      await this.#get(process, { url, key: `chaos-${key}`, known: new Map() });
    }
  }

  async #reader(process: number): Promise<void> {
    const options = this.#options;
    const url = options.urls[this.replicaOf(process)!]!;
    const known = new Map<string, Known>();
    while (this.#running) {
      const key = `chaos-${options.random.int(options.keys)}`;
      const outcome = await this.#get(process, {
        url,
        key,
        known,
        timeoutMs: options.readerTimeoutMs ?? 1000,
      });
      const pause = outcome === "cancelled" ? 100 : options.readerPauseMs ?? 20;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }

  async #client(client: number): Promise<void> {
    const known = new Map<string, Known>();
    const options = this.#options;
    const replica = this.replicaOf(client)!;
    while (this.#running) {
      const url = options.urls[replica]!;
      const key = `chaos-${options.random.int(options.keys)}`;
      const roll = options.random.next();
      let outcome: Outcome;
      if (roll < 0.4) {
        outcome = await this.#get(client, { url, key, known });
      } else if (roll < 0.8) {
        outcome = await this.#put(client, url, key, known);
      } else {
        outcome = await this.#cas(client, url, key, known);
      }
      if (outcome === "cancelled") {
        // The replica is down or has no quorum: wait a little instead of spinning.
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /** Completes `process`'s operation with `outcome` in the history and the counts. */
  #complete(process: number | string, outcome: Outcome, value?: string | null): void {
    if (outcome === "cancelled") {
      this.recorder.cancel(process);
      this.counts.cancelled++;
      return;
    }
    if (outcome === "ok") {
      this.recorder.ok(process, value === undefined ? {} : { value });
    } else if (outcome === "fail") {
      this.recorder.fail(process);
    } else {
      this.recorder.info(process);
    }
    this.counts[outcome]++;
    if (outcome !== "ok") return;
    const second = Math.floor(this.elapsedSeconds());
    while (this.timeline.length <= second) this.timeline.push(0);
    this.timeline[second]!++;
  }

  async #request(
    url: string,
    init: RequestInit & { readonly timeoutMs?: number },
  ): Promise<Response | "refused" | "unknown"> {
    const { timeoutMs, ...request } = init;
    try {
      return await fetch(url, {
        ...request,
        client: this.#http,
        signal: AbortSignal.timeout(timeoutMs ?? this.#options.timeoutMs),
      });
    } catch (error) {
      // Nothing was sent if the connection never opened; anything else may have arrived.
      if (!failedToConnect(error)) return "unknown";
      const reasons: string[] = [];
      for (let cause: unknown = error, depth = 0; cause instanceof Error && depth < 4; depth++) {
        reasons.push(cause.message.replace(/\d+/g, "N"));
        cause = cause.cause;
      }
      const reason = reasons.join(" <- ").slice(0, 300);
      this.cancelReasons.set(reason, (this.cancelReasons.get(reason) ?? 0) + 1);
      return "refused";
    }
  }

  async #get(
    process: number | string,
    read: {
      readonly url: string;
      readonly key: string;
      readonly known: Map<string, Known>;
      readonly timeoutMs?: number;
    },
  ): Promise<Outcome> {
    const { url, key, known } = read;
    this.recorder.invoke(process, { f: "get", key });
    const response = await this.#request(
      `${url}/kv/${key}`,
      read.timeoutMs === undefined ? {} : { timeoutMs: read.timeoutMs },
    );
    if (response === "refused") {
      this.#complete(process, "cancelled");
      return "cancelled";
    }
    if (response !== "unknown" && (response.status === 200 || response.status === 404)) {
      const value = response.status === 200 ? await response.text() : null;
      if (value === null) await response.body?.cancel();
      known.set(key, {
        value,
        version: value === null ? null : response.headers.get("kv-version"),
      });
      this.#complete(process, "ok", value);
      return "ok";
    }
    if (response !== "unknown") await response.body?.cancel();
    const outcome = response !== "unknown" && response.status === 503 ? "cancelled" : "info";
    this.#complete(process, outcome);
    return outcome;
  }

  async #put(
    process: number,
    url: string,
    key: string,
    known: Map<string, Known>,
  ): Promise<Outcome> {
    const value = `c${process}-${++this.#unique}`;
    this.recorder.invoke(process, { f: "put", key, value });
    return await this.#write(process, { url, key, value, known, headers: {}, compare: false });
  }

  async #cas(
    process: number,
    url: string,
    key: string,
    known: Map<string, Known>,
  ): Promise<Outcome> {
    const expected = known.get(key) ?? { value: null, version: null };
    const value = `c${process}-${++this.#unique}`;
    this.recorder.invoke(process, { f: "cas", key, from: expected.value, to: value });
    const headers: Record<string, string> = expected.version === null
      ? { "if-none-match": "*" }
      : { "if-match": `"${expected.version}"` };
    return await this.#write(process, { url, key, value, known, headers, compare: true });
  }

  /**
   * Sends a put (`compare` false) or compare-and-set and records its outcome.
   * A cas that never ran is recorded as indeterminate, never as a failed
   * comparison; a put that never ran is a plain failure.
   */
  async #write(
    process: number,
    write: {
      url: string;
      key: string;
      value: string;
      known: Map<string, Known>;
      headers: Record<string, string>;
      compare: boolean;
    },
  ): Promise<Outcome> {
    const { url, key, value, known, headers, compare } = write;
    const response = await this.#request(`${url}/kv/${key}`, {
      method: "PUT",
      body: value,
      headers,
    });
    known.delete(key);
    if (response === "refused") {
      this.#complete(process, "cancelled");
      return "cancelled";
    }
    if (response === "unknown") {
      this.#complete(process, "info");
      return "info";
    }
    const body = await response.json().catch(() => ({}));
    let outcome: Outcome;
    if (response.status === 200) {
      known.set(key, { value, version: body.version });
      outcome = "ok";
    } else if (response.status === 503) {
      const reason = `503 ${String(body.error)}`;
      this.cancelReasons.set(reason, (this.cancelReasons.get(reason) ?? 0) + 1);
      outcome = "cancelled";
    } else if (compare && response.status === 412) {
      outcome = "fail";
    } else {
      outcome = "info";
    }
    this.#complete(process, outcome);
    return outcome;
  }
}
