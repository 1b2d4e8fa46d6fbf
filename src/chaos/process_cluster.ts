/**
 * Real replica processes for tests: each spawned with the same least-privilege
 * command line `deno task start` uses, on free loopback ports, with its Deno KV
 * file under a temporary directory. Replicas can be killed (any signal) and
 * restarted on the same data.
 *
 * @module
 */

import { replicaCommand } from "../cli/start.ts";
import { cacheReplicaModules } from "../cli/start_tls.ts";
import { clusterCaOnlyEnvironment } from "../net/tls.ts";

/** A running cluster of replica processes. */
export interface ProcessCluster {
  /** Base URLs by replica id (then the spare slots', if any). */
  readonly urls: readonly string[];
  /** The cluster secret. */
  readonly secret: string;
  /** The temporary directory holding config and data. */
  readonly root: string;
  /** With TLS: the cluster CA's certificate file (and each slot's files are `<root>/tls/r<id>.*.pem`). */
  readonly ca?: string;
  /** `fetch` for this cluster's URLs: trusting its CA when it runs TLS. */
  readonly fetch: typeof fetch;
  /** Whether replica `id` is running. */
  running(id: number): boolean;
  /** The process id of replica `id`, while it runs. */
  pid(id: number): number | undefined;
  /**
   * How many processes replica `id` has had so far (every start, restart and
   * join counts one): a client can tell how many incarnations of a replica
   * may have received a request it kept resending.
   */
  starts(id: number): number;
  /** Sends `signal` to replica `id` (SIGKILL and SIGTERM wait for it to exit). */
  kill(id: number, signal?: Deno.Signal): Promise<void>;
  /** Starts replica `id` if it is not running, without waiting for it. */
  start(id: number): Promise<void>;
  /** Starts replica `id` again on its data and waits until it answers `/livez`. */
  restart(id: number): Promise<void>;
  /** Deletes replica `id`'s data directory (it must be stopped): its disk is lost. */
  wipe(id: number): Promise<void>;
  /**
   * Starts replica `id` (stopped) as a joiner (`--join via`), on its data
   * directory (empty after `wipe`), as `deno task start --join` does, as
   * member `memberId` (default `id`: a replacement; a member added at this
   * slot's URL has a new id), without waiting for it.
   */
  join(id: number, via: string, memberId?: number): Promise<void>;
  /** Recent output of replica `id`, for failure reports. */
  output(id: number): string;
  /** Stops every replica and removes the directory. */
  stop(): Promise<void>;
}

/**
 * Appends everything `child` prints (stdout and stderr) to the file `path`,
 * and keeps the last `keep` chunks of it in `tail`, for failure reports.
 */
export async function captureOutput(
  child: Deno.ChildProcess,
  path: string,
  tail: string[],
  keep: number,
): Promise<void> {
  const file = await Deno.open(path, { append: true, create: true, write: true });
  const encoder = new TextEncoder();
  let open = 2;
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      tail.push(chunk);
      if (tail.length > keep) tail.splice(0, tail.length - keep);
      await file.write(encoder.encode(chunk));
    }
    if (--open === 0) file.close();
  };
  collect(child.stdout);
  collect(child.stderr);
}

/**
 * The ports tests may listen on: `EPAXOS_TEST_PORT_RANGE` (`FIRST-LAST`,
 * for a machine shared with other work), else 20000-32767. The default stays
 * below Linux's ephemeral range (32768-60999): a port found free there can be
 * taken, before the replica binds it, as the local end of any outgoing
 * connection on the machine (CI saw `AddrInUse` on port 44178 that way).
 */
export function testPortRange(): { readonly first: number; readonly last: number } {
  const match = /^(\d+)-(\d+)$/.exec(Deno.env.get("EPAXOS_TEST_PORT_RANGE") ?? "");
  if (match === null) return { first: 20_000, last: 32_767 };
  return { first: Number(match[1]), last: Number(match[2]) };
}

/** Finds `count` consecutive free TCP ports on 127.0.0.1, in {@linkcode testPortRange}. */
export function freePorts(count: number): number[] {
  const { first, last } = testPortRange();
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = first + Math.floor(Math.random() * Math.max(1, last - first + 2 - count));
    const listeners: Deno.Listener[] = [];
    try {
      for (let i = 0; i < count; i++) {
        listeners.push(Deno.listen({ hostname: "127.0.0.1", port: base + i }));
      }
      return listeners.map((_, i) => base + i);
    } catch {
      // Taken: try another range.
    } finally {
      for (const listener of listeners) listener.close();
    }
  }
  throw new Error(`No ${count} consecutive free ports found`);
}

/** Waits until `condition` resolves true, polling every `intervalMs`, or throws after `deadlineMs`. */
export async function waitUntil(
  condition: () => Promise<boolean> | boolean,
  options: { readonly deadlineMs: number; readonly what: string; readonly intervalMs?: number },
): Promise<void> {
  const deadline = Date.now() + options.deadlineMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${options.deadlineMs} ms waiting for ${options.what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 50));
  }
}

/** GETs `url` and reports whether it answered 200 (false on any failure). */
export async function answers(url: string, fetcher: typeof fetch = fetch): Promise<boolean> {
  try {
    const response = await fetcher(url, { signal: AbortSignal.timeout(1000) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * The `/status` of the replica at base URL `url`, as `T` (the caller names
 * the fields it reads), or `undefined` if it did not answer 200 within
 * `timeoutMs`.
 */
export async function replicaStatus<T = Record<string, unknown>>(
  url: string,
  timeoutMs = 3000,
  fetcher: typeof fetch = fetch,
): Promise<T | undefined> {
  try {
    const response = await fetcher(`${url}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    return (await response.json()) as T;
  } catch {
    return undefined;
  }
}

/** Starts `replicas` replica processes and waits until every one is ready. */
export async function startProcessCluster(
  replicas = 3,
  options: {
    readonly extraArgs?: readonly string[];
    /** Flags for replica `id` alone, after `extraArgs` (a fault one replica runs with). */
    readonly extraArgsFor?: (id: number) => readonly string[];
    readonly env?: Record<string, string>;
    /** Files every replica may read besides its config and data (e.g. a WAN matrix). */
    readonly readFiles?: readonly string[];
    /** Directory to create the cluster's directory in (default: the system's temp directory). */
    readonly parentDir?: string;
    /** Flags for `deno run` itself (such as `--cpu-prof`), placed before the script. */
    readonly denoFlags?: readonly string[];
    /**
     * Slots beyond `replicas` with a port and URL but no process and no place
     * in the cluster file: members added later start there with `join`.
     */
    readonly spares?: number;
    /** The cluster file's `leases` (see `src/server/config.ts`); absent: none. */
    readonly leases?: unknown;
    /**
     * TLS: https URLs, a development CA and a certificate per slot under
     * `<root>/tls` (`certs.ts`), replicas trusting that CA alone.
     */
    readonly tls?: boolean;
    /** A client token the client routes require (the cluster file's `clientToken`, by environment). */
    readonly clientToken?: string;
  } = {},
): Promise<ProcessCluster> {
  // Under a given parent, build the name ourselves: makeTempDir returns the
  // resolved path, and the parent may be a link to a place (such as tmpfs
  // under /dev) that Deno's scoped permissions only allow through the link.
  let root: string;
  if (options.parentDir === undefined) {
    root = await Deno.makeTempDir({ prefix: "epaxos-test-" });
  } else {
    root = `${options.parentDir}/epaxos-test-${crypto.randomUUID().slice(0, 12)}`;
    await Deno.mkdir(root, { recursive: true });
  }
  const slots = replicas + (options.spares ?? 0);
  const ports = freePorts(slots);
  const urls = ports.map((port) => `${options.tls ? "https" : "http"}://127.0.0.1:${port}`);
  const secret = crypto.randomUUID();
  const configPath = `${root}/cluster.json`;
  const tls = options.tls ? await clusterTls(`${root}/tls`, urls) : undefined;
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({
      replicas: urls.slice(0, replicas).map((url, id) => ({
        id,
        name: `r${id}`,
        url,
        ...(tls === undefined ? {} : { tls: tls.files[id] }),
      })),
      secret: { env: "EPAXOS_CLUSTER_SECRET" },
      ...(options.leases === undefined ? {} : { leases: options.leases }),
      ...(tls === undefined ? {} : { tls: { ca: tls.ca } }),
      ...(options.clientToken === undefined ? {} : { clientToken: { env: "EPAXOS_CLIENT_TOKEN" } }),
    }),
  );
  const fetcher = tls === undefined ? fetch : tls.fetch;
  const processes: (Deno.ChildProcess | undefined)[] = new Array(slots);
  const logs: string[][] = Array.from({ length: slots }, () => []);
  const starts: number[] = new Array(slots).fill(0);
  const spawn = async (id: number, via?: string, memberId = id) => {
    const dataDir = `${root}/replica-${id}`;
    await Deno.mkdir(dataDir, { recursive: true });
    const args = replicaCommand({
      configPath,
      id,
      dataDir,
      listen: `127.0.0.1:${ports[id]}`,
      secrets: [
        { env: "EPAXOS_CLUSTER_SECRET" },
        ...(options.clientToken === undefined ? [] : [{ env: "EPAXOS_CLIENT_TOKEN" }]),
      ],
      ...(options.readFiles === undefined ? {} : { readFiles: options.readFiles }),
      ...(tls === undefined ? {} : { tls: { ...tls.files[id]!, ca: tls.ca } }),
    });
    if (via !== undefined) {
      // A joiner: the configuration comes from `via`, not the cluster file.
      args.splice(args.indexOf("--config"), 2, "--join", via, "--url", urls[id]!);
      args[args.indexOf("--id") + 1] = String(memberId);
    }
    args.splice(
      args.indexOf("--id"),
      0,
      ...(options.extraArgs ?? []),
      ...(options.extraArgsFor?.(id) ?? []),
    );
    args.splice(1, 0, ...(options.denoFlags ?? []));
    const env = {
      EPAXOS_CLUSTER_SECRET: secret,
      ...(options.clientToken === undefined ? {} : { EPAXOS_CLIENT_TOKEN: options.clientToken }),
      ...options.env,
    };
    const child = new Deno.Command(Deno.execPath(), {
      args,
      // With TLS, as `deno task start` runs them: the cluster CA the only root.
      ...(tls === undefined
        ? { env }
        : { env: clusterCaOnlyEnvironment({ ...Deno.env.toObject(), ...env }), clearEnv: true }),
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    processes[id] = child;
    starts[id]!++;
    // The whole output goes to a file beside the data (kept for failure
    // reports); the tail stays in memory.
    await captureOutput(child, `${root}/replica-${id}.log`, logs[id]!, 200);
  };
  if (tls !== undefined) {
    await cacheReplicaModules(
      new URL("../cli/replica.ts", import.meta.url).pathname,
      new URL("../../deno.json", import.meta.url).pathname,
    );
  }
  for (let id = 0; id < replicas; id++) await spawn(id);
  const cluster: ProcessCluster = {
    urls,
    secret,
    root,
    ...(tls === undefined ? {} : { ca: tls.ca }),
    fetch: fetcher,
    running: (id) => processes[id] !== undefined,
    pid: (id) => processes[id]?.pid,
    starts: (id) => starts[id] ?? 0,
    async kill(id, signal = "SIGKILL") {
      const child = processes[id];
      if (child === undefined) return;
      try {
        child.kill(signal);
      } catch { /* already exited */ }
      if (signal === "SIGKILL" || signal === "SIGTERM") {
        await child.status;
        processes[id] = undefined;
      }
    },
    async start(id) {
      if (processes[id] === undefined) await spawn(id);
    },
    async wipe(id) {
      if (processes[id] !== undefined) throw new Error(`replica ${id} is running`);
      await Deno.remove(`${root}/replica-${id}`, { recursive: true }).catch(() => {});
    },
    async join(id, via, memberId) {
      if (processes[id] === undefined) await spawn(id, via, memberId);
    },
    async restart(id) {
      await cluster.kill(id);
      await spawn(id);
      await waitUntil(() => answers(`${urls[id]}/livez`, fetcher), {
        deadlineMs: 30_000,
        what: `replica ${id} to restart`,
      });
    },
    output: (id) => logs[id]!.join(""),
    async stop() {
      await Promise.all(processes.map((_, id) => cluster.kill(id)));
      tls?.client.close();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
  try {
    await waitUntil(
      async () =>
        (await Promise.all(
          urls.slice(0, replicas).map((url) => answers(`${url}/readyz`, fetcher)),
        ))
          .every(Boolean),
      { deadlineMs: 60_000, what: "every replica to be ready" },
    );
  } catch (error) {
    const outputs = urls.map((_, id) => `--- replica ${id}\n${cluster.output(id)}`).join("\n");
    await cluster.stop();
    throw new Error(`${(error as Error).message}\n${outputs}`);
  }
  return cluster;
}

/**
 * A test cluster's TLS: a development CA and a certificate per slot (`r<id>`)
 * in `dir`, and a `fetch` that trusts the CA.
 */
async function clusterTls(dir: string, urls: readonly string[]) {
  const { ensureClusterCertificates } = await import("../cli/certs.ts");
  const names = urls.map((url, id) => ({ name: `r${id}`, url }));
  const made = await ensureClusterCertificates(dir, names);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(made.ca)] });
  const tlsFetch: typeof fetch = (input, init) => fetch(input, { ...init, client });
  return {
    ca: made.ca,
    files: names.map(({ name }) => made.replicas.get(name)!),
    client,
    fetch: tlsFetch,
  };
}
