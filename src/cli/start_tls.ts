/**
 * The starter's side of TLS (`deno task start`): the local cluster's
 * development certificates (`--tls`), the files a replica of a cluster file
 * reads, the TLS flags passed on to it, and the module cache a replica that
 * trusts the cluster CA alone needs filled beforehand.
 *
 * @module
 */

import { type ClusterConfig, ConfigError } from "../server/config.ts";
import type { TlsFiles, TlsPaths } from "../net/tls.ts";
import { option, type ParsedArgs } from "./args.ts";
import { TLS_FLAGS, TLS_OPTIONS } from "./replica_tls.ts";

/**
 * The local cluster's TLS: a development CA and a certificate per replica in
 * `dir` (`ca.pem`, `local-<id>.cert.pem`, `local-<id>.key.pem`), made on the
 * first `--tls` launch and reused after.
 */
export async function localClusterTls(
  dir: string,
  urls: readonly string[],
): Promise<{ readonly ca: string; readonly replicas: readonly TlsFiles[] }> {
  const { ensureClusterCertificates } = await import("./certs.ts");
  const names = urls.map((url, id) => ({ name: `local-${id}`, url }));
  const made = await ensureClusterCertificates(dir, names);
  if (made.made.length > 0) console.log(`launcher: made ${made.made.join(", ")}`);
  return { ca: made.ca, replicas: names.map(({ name }) => made.replicas.get(name)!) };
}

/**
 * The TLS files replica `id` of `config` reads (flags over the cluster
 * file), as absolute paths where they exist, or `undefined` without a
 * certificate.
 */
export function startTlsPaths(
  args: ParsedArgs,
  config: ClusterConfig | undefined,
  id: number | undefined,
): TlsPaths | undefined {
  const entry = id === undefined ? undefined : config?.replicas[id]?.tls;
  const cert = option(args, "tls-cert") ?? entry?.cert;
  const key = option(args, "tls-key") ?? entry?.key;
  const ca = option(args, "tls-ca") ?? config?.tls?.ca;
  if (cert === undefined || key === undefined) return undefined;
  return { cert, key, ...(ca === undefined ? {} : { ca }) };
}

/** The TLS flags given to the starter, passed on to the replica as they are. */
export function tlsArgs(args: ParsedArgs): string[] {
  return [
    ...TLS_OPTIONS.flatMap((name) => {
      const value = option(args, name);
      return value === undefined ? [] : [`--${name}`, value];
    }),
    ...TLS_FLAGS.filter((name) => args.flags.has(name)).map((name) => `--${name}`),
  ];
}

/**
 * Fetches the replica's modules into Deno's cache now, with this process's
 * trusted roots: a replica with TLS starts trusting the cluster CA alone,
 * and could not download them from a registry itself.
 */
export async function cacheReplicaModules(script: string, config: string): Promise<void> {
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["cache", "--quiet", `--config=${config}`, script],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new ConfigError(
      `Cannot cache the replica's modules: ${new TextDecoder().decode(stderr).trim()}`,
    );
  }
}
