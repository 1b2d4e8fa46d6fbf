/**
 * Runs one replica: `deno run <least permissions> src/cli/replica.ts --config
 * FILE --id ID --data DIR [--listen HOST:PORT]`. Normally started by
 * `deno task start`, which grants exactly the permissions this needs.
 *
 * Environment ({@linkcode REPLICA_ENV}): `EPAXOS_CONFIG`, `EPAXOS_ID`,
 * `EPAXOS_DATA`, `EPAXOS_LISTEN` stand in for the flags (a flag wins; with
 * `--join`, `EPAXOS_CONFIG` is not read); the secrets come from where the
 * cluster file points, or, joining, from `EPAXOS_CLUSTER_SECRET` and
 * `EPAXOS_CLIENT_TOKEN`.
 *
 * @module
 */

import { isKvCommand, type KvCommand } from "../kv/commands.ts";
import { MemoryStorage } from "../storage/memory.ts";
import {
  type Clock,
  MAX_CLOCK_RATE,
  MIN_CLOCK_RATE,
  ScaledClock,
  SystemClock,
} from "../runtime/clock.ts";
import { SystemRandom } from "../runtime/random.ts";
import { createApp } from "../server/app.ts";
import { DEFAULT_SNAPSHOT_RATE_MBPS } from "../server/snapshot_route.ts";
import { faultRoutes } from "../server/fault_routes.ts";
import {
  type ClusterConfig,
  ConfigError,
  defaultListenAddress,
  loadClusterConfig,
  resolveSecret,
} from "../server/config.ts";
import {
  bootstrapConfiguration,
  type Configuration,
  MAX_MEMBER_ID,
  normalizedUrl,
  positionCount,
} from "../core/configuration.ts";
import { corsOriginsOption } from "./cors_option.ts";
import { fetchConfiguration, joinProblem } from "./join.ts";
import {
  DEFAULT_MAX_HELD_COMMANDS,
  ReplicaDriver,
  type ReplicaDriverOptions,
} from "../driver/driver.ts";
import { memberOf } from "../driver/epoch.ts";
import { fetchSnapshot, keptTransferPeer } from "../net/snapshot_fetch.ts";
import type { LoadedState, ReplicaSnapshot } from "../storage/types.ts";
import { openDenoKvStorage, StorageFormatError } from "../storage/deno_kv/mod.ts";
import { versionTagOf } from "../kv/backup.ts";
import { restoreFromBackup } from "./restore.ts";
import { FaultInjector } from "../transport/faults.ts";
import { HttpTransport } from "../transport/http.ts";
import { loadRttMatrix } from "../wan/matrix.ts";
import { parseHostPort } from "../net/endpoint.ts";
import { integerOption, option, parseArgs, type ParsedArgs, UsageError } from "./args.ts";
import {
  allowMixedTls,
  checkMixedMembers,
  type ReplicaTls,
  replicaTlsSetup,
  serveReplica,
  TLS_FLAGS,
  TLS_OPTIONS,
  TLS_USAGE,
} from "./replica_tls.ts";

const USAGE =
  "usage: replica (--config FILE | --join URL --url OWN_URL) --id ID --data DIR [--listen HOST:PORT] [--log-messages]" +
  " [--max-held-commands N] [--snapshot-rate MBPS]" +
  " [--enable-fault-injection [--unsafe-clock-rate R] | --emulate-wan MATRIX.json]" +
  " [--volatile-storage] [--restore BACKUP_FILE] [--cors-origin ORIGIN]..." + TLS_USAGE;

/**
 * The environment variables a replica reads, by what they hold: the first
 * four stand in for `--config`, `--id`, `--data` and `--listen`; the secrets
 * are read where the cluster file points (these names, in every example
 * and deployment in `deploy/`) or, with `--join`, from these. Deployment
 * files are checked against this list (`tests/deploy/`).
 */
export const REPLICA_ENV = {
  config: "EPAXOS_CONFIG",
  id: "EPAXOS_ID",
  data: "EPAXOS_DATA",
  listen: "EPAXOS_LISTEN",
  clusterSecret: "EPAXOS_CLUSTER_SECRET",
  clientToken: "EPAXOS_CLIENT_TOKEN",
} as const;

/** The options a replica takes (each with a value), as `parseArgs` reads them. */
export const REPLICA_OPTIONS: readonly string[] = [
  "config",
  "id",
  "data",
  "listen",
  "emulate-wan",
  "max-held-commands",
  "snapshot-rate",
  "restore",
  "join",
  "url",
  "unsafe-clock-rate",
  "cors-origin",
];

/** The flags a replica takes (without a value). */
export const REPLICA_FLAGS: readonly string[] = [
  "log-messages",
  "enable-fault-injection",
  "volatile-storage",
];

/** Highest `--snapshot-rate`, in MB/s. */
export const MAX_SNAPSHOT_RATE_MBPS = 1000;

/**
 * `--snapshot-rate MBPS`: the rate of each snapshot stream this replica
 * serves to a peer (`GET /peer/v1/snapshot`), an integer from 1 to
 * {@linkcode MAX_SNAPSHOT_RATE_MBPS}; absent, `DEFAULT_SNAPSHOT_RATE_MBPS`.
 *
 * @throws {UsageError} if it is not such an integer.
 */
export function snapshotRateOption(args: ParsedArgs): number {
  return integerOption(args, "snapshot-rate", {
    min: 1,
    max: MAX_SNAPSHOT_RATE_MBPS,
    fallback: DEFAULT_SNAPSHOT_RATE_MBPS,
  })!;
}

/**
 * `--unsafe-clock-rate R`, for chaos tests only: the replica's clock runs at
 * `R` times the system's (`ScaledClock`), from {@linkcode MIN_CLOCK_RATE} to
 * {@linkcode MAX_CLOCK_RATE}; absent, undefined (the system clock). Leases
 * are only as safe as the declared drift, so a rate outside it breaks them on
 * purpose: refused unless `--enable-fault-injection` says this is a test.
 *
 * @throws {UsageError} if it is not such a number, or fault injection is off.
 */
export function clockRateOption(args: ParsedArgs): number | undefined {
  const text = option(args, "unsafe-clock-rate");
  if (text === undefined) return undefined;
  if (!args.flags.has("enable-fault-injection")) {
    throw new UsageError("--unsafe-clock-rate is a test fault: it needs --enable-fault-injection");
  }
  const rate = Number(text);
  if (text.trim() === "" || !(rate >= MIN_CLOCK_RATE && rate <= MAX_CLOCK_RATE)) {
    throw new UsageError(
      `--unsafe-clock-rate must be a number from ${MIN_CLOCK_RATE} to ${MAX_CLOCK_RATE}, got ${text}`,
    );
  }
  return rate;
}

/** Settings of {@linkcode peerSnapshotFetch}. */
export interface PeerSnapshotFetchOptions {
  /** This replica's id. */
  readonly self: number;
  /** The members of this replica's epoch, read at each fetch: ids and base URLs. */
  readonly replicas: () => readonly { readonly id: number; readonly url: string }[];
  /** The cluster secret. */
  readonly secret: string;
  /** The partial file of transfers (`DATA/snapshot.partial`). */
  readonly partialPath: string;
  /** Receives the transfer's lines (resumed, afresh, redirected). */
  readonly log?: (line: string) => void;
  /** The asking replica's epoch, read at each fetch. */
  readonly epoch?: () => number;
  /** The fetch to use (default the global one; tests swap it). */
  readonly fetch?: typeof fetch;
}

/**
 * The replica's snapshot fetch for the driver (`fetchSnapshot` of
 * `ReplicaDriver.open`): {@linkcode fetchSnapshot} from the peer the driver
 * asks for, with the partial file in the data directory. The first fetch of
 * the process goes instead to the peer whose transfer the partial file keeps
 * (one cut by a stop of this process), once: only that peer holds the
 * snapshot to resume, and after a restart the driver asks whichever peer's
 * gossip arrived first. Later fetches go where the driver says (a kept
 * transfer from another peer then starts afresh).
 */
export function peerSnapshotFetch(
  options: PeerSnapshotFetchOptions,
): (peer: number, signal: AbortSignal) => Promise<ReplicaSnapshot<KvCommand>> {
  const base = (url: string) => url.replace(/\/+$/, "");
  let first = true;
  return async (peer, signal) => {
    const replicas = options.replicas();
    let target = replicas.find((replica) => replica.id === peer);
    if (target === undefined) throw new Error(`No member ${peer} in this replica's configuration`);
    if (first) {
      first = false;
      const kept = await keptTransferPeer(options.partialPath);
      const holder = replicas.find((replica) =>
        kept !== undefined && base(replica.url) === kept && replica.id !== options.self
      );
      if (holder !== undefined && holder.id !== peer) {
        options.log?.(
          `a snapshot transfer from replica ${holder.id} was under way when this replica stopped: ` +
            `going on with it there instead of asking replica ${peer}`,
        );
        target = holder;
      }
    }
    return await fetchSnapshot(target.url, {
      secret: options.secret,
      requester: options.self,
      ...(options.epoch === undefined ? {} : { requesterEpoch: options.epoch() }),
      partialPath: options.partialPath,
      signal,
      ...(options.log === undefined ? {} : { log: options.log }),
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    });
  };
}

/** What a replica starts from: its cluster file, or the configuration it joins. */
interface ReplicaSetup {
  readonly id: number;
  /** Its name, URL and region. */
  readonly self: { readonly name: string; readonly url: string; readonly region?: string };
  readonly secret: string;
  readonly clientToken: string | undefined;
  readonly dataDir: string;
  /** The cluster file, when started from one (not with `--join`). */
  readonly file: ClusterConfig | undefined;
  /** Epoch 1's configuration (the file's), or the one fetched to join. */
  readonly configuration: Configuration;
  /** Whether it joins (`--join`). */
  readonly joining: boolean;
  /** Joining, whether the data directory holds a store already (a restart of the joiner). */
  readonly hasStore: boolean;
  /** Positions of that configuration: the rows storage starts with. */
  readonly rows: number;
  /** Its TLS, for an https URL. */
  readonly tls: ReplicaTls | undefined;
}

/** An environment variable, or `undefined` when unset or not allowed to this process. */
function envIfAllowed(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Why a joiner restarted on the store `held` cannot go on as member `id` of
 * `configuration`, or `undefined` if it can: the store must be empty (a join
 * cut before its snapshot) or this incarnation's own (a restart; it catches
 * up from wherever it stopped). Anything else is another replica's, or this
 * one's from before it was replaced.
 */
export function joinStoreProblem(
  held: LoadedState<KvCommand>,
  configuration: Configuration,
  id: number,
): string | undefined {
  const empty = held.records.length === 0 && held.entries.length === 0 &&
    held.configuration === undefined && held.pruneFloor === undefined;
  const own = held.configuration !== undefined &&
    memberOf(held.configuration, id)?.incarnation === memberOf(configuration, id)?.incarnation;
  if (empty || own) return undefined;
  return "--join needs an empty --data directory or this member's own: it holds a store of " +
    `epoch ${held.configuration?.epoch ?? 1} of another incarnation`;
}

/**
 * Reads the flags a replica starts from: `--config FILE --id ID` (the cluster
 * file bootstraps epoch 1; a store that holds a later epoch's configuration
 * wins over it), or `--join URL --id ID --url OWN_URL` (the configuration of
 * the epoch fetched from a member, with the secret from
 * `EPAXOS_CLUSTER_SECRET`, and a client token from `EPAXOS_CLIENT_TOKEN` if
 * set).
 */
async function replicaSetup(args: ParsedArgs): Promise<ReplicaSetup> {
  const joinUrl = option(args, "join");
  // `--join` wins over `EPAXOS_CONFIG`, so that an image or unit that sets
  // it can start a replacement member by adding the flags.
  const configPath = option(
    args,
    "config",
    joinUrl === undefined ? Deno.env.get(REPLICA_ENV.config) : undefined,
  );
  const idText = option(args, "id", Deno.env.get(REPLICA_ENV.id));
  const dataDir = option(args, "data", Deno.env.get(REPLICA_ENV.data));
  if (idText === undefined || dataDir === undefined) throw new UsageError(USAGE);
  if ((configPath === undefined) === (joinUrl === undefined)) {
    throw new UsageError(`give one of --config and --join\n${USAGE}`);
  }
  if (joinUrl !== undefined) {
    const ownUrl = option(args, "url");
    if (ownUrl === undefined) {
      throw new UsageError("--join needs --url OWN_URL (where peers reach it)");
    }
    const id = integerOption(parseArgs(["--id", idText], { options: ["id"] }), "id", {
      min: 0,
      max: MAX_MEMBER_ID,
    })!;
    const secret = Deno.env.get(REPLICA_ENV.clusterSecret);
    if (secret === undefined || secret.length < 16) {
      throw new ConfigError(
        "--join needs the cluster secret in EPAXOS_CLUSTER_SECRET (16 characters or more)",
      );
    }
    // A store in the directory: this member joined before (a restart); none:
    // it starts fresh, and says so (see `fetchConfiguration`).
    let fresh = true;
    try {
      for await (const entry of Deno.readDir(dataDir)) {
        if (entry.name.startsWith("epaxos.kv")) fresh = false;
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    const tls = await replicaTlsSetup(args, { ownUrl });
    const configuration = await fetchConfiguration(joinUrl, secret, {
      ...(fresh ? { freshMember: id } : {}),
      ...(tls === undefined ? {} : { fetch: tls.peer.fetch }),
    });
    const problem = joinProblem(configuration, id, ownUrl);
    if (problem !== undefined) throw new ConfigError(`--join: ${problem}`);
    return {
      id,
      self: { name: `replica-${id}`, url: normalizedUrl(ownUrl) },
      secret,
      clientToken: envIfAllowed(REPLICA_ENV.clientToken),
      dataDir,
      file: undefined,
      configuration,
      joining: true,
      hasStore: !fresh,
      rows: positionCount(configuration),
      tls,
    };
  }
  const file = await loadClusterConfig(configPath!);
  const id = integerOption(
    parseArgs(["--id", idText], { options: ["id"] }),
    "id",
    { min: 0, max: file.replicas.length - 1 },
  )!;
  const configuration = bootstrapConfiguration(
    file.replicas.map((replica) => replica.url),
    file.leases,
  );
  return {
    id,
    self: file.replicas[id]!,
    secret: await resolveSecret(file.secret, "The cluster secret"),
    clientToken: file.clientToken === undefined
      ? undefined
      : await resolveSecret(file.clientToken, "The client token"),
    dataDir,
    file,
    configuration,
    joining: false,
    hasStore: false,
    rows: file.replicas.length,
    tls: await replicaTlsSetup(args, { ownUrl: file.replicas[id]!.url, file, id }),
  };
}

/** Starts a replica and serves until SIGINT or SIGTERM. */
export async function runReplica(argv: readonly string[]): Promise<void> {
  const args = parseArgs(argv, {
    options: [...REPLICA_OPTIONS, ...TLS_OPTIONS],
    flags: [...REPLICA_FLAGS, ...TLS_FLAGS],
  });
  // Checked before anything is read or opened: a bad value changes nothing.
  const snapshotRateMbps = snapshotRateOption(args);
  const clockRate = clockRateOption(args);
  const corsFlags = corsOriginsOption(args);
  const setup = await replicaSetup(args);
  const { id, self, secret, clientToken, dataDir, tls } = setup;
  const config = setup.file;
  checkMixedMembers(
    setup.configuration.members.map((member) => ({
      name: config?.replicas[member.id]?.name ?? `replica-${member.id}`,
      url: member.url,
    })),
    allowMixedTls(args, config),
  );
  const listen = option(args, "listen", Deno.env.get(REPLICA_ENV.listen)) ??
    defaultListenAddress(self.url);
  const endpoint = parseHostPort(listen);
  if (endpoint === undefined) {
    throw new UsageError(`--listen must be HOST:PORT with a port up to 65535, got ${listen}`);
  }
  const { hostname, port } = endpoint;

  const log = (line: string) => console.log(`${new Date().toISOString()} ${self.name}: ${line}`);
  const corsOrigins = [...new Set([...(config?.corsOrigins ?? []), ...corsFlags])];
  if (corsOrigins.length > 0) log(`CORS allowed for ${corsOrigins.join(" ")}`);
  await Deno.mkdir(dataDir, { recursive: true });
  // Volatile storage is for latency benchmarks only: it keeps nothing across a
  // restart, so it is never a default and always announced.
  const volatile = args.flags.has("volatile-storage");
  if (volatile) log("VOLATILE storage: nothing survives a restart (benchmark use only)");
  const restore = option(args, "restore");
  if (restore !== undefined && config === undefined) {
    throw new UsageError(
      "--restore seeds a new cluster from its cluster file: give --config, not --join",
    );
  }
  if (restore !== undefined && config !== undefined) {
    if (volatile) throw new UsageError("--restore seeds Deno KV storage; drop --volatile-storage");
    log(
      await restoreFromBackup(restore, `${dataDir}/epaxos.kv`, {
        replicas: config.replicas.length,
        peerUrls: config.replicas.filter((replica) => replica.id !== id).map((r) => r.url),
      }),
    );
  }
  const storage = volatile
    ? new MemoryStorage<KvCommand>()
    : await openDenoKvStorage(`${dataDir}/epaxos.kv`, {
      isCommand: isKvCommand,
      replicas: setup.rows,
    });
  // A joiner restarted on its store: loaded once, checked, and handed to the driver.
  const loaded = setup.joining && setup.hasStore && !(storage instanceof MemoryStorage)
    ? await storage.load()
    : undefined;
  if (loaded !== undefined) {
    const problem = joinStoreProblem(loaded, setup.configuration, id);
    if (problem !== undefined) {
      storage.close();
      throw new UsageError(`${problem} (in ${dataDir})`);
    }
  }
  // A cluster seeded from a backup tags its versions with it (`versionTagOf`).
  const seededFrom = storage instanceof MemoryStorage ? undefined : storage.seededFrom;
  const versionTag = seededFrom === undefined ? undefined : versionTagOf(seededFrom);
  // A clock off by more than the declared drift breaks leases: tests only, and said loudly.
  const clock: Clock = clockRate === undefined
    ? new SystemClock()
    : new ScaledClock(new SystemClock(), clockRate);
  if (clockRate !== undefined) log(`UNSAFE clock rate ${clockRate} (test use only)`);
  const random = new SystemRandom();
  // The fault layer exists only when asked for explicitly (chaos tests), and so
  // does wide-area emulation (benchmarks): one-way delays of RTT/2 per link.
  const wanMatrix = option(args, "emulate-wan");
  if (wanMatrix !== undefined && args.flags.has("enable-fault-injection")) {
    throw new UsageError("--emulate-wan and --enable-fault-injection cannot be combined");
  }
  const faults = args.flags.has("enable-fault-injection") || wanMatrix !== undefined
    ? new FaultInjector(random)
    : undefined;
  if (wanMatrix !== undefined) {
    const matrix = await loadRttMatrix(wanMatrix);
    if (config === undefined) throw new UsageError("--emulate-wan needs --config");
    if (matrix.regions.length !== config.replicas.length) {
      throw new UsageError(
        `${wanMatrix} has ${matrix.regions.length} regions for ${config.replicas.length} replicas`,
      );
    }
    const links: Record<string, { delayMs: number }> = {};
    matrix.rtt_ms[id]!.forEach((rtt, peer) => {
      if (peer !== id) links[String(peer)] = { delayMs: rtt / 2 };
    });
    faults!.set({ links });
    log(
      `wide-area emulation ENABLED: region ${matrix.regions[id]}, one-way delays ${
        Object.entries(links).map(([peer, link]) =>
          `${matrix.regions[Number(peer)]}:${link.delayMs}ms`
        )
          .join(" ")
      }`,
    );
  } else if (faults !== undefined) {
    log("fault injection is ENABLED (test use only)");
  }
  const transport = new HttpTransport({
    self: id,
    peers: setup.configuration.members.map((member) => ({ id: member.id, url: member.url })),
    secret,
    clock,
    random,
    log,
    ...(tls === undefined ? {} : { peerTls: tls.peer }),
    ...(faults === undefined
      ? {}
      : { interpose: (peer, deliver) => faults.interpose(peer, deliver) }),
  });
  // The snapshot fetch reads the members of the driver's epoch, once it exists.
  let current = () => setup.configuration.members;
  let currentEpoch = () => setup.configuration.epoch;
  const driverOptions: ReplicaDriverOptions = {
    id,
    ...(versionTag === undefined ? {} : { versionTag }),
    replicas: setup.rows,
    configuration: setup.configuration,
    joining: setup.joining,
    storage,
    transport,
    clock,
    // The system clock reads `performance.now()`: wall-clock time for expiry.
    wallClockOriginMs: performance.timeOrigin,
    random,
    log,
    traceMessages: args.flags.has("log-messages"),
    // Peers pruned past this replica: a snapshot from one of them, resumed
    // from the partial file if this process stopped during the transfer.
    fetchSnapshot: peerSnapshotFetch({
      self: id,
      replicas: () => current(),
      epoch: () => currentEpoch(),
      secret,
      partialPath: `${dataDir}/snapshot.partial`,
      log,
      ...(tls === undefined ? {} : { fetch: tls.peer.fetch }),
    }),
    // A peer seen in a later epoch: whether that epoch still has this
    // replica as a member; and, leaving, whether the new voters run it.
    fetchConfiguration: (peer, signal) => {
      const target = current().find((member) => member.id === peer);
      if (target === undefined) {
        return Promise.reject(new Error(`No member ${peer} in this replica's configuration`));
      }
      return fetchConfiguration(target.url, secret, {
        signal,
        purpose: "configuration check",
        ...(tls === undefined ? {} : { fetch: tls.peer.fetch }),
      });
    },
    maxHeldCommands: integerOption(args, "max-held-commands", {
      min: 1000,
      max: 1_000_000_000,
      fallback: DEFAULT_MAX_HELD_COMMANDS,
    })!,
  };
  const node = loaded === undefined
    ? await ReplicaDriver.open(driverOptions)
    : ReplicaDriver.fromLoaded(driverOptions, loaded);
  current = () => node.configuration.members;
  currentEpoch = () => node.configuration.epoch;
  const app = createApp({
    node,
    replicas: setup.rows,
    secret,
    ...(clientToken === undefined ? {} : { clientToken }),
    ...(self.region === undefined ? {} : { region: self.region }),
    ...(config === undefined ? {} : {
      names: config.replicas.map((replica) => replica.name),
      urls: config.replicas.map((replica) => replica.url),
    }),
    log,
    ...(tls === undefined ? {} : { fetch: tls.peer.fetch }),
    snapshotRateMbps,
    corsOrigins,
    ...(faults === undefined || wanMatrix !== undefined
      ? {}
      : { extraOps: faultRoutes(faults, { secret, replicas: setup.rows }) }),
  });
  node.start();
  const server = serveReplica({
    hostname,
    port,
    tls,
    log,
    onListen: () =>
      log(
        `replica ${id} (epoch ${node.configuration.epoch}, ${node.configuration.members.length} members) ` +
          `listening on ${
            tls === undefined ? "" : "https://"
          }${hostname}:${port}, data in ${dataDir}`,
      ),
  }, app.fetch);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    await server.shutdown();
    await node.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => shutdown("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => shutdown("SIGTERM"));
  await server.finished;
}

if (import.meta.main) {
  try {
    await runReplica(Deno.args);
  } catch (error) {
    // A store of another format is refused before anything is served or
    // written (`checkFormat`): said in one line, as a usage error is.
    if (
      error instanceof UsageError || error instanceof ConfigError ||
      error instanceof StorageFormatError
    ) {
      console.error(error.message);
      Deno.exit(2);
    }
    throw error;
  }
}
