/**
 * TLS between replicas: where certificates come from (the cluster file's
 * `tls` section and each replica's `tls` entry, or flags), which
 * combinations a replica refuses to start with, and the peer side of every
 * call a replica makes to another ({@linkcode PeerTls}).
 *
 * A replica whose URL is `https` serves TLS (`tls_server.ts`) and verifies
 * its peers' certificates against the cluster CA on every connection it opens
 * to them: the peer transport's, the snapshot fetch's, the join's and the
 * admin route's forwarding. The cluster secret still authenticates every peer
 * request; TLS keeps it, and every value, off the wire in cleartext, and
 * proves to the caller that it talks to a replica of this cluster.
 *
 * What Deno 2.9 can and cannot do here (measured, see the README's TLS
 * section):
 * - `Deno.connectTls` and `Deno.createHttpClient` take `caCerts`, but add them
 *   to the process's default roots (Mozilla's, or those `DENO_TLS_CA_STORE`,
 *   `DENO_CERT` and `NODE_EXTRA_CA_CERTS` name): a peer certificate from a
 *   public CA for the peer's own host name would pass too. A replica trusts
 *   the cluster CA alone only when started with an empty root store
 *   (`DENO_TLS_CA_STORE=` and neither of the others), which `deno task
 *   start` does ({@linkcode clusterCaOnlyEnvironment}).
 * - `Deno.createHttpClient` and `Deno.connectTls` can present a client
 *   certificate (`cert`, `key`), `Deno.startTls` cannot. Replicas present
 *   theirs on every `fetch` to a peer; the transport's connections, opened
 *   with `startTls` over a no-delay socket for latency
 *   (`pipelined_client.ts`), present none.
 * - `Deno.serve` (and `Deno.listenTls`) cannot ask for a client certificate
 *   (their TLS server takes none), so a replica cannot verify the one its
 *   peer presents: the peer side of mutual TLS stays the cluster secret.
 *   `node:tls` servers can (`requestCert`), but serving the API through
 *   Node's compatibility layer would give up `Deno.serve`.
 *
 * @module
 */

/** The cluster file's `tls` section. */
export interface ClusterTlsSettings {
  /** The cluster CA's certificate file (PEM): peers' certificates must chain to it. */
  readonly ca?: string;
  /** Whether `http` and `https` members may be mixed (default false: refused). */
  readonly allowMixed?: boolean;
}

/** A replica's certificate and private key files (PEM). */
export interface TlsFiles {
  /** The certificate (chain) file. */
  readonly cert: string;
  /** The private key file (PKCS #8, RSA or EC, PEM). */
  readonly key: string;
}

function nonEmptyPath(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && !value.includes("\0");
}

/**
 * Reads the cluster file's `tls` section: `{"ca": PATH, "allowMixed": bool}`,
 * both optional; absent, `undefined`.
 */
export function parseClusterTls(
  value: unknown,
): { readonly settings?: ClusterTlsSettings } | { readonly problem: string } {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { problem: 'must be an object such as {"ca": "tls/ca.pem"}' };
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key !== "ca" && key !== "allowMixed") return { problem: `has no field ${key}` };
  }
  if (record.ca !== undefined && !nonEmptyPath(record.ca)) {
    return { problem: "ca must be the path of the cluster CA's certificate (PEM)" };
  }
  if (record.allowMixed !== undefined && typeof record.allowMixed !== "boolean") {
    return { problem: "allowMixed must be true or false" };
  }
  return {
    settings: {
      ...(record.ca === undefined ? {} : { ca: record.ca as string }),
      ...(record.allowMixed === undefined ? {} : { allowMixed: record.allowMixed as boolean }),
    },
  };
}

/** Reads a replica entry's `tls`: `{"cert": PATH, "key": PATH}`; absent, `undefined`. */
export function parseTlsFiles(
  value: unknown,
): { readonly files?: TlsFiles } | { readonly problem: string } {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { problem: 'must be {"cert": PATH, "key": PATH}' };
  }
  const record = value as Record<string, unknown>;
  if (!nonEmptyPath(record.cert) || !nonEmptyPath(record.key) || Object.keys(record).length !== 2) {
    return { problem: 'must be {"cert": PATH, "key": PATH}, both files in PEM' };
  }
  return { files: { cert: record.cert, key: record.key } };
}

/** A replica as the TLS checks see it. */
export interface NamedUrl {
  /** Its name. */
  readonly name: string;
  /** Its base URL. */
  readonly url: string;
}

/**
 * Why the cluster `replicas` cannot run as configured, or `undefined` if it
 * can: members of one cluster speak either all `https` or all `http`, since
 * a replica sends the cluster secret, and values, to every member; mixed,
 * those sent to an `http` member would cross in cleartext. `allowMixed`
 * (`--allow-mixed-tls`, or the `tls` section's `allowMixed`) lets it be, for
 * a migration or a member behind a TLS-terminating proxy on the same host.
 */
export function mixedSchemeProblem(
  replicas: readonly NamedUrl[],
  allowMixed: boolean,
): string | undefined {
  const https = replicas.filter((replica) => replica.url.startsWith("https:"));
  const http = replicas.filter((replica) => replica.url.startsWith("http:"));
  if (allowMixed || https.length === 0 || http.length === 0) return undefined;
  const list = (some: readonly NamedUrl[]) =>
    some.map((replica) => `${replica.name} ${replica.url}`).join(", ");
  return `the cluster mixes https replicas (${list(https)}) with http ones (${list(http)}): ` +
    "the cluster secret and values sent to the http ones would cross the network in cleartext. " +
    "Make every URL https, or allow it with --allow-mixed-tls " +
    '(or "tls": {"allowMixed": true} in the cluster file)';
}

/**
 * Why a replica at `ownUrl` cannot start with the certificate files `files`
 * (absent: none), or `undefined` if it can: an `https` replica serves TLS and
 * needs a certificate and key; an `http` one serves none and must not be
 * given one (its peers would not use it).
 */
export function replicaTlsProblem(
  ownUrl: string,
  files: { readonly cert?: string; readonly key?: string },
): string | undefined {
  if ((files.cert === undefined) !== (files.key === undefined)) {
    return "a certificate needs its key and a key its certificate: give both " +
      "(--tls-cert FILE --tls-key FILE, or the replica's tls entry in the cluster file)";
  }
  const https = ownUrl.startsWith("https:");
  if (https && files.cert === undefined) {
    return `this replica's URL ${ownUrl} is https: it needs a certificate and key ` +
      '(the replica\'s "tls": {"cert": PATH, "key": PATH} in the cluster file, or ' +
      "--tls-cert FILE --tls-key FILE; `deno task certs --config FILE` makes development ones)";
  }
  if (!https && files.cert !== undefined) {
    return `this replica's URL ${ownUrl} is http, but a certificate is configured: ` +
      "make its URL https (in the cluster file, or --url) to serve TLS";
  }
  return undefined;
}

/** The PEM texts a replica's TLS runs on, as last read from their files. */
export interface TlsMaterial {
  /** Its certificate (chain). */
  readonly cert: string;
  /** Its private key. */
  readonly key: string;
  /** The cluster CA's certificate(s), if one is configured. */
  readonly ca?: string;
}

/** Where a replica's TLS material is read from. */
export interface TlsPaths extends TlsFiles {
  /** The cluster CA's certificate file, if any. */
  readonly ca?: string;
}

/**
 * Reads the files of `paths`.
 *
 * @throws {Error} naming the file that cannot be read or holds no PEM block.
 */
export async function readTlsMaterial(paths: TlsPaths): Promise<TlsMaterial> {
  const read = async (path: string, what: string, marker: RegExp) => {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new Error(`Cannot read the ${what} ${path}: ${(error as Error).message}`);
    }
    if (!marker.test(text)) throw new Error(`The ${what} ${path} holds no PEM ${what}`);
    return text;
  };
  const certificate = /-----BEGIN CERTIFICATE-----/;
  const [cert, key, ca] = await Promise.all([
    read(paths.cert, "certificate", certificate),
    read(paths.key, "private key", /-----BEGIN [A-Z ]*PRIVATE KEY-----/),
    paths.ca === undefined ? undefined : read(paths.ca, "certificate", certificate),
  ]);
  return ca === undefined ? { cert, key } : { cert, key, ca };
}

/** Whether two readings of the files are the same. */
export function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return a.cert === b.cert && a.key === b.key && a.ca === b.ca;
}

/** How long a replaced HTTP client stays open for the requests still using it. */
const RETIRED_CLIENT_MS = 60_000;

/** What a TLS connection to a peer trusts (`Deno.startTls`'s options). */
export interface PeerConnectSettings {
  /** The cluster CA, added to the trusted roots. */
  readonly caCerts?: string[];
}

/**
 * The TLS side of every call a replica makes to a peer: the settings of the
 * transport's connections ({@linkcode PeerTls.connectSettings}), a `fetch`
 * for the others ({@linkcode PeerTls.fetch}: snapshot fetch, join, admin
 * forwarding), and the refusal of cleartext: with TLS on, a call to an
 * `http` peer fails before anything is sent (unless mixing is allowed), and
 * a peer's redirect is never followed, so nothing secret can fall back to
 * `http`.
 */
export class PeerTls {
  #material: TlsMaterial;
  #client: Deno.HttpClient;
  #retired: { client: Deno.HttpClient; timer: ReturnType<typeof setTimeout> } | undefined;
  readonly #allowCleartext: boolean;

  /**
   * Uses `material` (this replica's certificate and the cluster CA); with
   * `allowCleartext`, `http` peers are called too (a mixed cluster, allowed).
   */
  constructor(material: TlsMaterial, options: { readonly allowCleartext: boolean }) {
    this.#material = material;
    this.#allowCleartext = options.allowCleartext;
    this.#client = this.#newClient();
  }

  #newClient(): Deno.HttpClient {
    const { ca, cert, key } = this.#material;
    return Deno.createHttpClient({ ...(ca === undefined ? {} : { caCerts: [ca] }), cert, key });
  }

  /** Takes new material (the files changed): connections opened from now on use it. */
  update(material: TlsMaterial): void {
    if (sameMaterial(material, this.#material)) return;
    this.#material = material;
    // Requests under way keep the old client a while; one retired client at a time.
    if (this.#retired !== undefined) {
      clearTimeout(this.#retired.timer);
      this.#retired.client.close();
    }
    const old = this.#client;
    this.#retired = {
      client: old,
      timer: setTimeout(() => {
        this.#retired = undefined;
        old.close();
      }, RETIRED_CLIENT_MS),
    };
    this.#client = this.#newClient();
  }

  /** The options of the transport's TLS connections to peers, with the material of now. */
  connectSettings(): PeerConnectSettings {
    const { ca } = this.#material;
    return ca === undefined ? {} : { caCerts: [ca] };
  }

  /** Why a call to `url` is refused (an `http` peer while TLS is on), or `undefined`. */
  cleartextProblem(url: string): string | undefined {
    if (this.#allowCleartext || !url.startsWith("http:")) return undefined;
    return `refusing to call ${new URL(url).origin} in cleartext: TLS is on, and the cluster ` +
      "secret must not cross the network unencrypted (--allow-mixed-tls allows it)";
  }

  /**
   * `fetch` for calls to peers: over this replica's client (the cluster CA
   * trusted, its certificate presented), never following a redirect, and
   * refusing `http` URLs ({@linkcode PeerTls.cleartextProblem}).
   */
  readonly fetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = input instanceof Request ? input.url : String(input);
    const problem = this.cleartextProblem(url);
    if (problem !== undefined) return Promise.reject(new TypeError(problem));
    return fetch(input, { ...init, client: this.#client, redirect: "error" });
  };

  /** Closes the HTTP clients. */
  close(): void {
    this.#client.close();
    if (this.#retired !== undefined) {
      clearTimeout(this.#retired.timer);
      this.#retired.client.close();
      this.#retired = undefined;
    }
  }
}

/**
 * The environment variables that make a Deno process trust the cluster CA
 * alone: its default roots emptied (`DENO_TLS_CA_STORE` set to nothing: no
 * Mozilla or system roots) and the variables that add roots
 * (`DENO_CERT`, `NODE_EXTRA_CA_CERTS`) removed. Returns `environment` so
 * changed, to be passed whole (`Deno.Command`'s `clearEnv`).
 */
export function clusterCaOnlyEnvironment(
  environment: Readonly<Record<string, string>>,
): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(environment)) {
    if (name !== "DENO_CERT" && name !== "NODE_EXTRA_CA_CERTS") result[name] = value;
  }
  result.DENO_TLS_CA_STORE = "";
  return result;
}

/**
 * Which roots this process trusts besides the cluster CA, in words, from its
 * environment (`DENO_TLS_CA_STORE`, `DENO_CERT`, `NODE_EXTRA_CA_CERTS`; a
 * variable this process may not read counts as unset).
 */
export function describeExtraRoots(): string {
  const read = (name: string) => {
    try {
      return Deno.env.get(name);
    } catch {
      return undefined;
    }
  };
  const store = read("DENO_TLS_CA_STORE");
  const extra = ["DENO_CERT", "NODE_EXTRA_CA_CERTS"].filter((name) => read(name) !== undefined);
  const stores = store === undefined
    ? ["mozilla"]
    : store.split(",").map((part) => part.trim()).filter((part) => part !== "");
  const all = [...stores.map((name) => `the ${name} roots`), ...extra];
  return all.length === 0 ? "none" : all.join(", ");
}
