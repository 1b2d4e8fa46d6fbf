/**
 * A client for the HTTP API of epaxos-kv replicas (see
 * `src/server/app.ts`): put, get, delete and list with versions and
 * compare-and-set, failover between replicas, and typed errors that keep the
 * one distinction a caller of a replicated store must not lose: a request that
 * was refused before anything was proposed (safe to retry) versus one whose
 * outcome is unknown (read to find out, never blindly retry).
 *
 * @example Write, read back and compare-and-set
 * ```ts
 * import { KvClient, PreconditionFailedError } from "./mod.ts";
 *
 * const kv = new KvClient({ servers: ["http://127.0.0.1:8001", "http://127.0.0.1:8002"] });
 * const { version } = await kv.put("greeting", "hello");
 * const entry = await kv.get("greeting");
 * console.log(entry?.text(), entry?.version === version);
 * try {
 *   await kv.put("greeting", "hi", { ifVersion: version });
 * } catch (error) {
 *   if (error instanceof PreconditionFailedError) console.log("someone else wrote", error.current);
 *   else throw error;
 * }
 * ```
 *
 * @module
 */

import {
  ClientRequestError,
  KvError,
  OutcomeUnknownError,
  PreconditionFailedError,
  UnavailableError,
} from "../errors.ts";

/** How a client picks the replica for each request. */
export type ServerStrategy = "first" | "random" | "round-robin";

/** Settings of a {@linkcode KvClient}. */
export interface KvClientOptions {
  /** Replica base URLs, as an array or one comma-separated string. */
  readonly servers: readonly string[] | string;
  /** Client token, sent as `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** Longest wait for one request's answer, body included, in milliseconds (default 10,000). */
  readonly timeoutMs?: number;
  /**
   * Which replica a request goes to first: `"first"` (the first listed that is
   * not known to be unavailable; the default), `"random"` or `"round-robin"`.
   */
  readonly strategy?: ServerStrategy;
  /**
   * How many more attempts a request gets after a refusal that proposed
   * nothing (503, or a connection that could not be opened), each on the next
   * replica (default: one per other replica, at least 2).
   */
  readonly retries?: number;
  /** Cap on the wait a `Retry-After` asks for before a replica is tried again, in milliseconds (default 1000). */
  readonly maxRetryDelayMs?: number;
}

/** Options every request takes. */
export interface RequestOptions {
  /** Send the request to this replica only, without failover (for example to read from each replica in turn). */
  readonly server?: string;
}

/** Options of {@linkcode KvClient.put}. */
export interface PutOptions extends RequestOptions {
  /** Write only if the key is at this version (HTTP `If-Match`). */
  readonly ifVersion?: string;
  /** Write only if the key does not exist (HTTP `If-None-Match: *`). */
  readonly ifAbsent?: boolean;
}

/** Options of {@linkcode KvClient.delete}. */
export interface DeleteOptions extends RequestOptions {
  /** Delete only if the key is at this version (HTTP `If-Match`). */
  readonly ifVersion?: string;
}

/**
 * How a read is served: `"linearizable"` (the default) goes through consensus;
 * `"local"` answers from the replica's executed state, which may be stale.
 */
export type Consistency = "linearizable" | "local";

/** Options of {@linkcode KvClient.get}. */
export interface GetOptions extends RequestOptions {
  /** Read consistency (default `"linearizable"`). */
  readonly consistency?: Consistency;
}

/** Options of {@linkcode KvClient.list}. */
export interface ListOptions extends RequestOptions {
  /** Only keys starting with this prefix (default: every key). */
  readonly prefix?: string;
  /** Most entries in the page, 1 to 1000 (the server's default is 100). */
  readonly limit?: number;
  /** Start after this key: the `cursor` of the previous page. */
  readonly cursor?: string;
  /** Read consistency (default `"linearizable"`). */
  readonly consistency?: Consistency;
}

/** A key with its value and version. */
export interface KvClientEntry {
  /** The key. */
  readonly key: string;
  /** The value's bytes. */
  readonly value: Uint8Array;
  /** The version that wrote the value: pass it as `ifVersion` to compare-and-set. */
  readonly version: string;
  /** The value decoded as UTF-8 (invalid sequences become U+FFFD). */
  text(): string;
}

/** The answer of a successful put. */
export interface PutResult {
  /** The key's new version. */
  readonly version: string;
}

/** One page of a listing. */
export interface KvListPage {
  /** Entries in key order. */
  readonly items: readonly KvClientEntry[];
  /** Pass as `cursor` to get the next page; `null` on the last page. */
  readonly cursor: string | null;
}

/** A peer as a replica's `/status` describes it. */
export interface ReplicaPeerStatus {
  /** The peer's replica id. */
  readonly id: number;
  /** The peer's name. */
  readonly name: string;
  /** Measured round trip, or `null` before one was measured. */
  readonly roundTripMs: number | null;
  /** Milliseconds since the peer was last heard from, or `null` if never. */
  readonly lastContactMsAgo: number | null;
}

/** What a replica's `/status` reports (the fields this client relies on; the rest are kept too). */
export interface ReplicaStatus {
  /** Replica id. */
  readonly id: number;
  /** Replica name. */
  readonly name: string;
  /** Region, or `null`. */
  readonly region: string | null;
  /** Cluster size. */
  readonly replicas: number;
  /** Seconds since the replica started. */
  readonly uptimeSeconds: number;
  /** Whether a fast quorum is reachable. */
  readonly ready: boolean;
  /** The replica's peers. */
  readonly peers: readonly ReplicaPeerStatus[];
  /** Commits on the fast and slow paths. */
  readonly commits: {
    readonly fast: number;
    readonly slow: number;
    readonly fastRatio: number | null;
  };
  /** Executed instances and commands. */
  readonly executed: { readonly instances: number; readonly commands: number };
  /** Keys held. */
  readonly keys: number;
  /** Digest of the executed state: equal digests mean equal states. */
  readonly stateDigest: string;
  /** Every other field of the answer. */
  readonly [field: string]: unknown;
}

/** An answer read in full. */
interface RawAnswer {
  readonly server: string;
  readonly status: number;
  readonly headers: Headers;
  readonly body: Uint8Array;
}

interface SendOptions extends RequestOptions {
  readonly body?: Uint8Array;
  readonly headers?: Record<string, string>;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_RETRY_DELAY_MS = 1000;
/** How long a replica that refused a connection is tried last, in milliseconds. */
const CONNECT_FAILURE_BACKOFF_MS = 1000;
/** Longest server message kept in an error. */
const MAX_MESSAGE_LENGTH = 500;

const encoder = new TextEncoder();
const lenientDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

class Entry implements KvClientEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly version: string;

  constructor(key: string, value: Uint8Array, version: string) {
    this.key = key;
    this.value = value;
    this.version = version;
  }

  text(): string {
    return lenientDecoder.decode(this.value);
  }
}

/** Normalizes a replica base URL: adds `http://` if no scheme is given and drops trailing slashes. */
export function normalizeServerUrl(server: string): string {
  const trimmed = server.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new TypeError(`Server ${JSON.stringify(server)} is not a valid URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`Server ${JSON.stringify(server)} must be an http or https URL`);
  }
  if (url.search !== "" || url.hash !== "") {
    throw new TypeError(`Server ${JSON.stringify(server)} must not have a query or fragment`);
  }
  return url.href.replace(/\/+$/, "");
}

/** The path segment of `key`: percent-encoded, `/` included, so a key is always one segment. */
function keyPath(key: string): string {
  // URL parsers resolve the segments "." and ".." (even as %2E) before the
  // request leaves, so these two keys cannot be addressed at all.
  if (key === "." || key === "..") {
    throw new RangeError(`Key ${key} cannot be addressed in a URL path`);
  }
  if (!key.isWellFormed()) throw new RangeError("Key must be valid Unicode");
  return `/kv/${encodeURIComponent(key)}`;
}

/**
 * Whether a fetch failure happened before anything was sent (the connection
 * never opened). Fetch reports every failure as a TypeError; only the text of
 * Deno's error (hyper's "client error (Connect)") tells a refused connection
 * from a lost one. Anything not recognized counts as sent, the safe side. This
 * is only sound when the connection was not reused (see `#attempt`): a reused
 * one may report a refusal for a request that was delivered.
 */
export function failedToConnect(error: unknown): boolean {
  const texts: string[] = [];
  for (let current = error, depth = 0; current instanceof Error && depth < 4; depth++) {
    texts.push(current.message);
    current = current.cause;
  }
  return texts.some((text) =>
    /client error \(Connect\)|dns error|Connection refused|Requests to port \d+ are blocked/i.test(
      text,
    )
  );
}

function innermostMessage(error: unknown): string {
  let current = error;
  for (
    let depth = 0;
    current instanceof Error && current.cause instanceof Error && depth < 4;
    depth++
  ) {
    current = current.cause;
  }
  return current instanceof Error ? current.message : String(current);
}

/** `Retry-After` in milliseconds: delay-seconds or an HTTP date. */
function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** The `error` message of a JSON error answer, or a generic one. */
function messageOf(answer: RawAnswer): string {
  const json = jsonOf(answer);
  if (json !== undefined && typeof json.error === "string" && json.error.length > 0) {
    return json.error.slice(0, MAX_MESSAGE_LENGTH);
  }
  const text = lenientDecoder.decode(answer.body.subarray(0, MAX_MESSAGE_LENGTH)).trim();
  return text.length > 0 ? `HTTP ${answer.status}: ${text}` : `HTTP ${answer.status}`;
}

function jsonOf(answer: RawAnswer): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(lenientDecoder.decode(answer.body));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The version in an `ETag` header (`"v"` or `W/"v"`). */
function etagVersion(header: string | null): string | undefined {
  if (header === null) return undefined;
  const match = /^(?:W\/)?"([^"]*)"$/.exec(header.trim());
  return match === null ? undefined : match[1];
}

function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A client of an epaxos-kv cluster. Every request has a timeout, and only
 * refusals that proposed nothing (503, or a connection that could not be
 * opened) are retried, on the next replica, a bounded number of times.
 */
export class KvClient {
  readonly #servers: readonly string[];
  readonly #token: string | undefined;
  readonly #timeoutMs: number;
  readonly #strategy: ServerStrategy;
  readonly #retries: number;
  readonly #maxRetryDelayMs: number;
  /** Per replica, until when (`performance.now()`) it is tried only after the others: one entry per server at most. */
  readonly #unavailableUntil = new Map<string, number>();
  #nextServer = 0;

  /**
   * Creates a client. No connection is made until the first request.
   *
   * @throws {TypeError} if no server is given or one is not an http(s) URL.
   * @throws {RangeError} if a numeric option is out of range.
   */
  constructor(options: KvClientOptions) {
    const list = typeof options.servers === "string" ? options.servers.split(",") : options.servers;
    const servers = [
      ...new Set(list.filter((server) => server.trim() !== "").map(normalizeServerUrl)),
    ];
    if (servers.length === 0) throw new TypeError("At least one server is needed");
    this.#servers = servers;
    this.#token = options.token;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (
      !Number.isFinite(this.#timeoutMs) || this.#timeoutMs <= 0 || this.#timeoutMs > 2 ** 31 - 1
    ) {
      throw new RangeError(
        `timeoutMs must be a positive number of milliseconds, got ${options.timeoutMs}`,
      );
    }
    this.#strategy = options.strategy ?? "first";
    if (!["first", "random", "round-robin"].includes(this.#strategy)) {
      throw new RangeError(
        `strategy must be first, random or round-robin, got ${options.strategy}`,
      );
    }
    this.#retries = options.retries ?? Math.max(2, servers.length - 1);
    if (!Number.isInteger(this.#retries) || this.#retries < 0 || this.#retries > 100) {
      throw new RangeError(`retries must be an integer from 0 to 100, got ${options.retries}`);
    }
    this.#maxRetryDelayMs = options.maxRetryDelayMs ?? DEFAULT_MAX_RETRY_DELAY_MS;
    if (!Number.isFinite(this.#maxRetryDelayMs) || this.#maxRetryDelayMs < 0) {
      throw new RangeError(
        `maxRetryDelayMs must be a non-negative number, got ${options.maxRetryDelayMs}`,
      );
    }
  }

  /** The replicas this client talks to, normalized. */
  get servers(): readonly string[] {
    return this.#servers;
  }

  /**
   * Writes `value` under `key` and resolves with the key's new version.
   *
   * @throws {PreconditionFailedError} if `ifVersion` or `ifAbsent` does not hold.
   * @throws {ClientRequestError} if the server refuses the request (413 value too large, 414 key too long, ...).
   * @throws {UnavailableError} if no replica would take it (nothing was written).
   * @throws {OutcomeUnknownError} if it may or may not have been written.
   */
  async put(key: string, value: string | Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    if (options.ifVersion !== undefined && options.ifAbsent) {
      throw new TypeError("Use either ifVersion or ifAbsent, not both");
    }
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (options.ifVersion !== undefined) headers["if-match"] = `"${options.ifVersion}"`;
    if (options.ifAbsent) headers["if-none-match"] = "*";
    const body = typeof value === "string" ? encoder.encode(value) : value;
    const answer = await this.#send("PUT", keyPath(key), { ...options, body, headers });
    if (answer.status !== 200) throw this.#failure(answer);
    const version = jsonOf(answer)?.version ?? etagVersion(answer.headers.get("etag"));
    if (typeof version !== "string") {
      throw new KvError("The answer to a put carries no version", 502, {
        server: answer.server,
        answerStatus: answer.status,
      });
    }
    return { version };
  }

  /**
   * Reads `key`: its value and version, or `undefined` if it does not exist.
   *
   * @throws {ClientRequestError} if the server refuses the request.
   * @throws {UnavailableError} if no replica would serve it.
   * @throws {OutcomeUnknownError} if no answer came in time.
   */
  async get(key: string, options: GetOptions = {}): Promise<KvClientEntry | undefined> {
    const query = options.consistency === undefined ? "" : `?consistency=${options.consistency}`;
    const answer = await this.#send("GET", `${keyPath(key)}${query}`, options);
    if (answer.status === 404 && jsonOf(answer)?.key === key) return undefined;
    if (answer.status !== 200) throw this.#failure(answer);
    const version = answer.headers.get("kv-version") ?? etagVersion(answer.headers.get("etag"));
    if (version === undefined || version === null) {
      throw new KvError("The answer to a get carries no version", 502, {
        server: answer.server,
        answerStatus: answer.status,
      });
    }
    return new Entry(key, answer.body, version);
  }

  /**
   * Deletes `key`; deleting a key that does not exist succeeds.
   *
   * @throws {PreconditionFailedError} if `ifVersion` does not hold.
   * @throws {ClientRequestError} if the server refuses the request.
   * @throws {UnavailableError} if no replica would take it (nothing was deleted).
   * @throws {OutcomeUnknownError} if it may or may not have been deleted.
   */
  async delete(key: string, options: DeleteOptions = {}): Promise<void> {
    const headers: Record<string, string> = {};
    if (options.ifVersion !== undefined) headers["if-match"] = `"${options.ifVersion}"`;
    const answer = await this.#send("DELETE", keyPath(key), { ...options, headers });
    if (answer.status !== 204 && answer.status !== 200) throw this.#failure(answer);
  }

  /**
   * Reads one page of keys in key order.
   *
   * @throws {ClientRequestError} if the server refuses the request (a limit out of range, ...).
   * @throws {UnavailableError} if no replica would serve it.
   * @throws {OutcomeUnknownError} if no answer came in time.
   */
  async list(options: ListOptions = {}): Promise<KvListPage> {
    const query = new URLSearchParams();
    if (options.prefix !== undefined) query.set("prefix", options.prefix);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    if (options.consistency !== undefined) query.set("consistency", options.consistency);
    const text = query.toString();
    const answer = await this.#send("GET", text === "" ? "/kv" : `/kv?${text}`, options);
    if (answer.status !== 200) throw this.#failure(answer);
    const json = jsonOf(answer);
    if (json === undefined || !Array.isArray(json.items)) {
      throw new KvError("The answer to a list is not a page", 502, {
        server: answer.server,
        answerStatus: answer.status,
      });
    }
    const items = json.items.map((item: Record<string, unknown>) => {
      const value = typeof item.value === "string"
        ? encoder.encode(item.value)
        : decodeBase64(String(item.valueBase64 ?? ""));
      return new Entry(String(item.key), value, String(item.version));
    });
    const cursor = typeof json.cursor === "string" ? json.cursor : null;
    return { items, cursor };
  }

  /**
   * Every page of a listing, following cursors until the last page; `limit`
   * is the page size. Each page is read on its own, so the pages together are
   * not one snapshot.
   */
  async *pages(options: Omit<ListOptions, "cursor"> = {}): AsyncGenerator<KvListPage> {
    let cursor: string | undefined;
    for (;;) {
      const page = await this.list({ ...options, ...(cursor === undefined ? {} : { cursor }) });
      yield page;
      if (page.cursor === null || page.items.length === 0) return;
      cursor = page.cursor;
    }
  }

  /** Every entry of a listing, page by page (see {@linkcode KvClient.pages}). */
  async *entries(options: Omit<ListOptions, "cursor"> = {}): AsyncGenerator<KvClientEntry> {
    for await (const page of this.pages(options)) yield* page.items;
  }

  /**
   * A replica's `/status`: of `server` if given, else of the first replica
   * that answers.
   *
   * @throws {UnavailableError} if no replica could be reached.
   * @throws {OutcomeUnknownError} if no answer came in time.
   */
  async status(server?: string): Promise<ReplicaStatus> {
    const answer = await this.#send("GET", "/status", server === undefined ? {} : { server });
    if (answer.status !== 200) throw this.#failure(answer);
    const json = jsonOf(answer);
    if (json === undefined || typeof json.id !== "number") {
      throw new KvError("The answer to a status request is not a status", 502, {
        server: answer.server,
        answerStatus: answer.status,
      });
    }
    return json as ReplicaStatus;
  }

  // ---------------------------------------------------------------------------

  /** The order in which to try replicas for one request. */
  #order(): string[] {
    const servers = this.#servers;
    let order: string[];
    switch (this.#strategy) {
      case "first":
        order = [...servers];
        break;
      case "round-robin": {
        const start = this.#nextServer;
        this.#nextServer = (this.#nextServer + 1) % servers.length;
        order = [...servers.slice(start), ...servers.slice(0, start)];
        break;
      }
      case "random":
        order = [...servers];
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(Math.random() * (i + 1));
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
        break;
    }
    // Replicas that recently refused go last (a stable partition keeps the strategy's order).
    const now = performance.now();
    const backingOff = (server: string) => (this.#unavailableUntil.get(server) ?? 0) > now;
    return [...order.filter((server) => !backingOff(server)), ...order.filter(backingOff)];
  }

  #backOff(server: string, ms: number): void {
    if (this.#servers.includes(server)) this.#unavailableUntil.set(server, performance.now() + ms);
  }

  /**
   * Sends a request, failing over to the next replica on refusals that
   * proposed nothing, and reads the whole answer within the timeout.
   */
  async #send(method: string, path: string, options: SendOptions): Promise<RawAnswer> {
    const order = options.server === undefined
      ? this.#order()
      : [normalizeServerUrl(options.server)];
    const attempts = options.server === undefined ? this.#retries + 1 : 1;
    const waitBeforeRetry = new Map<string, number>();
    const refusals = new Map<string, string>();
    let lastRefusal: {
      message: string;
      server: string;
      status?: number;
      retryAfterMs?: number;
      cause?: unknown;
    } | undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      const server = order[attempt % order.length]!;
      const wait = waitBeforeRetry.get(server);
      // Every replica was tried: wait as the last refusal asked, but never long.
      if (wait !== undefined) await delay(Math.min(wait, this.#maxRetryDelayMs));
      const outcome = await this.#attempt(server, method, path, options);
      if ("answer" in outcome) {
        const answer = outcome.answer;
        if (answer.status === 503) {
          const after = retryAfterMs(answer.headers.get("retry-after"));
          this.#backOff(server, Math.min(after ?? 1000, this.#maxRetryDelayMs));
          waitBeforeRetry.set(server, after ?? 100);
          lastRefusal = { message: messageOf(answer), server, status: 503, retryAfterMs: after };
          refusals.set(server, lastRefusal.message);
          continue;
        }
        return answer;
      }
      this.#backOff(server, CONNECT_FAILURE_BACKOFF_MS);
      waitBeforeRetry.set(server, 100);
      lastRefusal = {
        message: `Cannot connect: ${
          innermostMessage(outcome.notConnected).replace(/^.*client error \(Connect\): /, "")
        }`,
        server,
        cause: outcome.notConnected,
      };
      refusals.set(server, lastRefusal.message);
    }
    const refusal = lastRefusal!;
    const message = refusals.size === 1
      ? (attempts === 1 ? refusal.message : `${refusal.message} (${attempts} attempts)`)
      : `No replica took the request in ${attempts} attempts: ${
        [...refusals].map(([server, reason]) => `${server}: ${reason}`).join("; ")
      }`;
    const retryAfterSeconds = refusal.retryAfterMs === undefined
      ? undefined
      : refusal.retryAfterMs / 1000;
    throw new UnavailableError(message, {
      attempts,
      retryAfterSeconds,
      server: refusal.server,
      answerStatus: refusal.status,
      cause: refusal.cause,
    });
  }

  /** One attempt: the whole answer, or the error if the connection could not be opened. */
  async #attempt(
    server: string,
    method: string,
    path: string,
    options: SendOptions,
  ): Promise<{ answer: RawAnswer } | { notConnected: unknown }> {
    // Never reuse a connection. On a reused keep-alive connection, Deno's HTTP
    // client retries a request whose server died after receiving it, and
    // reports the retry's "Connection refused": a delivered write would look
    // undelivered and be failed over, applying it twice. With every request on
    // a fresh connection, a refusal proves nothing was sent
    // (tests/chaos/http_client_test.ts).
    const headers: Record<string, string> = { ...options.headers, connection: "close" };
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.#timeoutMs);
    try {
      const response = await fetch(`${server}${path}`, {
        method,
        headers,
        signal: controller.signal,
        ...(options.body === undefined ? {} : { body: options.body as Uint8Array<ArrayBuffer> }),
      });
      const body = new Uint8Array(await response.arrayBuffer());
      return { answer: { server, status: response.status, headers: response.headers, body } };
    } catch (error) {
      if (!timedOut && failedToConnect(error)) return { notConnected: error };
      const detail = timedOut
        ? `No answer within ${this.#timeoutMs} ms`
        : `The connection failed (${innermostMessage(error)})`;
      throw new OutcomeUnknownError(`${detail}; the request may or may not have taken effect`, {
        server,
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** The error for an answer that is not a success. */
  #failure(answer: RawAnswer): KvError {
    const message = messageOf(answer);
    const where = { server: answer.server, answerStatus: answer.status };
    if (answer.status === 412) {
      const json = jsonOf(answer);
      const current =
        json !== undefined && (typeof json.current === "string" || json.current === null)
          ? json.current as string | null
          : etagVersion(answer.headers.get("etag")) ?? null;
      return new PreconditionFailedError(message, current, where);
    }
    if (answer.status >= 400 && answer.status < 500) {
      return new ClientRequestError(message, answer.status, where);
    }
    if (answer.status >= 500) return new OutcomeUnknownError(message, where);
    return new KvError(`Unexpected answer: ${message}`, 502, where);
  }
}
