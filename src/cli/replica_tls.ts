/**
 * A replica's TLS, from its flags and cluster file: which files it serves and
 * trusts (`--tls-cert FILE --tls-key FILE --tls-ca FILE` over the cluster
 * file's replica `tls` entry and `tls.ca`), the checks it refuses to start
 * without (a certificate for an https URL, none for an http one, no mix of
 * http and https members unless `--allow-mixed-tls`, a certificate peers will
 * accept), and its listener: plain `Deno.serve` for http, or the reloading
 * TLS server, fed by a watch of the files, for https.
 *
 * @module
 */

import type { ClusterConfig } from "../server/config.ts";
import { ConfigError } from "../server/config.ts";
import {
  describeExtraRoots,
  mixedSchemeProblem,
  type NamedUrl,
  PeerTls,
  readTlsMaterial,
  replicaTlsProblem,
  type TlsMaterial,
  type TlsPaths,
} from "../net/tls.ts";
import { serveTls, servingProblem, watchTlsFiles } from "../net/tls_server.ts";
import { option, type ParsedArgs } from "./args.ts";

/** The replica's value-taking TLS options. */
export const TLS_OPTIONS = ["tls-cert", "tls-key", "tls-ca"] as const;
/** The replica's TLS flags. */
export const TLS_FLAGS = ["allow-mixed-tls"] as const;
/** Usage text of the TLS options. */
export const TLS_USAGE = " [--tls-cert FILE --tls-key FILE] [--tls-ca FILE] [--allow-mixed-tls]";

/** A replica's TLS, ready to serve and to call peers with. */
export interface ReplicaTls {
  /** The files, read again for reloads. */
  readonly paths: TlsPaths;
  /** What they held at start. */
  readonly material: TlsMaterial;
  /** The peer side: transport settings, `fetch`, cleartext refusal. */
  readonly peer: PeerTls;
  /** The host its certificate must name (its URL's). */
  readonly host: string;
}

/**
 * Whether http and https members may be mixed: `--allow-mixed-tls`, or the
 * cluster file's `tls.allowMixed`.
 */
export function allowMixedTls(args: ParsedArgs, file: ClusterConfig | undefined): boolean {
  return args.flags.has("allow-mixed-tls") || file?.tls?.allowMixed === true;
}

/**
 * Refuses members that mix http and https (see `mixedSchemeProblem`).
 *
 * @throws {ConfigError} naming the members of each kind.
 */
export function checkMixedMembers(members: readonly NamedUrl[], allowMixed: boolean): void {
  const problem = mixedSchemeProblem(members, allowMixed);
  if (problem !== undefined) throw new ConfigError(`Refusing to start: ${problem}`);
}

/**
 * The TLS of the replica reached at `ownUrl` (entry `id` of `file`, if it
 * starts from one), or `undefined` for an http replica. Reads the files and
 * checks by a loopback handshake that peers will accept its certificate.
 *
 * @throws {ConfigError} if the files are missing, unreadable, do not match,
 *   or make a certificate peers would refuse; or the URL's scheme and the
 *   files disagree.
 */
export async function replicaTlsSetup(
  args: ParsedArgs,
  options: { readonly ownUrl: string; readonly file?: ClusterConfig; readonly id?: number },
): Promise<ReplicaTls | undefined> {
  const entry = options.id === undefined ? undefined : options.file?.replicas[options.id]?.tls;
  const cert = option(args, "tls-cert") ?? entry?.cert;
  const key = option(args, "tls-key") ?? entry?.key;
  const ca = option(args, "tls-ca") ?? options.file?.tls?.ca;
  const problem = replicaTlsProblem(options.ownUrl, {
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
  });
  if (problem !== undefined) throw new ConfigError(`Refusing to start: ${problem}`);
  if (cert === undefined || key === undefined) return undefined;
  const paths: TlsPaths = { cert, key, ...(ca === undefined ? {} : { ca }) };
  let material: TlsMaterial;
  try {
    material = await readTlsMaterial(paths);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  const host = new URL(options.ownUrl).hostname;
  const refused = await servingProblem(material, host);
  if (refused !== undefined) throw new ConfigError(`Refusing to start (${cert}): ${refused}`);
  const peer = new PeerTls(material, { allowCleartext: allowMixedTls(args, options.file) });
  return { paths, material, peer, host };
}

/** A running listener: plain or TLS. */
export interface ReplicaListener {
  /** Resolves once it is shut down. */
  readonly finished: Promise<void>;
  /** Stops accepting and waits for the requests under way. */
  shutdown(): Promise<void>;
}

/**
 * Serves `handler` on `hostname:port`: over TLS when `tls` is given, its
 * certificate reloaded when the files change (checked first as at start: a
 * certificate peers would refuse is logged and not served), and its CA and
 * client certificate taken by the peer side at the same time.
 */
export function serveReplica(
  options: {
    readonly hostname: string;
    readonly port: number;
    readonly tls: ReplicaTls | undefined;
    readonly onListen: () => void;
    readonly log: (line: string) => void;
  },
  handler: Deno.ServeHandler<Deno.NetAddr>,
): ReplicaListener {
  const { hostname, port, tls, log } = options;
  if (tls === undefined) {
    return Deno.serve({ hostname, port, onListen: options.onListen }, handler);
  }
  log(
    `TLS on: certificate ${tls.paths.cert}; peers verified against ${
      tls.paths.ca ?? "no cluster CA"
    } and the process's roots (${describeExtraRoots()})`,
  );
  const server = serveTls(
    { hostname, port, material: tls.material, onListen: options.onListen, log },
    handler,
  );
  const stopWatching = watchTlsFiles({
    paths: tls.paths,
    loaded: tls.material,
    log,
    onChange: async (material) => {
      const problem = await servingProblem(material, tls.host);
      if (problem !== undefined) throw new Error(`kept the current certificate: ${problem}`);
      await server.reload(material);
      tls.peer.update(material);
      log(`TLS: certificate reloaded from ${tls.paths.cert}`);
    },
  });
  return {
    finished: server.finished,
    async shutdown() {
      stopWatching();
      await server.shutdown();
      tls.peer.close();
    },
  };
}
