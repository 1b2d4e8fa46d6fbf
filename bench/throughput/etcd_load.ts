/**
 * etcd's native load path for `deno task bench:throughput`: `etcd_load`
 * (`etcd_load/main.go`), a small Go program on etcd's own client
 * (`go.etcd.io/etcd/clientv3`) that drives etcd through its gRPC API the way
 * etcd's benchmark tool does, instead of through the JSON gateway with wrk.
 *
 * It builds offline from Debian's packages (`golang-go` and
 * `golang-etcd-server-dev`, installed when missing and running as root, like
 * etcd itself) with `GO111MODULE=off GOPATH=/usr/share/gocode go build`, into
 * a cache directory outside the repository keyed by a hash of the source, the
 * Go version and the client's version, so a run builds it only when one of
 * them changed (about ten seconds). Its one result line has the shape of the
 * wrk scripts' (`lua.ts`), so both paths are summarized alike.
 *
 * @module
 */

import { parseResultLine, type WrkResult } from "./lua.ts";
import type { Workload } from "./options.ts";
import {
  aptInstall,
  findExecutable,
  lastLines,
  runCommand,
  runLoadGenerator,
} from "./processes.ts";
import type { WrkRunResult } from "./wrk.ts";

/** The prefix of the one line of results `etcd_load` prints. */
export const ETCD_LOAD_MARKER = "ETCD_LOAD_RESULT";

/** Where Debian's Go library packages put their sources. */
export const DEBIAN_GOPATH = "/usr/share/gocode";

/** etcd's source tree in {@link DEBIAN_GOPATH} (package golang-etcd-server-dev). */
const ETCD_SOURCE = `${DEBIAN_GOPATH}/src/go.etcd.io/etcd`;

/** The load generator's Go source file. */
const SOURCE_URL = new URL("./etcd_load/main.go", import.meta.url);

/** A built load generator. */
export interface EtcdLoadInstall {
  /** Path of the binary. */
  readonly path: string;
  /** `etcd_load, clientv3 3.4.23, go1.19.8`. */
  readonly description: string;
}

/** The client's version from etcd's `version/version.go` (`Version = "3.4.23"`). */
export function parseEtcdSourceVersion(text: string): string | undefined {
  return /\bVersion\s*=\s*"(\d+\.\d+\.\d+[^"]*)"/.exec(text)?.[1];
}

/** Go's version from `go version` output (`go version go1.19.8 linux/amd64`). */
export function parseGoVersion(output: string): string | undefined {
  return /\bgo version (go\d+\.\d+(?:\.\d+)?\S*)/.exec(output)?.[1];
}

/**
 * The directory built binaries are cached in: `$XDG_CACHE_HOME`, else
 * `$HOME/.cache`, else the system's temporary directory, then
 * `epaxos-kv-bench`; outside the repository so nothing built lands in it.
 */
export function etcdLoadCacheDir(env: (name: string) => string | undefined): string {
  const base = env("XDG_CACHE_HOME") ??
    (env("HOME") === undefined ? env("TMPDIR") ?? "/tmp" : `${env("HOME")}/.cache`);
  return `${base.replace(/\/+$/, "")}/epaxos-kv-bench`;
}

async function exists(path: string, executable = false): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return !executable || (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0);
  } catch {
    return false;
  }
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * Finds Go and etcd's client sources (installing `golang-go` and
 * `golang-etcd-server-dev` when missing and running as root) and builds
 * `etcd_load` unless the cache holds this build already. Returns the binary,
 * or a reason to skip etcd's gRPC path.
 */
export async function ensureEtcdLoad(
  log: (line: string) => void,
  options: { readonly cacheDir?: string } = {},
): Promise<EtcdLoadInstall | { readonly skipped: string }> {
  let go = await findExecutable("go");
  if (go === undefined) {
    const failure = await aptInstall("golang-go", log);
    go = await findExecutable("go");
    if (go === undefined) {
      return { skipped: `Go could not be installed: ${failure ?? "no go binary appeared"}` };
    }
  }
  if (!await exists(`${ETCD_SOURCE}/clientv3/client.go`)) {
    const failure = await aptInstall("golang-etcd-server-dev", log);
    if (!await exists(`${ETCD_SOURCE}/clientv3/client.go`)) {
      return {
        skipped: `etcd's Go client could not be installed: ${
          failure ?? `no ${ETCD_SOURCE}/clientv3 appeared`
        }`,
      };
    }
  }
  const goOutput = await runCommand(go, ["version"], { timeoutMs: 10_000 });
  const goVersion = parseGoVersion(goOutput.stdout);
  if (goOutput.code !== 0 || goVersion === undefined) {
    return { skipped: `${go} version failed: ${lastLines(goOutput.stdout + goOutput.stderr, 3)}` };
  }
  const clientVersion = parseEtcdSourceVersion(
    await Deno.readTextFile(`${ETCD_SOURCE}/version/version.go`).catch(() => ""),
  ) ?? "unknown";
  const source = await Deno.readTextFile(SOURCE_URL);
  const cacheDir = options.cacheDir ?? etcdLoadCacheDir((name) => Deno.env.get(name));
  const key = (await sha256Hex(`${source}\n${goVersion}\n${clientVersion}`)).slice(0, 16);
  const path = `${cacheDir}/etcd_load-${key}`;
  const description = `etcd_load, clientv3 ${clientVersion}, ${goVersion}`;
  if (await exists(path, true)) return { path, description };
  await Deno.mkdir(cacheDir, { recursive: true });
  log(`building the etcd gRPC load generator (${description}) into ${cacheDir}`);
  const partial = `${path}.${crypto.randomUUID().slice(0, 8)}.partial`;
  const built = await runCommand(
    go,
    // GOPATH mode builds a directory named by a relative path only.
    ["build", "-o", partial, "."],
    {
      timeoutMs: 300_000,
      cwd: decodeURIComponent(new URL(".", SOURCE_URL).pathname),
      env: {
        GO111MODULE: "off",
        GOPATH: DEBIAN_GOPATH,
        GOFLAGS: "",
        GOCACHE: `${cacheDir}/go-build`,
        // Pure Go: no C compiler needed.
        CGO_ENABLED: "0",
      },
    },
  );
  if (built.code !== 0) {
    await Deno.remove(partial).catch(() => {});
    return {
      skipped: `building etcd_load failed (exit ${built.code}${
        built.timedOut ? ", timed out" : ""
      }): ${lastLines(built.stderr + built.stdout, 8)}`,
    };
  }
  // A rename, so a run never finds a half-written binary.
  await Deno.rename(partial, path);
  return { path, description };
}

/** One run of the load generator. */
export interface EtcdLoadRun {
  /** The binary. */
  readonly path: string;
  /** Client URLs of the members. */
  readonly endpoints: readonly string[];
  /** Keys, read share and the tag values carry. */
  readonly workload: Workload;
  /** Concurrent clients, one request outstanding each (wrk's connections). */
  readonly clients: number;
  /** gRPC connections the clients share. */
  readonly grpcConnections: number;
  /** Seconds of load. */
  readonly durationS: number;
  /** Per-request timeout in seconds. */
  readonly timeoutS: number;
  /** Seeds every client's key choice. */
  readonly seed: number;
}

/** The command line of a run. */
export function etcdLoadArgs(run: Omit<EtcdLoadRun, "path">): string[] {
  const { workload } = run;
  return [
    `-endpoints=${run.endpoints.join(",")}`,
    `-clients=${run.clients}`,
    `-conns=${run.grpcConnections}`,
    `-duration=${run.durationS}`,
    `-timeout=${run.timeoutS}`,
    `-key-prefix=${workload.keyPrefix}`,
    `-keys=${workload.keyCount}`,
    `-read-percent=${workload.readPercent}`,
    `-tag=${workload.name}`,
    `-seed=${run.seed}`,
  ];
}

/** What `etcd_load` reports: wrk's fields, where `threads` counts gRPC connections. */
export interface EtcdLoadResult extends WrkResult {
  /** Concurrent clients. */
  readonly clients: number;
  /** gRPC connections. */
  readonly grpc_connections: number;
  /** The first error a client met, if any, for the log. */
  readonly first_error?: string;
}

/** Finds and checks the result line in `etcd_load`'s output; throws if it is missing or malformed. */
export function parseEtcdLoadOutput(stdout: string): EtcdLoadResult {
  const { result, raw } = parseResultLine(stdout, {
    marker: ETCD_LOAD_MARKER,
    generator: "etcd_load",
  });
  const positive = (value: unknown, what: string) => {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
      throw new Error(`etcd_load's result has no valid ${what}: ${JSON.stringify(value)}`);
    }
    return value;
  };
  const firstError = raw.first_error;
  return {
    ...result,
    clients: positive(raw.clients, "clients"),
    grpc_connections: positive(raw.grpc_connections, "grpc_connections"),
    ...(typeof firstError === "string" && firstError !== "" ? { first_error: firstError } : {}),
  };
}

/** Runs the load generator once; throws when it fails or prints no result line. */
export async function runEtcdLoad(
  run: EtcdLoadRun,
): Promise<WrkRunResult & { readonly grpc_connections: number; readonly first_error?: string }> {
  const { stdout, machineCpuPct } = await runLoadGenerator(
    "etcd_load",
    run.path,
    etcdLoadArgs(run),
    run,
  );
  const result = parseEtcdLoadOutput(stdout);
  return { ...result, connections: result.clients, machine_cpu_pct: machineCpuPct };
}
