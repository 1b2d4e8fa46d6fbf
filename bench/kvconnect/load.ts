/**
 * One load process of `deno task bench:kvconnect` (`../kvconnect.ts`):
 * closed-loop clients, each one request at a time, against the replicas
 * round robin, driven by lines on stdin so the parent times every window:
 *
 * - it opens its clients, then prints `{"ready": true}`;
 * - `go`: the clients start;
 * - `mark`: it prints `{"ops", "errors", "histogram", "firstError"}` (counts
 *   since the start, latencies since the last mark) and starts new latencies;
 * - `stop`: the clients finish their requests in flight, it closes them and exits.
 *
 * Modes (the spec is the first argument, JSON, {@linkcode LoadSpec}):
 * - `kv-atomic`: `kv.atomic().set(["b", tag, i], value).commit()` through one
 *   `Deno.Kv` per client, keys uniform over `keys`;
 * - `kv-check-set`: the same guarded by a check of the versionstamp the
 *   client's last write of that key got (each client owns 16 keys);
 * - `put`: `PUT /kv/{tag}-{i}` (blind, answered at commit), keys uniform;
 * - `put-h2`: the same over cleartext HTTP/2 (prior knowledge), the protocol
 *   Deno's KV client speaks, where `put` speaks HTTP/1.1;
 * - `put-if-match`: `PUT` with `If-Match` of the version its last write got
 *   (`If-None-Match: *` first; each client owns 16 keys), answered after execution;
 * - `watch`: one writer `Deno.Kv` at the first URL sets a key `samples`
 *   times, one watcher at the second watches it, and it prints the delivery
 *   latency of each write after it was sent and after it was acknowledged.
 *
 * With `rate`, the clients pace their operations to offer that many per
 * second together (a client whose answer is late sends its next at once),
 * so that modes can be compared at the same load: the same batching.
 *
 * @module
 */

import { LatencyHistogram } from "./report.ts";

/** What one load process does. */
export interface LoadSpec {
  /** The mode (module documentation). */
  readonly mode: "kv-atomic" | "kv-check-set" | "put" | "put-h2" | "put-if-match" | "watch";
  /** Replica base URLs; client `i` uses `urls[(firstClient + i) % urls.length]`. */
  readonly urls: readonly string[];
  /** Clients in this process. */
  readonly clients: number;
  /** The number of this process's first client among all processes'. */
  readonly firstClient: number;
  /** Keys of the uniform modes. */
  readonly keys: number;
  /** Makes this run's keys its own. */
  readonly tag: string;
  /** Deno KV database name. */
  readonly database: string;
  /** Watch samples (mode `watch`). */
  readonly samples?: number;
  /**
   * Operations per second this process offers, paced evenly over its
   * clients (each still one request at a time); absent: closed loop, as
   * fast as answers come.
   */
  readonly rate?: number;
}

/** Bytes of every value written. */
export const VALUE_BYTES = 64;
/** Keys each client owns in the conditional modes. */
const OWN_KEYS = 16;
/** Per-request timeout of the curl modes. */
const REQUEST_TIMEOUT_MS = 30_000;

const value = new Uint8Array(VALUE_BYTES).fill(0x61);
const text = "a".repeat(VALUE_BYTES);

/** Counts and latencies of the clients of this process. */
class Tally {
  ops = 0;
  errors = 0;
  firstError: string | undefined = undefined;
  histogram = new LatencyHistogram();

  done(startedAt: number): void {
    this.ops++;
    this.histogram.record(performance.now() - startedAt);
  }

  failed(error: unknown): void {
    this.errors++;
    this.firstError ??= String(error instanceof Error ? error.message : error).slice(0, 300);
  }
}

type Client = (tally: Tally) => Promise<void>;

function kvUrl(url: string, database: string): string {
  return `${url}/databases/${database}/connect`;
}

async function kvClients(spec: LoadSpec, kvs: Deno.Kv[]): Promise<Client[]> {
  const clients: Client[] = [];
  for (let i = 0; i < spec.clients; i++) {
    const number = spec.firstClient + i;
    const kv = await Deno.openKv(kvUrl(spec.urls[number % spec.urls.length]!, spec.database));
    kvs.push(kv);
    if (spec.mode === "kv-atomic") {
      clients.push(async (tally) => {
        const key = ["b", spec.tag, Math.floor(Math.random() * spec.keys)];
        const startedAt = performance.now();
        const result = await kv.atomic().set(key, value).commit();
        if (result.ok) tally.done(startedAt);
        else tally.failed("atomic set failed its (absent) checks");
      });
    } else {
      const stamps = new Map<number, string | null>();
      clients.push(async (tally) => {
        const own = Math.floor(Math.random() * OWN_KEYS);
        const key = ["o", spec.tag, number, own];
        const startedAt = performance.now();
        const result = await kv.atomic().check({ key, versionstamp: stamps.get(own) ?? null })
          .set(key, value).commit();
        if (result.ok) {
          stamps.set(own, result.versionstamp);
          tally.done(startedAt);
        } else {
          stamps.delete(own);
          tally.failed("check failed on a key only this client writes");
        }
      });
    }
  }
  return clients;
}

function curlClients(spec: LoadSpec): Client[] {
  return Array.from({ length: spec.clients }, (_, i) => {
    const number = spec.firstClient + i;
    const url = spec.urls[number % spec.urls.length]!;
    if (spec.mode === "put" || spec.mode === "put-h2") {
      // One client (connection pool) each, as each Deno.Kv has its own.
      const client = spec.mode === "put-h2"
        ? Deno.createHttpClient({ http1: false, http2: true })
        : undefined;
      return async (tally: Tally) => {
        const key = `${spec.tag}-${Math.floor(Math.random() * spec.keys)}`;
        const startedAt = performance.now();
        const response = await fetch(`${url}/kv/${key}`, {
          method: "PUT",
          body: text,
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          ...(client === undefined ? {} : { client }),
        });
        await response.body?.cancel();
        if (response.ok) tally.done(startedAt);
        else tally.failed(`PUT answered ${response.status}`);
      };
    }
    const versions = new Map<number, string>();
    return async (tally: Tally) => {
      const own = Math.floor(Math.random() * OWN_KEYS);
      const key = `${spec.tag}-o${number}-${own}`;
      const version = versions.get(own);
      const startedAt = performance.now();
      const response = await fetch(`${url}/kv/${key}`, {
        method: "PUT",
        body: text,
        headers: version === undefined ? { "if-none-match": "*" } : { "if-match": `"${version}"` },
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok && typeof body.version === "string") {
        versions.set(own, body.version);
        tally.done(startedAt);
      } else {
        versions.delete(own);
        tally.failed(`conditional PUT answered ${response.status}`);
      }
    };
  });
}

/** Watch delivery: prints `{"sent": [ms...], "acknowledged": [ms...]}`. */
async function watchLatency(spec: LoadSpec): Promise<void> {
  const writer = await Deno.openKv(kvUrl(spec.urls[0]!, spec.database));
  const watcher = await Deno.openKv(kvUrl(spec.urls[1 % spec.urls.length]!, spec.database));
  const key = ["w", spec.tag];
  const sent: number[] = [];
  const acknowledged: number[] = [];
  const reader = watcher.watch<[number]>([key]).getReader();
  try {
    // The first frame gives the current state.
    await reader.read();
    for (let sample = 0; sample < (spec.samples ?? 100); sample++) {
      const startedAt = performance.now();
      let ackedAt: number | undefined = undefined;
      const write = writer.set(key, sample).then(() => ackedAt = performance.now());
      for (;;) {
        const frame = await reader.read();
        if (frame.done) throw new Error("The watch ended");
        if (frame.value[0].value === sample) break;
      }
      const seenAt = performance.now();
      await write;
      sent.push(seenAt - startedAt);
      acknowledged.push(seenAt - ackedAt!);
    }
  } finally {
    await reader.cancel();
    writer.close();
    watcher.close();
  }
  console.log(JSON.stringify({ sent, acknowledged }));
}

async function* lines(): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    for (let end = buffered.indexOf("\n"); end >= 0; end = buffered.indexOf("\n")) {
      yield buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
    }
  }
}

async function main(spec: LoadSpec): Promise<void> {
  if (Deno.env.get("DENO_KV_ACCESS_TOKEN") === undefined) {
    Deno.env.set("DENO_KV_ACCESS_TOKEN", "bench");
  }
  if (spec.mode === "watch") return await watchLatency(spec);
  const kvs: Deno.Kv[] = [];
  const clients = spec.mode.startsWith("kv-") ? await kvClients(spec, kvs) : curlClients(spec);
  const tally = new Tally();
  let running = false;
  let loops: Promise<void>[] = [];
  console.log(JSON.stringify({ ready: true }));
  for await (const line of lines()) {
    if (line === "go" && !running) {
      running = true;
      const startedAt = performance.now();
      // With a rate, client i's k-th operation is due at start + (i + k·n) / rate.
      const spacingMs = spec.rate === undefined ? 0 : 1000 / spec.rate;
      loops = clients.map(async (client, index) => {
        for (let sent = 0; running; sent++) {
          if (spacingMs > 0) {
            const due = startedAt + (index + sent * clients.length) * spacingMs;
            const wait = due - performance.now();
            if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
            if (!running) break;
          }
          try {
            await client(tally);
          } catch (error) {
            tally.failed(error);
          }
        }
      });
    } else if (line === "mark") {
      console.log(JSON.stringify({
        ops: tally.ops,
        errors: tally.errors,
        firstError: tally.firstError ?? null,
        histogram: tally.histogram.toJSON(),
      }));
      tally.histogram = new LatencyHistogram();
    } else if (line === "stop") {
      break;
    }
  }
  running = false;
  await Promise.all(loops);
  for (const kv of kvs) kv.close();
}

if (import.meta.main) {
  await main(JSON.parse(Deno.args[0]!) as LoadSpec);
}
