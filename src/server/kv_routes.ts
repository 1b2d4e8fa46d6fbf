/**
 * The key-value routes of the curl API: `GET /kv` (a page of a list), and
 * `GET`, `HEAD`, `PUT`, `DELETE` of `/kv/<key>`. Raw bodies, the version as
 * `ETag`, compare-and-set with `If-Match`, create-only with `If-None-Match: *`,
 * `304 Not Modified` for a `GET` with the current `ETag` in `If-None-Match`
 * (src/server/http_conditions.ts has the rules, after RFC 9110 §13).
 *
 * @module
 */

import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { keyProblem, listPrefixProblem, MAX_LIST_LIMIT, MAX_VALUE_BYTES } from "../kv/commands.ts";
import type { KvEntry, KvResult } from "../kv/state_machine.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import { requireBearer } from "../net/bearer.ts";
import { etagOf, notModified, writeCondition } from "./http_conditions.ts";
import { problem } from "./problem.ts";

/** Entries in a page of `GET /kv` when the request gives no `limit`. */
export const DEFAULT_LIST_LIMIT = 100;

/** The paths of a key: `/kv/` (an empty key, refused with its reason) and `/kv/<key>`. */
const KEY_PATHS = ["/kv/", "/kv/:key{.+}"];

/** Settings of {@linkcode kvRoutes}. */
export interface KvRoutesOptions {
  /** The replica the routes serve. */
  readonly node: ReplicaDriver;
  /** If set, the routes require `Authorization: Bearer <token>`. */
  readonly clientToken?: string;
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

function entryJson(key: string, entry: KvEntry): Record<string, unknown> {
  let text: string | undefined;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(entry.value);
  } catch {
    text = undefined;
  }
  return text === undefined
    ? { key, valueBase64: btoa(String.fromCharCode(...entry.value)), version: entry.version }
    : { key, value: text, version: entry.version };
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
  const routes = new Hono();
  if (options.clientToken !== undefined) {
    const guard = requireBearer(new TextEncoder().encode(options.clientToken), {
      realm: "epaxos-kv",
      refusal: () => "This route needs the client token",
    });
    // Hono's `/kv/*` matches `/kv` too.
    routes.use("/kv/*", guard);
  }

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
    const answer = (entry: KvEntry | undefined) => {
      if (entry === undefined) return problem(c, 404, "Key not found", { key: parsed.key });
      const unchanged = notModified(c.req.header("if-none-match"), entry.version);
      if ("problem" in unchanged) return problem(c, 400, unchanged.problem);
      c.header("ETag", etagOf(entry.version));
      c.header("Kv-Version", entry.version);
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
    if (consistency === "local") return answer(node.state.read(parsed.key));
    // Under a lease, from this replica's state; otherwise after one round
    // trip to a majority (src/core/quorum_read.ts), or as a command.
    const result = await node.read({ op: "get", key: parsed.key });
    return result.op === "get" && result.ok
      ? answer(result.entry)
      : problem(c, 500, "Unexpected result");
  });

  routes.on(
    "PUT",
    KEY_PATHS,
    bodyLimit({
      maxSize: MAX_VALUE_BYTES,
      onError: (c) => problem(c, 413, `Value is larger than ${MAX_VALUE_BYTES} bytes`),
    }),
    async (c) => {
      const parsed = keyFromPath(c);
      if ("error" in parsed) return parsed.error;
      const condition = conditionOf(c);
      if ("problem" in condition) return problem(c, 400, condition.problem);
      const value = new Uint8Array(await c.req.arrayBuffer());
      if (value.length > MAX_VALUE_BYTES) {
        return problem(c, 413, `Value is larger than ${MAX_VALUE_BYTES} bytes`);
      }
      // A KvError that stops the command reaches the app's onError.
      const result = await node.submit({
        op: "put",
        key: parsed.key,
        value,
        ...(condition.condition === undefined ? {} : { ifVersion: condition.condition }),
      });
      if (result.op !== "put") return problem(c, 500, "Unexpected result");
      if (!result.ok) return preconditionFailed(c, result.current);
      c.header("ETag", etagOf(result.version));
      return c.json({ key: parsed.key, version: result.version });
    },
  );

  routes.on("DELETE", KEY_PATHS, async (c) => {
    const parsed = keyFromPath(c);
    if ("error" in parsed) return parsed.error;
    const condition = conditionOf(c);
    if ("problem" in condition) return problem(c, 400, condition.problem);
    const result = await node.submit({
      op: "delete",
      key: parsed.key,
      ...(condition.condition === undefined ? {} : { ifVersion: condition.condition }),
    });
    if (result.op !== "delete") return problem(c, 500, "Unexpected result");
    if (!result.ok) return preconditionFailed(c, result.current);
    return c.body(null, 204);
  });
  return routes;
}
