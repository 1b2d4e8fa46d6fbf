/**
 * A replica's listener over TLS, whose certificate is replaced without a
 * restart when its files change.
 *
 * `Deno.serve` takes its certificate once, when it starts listening, and
 * offers no way to swap it (Deno 2.9). So a reload starts a second server on
 * the same port with the new certificate (`reusePort`: `SO_REUSEPORT`, which
 * for TLS listeners is behind `--unstable-net`, on in deno.json), then shuts
 * the old one down gracefully: it stops accepting at once, answers the
 * requests it holds, and is closed for good after {@linkcode DRAIN_MS}
 * (long-lived streams, such as watches, end then and their clients
 * reconnect). New connections find one listener or the other throughout,
 * but for one window the kernel leaves: a connection still queued at the old
 * listener, or in its TLS handshake there, when the old listener closes is
 * reset (Linux moves queued connections to the listener that stays only
 * with `sysctl net.ipv4.tcp_migrate_req=1`). CI saw 1 of 56 handshakes
 * reset across one reload; a client's retry on a fresh connection then
 * succeeds (`tests/net/tls_test.ts`).
 * HTTP/1.1 and HTTP/2 are both offered (ALPN `h2`, `http/1.1`), as
 * `Deno.serve` does over TLS.
 *
 * Because `SO_REUSEPORT` would also let a second replica bind the same port
 * by mistake and share its connections, the first bind is checked by an
 * exclusive listener first ({@linkcode serveTls}).
 *
 * @module
 */

import { readTlsMaterial, sameMaterial, type TlsMaterial, type TlsPaths } from "./tls.ts";

/** Longest an old listener keeps serving its connections after a reload. */
export const DRAIN_MS = 30_000;
/** How often the certificate files are read for changes, by default. */
export const DEFAULT_RELOAD_CHECK_MS = 2000;

/** A server whose certificate can be replaced. */
export interface ReloadableServer {
  /** The port it listens on. */
  readonly port: number;
  /** Resolves once it is shut down and every listener has finished. */
  readonly finished: Promise<void>;
  /** Replaces the certificate and key: a new listener, the old one drained. */
  reload(material: TlsMaterial): Promise<void>;
  /** Stops accepting and waits for the requests under way. */
  shutdown(): Promise<void>;
}

/** Settings of {@linkcode serveTls}. */
export interface ServeTlsOptions {
  /** Address to listen on. */
  readonly hostname: string;
  /** Port (0: any free one). */
  readonly port: number;
  /** The certificate and key served first. */
  readonly material: TlsMaterial;
  /** Called once, when it first listens. */
  readonly onListen?: (addr: Deno.NetAddr) => void;
  /** Receives one line per reload. */
  readonly log?: (line: string) => void;
}

interface Listener {
  readonly server: Deno.HttpServer<Deno.NetAddr>;
  readonly abort: AbortController;
}

/**
 * Serves `handler` over TLS with `options.material`; see the module's
 * documentation for reloads.
 *
 * @throws {Deno.errors.AddrInUse} if another process listens on the port.
 * @throws {Error} if the certificate or key cannot be used (Deno's message:
 *   no certificate found, the key does not match it).
 */
export function serveTls(
  options: ServeTlsOptions,
  handler: Deno.ServeHandler<Deno.NetAddr>,
): ReloadableServer {
  let port = options.port;
  if (port !== 0) {
    // Exclusive first: with SO_REUSEPORT alone, a second replica on this port would share it.
    Deno.listen({ hostname: options.hostname, port }).close();
  }
  const listen = (material: TlsMaterial, onListen?: (addr: Deno.NetAddr) => void): Listener => {
    const abort = new AbortController();
    const server = Deno.serve({
      hostname: options.hostname,
      port,
      reusePort: true,
      cert: material.cert,
      key: material.key,
      signal: abort.signal,
      onListen: onListen ?? (() => {}),
    }, handler);
    return { server, abort };
  };
  let current = listen(options.material, options.onListen);
  port = current.server.addr.port;
  const draining = new Set<Promise<void>>();
  let stopping = false;
  let reloads = Promise.resolve();
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);

  const drain = (old: Listener) => {
    const timer = setTimeout(() => old.abort.abort(), DRAIN_MS);
    const done = old.server.shutdown().finally(() => clearTimeout(timer));
    draining.add(done);
    done.finally(() => draining.delete(done));
    return done;
  };

  return {
    get port() {
      return port;
    },
    finished,
    reload(material) {
      reloads = reloads.then(() => {
        if (stopping) return;
        const started = performance.now();
        const next = listen(material);
        const old = current;
        current = next;
        drain(old).then(() =>
          options.log?.(
            `TLS: the old listener drained ${
              (performance.now() - started).toFixed(0)
            } ms after the reload`,
          )
        );
      });
      return reloads;
    },
    async shutdown() {
      stopping = true;
      await reloads.catch(() => {});
      await Promise.all([drain(current), ...draining]);
      resolveFinished();
    },
  };
}

/**
 * Why a replica whose URL's host is `host` cannot serve `material`, or
 * `undefined` if it can: its certificate and key must match, and a peer
 * must accept the certificate (signed by the cluster CA `material.ca`, or a
 * root this process trusts when there is none; valid now; naming `host`).
 * Found by a real handshake through a listener on an ephemeral loopback
 * port, verified as peers verify it.
 */
export async function servingProblem(
  material: TlsMaterial,
  host: string,
): Promise<string | undefined> {
  let listener: Deno.TlsListener;
  try {
    listener = Deno.listenTls({
      hostname: "127.0.0.1",
      port: 0,
      cert: material.cert,
      key: material.key,
    });
  } catch (error) {
    return `the certificate and key cannot be served: ${(error as Error).message}`;
  }
  const accepted = listener.accept().then(async (conn) => {
    try {
      await conn.handshake();
    } catch {
      // The client's verdict is the one reported.
    } finally {
      conn.close();
    }
  }, () => {});
  try {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const name = host.replace(/^\[(.*)\]$/, "$1");
    try {
      const tls = await Deno.startTls(tcp, {
        hostname: name,
        ...(material.ca === undefined ? {} : { caCerts: [material.ca] }),
      });
      try {
        await tls.handshake();
      } finally {
        tls.close();
      }
    } catch (error) {
      const message = (error as Error).message;
      const hint = /UnknownIssuer|BadSignature/.test(message)
        ? material.ca === undefined
          ? "it is not signed by a root this process trusts, and no cluster CA is configured"
          : "it is not signed by the cluster CA"
        : /not valid for name|NotValidForName/.test(message)
        ? `it does not name this replica's host ${name}`
        : /Expired|NotValidYet/.test(message)
        ? "it is not valid now"
        : "peers would refuse it";
      return `peers would refuse this replica's certificate: ${hint} (${message})`;
    }
    return undefined;
  } finally {
    listener.close();
    await accepted;
  }
}

/** Settings of {@linkcode watchTlsFiles}. */
export interface WatchTlsOptions {
  /** The files. */
  readonly paths: TlsPaths;
  /** What was last loaded from them. */
  readonly loaded: TlsMaterial;
  /** How often to read them, in ms (default {@linkcode DEFAULT_RELOAD_CHECK_MS}). */
  readonly intervalMs?: number;
  /** Called with what they hold when it differs from what was last loaded; awaited. */
  readonly onChange: (material: TlsMaterial) => Promise<void>;
  /** Receives a line when the files cannot be read (once per distinct problem). */
  readonly log?: (line: string) => void;
}

/**
 * Reads the certificate, key and CA files every `intervalMs` and calls
 * `onChange` when they hold something new. Polling, not file events: a
 * rotation may replace the files by renaming over them or swapping a
 * symbolic link to their directory (as Kubernetes mounts secrets), which
 * events on the old files do not report. One read at a time; a read that
 * fails (a file being replaced) is tried again at the next tick. Returns a
 * function that stops it.
 */
export function watchTlsFiles(options: WatchTlsOptions): () => void {
  let loaded = options.loaded;
  let stopped = false;
  let lastProblem: string | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = async () => {
    try {
      const material = await readTlsMaterial(options.paths);
      lastProblem = undefined;
      if (!stopped && !sameMaterial(material, loaded)) {
        await options.onChange(material);
        loaded = material;
      }
    } catch (error) {
      const problem = (error as Error).message;
      if (problem !== lastProblem) options.log?.(`TLS: ${problem}; trying again`);
      lastProblem = problem;
    }
    if (!stopped) timer = setTimeout(tick, options.intervalMs ?? DEFAULT_RELOAD_CHECK_MS);
  };
  timer = setTimeout(tick, options.intervalMs ?? DEFAULT_RELOAD_CHECK_MS);
  return () => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
  };
}
