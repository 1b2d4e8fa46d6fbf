/**
 * `GET /watch?key=K` or `?prefix=P`: a key or a prefix watched as server-sent
 * events (issue 17 item 6; the WHATWG HTML "Server-sent events" format,
 * `text/event-stream`), from this replica's executed state:
 *
 * - `event: snapshot`, first: `{"items": [...], "truncated": bool}`, the
 *   entries now (as `GET /kv` lists them), at most
 *   {@linkcode MAX_SNAPSHOT_ENTRIES}; `truncated` when the prefix holds
 *   more (list the rest with `GET /kv?prefix=&cursor=`; events still come
 *   for every key under the prefix).
 * - `event: put`, `{"key", "value" | "valueBase64", "version", "expiresAt"?}`,
 *   and `event: delete`, `{"key"}`, one per changed key. Changes are
 *   coalesced per key: a reader that falls behind gets each changed key once,
 *   with its latest state, and past {@linkcode DEFAULT_MAX_PENDING_KEYS}
 *   changed keys (or when this replica installed a snapshot) an
 *   `event: reset` of the snapshot's shape instead: the range's state anew.
 * - `: keep-alive` comments after {@linkcode SSE_KEEP_ALIVE_MS} without an
 *   event. No event ids: a client that reconnects gets a new snapshot.
 *
 * Events follow this replica's executed state: in execution order per key,
 * and eventually consistent (as Deno KV's watch); a linearizable read is a
 * `GET`, or a blocking `GET ?index=` (src/server/blocking_read.ts). The body
 * is pulled as the client reads, nothing is produced ahead of it: a slow
 * client holds a bounded set of changed keys, never a queue of events. Each
 * stream holds one watcher of the replica's watch hub, whose bound is shared
 * with KV Connect's watches and blocking reads (503 beyond).
 *
 * @module
 */

import { type Context, Hono } from "hono";
import { curlListEnd, keyProblem, listPrefixProblem } from "../kv/curl_keys.ts";
import type { KvEntry } from "../kv/state_machine.ts";
import {
  changedWithin,
  DEFAULT_MAX_PENDING_KEYS,
  type RangeWatcher,
  type WatchHub,
} from "../kv/watch_hub.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import { entryJson } from "./entry_json.ts";
import type { ClientAccess } from "./access.ts";
import { problem } from "./problem.ts";

/** Time without an event before a keep-alive comment, ms. */
export const SSE_KEEP_ALIVE_MS = 15_000;
/** Most entries of a `snapshot` or `reset` event. */
export const MAX_SNAPSHOT_ENTRIES = 1000;
/** Most changed keys sent in one chunk of events. */
const MAX_KEYS_PER_CHUNK = 100;
/** A chunk of events stops growing past this many bytes of text. */
const MAX_CHUNK_CHARS = 1024 * 1024;

/** Settings of {@linkcode watchRoute}. */
export interface WatchRouteOptions {
  /** The replica. */
  readonly node: ReplicaDriver;
  /** Its watch hub, shared with KV Connect's watches. */
  readonly hub: WatchHub;
  /** Time without an event before a keep-alive comment, ms (default {@linkcode SSE_KEEP_ALIVE_MS}). */
  readonly keepAliveMs?: number;
  /** The replica's client credentials: a watch needs read on its key or inside its prefix. */
  readonly access: ClientAccess;
}

const encoder = new TextEncoder();

/** One server-sent event: its name and one line of JSON. */
export function sseEvent(name: string, data: unknown): string {
  // JSON.stringify escapes line breaks: the data is one line.
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** What the watch covers: one key, or the curl keys under a prefix. */
type Watched = { readonly key: string } | { readonly prefix: string };

function watchedOf(c: Context): Watched | { readonly problem: string } {
  const key = c.req.query("key");
  const prefix = c.req.query("prefix");
  if ((key === undefined) === (prefix === undefined)) {
    return { problem: "Give exactly one of key= (one key) or prefix= (every key under it)" };
  }
  if (key !== undefined) {
    const issue = keyProblem(key);
    return issue === undefined ? { key } : { problem: issue };
  }
  const issue = listPrefixProblem(prefix!);
  return issue === undefined ? { prefix: prefix! } : { problem: `Invalid prefix: ${issue}` };
}

/** The watched entries now, from the executed state: at most {@linkcode MAX_SNAPSHOT_ENTRIES}. */
function snapshotOf(node: ReplicaDriver, watched: Watched): Record<string, unknown> {
  if ("key" in watched) {
    const entry = node.state.read(watched.key);
    return { items: entry === undefined ? [] : [entryJson(watched.key, entry)], truncated: false };
  }
  const page = node.state.list(watched.prefix, undefined, MAX_SNAPSHOT_ENTRIES);
  return {
    items: page.entries.map((entry) => entryJson(entry.key, entry)),
    truncated: page.next !== undefined,
  };
}

/** The events of `keys`, each with its state now, within the chunk's bounds. */
function changeEvents(keys: readonly string[], read: (key: string) => KvEntry | undefined): string {
  let text = "";
  for (const key of keys) {
    const entry = read(key);
    text += entry === undefined
      ? sseEvent("delete", { key })
      : sseEvent("put", entryJson(key, entry));
    if (text.length > MAX_CHUNK_CHARS) break;
  }
  return text;
}

/**
 * The event stream of `watcher`: `first`, then, pulled as the client reads,
 * the changes (or a reset, or a keep-alive comment). Cancelling it (the
 * client went away) closes the watcher.
 */
function eventStream(
  watcher: RangeWatcher,
  first: string,
  options: {
    readonly read: (key: string) => KvEntry | undefined;
    readonly snapshot: () => Record<string, unknown>;
    readonly keepAliveMs: number;
  },
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode(first));
    },
    async pull(controller) {
      const deadline = Date.now() + options.keepAliveMs;
      for (;;) {
        const woke = await changedWithin(watcher, deadline - Date.now());
        if (watcher.closed) {
          try {
            controller.close();
          } catch { /* cancelled already */ }
          return;
        }
        if (!woke) {
          controller.enqueue(encoder.encode(": keep-alive\n\n"));
          return;
        }
        // Only the keys of this chunk leave the watcher: the rest stay
        // coalesced there, bounded, until the client reads on.
        const changes = watcher.take(MAX_KEYS_PER_CHUNK);
        if (changes.reset) {
          controller.enqueue(encoder.encode(sseEvent("reset", options.snapshot())));
          return;
        }
        if (changes.keys.length === 0) continue;
        controller.enqueue(encoder.encode(changeEvents(changes.keys, options.read)));
        return;
      }
    },
    cancel() {
      // Wakes a pull waiting on it, which then ends the stream.
      watcher.close();
    },
  }, { highWaterMark: 0 });
}

/** The `GET /watch` route, as a Hono sub-app to mount at the root (behind the credentials' guard). */
export function watchRoute(options: WatchRouteOptions): Hono {
  const { node, hub } = options;
  const keepAliveMs = options.keepAliveMs ?? SSE_KEEP_ALIVE_MS;
  const routes = new Hono();
  routes.get("/watch", (c) => {
    const watched = watchedOf(c);
    if ("problem" in watched) return problem(c, 400, watched.problem);
    const refused = options.access.authorize(
      c,
      "key" in watched
        ? { kind: "key", key: watched.key, write: false }
        : { kind: "prefix", prefix: watched.prefix },
    );
    if (refused !== undefined) return refused;
    const [start, end] = "key" in watched
      ? [watched.key, `${watched.key}\u0000`]
      : [watched.prefix, curlListEnd(watched.prefix)];
    const watcher = hub.watchRange(start, end, DEFAULT_MAX_PENDING_KEYS);
    if (watcher === undefined) {
      c.header("Retry-After", "5");
      return problem(c, 503, `This replica serves ${hub.maxWatchers} watches already`);
    }
    // In the same turn as the watcher opened: no change falls between the
    // snapshot and the first change the watcher holds.
    const snapshot = () => snapshotOf(node, watched);
    const stream = eventStream(watcher, sseEvent("snapshot", snapshot()), {
      read: (key) => node.state.read(key),
      snapshot,
      keepAliveMs,
    });
    c.header("Content-Type", "text/event-stream; charset=utf-8");
    c.header("Cache-Control", "no-cache");
    // Proxies that buffer (nginx) would hold the events back.
    c.header("X-Accel-Buffering", "no");
    return c.body(stream);
  });
  return routes;
}
