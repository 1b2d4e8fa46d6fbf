/**
 * `deno task certs --config FILE [--out DIR] [--renew]`: a development CA and
 * a certificate per replica of a cluster file, for trying TLS or a test
 * cluster; production brings certificates from its own CA.
 *
 * In `DIR` (default: `tls/` beside the cluster file): `ca.pem` and
 * `ca-key.pem` (made once, reused after), and `NAME.cert.pem` and
 * `NAME.key.pem` for each replica (never the CA's names, whatever NAME is), whose names are the hosts of its URL (and the loopback
 * names for a loopback host). Keys are written readable by their owner only
 * (0600). Existing replica certificates are kept unless `--renew` (a
 * rotation: replicas reload them without a restart). Prints the `tls`
 * settings to put in the cluster file.
 *
 * @module
 */

import { ConfigError, loadClusterConfig } from "../server/config.ts";
import {
  altNamesFor,
  describeCertificate,
  issueCertificate,
  makeCertificateAuthority,
  type PemPair,
} from "../net/dev_ca.ts";
import { option, parseArgs, UsageError } from "./args.ts";

const USAGE = "usage: deno task certs --config FILE [--out DIR] [--renew]";

/** The files of a cluster's development certificates. */
export interface ClusterCertificates {
  /** The CA's certificate file: the cluster CA peers verify against. */
  readonly ca: string;
  /** Each replica's certificate and key files, by replica name. */
  readonly replicas: ReadonlyMap<string, { readonly cert: string; readonly key: string }>;
  /** What was made this time (file paths), as opposed to reused. */
  readonly made: readonly string[];
}

/** The text of the file at `path`, or `undefined` if there is none. */
async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/**
 * Writes `pair` to `certPath` and `keyPath`, the key first and readable by
 * its owner only (0600, also when the file existed with looser bits), so
 * that a certificate is never on disk without its key.
 */
async function writePair(pair: PemPair, certPath: string, keyPath: string): Promise<void> {
  await Deno.writeTextFile(keyPath, pair.key, { mode: 0o600 });
  await Deno.chmod(keyPath, 0o600);
  await Deno.writeTextFile(certPath, pair.cert);
}

/**
 * Makes what is missing of a cluster's development certificates in `dir`: the
 * CA (`ca.pem`, `ca-key.pem`) if absent, and a certificate per replica
 * (`NAME.cert.pem`, `NAME.key.pem`, for the hosts of its URL) if absent,
 * or always with `renew`.
 *
 * @throws {ConfigError} if the CA's files are there but unusable.
 */
export async function ensureClusterCertificates(
  dir: string,
  replicas: readonly { readonly name: string; readonly url: string }[],
  options: { readonly renew?: boolean } = {},
): Promise<ClusterCertificates> {
  await Deno.mkdir(dir, { recursive: true });
  const made: string[] = [];
  const caPath = `${dir}/ca.pem`;
  const caKeyPath = `${dir}/ca-key.pem`;
  let authority: PemPair;
  const caCert = await readIfPresent(caPath);
  if (caCert !== undefined) {
    try {
      authority = { cert: caCert, key: await Deno.readTextFile(caKeyPath) };
    } catch (error) {
      throw new ConfigError(
        `${caPath} exists but its key ${caKeyPath} cannot be read (${(error as Error).message}); ` +
          `remove ${caPath} to have a new CA made`,
      );
    }
  } else {
    authority = await makeCertificateAuthority();
    await writePair(authority, caPath, caKeyPath);
    made.push(caPath);
  }
  const files = new Map<string, { cert: string; key: string }>();
  for (const replica of replicas) {
    const cert = `${dir}/${replica.name}.cert.pem`;
    const key = `${dir}/${replica.name}.key.pem`;
    files.set(replica.name, { cert, key });
    const kept = !options.renew && (await readIfPresent(cert)) !== undefined &&
      (await readIfPresent(key)) !== undefined;
    if (kept) continue;
    let pair: PemPair;
    try {
      pair = await issueCertificate(authority, replica.name, {
        altNames: altNamesFor([replica.url]),
      });
    } catch (error) {
      throw new ConfigError(`Cannot sign with the CA in ${dir}: ${(error as Error).message}`);
    }
    // Written beside and renamed over: a replica reading them for a reload
    // sees the old pair or the new one, never half of one.
    await writePair(pair, `${cert}.new`, `${key}.new`);
    await Deno.rename(`${key}.new`, key);
    await Deno.rename(`${cert}.new`, cert);
    made.push(cert);
  }
  return { ca: caPath, replicas: files, made };
}

async function main(argv: readonly string[]): Promise<void> {
  const args = parseArgs(argv, { options: ["config", "out"], flags: ["renew"] });
  const configPath = option(args, "config");
  if (configPath === undefined) throw new UsageError(USAGE);
  const config = await loadClusterConfig(configPath);
  const beside = configPath.includes("/") ? configPath.replace(/\/[^/]*$/, "") : ".";
  const dir = option(args, "out") ?? `${beside}/tls`;
  const result = await ensureClusterCertificates(dir, config.replicas, {
    renew: args.flags.has("renew"),
  });
  for (const path of [result.ca, ...[...result.replicas.values()].map((files) => files.cert)]) {
    const summary = describeCertificate(await Deno.readTextFile(path));
    console.log(
      `${result.made.includes(path) ? "made  " : "kept  "} ${path}: ${summary.subject}, ` +
        `until ${summary.notAfter.toISOString().slice(0, 10)}` +
        (summary.altNames.length === 0 ? "" : `, names ${summary.altNames.join(" ")}`),
    );
  }
  const http = config.replicas.filter((replica) => !replica.url.startsWith("https:"));
  console.log(`
In ${configPath}, point at them (paths as given here, relative to where replicas start):
  "tls": { "ca": "${result.ca}" },
and in each replica's entry, for example ${config.replicas[0]!.name}'s:
  "tls": { "cert": "${result.replicas.get(config.replicas[0]!.name)!.cert}", "key": "${
    result.replicas.get(config.replicas[0]!.name)!.key
  }" }${
    http.length === 0
      ? ""
      : `\nand make every URL https (${http.map((r) => r.name).join(", ")} are http).`
  }
Clients trust the CA with: curl --cacert ${result.ca}, or DENO_CERT=${result.ca} for Deno.`);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      console.error(error.message);
      Deno.exit(2);
    }
    throw error;
  }
}
