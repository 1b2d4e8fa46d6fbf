/**
 * The key-value routes of the curl API: `GET /kv` (a page of a list), and
 * `GET`, `HEAD`, `PUT`, `DELETE` of `/kv/<key>`. Raw bodies, the version as
 * `ETag`, compare-and-set with `If-Match`, create-only with `If-None-Match: *`,
 * `304 Not Modified` for a `GET` with the current `ETag` in `If-None-Match`
 * (src/server/http_conditions.ts has the rules, after RFC 9110 §13), a TTL
 * on `PUT` (`?ttl=30s`, shown as `Kv-Expires`: src/server/ttl.ts).
 *
 * @module
 */

import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import {
  keyProblem,
  listPrefixProblem,
  MAX_LIST_LIMIT,
  MAX_VALUE_BYTES,
  type VersionCondition,
} from "../kv/commands.ts";
import type { KvEntry, KvResult } from "../kv/state_machine.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import { ClientAccess } from "./access.ts";
import { etagOf, notModified, writeCondition } from "./http_conditions.ts";
import { problem } from "./problem.ts";
import { txnRoute } from "./txn_route.ts";
import { EXPIRES_HEADER, expiresAtOf, formatExpiry, parseTtl } from "./ttl.ts";
import { entryJson } from "./entry_json.ts";
import { blockingRead, indexProblem, MAX_WAIT_MS, parseWait } from "./blocking_read.ts";
import { watchRoute } from "./watch_route.ts";
import type { WatchHub } from "../kv/watch_hub.ts";

/** Entries in a page of `GET /kv` when the request gives no `limit`. */
export const DEFAULT_LIST_LIMIT = 100;

/** The paths of a key: `/kv/` (an empty key, refused with its reason) and `/kv/<key>`. */
const KEY_PATHS = ["/kv/", "/kv/:key{.+}"];

/** Settings of {@linkcode kvRoutes}. */
export interface KvRoutesOptions {
  /** The replica the routes serve. */
  readonly node: ReplicaDriver;
  /**
   * The replica's client credentials (`access.ts`): the client token and
   * the named tokens. Absent: made of `clientToken` and `node`'s tokens.
   */
  readonly access?: ClientAccess;
  /** If set (and no `access` is given), the routes require `Authorization: Bearer <token>`. */
  readonly clientToken?: string;
  /** The replica's watch hub (blocking reads, `GET /watch`), shared with KV Connect's watches. */
  readonly watchHub: WatchHub;
  /** Time without an event before a watch stream's keep-alive comment, ms (default `SSE_KEEP_ALIVE_MS`). */
  readonly watchKeepAliveMs?: number;
}

function keyFromPath(c: Context): { key: string } | { error: Response } {
  let key: string;
  try {
    key = decodeURIComponent(c.req.path.slice("/kv/".length));
  } catch {
    return { error: problem(c, 400, "Key is not valid percent-encoding") };
  }
  const reason = keyProblem(key);
  if (reason === undefined) return { key };
  const status = reason.startsWith("Key is longer") ? 414 : 400;
  return { error: problem(c, status, reason) };
}

function preconditionFailed(c: Context, current: string | null): Response {
  if (current !== null) c.header("ETag", etagOf(current));
  return problem(c, 412, "Precondition failed: the key's version does not match", { current });
}

/** The condition of a write from its request, or the 400 that refuses it. */
function conditionOf(c: Context): ReturnType<typeof writeCondition> {
  return writeCondition({
    ifMatch: c.req.header("if-match"),
    ifNoneMatch: c.req.header("if-none-match"),
    cas: c.req.query("cas"),
  });
}

/**
 * What a write (PUT or DELETE of `/kv/KEY`) names: its key and condition,
 * once the key is valid, the caller may write it, and the condition parses;
 * otherwise the answer that refuses it.
 */
function writeTarget(
  c: Context,
  access: ClientAccess,
): { key: string; condition: VersionCondition | undefined } | { error: Response } {
  const parsed = keyFromPath(c);
  if ("error" in parsed) return parsed;
  const refused = access.authorize(c, { kind: "key", key: parsed.key, write: true });
  if (refused !== undefined) return { error: refused };
  const condition = conditionOf(c);
  if ("problem" in condition) return { error: problem(c, 400, condition.problem) };
  return { key: parsed.key, condition: condition.condition };
}

/** The `?consistency=` of a read, or undefined if it is neither value. */
function consistencyOf(c: Context): "linearizable" | "local" | undefined {
  const consistency = c.req.query("consistency") ?? "linearizable";
  return consistency === "linearizable" || consistency === "local" ? consistency : undefined;
}

/**
 * The key-value routes as a Hono sub-app, to mount at the root. `HEAD` of a
 * key is its `GET` without the body (Hono runs the `GET` handler), so the
 * `GET` handler states `Content-Length`: without it the `HEAD` answer said 0
 * (Deno counts the body it sends, and a `HEAD` answer has none).
 */
export function kvRoutes(options: KvRoutesOptions): Hono {
  const { node } = options;
  const access = options.access ?? new ClientAccess({
    tokens: () => node.state.tokens,
    ...(options.clientToken === undefined ? {} : { clientToken: options.clientToken }),
  });
  const routes = new Hono();
  // Always: a named token added later turns enforcement on (`access.ts`).
  // 401 before anything else; each handler then asks for what it touches (403).
  const guard = access.authenticate();
  // Hono's `/kv/*` matches `/kv` too.
  routes.use("/kv/*", guard);
  routes.use("/txn", guard);
  routes.use("/watch", guard);
  // Multi-key transactions and watches, behind the same guard.
  routes.route("/", txnRoute(node, access));
  routes.route(
    "/",
    watchRoute({ node, hub: options.watchHub, keepAliveMs: options.watchKeepAliveMs, access }),
  );

  routes.get("/kv", async (c) => {
    const prefix = c.req.query("prefix") ?? "";
    const cursor = c.req.query("cursor");
    const limitText = c.req.query("limit") ?? String(DEFAULT_LIST_LIMIT);
    const limit = Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      return problem(
        c,
        400,
        `limit must be an integer from 1 to ${MAX_LIST_LIMIT} (default ${DEFAULT_LIST_LIMIT})`,
      );
    }
    const prefixIssue = listPrefixProblem(prefix);
    if (prefixIssue !== undefined) return problem(c, 400, `Invalid prefix: ${prefixIssue}`);
    if (cursor !== undefined && cursor.length > 1024) return problem(c, 400, "Invalid cursor");
    const refused = access.authorize(c, { kind: "prefix", prefix });
    if (refused !== undefined) return refused;
    const page = (result: KvResult) => {
      if (result.op !== "list" || !result.ok) return problem(c, 500, "Unexpected result");
      return c.json({
        items: result.entries.map((entry) => entryJson(entry.key, entry)),
        cursor: result.next ?? null,
      });
    };
    const consistency = consistencyOf(c);
    if (consistency === undefined) {
      return problem(c, 400, "consistency must be linearizable or local");
    }
    if (consistency === "local") return page(node.state.list(prefix, cursor, limit));
    return page(
      await node.read({
        op: "list",
        prefix,
        ...(cursor === undefined ? {} : { after: cursor }),
        limit,
      }),
    );
  });

  routes.on("GET", KEY_PATHS, async (c) => {
    const parsed = keyFromPath(c);
    if ("error" in parsed) return parsed.error;
    const refused = access.authorize(c, { kind: "key", key: parsed.key, write: false });
    if (refused !== undefined) return refused;
    const answer = (entry: KvEntry | undefined) => {
      if (entry === undefined) return problem(c, 404, "Key not found", { key: parsed.key });
      const unchanged = notModified(c.req.header("if-none-match"), entry.version);
      if ("problem" in unchanged) return problem(c, 400, unchanged.problem);
      c.header("ETag", etagOf(entry.version));
      c.header("Kv-Version", entry.version);
      if (entry.expiresAt !== undefined) c.header(EXPIRES_HEADER, formatExpiry(entry.expiresAt));
      // RFC 9110 §15.4.5: a 304 has the ETag a 200 would have, and no content.
      if (unchanged.notModified) return c.body(null, 304);
      c.header("Content-Type", "application/octet-stream");
      c.header("Content-Length", String(entry.value.length));
      return c.body(entry.value as Uint8Array<ArrayBuffer>);
    };
    const consistency = consistencyOf(c);
    if (consistency === undefined) {
      return problem(c, 400, "consistency must be linearizable or local");
    }
    // Under a lease, from this replica's state; otherwise after one round
    // trip to a majority (src/core/quorum_read.ts), or as a command.
    const read = async (): Promise<KvEntry | undefined> => {
      if (consistency === "local") return node.state.read(parsed.key);
      const result = await node.read({ op: "get", key: parsed.key });
      if (result.op !== "get") throw new Error(`A get answered ${result.op}`);
      return result.entry;
    };
    const index = c.req.query("index");
    const waitText = c.req.query("wait");
    if (index === undefined) {
      if (waitText !== undefined) return problem(c, 400, "wait needs index= (a blocking read)");
      return answer(await read());
    }
    // A blocking read (src/server/blocking_read.ts).
    const indexIssue = indexProblem(index);
    if (indexIssue !== undefined) return problem(c, 400, indexIssue);
    const wait = waitText === undefined ? { ms: MAX_WAIT_MS } : parseWait(waitText);
    if ("problem" in wait) return problem(c, 400, wait.problem);
    return answer(
      await blockingRead({
        hub: options.watchHub,
        key: parsed.key,
        index,
        waitMs: wait.ms,
        read,
        signal: c.req.raw.signal,
      }),
    );
  });

  routes.on(
    "PUT",
    KEY_PATHS,
    bodyLimit({
      maxSize: MAX_VALUE_BYTES,
      onError: (c) => problem(c, 413, `Value is larger than ${MAX_VALUE_BYTES} bytes`),
    }),
    async (c) => {
      // The body (at most MAX_VALUE_BYTES, bodyLimit above) is read before
      // any refusal: over HTTP/2, an answer sent while the client is still
      // sending resets the stream, and curl reports that as an error (exit
      // 92) instead of showing the 400 (13 of 40 runs of the README's weak
      // If-Match example over h2, 0 of 40 over HTTP/1.1).
      const value = new Uint8Array(await c.req.arrayBuffer());
      if (value.length > MAX_VALUE_BYTES) {
        return problem(c, 413, `Value is larger than ${MAX_VALUE_BYTES} bytes`);
      }
      const target = writeTarget(c, access);
      if ("error" in target) return target.error;
      const ttlText = c.req.query("ttl");
      const ttl = ttlText === undefined ? undefined : parseTtl(ttlText);
      if (ttl !== undefined && "problem" in ttl) return problem(c, 400, ttl.problem);
      // Made absolute here, by this replica's clock; still a blind write
      // without a condition, answered at commit.
      const expiresAt = ttl === undefined ? undefined : expiresAtOf(node.wallClockMs(), ttl.ms);
      // A KvError that stops the command reaches the app's onError.
      const result = await node.submit({
        op: "put",
        key: target.key,
        value,
        ...(target.condition === undefined ? {} : { ifVersion: target.condition }),
        ...(expiresAt === undefined ? {} : { expiresAt }),
      });
      if (result.op !== "put") return problem(c, 500, "Unexpected result");
      if (!result.ok) return preconditionFailed(c, result.current);
      c.header("ETag", etagOf(result.version));
      if (expiresAt === undefined) return c.json({ key: target.key, version: result.version });
      c.header(EXPIRES_HEADER, formatExpiry(expiresAt));
      return c.json({
        key: target.key,
        version: result.version,
        expiresAt: formatExpiry(expiresAt),
      });
    },
  );

  routes.on("DELETE", KEY_PATHS, async (c) => {
    const target = writeTarget(c, access);
    if ("error" in target) return target.error;
    const result = await node.submit({
      op: "delete",
      key: target.key,
      ...(target.condition === undefined ? {} : { ifVersion: target.condition }),
    });
    if (result.op !== "delete") return problem(c, 500, "Unexpected result");
    if (!result.ok) return preconditionFailed(c, result.current);
    return c.body(null, 204);
  });
  return routes;
}
