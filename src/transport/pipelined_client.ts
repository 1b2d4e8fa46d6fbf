/**
 * A minimal HTTP/1.1 client for one peer: `POST`s of one fixed path over one
 * kept-alive connection, pipelined (RFC 9112 §9.3.2: a client may send
 * several requests without waiting for each response; the server answers in
 * order). It replaces `fetch` for peer batches: under load `fetch` and its
 * streams took 8 to 11 % of a replica's JS thread (`--cpu-prof` of `deno task
 * bench:throughput`); here a request is one socket write and its answer a few
 * bytes parsed, and sending takes about 6 % of the thread, most of it the
 * kernel's loopback delivery inside the write.
 *
 * It understands exactly what the peer route answers: a status line, headers
 * (of which it reads {@linkcode PEER_EPOCH_HEADER}, the epoch of a peer that
 * refuses a batch of an earlier one) and a body framed by `Content-Length`
 * (or none, for 204 and 304). Anything
 * else (chunked or close-delimited bodies, oversized heads, an answer nobody
 * asked for) fails every request on the connection and drops it; the next
 * request opens a new one. A request that fails this way may or may not have
 * been processed by the peer, as with any failed HTTP request: the transport
 * retries, and the protocol tolerates duplicates.
 *
 * @module
 */

import { urlEndpoint } from "../net/endpoint.ts";
import type { PeerConnectSettings } from "../net/tls.ts";

/** Settings of a {@linkcode PipelinedClient}. */
export interface PipelinedClientOptions {
  /** The URL every request goes to (`http:` or `https:`). */
  readonly url: string;
  /** Header lines sent with every request, besides host, content-length and connection. */
  readonly headers: Readonly<Record<string, string>>;
  /** Most requests awaiting their answer on the connection (default 64). */
  readonly maxPending?: number;
  /** Longest wait for a connection to open, in milliseconds (default 5000). */
  readonly connectTimeoutMs?: number;
  /**
   * Opens a connection (a seam for tests). Default: TCP, or TLS for https, to
   * the URL's host within `connectTimeoutMs`.
   */
  readonly connect?: (options: ConnectOptions) => Promise<Deno.Conn>;
  /**
   * For https: the CA to trust, read at each connection (it changes when the
   * files are reloaded). Absent: the process's roots alone.
   */
  readonly tls?: () => PeerConnectSettings;
}

/** Why a request failed: connection lost, refused, timed out or a malformed answer. */
export class PeerRequestError extends Error {
  /** Creates the error with its reason. */
  constructor(message: string) {
    super(message);
    this.name = "PeerRequestError";
  }
}

/**
 * The header of a peer route's 409 answer to a batch of an earlier epoch
 * than the receiver's: the receiver's epoch (`BatchRefusal`).
 */
export const PEER_EPOCH_HEADER = "epaxos-epoch";

/** A peer's answer to one request. */
export interface PeerAnswer {
  /** The HTTP status. */
  readonly status: number;
  /** The peer's epoch, when it said ({@linkcode PEER_EPOCH_HEADER}). */
  readonly epoch?: number;
}

/** Largest response head accepted, in bytes. */
const MAX_HEAD_BYTES = 16 * 1024;
/** Largest response body accepted (the peer route answers 204 or a short error). */
const MAX_BODY_BYTES = 1024 * 1024;
/** Bytes read from the socket at a time. */
const READ_BYTES = 16 * 1024;

const ascii = new TextEncoder();
const latin1 = new TextDecoder("latin1");

interface Pending {
  readonly resolve: (answer: PeerAnswer) => void;
  readonly reject: (error: Error) => void;
}

/** One open connection, its requests awaiting answers in order, and its unparsed input. */
interface Connection {
  readonly conn: Deno.Conn;
  readonly pending: Pending[];
  /** Resolves when every write queued so far has been written. */
  writing: Promise<void>;
  /** Whether it is shutting down: no new requests go on it. */
  closing: boolean;
}

/** Pipelined `POST`s to one URL over one connection at a time. */
export class PipelinedClient {
  readonly #options: PipelinedClientOptions;
  readonly #hostname: string;
  readonly #port: number;
  readonly #tls: boolean;
  /** The request head up to the content length's value. */
  readonly #head: Uint8Array;
  #connection: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  #closed = false;

  /** Prepares the client; no connection is opened until the first request. */
  constructor(options: PipelinedClientOptions) {
    const url = new URL(options.url);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`Peer URL must be http or https, got ${options.url}`);
    }
    this.#options = options;
    this.#tls = url.protocol === "https:";
    ({ hostname: this.#hostname, port: this.#port } = urlEndpoint(url));
    let head = `POST ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
    for (const [name, value] of Object.entries(options.headers)) {
      if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) {
        throw new TypeError(`Header ${JSON.stringify(name)} holds a line break`);
      }
      head += `${name}: ${value}\r\n`;
    }
    this.#head = ascii.encode(`${head}content-length: `);
  }

  /** Requests awaiting an answer on the current connection. */
  get pending(): number {
    return this.#connection?.pending.length ?? 0;
  }

  /**
   * Sends `body` and resolves with the answer's status code (and the peer's
   * epoch, if it said) once it arrives.
   * When `signal` aborts first, the connection is dropped (its later answers
   * could only come after this one) and every request on it fails.
   *
   * @throws {PeerRequestError} if the request failed.
   */
  async post(body: Uint8Array, signal?: AbortSignal): Promise<PeerAnswer> {
    if (this.#closed) throw new PeerRequestError("Client is closed");
    signal?.throwIfAborted();
    // The request's deadline covers opening the connection too.
    const connection = await this.#open(signal);
    if (connection.closing) throw new PeerRequestError("Connection closed while opening");
    if (connection.pending.length >= (this.#options.maxPending ?? 64)) {
      throw new PeerRequestError("Too many requests awaiting an answer on the connection");
    }
    const length = ascii.encode(`${body.length}\r\n\r\n`);
    const request = new Uint8Array(this.#head.length + length.length + body.length);
    request.set(this.#head);
    request.set(length, this.#head.length);
    request.set(body, this.#head.length + length.length);
    const answered = new Promise<PeerAnswer>((resolve, reject) => {
      connection.pending.push({ resolve, reject });
    });
    connection.writing = connection.writing.then(() => writeAll(connection.conn, request));
    connection.writing.catch((error) => this.#drop(connection, error));
    if (signal === undefined) return await answered;
    const onAbort = () =>
      this.#drop(connection, new PeerRequestError(`Peer request aborted: ${signal.reason}`));
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return await answered;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Fails every request awaiting an answer and closes the connection. */
  close(): void {
    this.#closed = true;
    if (this.#connection !== undefined) {
      this.#drop(this.#connection, new PeerRequestError("Client is closed"));
    }
  }

  async #open(signal: AbortSignal | undefined): Promise<Connection> {
    if (this.#connection !== undefined && !this.#connection.closing) return this.#connection;
    if (this.#connecting === undefined) {
      this.#connecting = this.#connect();
      // Requests may stop waiting for it (their deadline passed): its failure
      // is then nobody's, and must not surface as an unhandled rejection.
      this.#connecting.catch(() => {});
    }
    if (signal === undefined) return await this.#connecting;
    const connecting = this.#connecting;
    return await new Promise<Connection>((resolve, reject) => {
      const onAbort = () =>
        reject(new PeerRequestError(`Peer request aborted while connecting: ${signal.reason}`));
      signal.addEventListener("abort", onAbort, { once: true });
      connecting.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  }

  async #connect(): Promise<Connection> {
    try {
      const conn = await (this.#options.connect ?? connect)({
        hostname: this.#hostname,
        port: this.#port,
        tls: this.#tls,
        ...(this.#tls && this.#options.tls !== undefined ? { settings: this.#options.tls() } : {}),
        timeoutMs: this.#options.connectTimeoutMs ?? 5000,
      });
      const connection: Connection = {
        conn,
        pending: [],
        writing: Promise.resolve(),
        closing: false,
      };
      if (this.#closed) {
        conn.close();
        throw new PeerRequestError("Client is closed");
      }
      this.#connection = connection;
      this.#read(connection);
      return connection;
    } catch (error) {
      if (error instanceof PeerRequestError) throw error;
      throw new PeerRequestError(`Cannot connect: ${(error as Error).message}`);
    } finally {
      this.#connecting = undefined;
    }
  }

  /** Reads answers off the connection and settles its requests, in order, until it ends. */
  async #read(connection: Connection): Promise<void> {
    const chunk = new Uint8Array(READ_BYTES);
    let input: Uint8Array = new Uint8Array(0);
    try {
      for (;;) {
        const count = await connection.conn.read(chunk);
        if (count === null) throw new PeerRequestError("Peer closed the connection");
        input = append(input, chunk.subarray(0, count));
        for (;;) {
          const answer = parseResponse(input);
          if (answer === undefined) break;
          input = input.subarray(answer.consumed);
          const request = connection.pending.shift();
          if (request === undefined) throw new PeerRequestError("Peer answered an unsent request");
          request.resolve(
            answer.epoch === undefined
              ? { status: answer.status }
              : { status: answer.status, epoch: answer.epoch },
          );
          if (answer.close) throw new PeerRequestError("Peer closed the connection");
        }
      }
    } catch (error) {
      this.#drop(connection, error);
    }
  }

  #drop(connection: Connection, error: unknown): void {
    const reason = error instanceof PeerRequestError
      ? error
      : new PeerRequestError(`Connection failed: ${(error as Error)?.message ?? error}`);
    if (this.#connection === connection) this.#connection = undefined;
    if (!connection.closing) {
      connection.closing = true;
      try {
        connection.conn.close();
      } catch {
        // Already closed by the peer.
      }
    }
    for (const request of connection.pending.splice(0)) request.reject(reason);
  }
}

/** Where and how {@linkcode PipelinedClientOptions.connect} opens a connection. */
export interface ConnectOptions {
  /** Host to connect to. */
  readonly hostname: string;
  /** Port to connect to. */
  readonly port: number;
  /** Whether to speak TLS (an https URL). */
  readonly tls: boolean;
  /** For TLS: the CA to trust, besides the process's roots. */
  readonly settings?: PeerConnectSettings;
  /** Deadline for the connection to open, in milliseconds. */
  readonly timeoutMs: number;
}

/**
 * Opens a connection within `timeoutMs` (an unreachable host would otherwise
 * hold the attempt for the kernel's connect timeout, about two minutes). For
 * TLS, the handshake is part of it: a peer whose certificate does not verify
 * fails here, with rustls' reason (`invalid peer certificate: ...`).
 */
async function connect(options: ConnectOptions): Promise<Deno.Conn> {
  const address = { hostname: options.hostname, port: options.port };
  const timedOut = () => new PeerRequestError(`Connect timed out after ${options.timeoutMs} ms`);
  const deadline = Date.now() + options.timeoutMs;
  // Aborted only at the deadline, never once open.
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(timedOut()), options.timeoutMs);
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ ...address, signal: controller.signal });
  } catch (error) {
    throw controller.signal.aborted ? timedOut() : error;
  } finally {
    clearTimeout(timer);
  }
  try {
    // A batch is one write and must leave at once: Nagle's algorithm would
    // hold a pipelined request back until the previous one is acknowledged,
    // which delayed acknowledgements stretch to tens of milliseconds.
    conn.setNoDelay(true);
  } catch (error) {
    conn.close();
    throw error;
  }
  if (!options.tls) return conn;
  // TLS over the connection opened above, rather than `Deno.connectTls`,
  // which offers no `setNoDelay`: measured on loopback, one request at a time
  // to `Deno.serve`, 2.0 ms a request with `connectTls` and 0.9 ms with
  // `startTls` over a no-delay socket. (`startTls` cannot present a client
  // certificate; no Deno server can ask for one anyway: see `net/tls.ts`.)
  const caCerts = options.settings?.caCerts;
  const tls = await Deno.startTls(conn, {
    hostname: options.hostname,
    ...(caCerts === undefined ? {} : { caCerts }),
  });
  let handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    handshakeTimer = setTimeout(() => reject(timedOut()), Math.max(0, deadline - Date.now()));
  });
  try {
    await Promise.race([tls.handshake(), expired]);
    return tls;
  } catch (error) {
    tls.close();
    throw error;
  } finally {
    clearTimeout(handshakeTimer);
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

function append(head: Uint8Array, tail: Uint8Array): Uint8Array {
  if (head.length === 0) return tail.slice();
  const joined = new Uint8Array(head.length + tail.length);
  joined.set(head);
  joined.set(tail, head.length);
  return joined;
}

/**
 * One parsed answer: its status, how many input bytes it took, whether the
 * peer closes after it, and the epoch it names, if any.
 */
interface ParsedResponse {
  readonly status: number;
  readonly consumed: number;
  readonly close: boolean;
  readonly epoch?: number;
}

/**
 * Parses the answer at the start of `input`, or returns undefined if it has
 * not fully arrived.
 *
 * @throws {PeerRequestError} if the answer is malformed or framed in a way
 *   this client does not read.
 */
export function parseResponse(input: Uint8Array): ParsedResponse | undefined {
  const end = headEnd(input);
  if (end < 0) {
    if (input.length > MAX_HEAD_BYTES) throw new PeerRequestError("Response head is too large");
    return undefined;
  }
  if (end > MAX_HEAD_BYTES) throw new PeerRequestError("Response head is too large");
  const lines = latin1.decode(input.subarray(0, end)).split("\r\n");
  const statusLine = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]!);
  if (statusLine === null) {
    throw new PeerRequestError(`Malformed status line ${JSON.stringify(lines[0]!.slice(0, 80))}`);
  }
  const status = Number(statusLine[1]);
  let contentLength: number | undefined;
  let epoch: number | undefined;
  let close = lines[0]!.startsWith("HTTP/1.0");
  for (let index = 1; index < lines.length; index++) {
    const line = lines[index]!;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new PeerRequestError(`Malformed header line ${JSON.stringify(line)}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") {
      if (
        !/^\d{1,10}$/.test(value) ||
        (contentLength !== undefined && Number(value) !== contentLength)
      ) {
        throw new PeerRequestError(`Malformed content-length ${JSON.stringify(value)}`);
      }
      contentLength = Number(value);
    } else if (name === PEER_EPOCH_HEADER) {
      // Not trusted for framing: a malformed value is ignored, not fatal.
      if (/^[1-9]\d{0,14}$/.test(value)) epoch = Number(value);
    } else if (name === "transfer-encoding") {
      throw new PeerRequestError(`Unsupported transfer-encoding ${JSON.stringify(value)}`);
    } else if (name === "connection") {
      const tokens = value.toLowerCase().split(",").map((token) => token.trim());
      if (tokens.includes("close")) close = true;
      else if (tokens.includes("keep-alive")) close = false;
    }
  }
  if (status < 200) throw new PeerRequestError(`Unexpected interim answer ${status}`);
  const bodyless = status === 204 || status === 304;
  if (contentLength === undefined && !bodyless) {
    throw new PeerRequestError(`Answer ${status} has no content-length`);
  }
  const bodyBytes = bodyless ? 0 : contentLength!;
  if (bodyBytes > MAX_BODY_BYTES) throw new PeerRequestError("Response body is too large");
  const consumed = end + 4 + bodyBytes;
  if (input.length < consumed) return undefined;
  return epoch === undefined ? { status, consumed, close } : { status, consumed, close, epoch };
}

/** Index of the `\r\n\r\n` that ends the head, or -1. */
function headEnd(input: Uint8Array): number {
  const limit = Math.min(input.length, MAX_HEAD_BYTES + 4) - 3;
  for (let index = 0; index < limit; index++) {
    if (
      input[index] === 13 && input[index + 1] === 10 && input[index + 2] === 13 &&
      input[index + 3] === 10
    ) {
      return index;
    }
  }
  return -1;
}
