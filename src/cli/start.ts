/**
 * `deno task start`: starts replicas, each as its own process with the least
 * Deno permissions it needs (network to its own and its peers' addresses, read
 * and write on its data directory, read of the cluster file, the named
 * environment variables).
 *
 * ```
 * deno task start                                  # local cluster: 3 replicas on 127.0.0.1:8001-8003, data under ./data/
 * deno task start --tls                            # the same on https, certificates made once under data/tls/ (CA: data/tls/ca.pem)
 * deno task start --replicas 5 --base-port 9001    # a local cluster of another size
 * deno task start --cors-origin http://localhost:5173   # pages of that origin may call it (repeatable)
 * deno task start --config cluster.json --id 2     # one replica of a real cluster, as each region runs it
 *                 [--data DIR] [--listen HOST:PORT]
 * deno task start --config data/local-cluster.json --id 1   # one replica of the local cluster, alone
 * deno task start --restore backup.jsonl --config cluster.json --id 2   # seed a new cluster's replica
 * deno task start --restore backup.jsonl           # a new local cluster seeded from a backup
 * deno task start --join http://127.0.0.1:8001 --id 3 --url http://127.0.0.1:8004 --data data/replica-3
 *                                                  # a member added (admin add) or replaced (admin replace)
 * ```
 *
 * TLS: a replica whose URL is https serves TLS with the certificate its
 * cluster file entry names (or `--tls-cert FILE --tls-key FILE`), and
 * verifies its peers against the cluster CA (`tls.ca`, or `--tls-ca FILE`);
 * `--allow-mixed-tls` lets http and https members mix (`src/net/tls.ts`).
 * Replicas with TLS are started trusting the cluster CA alone
 * (`clusterCaOnlyEnvironment`).
 *
 * `--restore FILE` seeds the replica's empty store from a backup (`deno task
 * admin backup`) before it starts; every replica of the new cluster is started
 * with the same file. Repeating it on a store seeded from that file just
 * starts the replica; a store holding anything else is refused.
 *
 * The local cluster keeps its secret in its data directory
 * (`data/cluster-secret`, readable by its owner only), made on the first
 * launch and reused after, and its cluster file (`data/local-cluster.json`)
 * points at it: so one local replica can be stopped and started again on its
 * own while the others serve.
 *
 * Ctrl-C stops every replica it started. A replica that exits while the others
 * run is reported, once, with its exit code or signal.
 *
 * @module
 */

import {
  ConfigError,
  defaultListenAddress,
  loadClusterConfig,
  type ReplicaEntry,
  type SecretReference,
} from "../server/config.ts";
import { isLoopbackUrl } from "../net/endpoint.ts";
import { clusterCaOnlyEnvironment, type TlsPaths } from "../net/tls.ts";
import { integerOption, option, parseArgs, UsageError } from "./args.ts";
import { TLS_FLAGS, TLS_OPTIONS } from "./replica_tls.ts";
import { corsOriginsOption } from "./cors_option.ts";
import { cacheReplicaModules, localClusterTls, startTlsPaths, tlsArgs } from "./start_tls.ts";

const ROOT = new URL("../../", import.meta.url);
const REPLICA_SCRIPT = new URL("src/cli/replica.ts", ROOT).pathname;
const DENO_CONFIG = new URL("deno.json", ROOT).pathname;

/** The local cluster's file, in its data directory. */
export const LOCAL_CONFIG_FILE = "local-cluster.json";
/** The file holding the local cluster's secret, in its data directory. */
export const LOCAL_SECRET_FILE = "cluster-secret";

interface ChildSpec {
  readonly name: string;
  readonly args: string[];
  readonly env: Record<string, string>;
  /** The command that starts this child again on its own, for the exit report. */
  readonly restartHint?: string;
  /** A replica with TLS: started with the cluster CA as its only trusted root. */
  readonly tls?: boolean;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The local cluster's secret, kept in the file `path`: made on the first call
 * (24 random bytes, in hex) in a file only its owner may read or write (mode
 * 0o600), and read back on every later call, so that every launch, and every
 * replica started alone, uses the same one.
 *
 * @throws {ConfigError} if the file exists but others may read it, or holds no
 *   secret of at least 16 characters; the file is left as it is.
 */
export async function localClusterSecret(path: string): Promise<string> {
  const fresh = hex(crypto.getRandomValues(new Uint8Array(24)));
  try {
    // `createNew`: two launches at once cannot both write it; the second reads it.
    await Deno.writeTextFile(path, `${fresh}\n`, { createNew: true, mode: 0o600 });
    return fresh;
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
  const info = await Deno.stat(path);
  // `mode` is null where the system has no such permissions (Windows).
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    throw new ConfigError(
      `${path} may be read by others (mode ${
        (info.mode & 0o777).toString(8)
      }); make it owner-only with: chmod 600 ${path}`,
    );
  }
  // Another launch may have just created the file and not written it yet:
  // wait a little for its content before calling it empty.
  let secret = "";
  for (let attempt = 0; attempt < 20; attempt++) {
    secret = (await Deno.readTextFile(path)).trim();
    if (secret.length > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (secret.length < 16 || /\s/.test(secret)) {
    throw new ConfigError(
      `${path} holds no secret (at least 16 characters, no spaces); remove it to have a new one made`,
    );
  }
  return secret;
}

/**
 * Writes the local cluster's file, `<dataRoot>/local-cluster.json`: replicas
 * `local-<id>` at `urls`, the secret read from the file `secretPath` (an
 * absolute path), and quorum leases on every key to every replica; with
 * `tls`, the cluster CA and each replica's certificate files. Returns the
 * file's path.
 */
export async function writeLocalClusterConfig(
  dataRoot: string,
  urls: readonly string[],
  secretPath: string,
  tls?: {
    readonly ca: string;
    readonly replicas: readonly { readonly cert: string; readonly key: string }[];
  },
): Promise<string> {
  const configPath = `${dataRoot}/${LOCAL_CONFIG_FILE}`;
  await Deno.writeTextFile(
    configPath,
    JSON.stringify(
      {
        replicas: urls.map((url, id) => ({
          id,
          name: `local-${id}`,
          region: "local",
          url,
          ...(tls === undefined ? {} : { tls: tls.replicas[id] }),
        })),
        secret: { file: secretPath },
        ...(tls === undefined ? {} : { tls: { ca: tls.ca } }),
        // Linearizable reads at local latency: every key leased to every replica.
        leases: "all",
      },
      null,
      2,
    ) + "\n",
  );
  return configPath;
}

/**
 * Where `deno task start --config FILE --id ID` keeps the replica's data when
 * no `--data` is given. For the local cluster's own file
 * (`<data>/local-cluster.json`), where the local cluster keeps it:
 * `<data>/replica-<id>`, so that a local replica started alone finds its data.
 * Otherwise `data/<name>`, under the working directory.
 */
export function defaultDataDir(configPath: string, replica: ReplicaEntry): string {
  const split = /^(.*)[\\/]([^\\/]+)$/.exec(configPath);
  if (split !== null && split[2] === LOCAL_CONFIG_FILE) {
    return `${split[1]}/replica-${replica.id}`;
  }
  return `data/${replica.name}`;
}

/** How a child process ended, in words: its exit code, or the signal that ended it. */
export function describeExit(status: Deno.CommandStatus): string {
  return status.signal === null
    ? `exited with code ${status.code}`
    : `was ended by signal ${status.signal}`;
}

/**
 * The `deno run` arguments for one replica, with the least permissions it
 * needs. The network is not limited to the cluster file's peers: a
 * configuration change adds members the file does not name, and the replica
 * must reach them (and a joiner fetches its configuration from a member).
 */
export function replicaCommand(options: {
  readonly configPath: string;
  readonly id: number;
  readonly dataDir: string;
  readonly listen: string;
  readonly secrets: readonly SecretReference[];
  readonly logMessages?: boolean;
  /** A backup file to seed an empty store from (`--restore`). */
  readonly restore?: string;
  /** More files the replica must read (a wide-area matrix). */
  readonly readFiles?: readonly string[];
  /** Its TLS files, read at start and again for reloads. */
  readonly tls?: TlsPaths;
  /** Origins whose pages may call it from a browser (`--cors-origin`, repeated). */
  readonly corsOrigins?: readonly string[];
}): string[] {
  const { tls } = options;
  const read = new Set([
    options.configPath,
    options.dataDir,
    ...(options.readFiles ?? []),
    ...(options.restore === undefined ? [] : [options.restore]),
    ...(tls === undefined ? [] : [tls.cert, tls.key, ...(tls.ca === undefined ? [] : [tls.ca])]),
  ]);
  const env = new Set(["EPAXOS_CONFIG", "EPAXOS_ID", "EPAXOS_DATA", "EPAXOS_LISTEN"]);
  // Read to say which roots it trusts besides the cluster CA (`describeExtraRoots`).
  if (tls !== undefined) {
    ["DENO_TLS_CA_STORE", "DENO_CERT", "NODE_EXTRA_CA_CERTS"].forEach(env.add, env);
  }
  for (const secret of options.secrets) {
    if ("env" in secret) env.add(secret.env);
    if ("file" in secret) read.add(secret.file);
  }
  return [
    "run",
    `--config=${DENO_CONFIG}`,
    "--allow-net",
    `--allow-read=${[...read].join(",")}`,
    `--allow-write=${options.dataDir}`,
    `--allow-env=${[...env].join(",")}`,
    REPLICA_SCRIPT,
    "--config",
    options.configPath,
    "--id",
    String(options.id),
    "--data",
    options.dataDir,
    "--listen",
    options.listen,
    ...(options.logMessages ? ["--log-messages"] : []),
    ...(options.restore === undefined ? [] : ["--restore", options.restore]),
    ...(options.corsOrigins ?? []).flatMap((origin) => ["--cors-origin", origin]),
  ];
}

async function pipeLines(
  stream: ReadableStream<Uint8Array>,
  prefix: string,
  write: (line: string) => void,
) {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      write(`${prefix} ${buffer.slice(0, newline)}`);
      buffer = buffer.slice(newline + 1);
    }
  }
  if (buffer.length > 0) write(`${prefix} ${buffer}`);
}

/** Runs the children until they exit or a signal stops them. */
async function supervise(
  children: readonly ChildSpec[],
  onReady?: () => Promise<void>,
): Promise<number> {
  let stopping = false;
  let running = children.length;
  const processes = children.map((child) => {
    const process = new Deno.Command(Deno.execPath(), {
      args: child.args,
      ...(child.tls
        ? {
          env: clusterCaOnlyEnvironment({ ...Deno.env.toObject(), ...child.env }),
          clearEnv: true,
        }
        : { env: child.env }),
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    console.log(`launcher: ${child.name} started as pid ${process.pid}`);
    pipeLines(process.stdout, `[${child.name}]`, (line) => console.log(line));
    pipeLines(process.stderr, `[${child.name}]`, (line) => console.error(line));
    // Reported once, when it ends; when we stop them, only an unclean end is.
    process.status.then((status) => {
      running--;
      if (stopping && status.success) return;
      const others = stopping || running === 0
        ? ""
        : `; the other ${running === 1 ? "replica keeps" : `${running} replicas keep`} running`;
      const hint = stopping || child.restartHint === undefined
        ? ""
        : `; start it again with: ${child.restartHint}`;
      console.error(
        `launcher: ${child.name} (pid ${process.pid}) ${describeExit(status)}${others}${hint}`,
      );
    });
    return process;
  });
  const stopAll = () => {
    if (stopping) return;
    stopping = true;
    for (const process of processes) {
      try {
        process.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    setTimeout(() => {
      for (const process of processes) {
        try {
          process.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }, 5000).unref?.();
  };
  Deno.addSignalListener("SIGINT", stopAll);
  Deno.addSignalListener("SIGTERM", stopAll);
  if (onReady !== undefined) onReady().catch((error) => console.error(String(error)));
  const statuses = await Promise.all(processes.map((process) => process.status));
  Deno.removeSignalListener("SIGINT", stopAll);
  Deno.removeSignalListener("SIGTERM", stopAll);
  return statuses.every((status) => status.success || stopping) ? 0 : 1;
}

async function waitReady(
  urls: readonly string[],
  deadlineMs: number,
  client?: Deno.HttpClient,
): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    const ready = await Promise.all(urls.map(async (url) => {
      try {
        const response = await fetch(`${url}/readyz`, {
          signal: AbortSignal.timeout(1000),
          ...(client === undefined ? {} : { client }),
        });
        await response.body?.cancel();
        return response.ok;
      } catch {
        return false;
      }
    }));
    if (ready.every(Boolean)) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}

async function startLocalCluster(args: ReturnType<typeof parseArgs>): Promise<number> {
  const replicas = integerOption(args, "replicas", { min: 3, max: 9, fallback: 3 })!;
  if (replicas % 2 === 0) throw new UsageError(`--replicas must be odd, got ${replicas}`);
  const basePort = integerOption(args, "base-port", { min: 1024, max: 65000, fallback: 8001 })!;
  const dataRoot = await Deno.realPath(await ensureDir(option(args, "data", "data")!));
  const secretPath = `${dataRoot}/${LOCAL_SECRET_FILE}`;
  await localClusterSecret(secretPath);
  const tlsOn = args.flags.has("tls");
  const urls = Array.from(
    { length: replicas },
    (_, id) => `${tlsOn ? "https" : "http"}://127.0.0.1:${basePort + id}`,
  );
  const tls = tlsOn ? await localClusterTls(`${dataRoot}/tls`, urls) : undefined;
  const configPath = await writeLocalClusterConfig(dataRoot, urls, secretPath, tls);
  const secret: SecretReference = { file: secretPath };
  const restoreFile = option(args, "restore");
  const restore = restoreFile === undefined
    ? undefined
    : await existingFile(restoreFile, "--restore");
  const corsOrigins = corsOriginsOption(args);
  const children: ChildSpec[] = [];
  for (let id = 0; id < replicas; id++) {
    const dataDir = await ensureDir(`${dataRoot}/replica-${id}`);
    children.push({
      name: `local-${id}`,
      args: replicaCommand({
        configPath,
        id,
        dataDir,
        listen: `127.0.0.1:${basePort + id}`,
        secrets: [secret],
        logMessages: args.flags.has("log-messages"),
        corsOrigins,
        ...(restore === undefined ? {} : { restore }),
        ...(tls === undefined ? {} : { tls: { ...tls.replicas[id]!, ca: tls.ca } }),
      }),
      env: {},
      restartHint: `deno task start --config ${configPath} --id ${id}`,
      tls: tls !== undefined,
    });
  }
  console.log(
    `Starting ${replicas} replicas on ${
      urls.join(", ")
    }; data under ${dataRoot}; Ctrl-C stops them.`,
  );
  if (tls !== undefined) await cacheReplicaModules(REPLICA_SCRIPT, DENO_CONFIG);
  const client = tls === undefined
    ? undefined
    : Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.ca)] });
  const curl = tls === undefined ? "curl" : `curl --cacert ${tls.ca}`;
  return await supervise(children, async () => {
    if (!(await waitReady(urls, 30_000, client))) {
      console.error("The replicas did not all become ready within 30 s; see their logs above.");
      return;
    }
    const [first, , third] = [urls[0]!, urls[1]!, urls[2]!];
    // `deno task admin` reads data/cluster-secret of the project by itself.
    const admin = (tls === undefined ? "" : `DENO_CERT=${tls.ca} `) +
      (option(args, "data") === undefined
        ? "deno task admin"
        : `EPAXOS_CLUSTER_SECRET=$(cat ${secretPath}) deno task admin`);
    console.log(`
All ${replicas} replicas are ready. Try:

  ${curl} -X PUT ${first}/kv/greeting --data-binary hello
  ${curl} ${third}/kv/greeting
  ${curl} -i -X PUT ${first}/kv/greeting -H 'If-Match: "<version from the ETag>"' --data-binary hi
  ${curl} -X PUT ${first}/kv/fresh -H 'If-None-Match: *' --data-binary new
  ${curl} '${first}/kv?prefix=gr'
  ${curl} -X DELETE ${first}/kv/greeting
  ${curl} ${first}/status
  ${curl} ${first}/metrics
  ${admin} --server ${first} members

The cluster secret is in ${secretPath}.${
      tls === undefined
        ? ""
        : `\nThe cluster CA is ${tls.ca}: Deno programs trust it with DENO_CERT=${tls.ca}.`
    }
To restart one replica while the others serve, stop it (kill its pid, printed
above) and start it alone:
  deno task start --config ${configPath} --id 1
`);
  });
}

async function ensureDir(path: string): Promise<string> {
  await Deno.mkdir(path, { recursive: true });
  return path;
}

async function startOne(args: ReturnType<typeof parseArgs>): Promise<number> {
  const configPath = await Deno.realPath(option(args, "config")!);
  const config = await loadClusterConfig(configPath);
  const id = integerOption(args, "id", { min: 0, max: config.replicas.length - 1 });
  if (id === undefined) throw new UsageError("--config needs --id");
  const self = config.replicas[id]!;
  const dataDir = await Deno.realPath(
    await ensureDir(option(args, "data") ?? defaultDataDir(configPath, self)),
  );
  const listen = option(args, "listen", defaultListenAddress(self.url))!;
  const restoreFile = option(args, "restore");
  const restore = restoreFile === undefined
    ? undefined
    : await existingFile(restoreFile, "--restore");
  const secrets = [
    config.secret,
    ...(config.clientToken === undefined ? [] : [config.clientToken]),
  ];
  const tls = startTlsPaths(args, config, id);
  const env: Record<string, string> = {};
  for (const secret of secrets) {
    if ("env" in secret) {
      const value = Deno.env.get(secret.env);
      if (value === undefined) {
        throw new ConfigError(`Environment variable ${secret.env} is not set`);
      }
      env[secret.env] = value;
    }
  }
  return await supervise([{
    name: self.name,
    args: replicaCommand({
      configPath,
      id,
      dataDir,
      listen,
      secrets,
      logMessages: args.flags.has("log-messages"),
      corsOrigins: corsOriginsOption(args),
      ...(restore === undefined ? {} : { restore }),
      ...(tls === undefined ? {} : { tls }),
    }).concat(tlsArgs(args)),
    env,
    tls: tls !== undefined,
  }]);
}

/**
 * The cluster secret a joiner passes its replica: `EPAXOS_CLUSTER_SECRET`, or,
 * when that is unset and the member to join is on this machine, the local
 * cluster's (`data/cluster-secret` in the project directory).
 */
async function joinSecret(joinUrl: string): Promise<string> {
  const fromEnv = Deno.env.get("EPAXOS_CLUSTER_SECRET");
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  const local = isLoopbackUrl(joinUrl);
  const path = `data/${LOCAL_SECRET_FILE}`;
  if (local) {
    try {
      return (await Deno.readTextFile(path)).trim();
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  throw new ConfigError(
    "--join needs the cluster secret in EPAXOS_CLUSTER_SECRET" +
      (local ? ` (or the local cluster's ${path}, which does not exist)` : ""),
  );
}

/**
 * `--join URL --id ID --url OWN_URL [--listen HOST:PORT] --data DIR`: starts
 * member `ID` (added with `deno task admin add`, or replaced with `replace`)
 * with empty storage; it fetches the configuration from `URL`, installs a
 * snapshot from a voter, and serves once caught up (`/readyz`).
 */
async function startJoin(args: ReturnType<typeof parseArgs>): Promise<number> {
  const joinUrl = option(args, "join")!;
  const idText = option(args, "id");
  const ownUrl = option(args, "url");
  const dataOption = option(args, "data");
  if (idText === undefined || ownUrl === undefined || dataOption === undefined) {
    throw new UsageError(
      "--join URL needs --id ID --url OWN_URL --data EMPTY_DIR (and --listen HOST:PORT unless OWN_URL's)",
    );
  }
  if (option(args, "restore") !== undefined) {
    throw new UsageError("--restore seeds a new cluster; a joiner takes a snapshot instead");
  }
  const listen = option(args, "listen", defaultListenAddress(ownUrl))!;
  const dataDir = await Deno.realPath(await ensureDir(dataOption));
  const secret = await joinSecret(joinUrl);
  const clientToken = Deno.env.get("EPAXOS_CLIENT_TOKEN");
  const tls = startTlsPaths(args, undefined, undefined);
  const tlsRead = tls === undefined
    ? []
    : [tls.cert, tls.key, ...(tls.ca === undefined ? [] : [tls.ca])];
  if (tls !== undefined) await cacheReplicaModules(REPLICA_SCRIPT, DENO_CONFIG);
  return await supervise([{
    name: `replica-${idText}`,
    args: [
      "run",
      `--config=${DENO_CONFIG}`,
      "--allow-net",
      `--allow-read=${[dataDir, ...tlsRead].join(",")}`,
      `--allow-write=${dataDir}`,
      "--allow-env=EPAXOS_CONFIG,EPAXOS_ID,EPAXOS_DATA,EPAXOS_LISTEN,EPAXOS_CLUSTER_SECRET,EPAXOS_CLIENT_TOKEN" +
      (tls === undefined ? "" : ",DENO_TLS_CA_STORE,DENO_CERT,NODE_EXTRA_CA_CERTS"),
      REPLICA_SCRIPT,
      "--join",
      joinUrl,
      "--id",
      idText,
      "--url",
      ownUrl,
      "--data",
      dataDir,
      "--listen",
      listen,
      ...(args.flags.has("log-messages") ? ["--log-messages"] : []),
      ...corsOriginsOption(args).flatMap((origin) => ["--cors-origin", origin]),
      ...tlsArgs(args),
    ],
    env: {
      EPAXOS_CLUSTER_SECRET: secret,
      ...(clientToken === undefined ? {} : { EPAXOS_CLIENT_TOKEN: clientToken }),
    },
    tls: tls !== undefined,
  }]);
}

/** The absolute path of the file at `path`, which must exist. */
async function existingFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UsageError(`${flag} ${path}: no such file`);
    }
    throw error;
  }
}

if (import.meta.main) {
  try {
    const args = parseArgs(Deno.args, {
      options: [
        "config",
        "id",
        "data",
        "listen",
        "replicas",
        "base-port",
        "restore",
        "join",
        "url",
        "cors-origin",
        ...TLS_OPTIONS,
      ],
      flags: ["log-messages", "tls", ...TLS_FLAGS],
    });
    if (option(args, "join") !== undefined && option(args, "config") !== undefined) {
      throw new UsageError("give --config or --join, not both");
    }
    if (args.flags.has("tls") && (option(args, "join") ?? option(args, "config")) !== undefined) {
      throw new UsageError(
        "--tls starts the local cluster on https; a cluster file says https in its URLs " +
          "(and --tls-cert, --tls-key, --tls-ca name the files)",
      );
    }
    const code = option(args, "join") !== undefined
      ? await startJoin(args)
      : option(args, "config") === undefined
      ? await startLocalCluster(args)
      : await startOne(args);
    Deno.exit(code);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(error.message);
      Deno.exit(2);
    }
    throw error;
  }
}
