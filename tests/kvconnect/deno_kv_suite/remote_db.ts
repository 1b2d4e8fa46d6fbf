/**
 * The backend Deno's own KV unit tests (`kv_test.ts` beside this file) run
 * against here, in place of the `:memory:` SQLite database their `dbTest`
 * opens: a real local cluster of three replica processes, started once for
 * the file (on the first test that needs it) and stopped after the last.
 * Every `openKv` is a fresh database, each through the next replica in turn,
 * so consecutive tests talk to different replicas.
 *
 * @module
 */

import { type ProcessCluster, startProcessCluster } from "../../../src/chaos/process_cluster.ts";

/** Replicas of the suite's cluster. */
export const SUITE_REPLICAS = 3;

/**
 * Deno's tests that cannot apply to a remote backend, with the reason
 * (`README.md` beside this file lists them too; `readme_test.ts` keeps the
 * two in step).
 */
export const SKIPPED_TESTS: ReadonlyMap<string, string> = new Map([
  [
    "openKv :memory: no permissions",
    "opens Deno's local SQLite backend (`:memory:` without permissions), no remote database",
  ],
  [
    "openKv invalid filenames",
    'checks Deno\'s local file-name rules (`Deno.openKv("")`, `":foo"`), no remote database',
  ],
  [
    "basic listenQueue and enqueue",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue string",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue number",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue bigint",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue boolean",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue null",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue undefined",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue Date",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue Uint8Array",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue ArrayBuffer",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue array",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue object",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue nested array",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "listenQueue and enqueue nested object",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue mixed types",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue delay",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue delay with atomic",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue delay and now",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue large delay",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers); its valid enqueue must succeed",
  ],
  [
    "listenQueue with async callback",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue retries",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue retries with backoffSchedule",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "multiple listenQueues",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "enqueue with atomic",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "enqueue with atomic nonce",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue persistence with inflight messages",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers); and it reopens a SQLite file",
  ],
  [
    "queue persistence with delay messages",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers); and it reopens a SQLite file",
  ],
  [
    "different kv instances for enqueue and queueListen",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "queue graceful close",
    "queues: Deno's client does not support enqueue/listenQueue over KV Connect (`Enqueue operations are not supported in KV Connect`; its listenQueue never delivers)",
  ],
  [
    "racy open",
    "races three `Deno.openKv(file)` of one new SQLite file (SQLite's file locking); a remote open is a stateless metadata exchange",
  ],
  [
    "remote backend",
    "needs Deno's own test server (`localhost:4545/kv_remote_authorize`), a fake KV Connect endpoint that drops writes",
  ],
  [
    "remote backend invalid format",
    "needs Deno's own test server answering malformed metadata (`localhost:4545`); against nothing it would pass without testing anything",
  ],
  [
    "remote backend invalid version",
    "needs Deno's own test server answering metadata version 1000 (`localhost:4545`)",
  ],
]);

/** Why test `name` is skipped, or `undefined` if it runs. */
export function skipReason(name: string): string | undefined {
  const skip = SKIPPED_TESTS.get(name);
  return skip;
}

/** Whether test `name` is skipped (for `Deno.test`'s `ignore`). */
export function skipped(name: string): boolean {
  return skipReason(name) !== undefined;
}

let cluster: Promise<ProcessCluster> | undefined;
let opened = 0;
let freshDatabases = 0;
const fileDatabases = new Map<string, string>();

/** The suite's cluster, started by the first call. */
export function suiteCluster(): Promise<ProcessCluster> {
  cluster ??= startProcessCluster(SUITE_REPLICAS);
  return cluster;
}

/** Stops the suite's cluster, if a test started it (`Deno.test.afterAll`). */
export async function stopSuiteCluster(): Promise<void> {
  const started = cluster;
  cluster = undefined;
  if (started === undefined) return;
  await (await started).stop();
}

/**
 * The database name a test's `Deno.openKv(path)` stands for: `:memory:` is a
 * fresh database each time, as it is a fresh SQLite database in Deno's
 * tests; a file path is the same database each time it is opened (Deno's
 * tests reopen a file to see what it kept).
 */
export function databaseFor(path: string): string {
  if (path === ":memory:") return `memory-${++freshDatabases}`;
  let name = fileDatabases.get(path);
  if (name === undefined) {
    name = `file-${fileDatabases.size + 1}`;
    fileDatabases.set(path, name);
  }
  return name;
}

/** The base URL of the next replica in turn. */
async function nextReplica(): Promise<string> {
  const { urls } = await suiteCluster();
  return urls[opened++ % SUITE_REPLICAS]!;
}

/**
 * `Deno.openKv(path)` of Deno's tests, on the suite's cluster:
 * `Deno.openKv("http://127.0.0.1:PORT/databases/NAME/connect")` with NAME
 * from {@linkcode databaseFor}, through the next replica in turn.
 */
export async function openKv(path: string): Promise<Deno.Kv> {
  return Deno.openKv(`${await nextReplica()}/databases/${databaseFor(path)}/connect`);
}

/** `path` (starting with `/`) on the next replica in turn: a URL of the suite's cluster. */
export async function suiteUrl(path: string): Promise<string> {
  return `${await nextReplica()}${path}`;
}
