/**
 * Runs one replica: `deno run <least permissions> src/cli/replica.ts --config
 * FILE --id ID --data DIR [--listen HOST:PORT]`. Normally started by
 * `deno task start`, which grants exactly the permissions this needs.
 *
 * Environment: `EPAXOS_CONFIG`, `EPAXOS_ID`, `EPAXOS_DATA`, `EPAXOS_LISTEN` stand
 * in for the flags; the secrets come from where the cluster file points.
 *
 * @module
 */

import { isKvCommand, type KvCommand } from "../kv/commands.ts";
import { MemoryStorage } from "../storage/memory.ts";
import { SystemClock } from "../runtime/clock.ts";
import { SystemRandom } from "../runtime/random.ts";
import { createApp } from "../server/app.ts";
import { DEFAULT_SNAPSHOT_RATE_MBPS } from "../server/snapshot_route.ts";
import { faultRoutes } from "../server/fault_routes.ts";
import {
  ConfigError,
  defaultListenAddress,
  loadClusterConfig,
  resolveSecret,
} from "../server/config.ts";
import { DEFAULT_MAX_HELD_COMMANDS, ReplicaDriver } from "../driver/driver.ts";
import { fetchSnapshot, keptTransferPeer } from "../net/snapshot_fetch.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import { openDenoKvStorage } from "../storage/deno_kv/mod.ts";
import { versionTagOf } from "../kv/backup.ts";
import { restoreFromBackup } from "./restore.ts";
import { FaultInjector } from "../transport/faults.ts";
import { HttpTransport } from "../transport/http.ts";
import { loadRttMatrix } from "../wan/matrix.ts";
import { parseHostPort } from "../net/endpoint.ts";
import { integerOption, option, parseArgs, type ParsedArgs, UsageError } from "./args.ts";

const USAGE =
  "usage: replica --config FILE --id ID --data DIR [--listen HOST:PORT] [--log-messages]" +
  " [--max-held-commands N] [--snapshot-rate MBPS]" +
  " [--enable-fault-injection | --emulate-wan MATRIX.json]" +
  " [--volatile-storage] [--restore BACKUP_FILE]";

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

/** Settings of {@linkcode peerSnapshotFetch}. */
export interface PeerSnapshotFetchOptions {
  /** This replica's id. */
  readonly self: number;
  /** The cluster's replicas: ids and base URLs. */
  readonly replicas: readonly { readonly id: number; readonly url: string }[];
  /** The cluster secret. */
  readonly secret: string;
  /** The partial file of transfers (`DATA/snapshot.partial`). */
  readonly partialPath: string;
  /** Receives the transfer's lines (resumed, afresh, redirected). */
  readonly log?: (line: string) => void;
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
    let target = options.replicas.find((replica) => replica.id === peer);
    if (target === undefined) throw new Error(`No replica ${peer} in the cluster file`);
    if (first) {
      first = false;
      const kept = await keptTransferPeer(options.partialPath);
      const holder = options.replicas.find((replica) =>
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
      partialPath: options.partialPath,
      signal,
      ...(options.log === undefined ? {} : { log: options.log }),
      ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
    });
  };
}

/** Starts a replica and serves until SIGINT or SIGTERM. */
export async function runReplica(argv: readonly string[]): Promise<void> {
  const args = parseArgs(argv, {
    options: [
      "config",
      "id",
      "data",
      "listen",
      "emulate-wan",
      "max-held-commands",
      "snapshot-rate",
      "restore",
    ],
    flags: ["log-messages", "enable-fault-injection", "volatile-storage"],
  });
  // Checked before anything is read or opened: a bad value changes nothing.
  const snapshotRateMbps = snapshotRateOption(args);
  const configPath = option(args, "config", Deno.env.get("EPAXOS_CONFIG"));
  const idText = option(args, "id", Deno.env.get("EPAXOS_ID"));
  const dataDir = option(args, "data", Deno.env.get("EPAXOS_DATA"));
  if (configPath === undefined || idText === undefined || dataDir === undefined) {
    throw new UsageError(USAGE);
  }
  const config = await loadClusterConfig(configPath);
  const id = integerOption(
    parseArgs(["--id", idText], { options: ["id"] }),
    "id",
    { min: 0, max: config.replicas.length - 1 },
  )!;
  const self = config.replicas[id]!;
  const secret = await resolveSecret(config.secret, "The cluster secret");
  const clientToken = config.clientToken === undefined
    ? undefined
    : await resolveSecret(config.clientToken, "The client token");
  const listen = option(args, "listen", Deno.env.get("EPAXOS_LISTEN")) ??
    defaultListenAddress(self.url);
  const endpoint = parseHostPort(listen);
  if (endpoint === undefined) {
    throw new UsageError(`--listen must be HOST:PORT with a port up to 65535, got ${listen}`);
  }
  const { hostname, port } = endpoint;

  const log = (line: string) => console.log(`${new Date().toISOString()} ${self.name}: ${line}`);
  await Deno.mkdir(dataDir, { recursive: true });
  // Volatile storage is for latency benchmarks only: it keeps nothing across a
  // restart, so it is never a default and always announced.
  const volatile = args.flags.has("volatile-storage");
  if (volatile) log("VOLATILE storage: nothing survives a restart (benchmark use only)");
  const restore = option(args, "restore");
  if (restore !== undefined) {
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
      replicas: config.replicas.length,
    });
  // A cluster seeded from a backup tags its versions with it (`versionTagOf`).
  const seededFrom = storage instanceof MemoryStorage ? undefined : storage.seededFrom;
  const versionTag = seededFrom === undefined ? undefined : versionTagOf(seededFrom);
  const clock = new SystemClock();
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
    peers: config.replicas.map((replica) => ({ id: replica.id, url: replica.url })),
    secret,
    clock,
    random,
    log,
    ...(faults === undefined
      ? {}
      : { interpose: (peer, deliver) => faults.interpose(peer, deliver) }),
  });
  const node = await ReplicaDriver.open({
    id,
    ...(versionTag === undefined ? {} : { versionTag }),
    replicas: config.replicas.length,
    storage,
    transport,
    clock,
    random,
    log,
    traceMessages: args.flags.has("log-messages"),
    // Peers pruned past this replica: a snapshot from one of them, resumed
    // from the partial file if this process stopped during the transfer.
    fetchSnapshot: peerSnapshotFetch({
      self: id,
      replicas: config.replicas,
      secret,
      partialPath: `${dataDir}/snapshot.partial`,
      log,
    }),
    maxHeldCommands: integerOption(args, "max-held-commands", {
      min: 1000,
      max: 1_000_000_000,
      fallback: DEFAULT_MAX_HELD_COMMANDS,
    })!,
  });
  const app = createApp({
    node,
    replicas: config.replicas.length,
    secret,
    ...(clientToken === undefined ? {} : { clientToken }),
    ...(self.region === undefined ? {} : { region: self.region }),
    names: config.replicas.map((replica) => replica.name),
    urls: config.replicas.map((replica) => replica.url),
    log,
    snapshotRateMbps,
    ...(faults === undefined || wanMatrix !== undefined
      ? {}
      : { extraOps: faultRoutes(faults, { secret, replicas: config.replicas.length }) }),
  });
  node.start();
  const server = Deno.serve({
    hostname,
    port,
    onListen: () =>
      log(
        `replica ${id} of ${config.replicas.length} listening on ${hostname}:${port}, data in ${dataDir}`,
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
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(error.message);
      Deno.exit(2);
    }
    throw error;
  }
}
