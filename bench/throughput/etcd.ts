/**
 * etcd for `deno task bench:throughput`: finding or installing it (Debian
 * package `etcd-server`), a three-member cluster on loopback with its data in
 * a temporary directory (default durability: every commit is fsync'd), and
 * requests through its gRPC gateway.
 *
 * @module
 */

import { captureOutput, freePorts, waitUntil } from "../../src/chaos/process_cluster.ts";
import { aptInstall, findExecutable, isRoot, lastLines, runCommand, track } from "./processes.ts";

/** The etcd binary, its version and the gateway prefix it serves. */
export interface EtcdInstall {
  /** Path of the etcd binary. */
  readonly path: string;
  /** `3.4.23`. */
  readonly version: string;
}

/** etcd's version from `etcd --version` output (`etcd Version: 3.4.23`). */
export function parseEtcdVersion(output: string): string | undefined {
  return /etcd Version:\s*(\d+\.\d+\.\d+\S*)/.exec(output)?.[1];
}

/**
 * The gRPC gateway prefix of an etcd version: `/v3` from 3.4 on (3.4 still
 * serves `/v3beta` too), `/v3beta` in 3.3, `/v3alpha` before.
 */
export function gatewayPrefix(version: string): string {
  const match = /^(\d+)\.(\d+)/.exec(version);
  if (match === null) return "/v3";
  const [major, minor] = [Number(match[1]), Number(match[2])];
  if (major > 3 || (major === 3 && minor >= 4)) return "/v3";
  if (major === 3 && minor === 3) return "/v3beta";
  return "/v3alpha";
}

async function listening(port: number): Promise<boolean> {
  try {
    const connection = await Deno.connect({ hostname: "127.0.0.1", port });
    connection.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds etcd, installing `etcd-server` when it is missing and this runs as
 * root. Returns the install, or a reason to skip etcd.
 *
 * Debian's package may start its own etcd on 127.0.0.1:2379 from its init
 * script (where no policy forbids it); if the install made something listen
 * there, that service is stopped again, since this benchmark uses its own
 * members on free ports and wants nothing else running.
 */
export async function ensureEtcd(
  log: (line: string) => void,
): Promise<EtcdInstall | { readonly skipped: string }> {
  let path = await findExecutable("etcd");
  if (path === undefined) {
    if (!isRoot()) {
      return {
        skipped: "etcd is not installed and this is not root, so it cannot be installed " +
          "(install the Debian package etcd-server)",
      };
    }
    const busyBefore = await listening(2379);
    const failure = await aptInstall("etcd-server", log);
    path = await findExecutable("etcd");
    if (path === undefined) {
      return { skipped: `etcd could not be installed: ${failure ?? "no etcd binary appeared"}` };
    }
    if (!busyBefore && await listening(2379)) {
      log("the etcd-server package started its own etcd on port 2379; stopping it");
      const stopped = await runCommand("/etc/init.d/etcd", ["stop"], { timeoutMs: 30_000 })
        .catch((error) => ({ code: -1, stderr: String(error), stdout: "", timedOut: false }));
      if (stopped.code !== 0 || await listening(2379)) {
        log(
          `warning: could not stop the packaged etcd on port 2379 (${
            lastLines(stopped.stderr, 2)
          }); it keeps running beside the benchmark`,
        );
      }
    }
  }
  const output = await runCommand(path, ["--version"], { timeoutMs: 10_000 });
  const version = parseEtcdVersion(output.stdout + output.stderr);
  if (output.code !== 0 || version === undefined) {
    return {
      skipped: `${path} --version failed (exit ${output.code}): ${
        lastLines(output.stdout + output.stderr, 3)
      }`,
    };
  }
  return { path, version };
}

/** A running etcd cluster. */
export interface EtcdCluster {
  /** Client URLs, one per member. */
  readonly clientUrls: readonly string[];
  /** The gateway prefix that answered (`/v3`). */
  readonly apiPrefix: string;
  /** The etcd version. */
  readonly version: string;
  /** The temporary directory holding data and logs. */
  readonly root: string;
  /** Process ids of the members, for CPU accounting. */
  readonly pids: readonly number[];
  /** Recent output of member `index`, for failure reports. */
  output(index: number): string;
  /** Stops every member (SIGTERM, then SIGKILL after 10 s) and removes the directory. */
  stop(): Promise<void>;
}

/** The command-line arguments of member `index` of a loopback cluster. */
export function etcdMemberArgs(options: {
  readonly index: number;
  readonly dataDir: string;
  readonly clientPorts: readonly number[];
  readonly peerPorts: readonly number[];
  readonly token: string;
}): string[] {
  const { index, clientPorts, peerPorts } = options;
  const client = `http://127.0.0.1:${clientPorts[index]}`;
  const peer = `http://127.0.0.1:${peerPorts[index]}`;
  const initialCluster = peerPorts.map((port, i) => `m${i}=http://127.0.0.1:${port}`).join(",");
  return [
    `--name=m${index}`,
    `--data-dir=${options.dataDir}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=${initialCluster}`,
    `--initial-cluster-token=${options.token}`,
    "--initial-cluster-state=new",
    "--logger=zap",
    "--log-outputs=stderr",
    "--log-level=warn",
  ];
}

/** POSTs JSON to an etcd gateway endpoint and returns the parsed answer; throws on a non-2xx. */
export async function etcdPost(
  url: string,
  body: unknown,
  timeoutMs = 5000,
): Promise<Record<string, unknown>> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST ${url}: ${response.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

/** Starts three etcd members on free loopback ports and waits until they serve requests. */
export async function startEtcdCluster(
  install: EtcdInstall,
  options: { readonly parentDir?: string; readonly members?: number } = {},
): Promise<EtcdCluster> {
  const members = options.members ?? 3;
  let root: string;
  if (options.parentDir === undefined) {
    root = await Deno.makeTempDir({ prefix: "etcd-bench-" });
  } else {
    root = `${options.parentDir}/etcd-bench-${crypto.randomUUID().slice(0, 12)}`;
    await Deno.mkdir(root, { recursive: true });
  }
  const ports = freePorts(members * 2);
  const clientPorts = ports.slice(0, members);
  const peerPorts = ports.slice(members);
  const clientUrls = clientPorts.map((port) => `http://127.0.0.1:${port}`);
  const token = `bench-${crypto.randomUUID().slice(0, 8)}`;
  const children: Deno.ChildProcess[] = [];
  const logs: string[][] = Array.from({ length: members }, () => []);
  // etcd reads ETCD_* variables as flags: give it a clean environment.
  const env: Record<string, string> = { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" };
  const stop = async () => {
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    await Promise.all(children.map(async (child) => {
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
      }, 10_000);
      await child.status;
      clearTimeout(timer);
    }));
    await Deno.remove(root, { recursive: true }).catch(() => {});
  };
  try {
    for (let index = 0; index < members; index++) {
      const child = new Deno.Command(install.path, {
        args: etcdMemberArgs({
          index,
          dataDir: `${root}/m${index}`,
          clientPorts,
          peerPorts,
          token,
        }),
        clearEnv: true,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      children.push(child);
      track(child);
      await captureOutput(child, `${root}/m${index}.log`, logs[index]!, 100);
    }
    await waitUntil(
      async () =>
        (await Promise.all(clientUrls.map(async (url) => {
          try {
            const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
            const health = await response.json();
            return response.ok && (health.health === true || health.health === "true");
          } catch {
            return false;
          }
        }))).every(Boolean),
      { deadlineMs: 60_000, what: "every etcd member to report healthy", intervalMs: 200 },
    );
    // The prefix the version implies first, then the others: the one that
    // accepts a put through every member's gateway is the one to use.
    const expected = gatewayPrefix(install.version);
    let apiPrefix: string | undefined;
    const failures: string[] = [];
    for (
      const prefix of [
        expected,
        ...["/v3", "/v3beta", "/v3alpha"].filter((p) => p !== expected),
      ]
    ) {
      try {
        await Promise.all(
          clientUrls.map((url, i) =>
            etcdPost(`${url}${prefix}/kv/put`, { key: btoa(`health-${i}`), value: btoa("ok") })
          ),
        );
        apiPrefix = prefix;
        break;
      } catch (error) {
        failures.push(`${prefix}: ${(error as Error).message}`);
      }
    }
    if (apiPrefix === undefined) {
      throw new Error(
        `No gRPC gateway prefix of etcd ${install.version} accepted a put: ${failures.join("; ")}`,
      );
    }
    return {
      clientUrls,
      apiPrefix,
      version: install.version,
      root,
      pids: children.map((child) => child.pid),
      output: (index) => logs[index]!.join(""),
      stop,
    };
  } catch (error) {
    const outputs = logs.map((log, i) => `--- etcd member ${i}\n${lastLines(log.join(""), 20)}`)
      .join("\n");
    await stop();
    throw new Error(`${(error as Error).message}\n${outputs}`);
  }
}
