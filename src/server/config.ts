/**
 * Cluster configuration: one JSON file shared by every replica, plus per-replica
 * flags and environment variables.
 *
 * ```json
 * {
 *   "replicas": [
 *     { "id": 0, "name": "va", "region": "us-east-1", "url": "http://10.0.0.1:8001" },
 *     { "id": 1, "name": "ca", "region": "us-west-1", "url": "http://10.0.0.2:8001" },
 *     { "id": 2, "name": "ie", "region": "eu-west-1", "url": "http://10.0.0.3:8001" }
 *   ],
 *   "secret": { "env": "EPAXOS_CLUSTER_SECRET" },
 *   "clientToken": { "env": "EPAXOS_CLIENT_TOKEN" }
 * }
 * ```
 *
 * - `replicas`: ids `0..n-1` (n odd, 3 to 9), each with the URL its peers and
 *   clients reach it at. `name` and `region` are for status and metrics.
 * - `secret`: the cluster credential every peer request carries, given by
 *   reference: `{ "env": NAME }` (recommended), `{ "file": PATH }`, or
 *   `{ "value": "..." }` (for local development only). At least 16 characters.
 * - `clientToken` (optional, same forms): when set, client routes require
 *   `Authorization: Bearer <token>`.
 * - `leases` (optional): quorum leases for linearizable reads at local
 *   latency, `"all"` (every key to every replica), `"none"` (the default),
 *   or `{ "rules": [{ "prefix": "cfg/", "holders": "all" | [ids] }],
 *   "leaseMs": 2000, "renewMs": 500, "drift": 0.01 }`. Bootstraps the first
 *   epoch only, like the members.
 * - `corsOrigins` (optional): origins whose pages may call the client API
 *   from a browser (CORS), such as `["https://app.example"]`; none by
 *   default. A replica's `--cors-origin` flags add to them.
 * - `tls` (optional): `{"ca": PATH, "allowMixed": false}`, the cluster CA
 *   peers' certificates are verified against, and whether http and https
 *   replicas may be mixed; each https replica's entry names its
 *   `"tls": {"cert": PATH, "key": PATH}` (`src/net/tls.ts`). Flags
 *   `--tls-ca`, `--tls-cert`, `--tls-key` stand in for them.
 *
 * @module
 */

import { type LeaseConfiguration, leasesFromSetting } from "../core/lease.ts";
import { MAX_REPLICAS } from "../core/quorum.ts";
import { formatHostPort, urlEndpoint } from "../net/endpoint.ts";
import {
  type ClusterTlsSettings,
  parseClusterTls,
  parseTlsFiles,
  type TlsFiles,
} from "../net/tls.ts";

/** One replica as the cluster file describes it. */
export interface ReplicaEntry {
  /** Index, `0..n-1`. */
  readonly id: number;
  /** Short name (defaults to `replica-<id>`). */
  readonly name: string;
  /** Region label, if any. */
  readonly region?: string;
  /** Base URL (`http://host:port`) peers and clients use. */
  readonly url: string;
  /** Its certificate and key files, for an https URL. */
  readonly tls?: TlsFiles;
}

/** Where a secret comes from. */
export type SecretReference =
  | { readonly env: string }
  | { readonly file: string }
  | { readonly value: string };

/** A parsed cluster file. */
export interface ClusterConfig {
  /** Every replica, indexed by id. */
  readonly replicas: readonly ReplicaEntry[];
  /** The cluster credential's source. */
  readonly secret: SecretReference;
  /** The client token's source, if client routes are guarded. */
  readonly clientToken?: SecretReference;
  /**
   * Quorum leases for the first epoch (`"all"`: every key to every replica;
   * `"none"` or absent: none; or rules). Later epochs keep what the
   * committed configuration says.
   */
  readonly leases?: LeaseConfiguration;
  /** Origins allowed cross-origin requests (CORS); absent or empty: none. */
  readonly corsOrigins?: readonly string[];
  /** The cluster CA and whether http and https replicas may be mixed. */
  readonly tls?: ClusterTlsSettings;
}

/** Most origins a replica allows cross-origin requests from. */
export const MAX_CORS_ORIGINS = 64;

/**
 * Why `origin` cannot be an allowed CORS origin, or `undefined` if it can: it
 * must be what a browser sends in `Origin`, a serialized origin (scheme,
 * host and port if not the default, nothing else: `https://app.example`,
 * `http://localhost:5173`). `*` is not taken: a page of any site could then
 * use a replica a browser reaches, such as a local cluster without a token.
 */
export function corsOriginProblem(origin: string): string | undefined {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `${JSON.stringify(origin)} is not an origin such as https://app.example`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return `${JSON.stringify(origin)} is not an http or https origin`;
  }
  if (url.origin !== origin) {
    return `${JSON.stringify(origin)} is not an origin as browsers send it: ` +
      `scheme, host and port only, lower case, no trailing slash (${url.origin})`;
  }
  return undefined;
}

/** A configuration problem, with a message that names the field. */
export class ConfigError extends Error {
  /** Creates a configuration error. */
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

function secretReference(value: unknown, field: string): SecretReference {
  if (typeof value !== "object" || value === null) {
    throw new ConfigError(`${field} must be an object such as {"env": "NAME"}`);
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  if (keys.length !== 1) {
    throw new ConfigError(`${field} must have exactly one of env, file, value`);
  }
  if (typeof record.env === "string" && /^[A-Z_][A-Z0-9_]*$/.test(record.env)) {
    return { env: record.env };
  }
  if (typeof record.file === "string" && record.file.length > 0) return { file: record.file };
  if (typeof record.value === "string") return { value: record.value };
  throw new ConfigError(`${field} must be {"env": NAME}, {"file": PATH} or {"value": TEXT}`);
}

/** Parses and validates a cluster file's JSON text. */
export function parseClusterConfig(text: string, source = "cluster file"): ClusterConfig {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${source} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(`${source} must be a JSON object`);
  }
  const record = value as Record<string, unknown>;
  if (!Array.isArray(record.replicas)) throw new ConfigError(`${source}: replicas must be a list`);
  const n = record.replicas.length;
  if (n < 3 || n > MAX_REPLICAS || n % 2 === 0) {
    throw new ConfigError(
      `${source}: a cluster needs an odd number of replicas from 3 to ${MAX_REPLICAS}, got ${n}`,
    );
  }
  const replicas: ReplicaEntry[] = [];
  const seenUrls = new Set<string>();
  record.replicas.forEach((entry: unknown, index: number) => {
    const field = `${source}: replicas[${index}]`;
    if (typeof entry !== "object" || entry === null) {
      throw new ConfigError(`${field} must be an object`);
    }
    const replica = entry as Record<string, unknown>;
    if (replica.id !== index) {
      throw new ConfigError(`${field}.id must be ${index} (ids are 0..n-1 in order)`);
    }
    if (typeof replica.url !== "string") throw new ConfigError(`${field}.url must be a string`);
    let url: URL;
    try {
      url = new URL(replica.url);
    } catch {
      throw new ConfigError(`${field}.url is not a URL: ${replica.url}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new ConfigError(`${field}.url must be http or https`);
    }
    const base = url.origin;
    if (seenUrls.has(base)) throw new ConfigError(`${field}.url repeats ${base}`);
    seenUrls.add(base);
    if (
      replica.name !== undefined &&
      (typeof replica.name !== "string" || !/^[\w.-]{1,64}$/.test(replica.name))
    ) {
      throw new ConfigError(`${field}.name must be 1 to 64 letters, digits, '.', '_' or '-'`);
    }
    if (replica.region !== undefined && typeof replica.region !== "string") {
      throw new ConfigError(`${field}.region must be a string`);
    }
    const tls = parseTlsFiles(replica.tls);
    if ("problem" in tls) throw new ConfigError(`${field}.tls ${tls.problem}`);
    replicas.push({
      id: index,
      name: (replica.name as string | undefined) ?? `replica-${index}`,
      ...(replica.region === undefined ? {} : { region: replica.region as string }),
      url: base,
      ...(tls.files === undefined ? {} : { tls: tls.files }),
    });
  });
  if (record.secret === undefined) throw new ConfigError(`${source}: secret is required`);
  const secret = secretReference(record.secret, `${source}: secret`);
  const clientToken = record.clientToken === undefined
    ? undefined
    : secretReference(record.clientToken, `${source}: clientToken`);
  const leases = parseLeases(record.leases, n, `${source}: leases`);
  const corsOrigins = parseCorsOrigins(record.corsOrigins, `${source}: corsOrigins`);
  const tls = parseClusterTls(record.tls);
  if ("problem" in tls) throw new ConfigError(`${source}: tls ${tls.problem}`);
  return {
    replicas,
    secret,
    ...(clientToken === undefined ? {} : { clientToken }),
    ...(leases === undefined ? {} : { leases }),
    ...(corsOrigins === undefined ? {} : { corsOrigins }),
    ...(tls.settings === undefined ? {} : { tls: tls.settings }),
  };
}

function parseCorsOrigins(value: unknown, field: string): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > MAX_CORS_ORIGINS) {
    throw new ConfigError(`${field} must be a list of at most ${MAX_CORS_ORIGINS} origins`);
  }
  return value.map((origin: unknown, index) => {
    const problem = typeof origin === "string"
      ? corsOriginProblem(origin)
      : "an origin must be a string";
    if (problem !== undefined) throw new ConfigError(`${field}[${index}]: ${problem}`);
    return origin as string;
  });
}

function parseLeases(
  value: unknown,
  replicas: number,
  field: string,
): LeaseConfiguration | undefined {
  const parsed = leasesFromSetting(value, replicas);
  if ("problem" in parsed) throw new ConfigError(`${field}: ${parsed.problem}`);
  return parsed.leases;
}

/**
 * The `HOST:PORT` a replica listens on when no `--listen` is given: the host
 * and port of its URL, with the scheme's default port (443 for https, 80 for
 * http) when the URL names none. The starter and the replica both use this, so
 * the address the starter grants network permission for is the one the replica
 * binds.
 */
export function defaultListenAddress(url: string): string {
  return formatHostPort(urlEndpoint(url));
}

/** Reads and parses a cluster file. */
export async function loadClusterConfig(path: string): Promise<ClusterConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError(`Cannot read cluster file ${path}: ${(error as Error).message}`);
  }
  return parseClusterConfig(text, path);
}

/**
 * Resolves a secret reference to its value. Needs env permission for the named
 * variable, or read permission for the file.
 */
export async function resolveSecret(reference: SecretReference, what: string): Promise<string> {
  let value: string | undefined;
  if ("env" in reference) {
    value = Deno.env.get(reference.env);
    if (value === undefined) {
      throw new ConfigError(`${what}: environment variable ${reference.env} is not set`);
    }
  } else if ("file" in reference) {
    try {
      value = (await Deno.readTextFile(reference.file)).trim();
    } catch (error) {
      throw new ConfigError(`${what}: cannot read ${reference.file}: ${(error as Error).message}`);
    }
  } else {
    value = reference.value;
  }
  if (value.length < 16) throw new ConfigError(`${what} must be at least 16 characters`);
  return value;
}
