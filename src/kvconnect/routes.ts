/**
 * KV Connect, Deno KV's own protocol, on a replica's listener: any Deno
 * program opens `Deno.openKv("http://replica/databases/NAME/connect")` and
 * uses `Deno.Kv` against the replicated store (issue 17). Mounted at
 * `/databases` by the app (`src/server/app.ts`).
 *
 * - `POST /databases/{name}/connect`: the metadata exchange
 *   (`./metadata.ts`), no consensus.
 * - `POST /databases/{name}/snapshot_read`: one linearizable read of up to
 *   10 ranges at one point of the execution order (`ReplicaDriver.read`).
 * - `POST /databases/{name}/atomic_write`: one atomic command; 5xx only when
 *   nothing was proposed (`./outcome_hold.ts`).
 * - `POST /databases/{name}/watch`: frames from this replica's executed
 *   state (`src/kv/watch_hub.ts`, `./watch_stream.ts`).
 *
 * Errors are plain text, as the protocol asks: Deno's client shows a 4xx's
 * body to the caller and retries a 5xx forever.
 *
 * Credentials (`src/server/access.ts`): when enforced, the exchange needs the
 * client token or a named token with a grant on the database, and every
 * data-path request is checked against the holder its token was issued to
 * (read for reads and watches, read-write for atomic writes): 401 or 403.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ReplicaDriver } from "../driver/driver.ts";
import { ClientRequestError, KvError } from "../errors.ts";
import {
  databaseKey,
  databaseKeyBytes,
  databaseKeyProblem,
  databaseNameProblem,
  databaseRange,
  MAX_DATABASE_KEY_BYTES,
  versionstampBytes,
} from "../kv/database_keys.ts";
import type { KvEntry } from "../kv/state_machine.ts";
import {
  type AtomicCommand,
  atomicCommandProblem,
  type AtomicMutation,
  snapshotCommandProblem,
} from "../kv/txn_commands.ts";
import { WatchHub } from "../kv/watch_hub.ts";
import { bearerToken } from "../net/bearer.ts";
import {
  decodeAtomicWrite,
  decodeSnapshotRead,
  decodeWatch,
  encodeAtomicWriteOutput,
  encodeSnapshotReadOutput,
  encodeWatchFrame,
  type WireEntry,
} from "./codec.ts";
import {
  databaseIdOf,
  type DatabaseMetadata,
  dataPathRefusal,
  exchangeHolder,
  negotiateVersion,
  TOKEN_LIFETIME_MS,
  type TokenHolder,
  TokenIssuer,
} from "./metadata.ts";
import { ClientAccess } from "../server/access.ts";
import { OutcomeHold } from "./outcome_hold.ts";
import { atomicWriteOf, type MutationRequest, readRangesOf, watchKeysOf } from "./requests.ts";
import { watchStream } from "./watch_stream.ts";

/** Largest metadata exchange body (`{"supportedVersions":[1,2,3]}` and room to spare). */
export const MAX_EXCHANGE_BODY_BYTES = 4096;
/** Largest snapshot read body: 10 ranges of two 2049-byte bounds and framing. */
export const MAX_READ_BODY_BYTES = 64 * 1024;
/** Largest atomic write body: 800 KiB of keys and values, and framing for 1100 of them. */
export const MAX_WRITE_BODY_BYTES = 1024 * 1024;
/** Largest watch body: 10 keys of 2048 bytes and framing. */
export const MAX_WATCH_BODY_BYTES = 32 * 1024;

/** Settings of {@linkcode kvConnectRoute} (the app's options fit). */
export interface KvConnectOptions {
  /** The replica. */
  readonly node: ReplicaDriver;
  /** The cluster secret: data-path tokens are signed with it, so every replica takes them. */
  readonly secret: string;
  /** If set, the metadata exchange requires it as the bearer token (`DENO_KV_ACCESS_TOKEN`). */
  readonly clientToken?: string;
  /**
   * The replica's client credentials (the app's, shared with the curl API).
   * Absent: made of `clientToken` and `node`'s tokens.
   */
  readonly access?: ClientAccess;
  /** Most watch streams on this replica (default `DEFAULT_MAX_WATCHERS`). */
  readonly maxWatchers?: number;
  /**
   * The replica's watch hub, fed from its executed state and shared with the
   * curl API's watches, so that one bound counts them all (the app's). Absent:
   * a hub of its own, of `maxWatchers`.
   */
  readonly watchHub?: WatchHub;
  /** Milliseconds between keep-alive frames of a quiet watch (default 5000). */
  readonly watchKeepAliveMs?: number;
  /** How long an atomic write of unknown outcome is held for its result (default `DEFAULT_HOLD_MS`). */
  readonly outcomeHoldMs?: number;
}

/** A plain-text refusal (`Retry-After` on a 503). */
function refuse(c: Context, status: number, message: string, retryAfter?: number): Response {
  if (retryAfter !== undefined) c.header("Retry-After", String(retryAfter));
  return c.text(message, status as 400);
}

function protobuf(body: Uint8Array): Response {
  return new Response(body as Uint8Array<ArrayBuffer>, {
    headers: { "content-type": "application/x-protobuf" },
  });
}

/** A watch hub of `maxWatchers` (or the default) fed from `node`'s executed state. */
export function fedWatchHub(node: ReplicaDriver, maxWatchers?: number): WatchHub {
  const hub = new WatchHub({
    read: (key) => node.state.read(key),
    ...(maxWatchers === undefined ? {} : { maxWatchers }),
  });
  node.onApplied((change) => hub.noteApplied(change));
  return hub;
}

/** Where {@linkcode kvConnectRoute} is mounted. */
export const KV_CONNECT_BASE_PATH = "/databases";

/**
 * The answer to an error thrown under {@linkcode KV_CONNECT_BASE_PATH}, in
 * the protocol's manner (plain text): a client error's own status and
 * message, else 500 (logged). The app's `onError` calls it for those paths.
 */
export function kvConnectErrorResponse(error: Error, c: Context, replicaId: number): Response {
  if (error instanceof KvError && error.status < 500) {
    return refuse(c, error.status, error.message);
  }
  console.error(`replica ${replicaId}: KV Connect ${c.req.path}: ${error.stack ?? error}`);
  return refuse(c, 500, "An internal server error occurred.");
}

/**
 * The KV Connect routes of one replica, to mount at
 * {@linkcode KV_CONNECT_BASE_PATH}; the app's error handler answers with
 * {@linkcode kvConnectErrorResponse} there.
 */
export function kvConnectRoute(options: KvConnectOptions): Hono {
  const { node } = options;
  const access = options.access ?? new ClientAccess({
    tokens: () => node.state.tokens,
    ...(options.clientToken === undefined ? {} : { clientToken: options.clientToken }),
  });
  const tokens = new TokenIssuer(options.secret);
  const hold = new OutcomeHold(node, {
    ...(options.outcomeHoldMs === undefined ? {} : { holdMs: options.outcomeHoldMs }),
  });
  const hub = options.watchHub ?? fedWatchHub(node, options.maxWatchers);
  const ids = new DatabaseIds();
  const app = new Hono();

  // No `app.onError` here: Hono's `route` would wrap every handler and
  // middleware of a sub-app with one in a compose of its own (measured: 4.6 %
  // of the server's CPU per atomic write). The app's error handler answers
  // for these paths with `kvConnectErrorResponse` instead.

  // Each route checks the database name, its credentials and its body's
  // bound in one middleware: every middleware more is one more level of
  // Hono's compose on each request.
  const exchangeLimit = bodyLimit({
    maxSize: MAX_EXCHANGE_BODY_BYTES,
    onError: (c) => refuse(c, 413, "The metadata exchange body is too large."),
  });
  app.post(
    "/:name/connect",
    (c, next) => {
      const problem = databaseNameProblem(c.req.param("name")!);
      if (problem !== undefined) return Promise.resolve(refuse(c, 400, problem));
      return exchangeLimit(c, next);
    },
    async (c) => {
      const name = c.req.param("name");
      const auth = exchangeHolder(c.req.header("authorization"), access, name);
      if ("status" in auth) {
        if (auth.status === 401) c.header("WWW-Authenticate", 'Bearer realm="epaxos-kv"');
        return refuse(c, auth.status, auth.message);
      }
      const text = await c.req.text();
      let body: unknown = undefined;
      if (text.trim() !== "") {
        try {
          body = JSON.parse(text);
        } catch {
          return refuse(c, 400, "The metadata exchange body is not JSON.");
        }
      }
      const negotiated = negotiateVersion(body);
      if ("problem" in negotiated) return refuse(c, 400, negotiated.problem);
      const expiresAtMs = Date.now() + TOKEN_LIFETIME_MS;
      const metadata: DatabaseMetadata = {
        version: negotiated.version,
        databaseId: await ids.of(name),
        // Relative to this URL, so the data path is this replica's.
        endpoints: [{ url: c.req.path.slice(0, -"/connect".length), consistency: "strong" }],
        token: await tokens.issue(name, expiresAtMs, auth.holder),
        expiresAt: new Date(expiresAtMs).toISOString(),
      };
      return c.json(metadata);
    },
  );

  // Every data-path request: the database name, the protocol version, the
  // token and what its holder may do now, the database id, then the body's
  // bound (as `limit` does, inline).
  const checkedAs = (
    operation: string,
    write: boolean,
    maxBodyBytes: number,
  ): MiddlewareHandler => {
    const limited = limit(maxBodyBytes);
    return async (c, next) => {
      const name = c.req.param("name")!;
      const nameProblem = databaseNameProblem(name);
      if (nameProblem !== undefined) return refuse(c, 400, nameProblem);
      const version = c.req.header("x-denokv-version");
      if (version !== "2" && version !== "3") {
        return refuse(c, 400, "Expected protocol version 2 or 3 in x-denokv-version.");
      }
      const token = bearerToken(c.req.header("authorization"));
      if (token === undefined) return refuse(c, 401, "Malformed authorization header.");
      const holder: TokenHolder | undefined = await tokens.verify(token, name, Date.now());
      if (holder === undefined) return refuse(c, 401, "Invalid access token.");
      const refusal = dataPathRefusal(holder, access, operation, name, write);
      if (refusal !== undefined) return refuse(c, refusal.status, refusal.message);
      if (c.req.header("x-denokv-database-id") !== await ids.of(name)) {
        return refuse(c, 400, "Invalid database id.");
      }
      return await limited(c, next);
    };
  };

  const checkedRead = checkedAs("snapshot_read", false, MAX_READ_BODY_BYTES);
  const checkedWrite = checkedAs("atomic_write", true, MAX_WRITE_BODY_BYTES);
  const checkedWatch = checkedAs("watch", false, MAX_WATCH_BODY_BYTES);

  app.post("/:name/snapshot_read", checkedRead, async (c) => {
    const name = c.req.param("name")!;
    const ranges = readRangesOf(decodeSnapshotRead(await body(c)));
    // An empty range reads nothing at any point: only the others are read.
    const asked = ranges.filter((range) => compareBytes(range.start, range.end) < 0);
    let read: readonly (readonly (KvEntry & { readonly key: string })[])[] = [];
    if (asked.length > 0) {
      const command = {
        op: "snapshot" as const,
        ranges: asked.map((range) => ({
          ...databaseRange(name, range.start, range.end),
          limit: range.limit,
          reverse: range.reverse,
        })),
      };
      const problem = snapshotCommandProblem({ ...command, request: "" });
      if (problem !== undefined) return refuse(c, 400, problem);
      try {
        const result = await node.read(command);
        if (result.op !== "snapshot") throw new Error(`Unexpected result ${result.op}`);
        read = result.ranges;
      } catch (error) {
        // A read changes nothing: whatever stopped it, the client may retry.
        if (error instanceof KvError) return refuse(c, 503, error.message, 1);
        throw error;
      }
    }
    let next = 0;
    const output = ranges.map((range) =>
      compareBytes(range.start, range.end) < 0
        ? read[next++]!.map((entry) => wireEntry(databaseKeyBytes(name, entry.key), entry))
        : []
    );
    return protobuf(encodeSnapshotReadOutput(output));
  });

  app.post("/:name/atomic_write", checkedWrite, async (c) => {
    const name = c.req.param("name")!;
    const write = atomicWriteOf(decodeAtomicWrite(await body(c)));
    const command: Omit<AtomicCommand, "request"> = {
      op: "atomic",
      database: name,
      floor: node.state.highestStamp,
      checks: write.checks.map((check) => ({
        key: databaseKey(name, check.key),
        version: check.versionstamp,
      })),
      mutations: write.mutations.map((mutation) => atomicMutation(name, mutation)),
    };
    // What a peer would refuse in a batch, refused here first (Deno's total key size among it).
    const problem = atomicCommandProblem({ ...command, request: "" });
    if (problem !== undefined) return refuse(c, 400, problem);
    const outcome = await hold.submit(command);
    switch (outcome.kind) {
      case "unavailable":
        return refuse(c, 503, outcome.error.message, outcome.error.retryAfterSeconds ?? 1);
      case "unknown":
        // Never a 5xx: the client would send it again and it may have applied.
        return refuse(
          c,
          409,
          `The outcome of this atomic write is unknown (${outcome.error.message}): ` +
            "read its keys to learn whether it applied.",
        );
      case "refused":
        return refuse(c, outcome.error.status, outcome.error.message);
    }
    const result = outcome.result;
    if (result.op !== "atomic") throw new Error(`Unexpected result ${result.op}`);
    if (result.ok) {
      return protobuf(encodeAtomicWriteOutput({ versionstamp: versionstampBytes(result.version) }));
    }
    if (result.failure === "check") return protobuf(encodeAtomicWriteOutput({ checkFailed: true }));
    return refuse(c, 400, result.message);
  });

  app.post("/:name/watch", checkedWatch, async (c) => {
    const name = c.req.param("name")!;
    const keys = watchKeysOf(decodeWatch(await body(c)));
    if (node.retired !== undefined || node.joining) {
      return refuse(c, 503, "This replica does not serve its state now.", 1);
    }
    const watcher = hub.watch(keys.map((key) => databaseKey(name, key)));
    if (watcher === undefined) {
      return refuse(c, 503, `This replica serves ${hub.maxWatchers} watches already.`, 5);
    }
    const stream = watchStream(
      watcher,
      // Every key marked changed, with its entry, in every frame (a frame is
      // sent only when some key changed), as denokv's own server does: Deno
      // 2.9's client reads a `changed: false` key as deleted (its
      // `WatchEntry::Unchanged` is an untagged serde variant, which reaches
      // JavaScript as null, not the "unchanged" its `watch` looks for), and
      // it skips a key whose versionstamp it already delivered.
      (taken) =>
        encodeWatchFrame(taken.map((key, index) => ({
          changed: true,
          entry: key.entry === undefined ? null : wireEntry(keys[index]!, key.entry),
        }))),
      options.watchKeepAliveMs === undefined ? {} : { keepAliveMs: options.watchKeepAliveMs },
    );
    return new Response(stream, { headers: { "content-type": "application/octet-stream" } });
  });

  return app;
}

function limit(maxSize: number) {
  return bodyLimit({
    maxSize,
    onError: (c) => refuse(c, 413, "The request body is too large."),
  });
}

async function body(c: Context): Promise<Uint8Array> {
  return new Uint8Array(await c.req.arrayBuffer());
}

/**
 * A mutation with its state key.
 *
 * @throws {ClientRequestError} (400) for a key the database cannot hold (an empty one).
 */
function atomicMutation(name: string, mutation: MutationRequest): AtomicMutation {
  const key = databaseKey(name, mutation.key);
  const problem = databaseKeyProblem(name, key, MAX_DATABASE_KEY_BYTES);
  if (problem !== undefined) throw new ClientRequestError(problem, 400);
  if (mutation.kind === "delete") return { kind: "delete", key };
  // The request's fields are the command's (the value, its encoding, expiry,
  // a V8 sum's bounds), with the key in the state's keyspace.
  return { ...mutation, key };
}

function wireEntry(key: Uint8Array, entry: KvEntry): WireEntry {
  return {
    key,
    value: entry.value,
    encoding: entry.encoding ?? 3,
    versionstamp: versionstampBytes(entry.version),
  };
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** Database ids by name, computed once each (a bounded cache: cleared when full). */
class DatabaseIds {
  static readonly MAX = 1024;
  readonly #ids = new Map<string, string>();

  async of(name: string): Promise<string> {
    const known = this.#ids.get(name);
    if (known !== undefined) return known;
    const id = await databaseIdOf(name);
    if (this.#ids.size >= DatabaseIds.MAX) this.#ids.clear();
    this.#ids.set(name, id);
    return id;
  }
}
