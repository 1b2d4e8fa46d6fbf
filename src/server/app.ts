/**
 * The Hono app of one replica: client routes, the peer route and operations
 * routes. Conventions follow the HTTP APIs of Consul's KV store, etcd and
 * rqlite: raw bodies, ETags for versions, compare-and-set with `If-Match` and
 * `If-None-Match: *`, JSON errors with a message, 503 with `Retry-After` when
 * nothing was proposed, 504 when the outcome is unknown.
 *
 * @module
 */

import { Hono } from "hono";
import { describeConfiguration } from "../core/configuration.ts";
import type { Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import {
  isKvCommand,
  keyProblem,
  type KvCommandInput,
  MAX_LIST_LIMIT,
  MAX_VALUE_BYTES,
} from "../kv/commands.ts";
import type { KvEntry, KvResult } from "../kv/state_machine.ts";
import { requireBearer } from "../net/bearer.ts";
import { peerRoute } from "../transport/http_route.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import { KvError, OutcomeUnknownError, UnavailableError } from "../errors.ts";
import { adminRoute, checkDigestElsewhere } from "./admin_route.ts";
import { snapshotRoute } from "./snapshot_route.ts";
import { renderMetrics } from "./render_metrics.ts";
import type { RecentWindow } from "../runtime/metrics.ts";

/** Settings of the app. */
export interface AppOptions {
  /** The replica this app serves. */
  readonly node: ReplicaDriver;
  /** Cluster size. */
  readonly replicas: number;
  /** The cluster credential peers must present. */
  readonly secret: string;
  /** If set, client routes require `Authorization: Bearer <token>`. */
  readonly clientToken?: string;
  /** This replica's region, for `/status`. */
  readonly region?: string;
  /** Names of the replicas, by id, for `/status` and `/admin/members`. */
  readonly names?: readonly string[];
  /** Base URLs of the replicas, by id, for `/admin/members`. */
  readonly urls?: readonly string[];
  /** Receives one line per notable event of the routes (a peer's credential refused). */
  readonly log?: (line: string) => void;
  /** How this replica reaches another's admin route (default the global `fetch`; tests swap it). */
  readonly fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** Extra routes mounted under `/ops/` (the test-only fault layer). */
  readonly extraOps?: Hono;
  /** Rate of each snapshot stream to a peer, in MB/s (default the route's, `DEFAULT_SNAPSHOT_RATE_MBPS`). */
  readonly snapshotRateMbps?: number;
}

const encoder = new TextEncoder();

/** A JSON error answer. */
function problem(c: Context, status: number, message: string, extra: Record<string, unknown> = {}) {
  return c.json({ error: message, ...extra }, status as 400);
}

/**
 * The answer to a {@linkcode KvError}: its status and message, with
 * `Retry-After` when nothing was proposed and advice when the outcome is
 * unknown.
 */
function kvProblem(c: Context, error: KvError): Response {
  if (error instanceof UnavailableError) {
    c.header("Retry-After", String(error.retryAfterSeconds ?? 1));
  }
  const message = error instanceof OutcomeUnknownError
    ? `${error.message}; read the key to learn whether it applied`
    : error.message;
  return problem(c, error.status, message);
}

/** Parses an entity tag list's first tag (`"v"` or `W/"v"`), `*`, or undefined. */
function entityTag(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const first = header.split(",")[0]!.trim();
  if (first === "*") return "*";
  const match = /^(?:W\/)?"([^"]*)"$/.exec(first);
  return match === null ? first : match[1];
}

function etag(version: string): string {
  return `"${version}"`;
}

/**
 * Answers a command's outcome. The {@linkcode KvError} that stops one reaches
 * the app's `onError`, which answers it with its status.
 */
async function run(
  node: ReplicaDriver,
  command: KvCommandInput,
  answer: (result: KvResult) => Response,
): Promise<Response> {
  return answer(await node.submit(command));
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

function recentQuantiles(window: RecentWindow): Record<string, number | null> {
  const [p50, p99] = window.quantiles([0.5, 0.99]);
  const round = (value: number | null) => value === null ? null : Number(value.toFixed(2));
  return { samples: window.size, p50: round(p50!), p99: round(p99!) };
}

/** Builds the app of one replica. */
export function createApp(options: AppOptions): Hono {
  const { node } = options;
  const tokenBytes = options.clientToken === undefined
    ? undefined
    : encoder.encode(options.clientToken);
  const app = new Hono();

  app.onError((error, c) => {
    if (error instanceof KvError) return kvProblem(c, error);
    console.error(`replica ${node.id}: ${c.req.method} ${c.req.path}: ${error.stack ?? error}`);
    return problem(c, 500, "Internal error");
  });
  app.notFound((c) => problem(c, 404, `No route for ${c.req.method} ${c.req.path}`));

  // --- Operations --------------------------------------------------------
  app.get("/livez", (c) => c.text("ok\n"));
  app.get("/readyz", (c) => {
    if (node.retired !== undefined) {
      return problem(c, 503, `This replica takes no part in the cluster any more: ${node.retired}`);
    }
    if (node.joining) {
      c.header("Retry-After", "1");
      return problem(c, 503, "Joining: waiting for a snapshot of the cluster's state", {
        epoch: node.configuration.epoch,
      });
    }
    const snapshotSources = node.core.snapshotSources();
    if (node.catchingUpBySnapshot || snapshotSources.length > 0) {
      // Peers pruned past it: it cannot execute until it installs a snapshot.
      c.header("Retry-After", "1");
      return problem(c, 503, "Peers pruned past this replica; it is catching up by snapshot", {
        prunedBy: snapshotSources,
      });
    }
    if (node.fastQuorumReachable()) return c.text("ok\n");
    c.header("Retry-After", "1");
    return problem(c, 503, "A fast quorum of replicas is not reachable", {
      reachablePeers: node.reachablePeers(),
      needed: node.core.quorum.fastQuorumSize - 1,
    });
  });
  app.get("/status", (c) => {
    const core = node.core;
    const stats = core.stats;
    const now = node.now();
    return c.json({
      id: node.id,
      name: options.names?.[node.id] ?? `replica-${node.id}`,
      region: options.region ?? null,
      replicas: options.replicas,
      // The configuration of this replica's epoch, as `e2 [0v1 1v1 2v2]`
      // (id, voter or learner, incarnation); `retired` says why it takes no
      // part any more, if it was removed or replaced, and `leaving` whether
      // it still answers its old epoch's messages meanwhile.
      epoch: node.configuration.epoch,
      configuration: describeConfiguration(node.configuration),
      role: node.core.isVoter ? "voter" : "learner",
      joining: node.joining,
      retired: node.retired ?? null,
      leaving: node.leaving,
      uptimeSeconds: Math.round(node.uptimeMs / 1000),
      quorum: core.quorum,
      ready: node.fastQuorumReachable(),
      peers: node.peers().map((peer) => ({
        id: peer.peer,
        name: options.names?.[peer.peer] ?? `replica-${peer.peer}`,
        roundTripMs: peer.roundTripMs === undefined ? null : Number(peer.roundTripMs.toFixed(2)),
        lastContactMsAgo: peer.lastContactMs === undefined
          ? null
          : Math.max(0, Math.round(now - peer.lastContactMs)),
        queued: peer.queued,
        sentBatches: peer.sentBatches,
        failedBatches: peer.failedBatches,
        droppedMessages: peer.droppedMessages,
      })),
      frontiers: {
        executed: core.executedFrontier,
        applied: node.appliedPrefix,
        pruned: core.pruneFloor,
        highest: core.rowHighest,
      },
      commits: {
        fast: stats.fastCommits,
        slow: stats.slowCommits,
        fastRatio: stats.fastCommits + stats.slowCommits === 0
          ? null
          : Number((stats.fastCommits / (stats.fastCommits + stats.slowCommits)).toFixed(4)),
      },
      recoveries: { started: stats.recoveriesStarted, committed: stats.recoveriesCommitted },
      // Exact quantiles over the last 1024 observations: client-seen latency
      // (submit to execution) and commit latency (propose to decide).
      latencyMs: {
        request: recentQuantiles(node.metrics.recentRequestMs),
        commit: recentQuantiles(node.metrics.recentCommitMs),
      },
      pending: {
        instances: core.uncommittedCount,
        execution: core.pendingExecution,
        proposals: core.inflightProposals,
      },
      instancesHeld: core.instanceCount,
      // Retention: executed instances stay until every replica executed
      // them, up to the limit; past it, peers far behind are pruned past and
      // install a snapshot (src/core/retention.ts).
      retention: {
        heldCommands: core.heldCommands,
        limit: node.maxHeldCommands,
        behindInstances: core.executionLag(),
        prunedPast: core.prunedPastPeers(),
        prunedBy: core.snapshotSources(),
        catchingUpBySnapshot: node.catchingUpBySnapshot,
        snapshotsInstalled: node.metrics.snapshotsInstalled,
      },
      executed: { instances: stats.executedInstances, commands: stats.executedCommands },
      leases: node.leaseStatus(),
      // Reads no lease served: through a majority of voters (src/core/quorum_read.ts).
      quorumReads: node.quorumReadStatus(),
      keys: node.state.size,
      stateDigest: node.state.digest,
    });
  });
  app.get("/metrics", (c) => {
    c.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return c.body(renderMetrics(node, options.names));
  });
  if (options.extraOps !== undefined) app.route("/ops", options.extraOps);
  app.route("/admin", adminRoute(options));

  // --- Peer routes -------------------------------------------------------
  // Snapshots for a peer that this replica (or the others) pruned past.
  app.route(
    "/",
    snapshotRoute({
      source: node,
      secret: options.secret,
      checkElsewhere: (barrier, forPeer) =>
        checkDigestElsewhere(options, barrier, forPeer, "component"),
      ...(options.snapshotRateMbps === undefined ? {} : { rateMbps: options.snapshotRateMbps }),
      ...(options.log === undefined ? {} : { log: options.log }),
    }),
  );
  app.route(
    "/",
    peerRoute({
      self: node.id,
      replicas: options.replicas,
      current: () => ({ epoch: node.configuration.epoch, replicas: node.core.replicas }),
      refusing: () =>
        node.joining
          ? "This replica is joining: it takes no batches until its snapshot is installed"
          : node.retired === undefined || node.leaving
          ? undefined
          : `This replica takes no part in the cluster any more: ${node.retired}`,
      secret: options.secret,
      isCommand: isKvCommand,
      receive: (batch) => node.receive(batch),
      ...(options.log === undefined ? {} : { log: options.log }),
    }),
  );

  // --- Client routes -----------------------------------------------------
  const client = new Hono();
  if (tokenBytes !== undefined) {
    client.use(
      "*",
      requireBearer(tokenBytes, {
        realm: "epaxos-kv",
        refusal: () => "This route needs the client token",
      }),
    );
  }

  client.get("/kv", async (c) => {
    const prefix = c.req.query("prefix") ?? "";
    const cursor = c.req.query("cursor");
    const limitText = c.req.query("limit") ?? "100";
    const limit = Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      return problem(c, 400, `limit must be an integer from 1 to ${MAX_LIST_LIMIT}`);
    }
    if (prefix.length > 1024 || prefix.includes("\uffff")) return problem(c, 400, "Invalid prefix");
    if (cursor !== undefined && cursor.length > 1024) return problem(c, 400, "Invalid cursor");
    const page = (result: KvResult) => {
      if (result.op !== "list" || !result.ok) return problem(c, 500, "Unexpected result");
      return c.json({
        items: result.entries.map((entry) => entryJson(entry.key, entry)),
        cursor: result.next ?? null,
      });
    };
    const consistency = c.req.query("consistency") ?? "linearizable";
    if (consistency === "local") return page(node.state.list(prefix, cursor, limit));
    if (consistency !== "linearizable") {
      return problem(c, 400, "consistency must be linearizable or local");
    }
    return page(
      await node.read({
        op: "list",
        prefix,
        ...(cursor === undefined ? {} : { after: cursor }),
        limit,
      }),
    );
  });

  client.get("/kv/*", async (c) => {
    const parsed = keyFromPath(c);
    if ("error" in parsed) return parsed.error;
    const answer = (entry: KvEntry | undefined) => {
      if (entry === undefined) return problem(c, 404, "Key not found", { key: parsed.key });
      c.header("ETag", etag(entry.version));
      c.header("Kv-Version", entry.version);
      c.header("Content-Type", "application/octet-stream");
      return c.body(entry.value as Uint8Array<ArrayBuffer>);
    };
    const consistency = c.req.query("consistency") ?? "linearizable";
    if (consistency === "local") return answer(node.state.read(parsed.key));
    if (consistency !== "linearizable") {
      return problem(c, 400, "consistency must be linearizable or local");
    }
    // Under a lease, from this replica's state; otherwise after one round
    // trip to a majority (src/core/quorum_read.ts), or as a command.
    const result = await node.read({ op: "get", key: parsed.key });
    return result.op === "get" && result.ok
      ? answer(result.entry)
      : problem(c, 500, "Unexpected result");
  });

  client.put(
    "/kv/*",
    bodyLimit({
      maxSize: MAX_VALUE_BYTES,
      onError: (c) => problem(c, 413, `Value is larger than ${MAX_VALUE_BYTES} bytes`),
    }),
    async (c) => {
      const parsed = keyFromPath(c);
      if ("error" in parsed) return parsed.error;
      const condition = conditionOf(c);
      if ("error" in condition) return condition.error;
      const value = new Uint8Array(await c.req.arrayBuffer());
      if (value.length > MAX_VALUE_BYTES) {
        return problem(c, 413, `Value is larger than ${MAX_VALUE_BYTES} bytes`);
      }
      return await run(node, {
        op: "put",
        key: parsed.key,
        value,
        ...(condition.ifVersion === undefined ? {} : { ifVersion: condition.ifVersion }),
      }, (result) => {
        if (result.op !== "put") return problem(c, 500, "Unexpected result");
        if (!result.ok) return preconditionFailed(c, result.current);
        c.header("ETag", etag(result.version));
        return c.json({ key: parsed.key, version: result.version });
      });
    },
  );

  client.delete("/kv/*", async (c) => {
    const parsed = keyFromPath(c);
    if ("error" in parsed) return parsed.error;
    const condition = conditionOf(c);
    if ("error" in condition) return condition.error;
    return await run(node, {
      op: "delete",
      key: parsed.key,
      ...(condition.ifVersion === undefined ? {} : { ifVersion: condition.ifVersion }),
    }, (result) => {
      if (result.op !== "delete") return problem(c, 500, "Unexpected result");
      if (!result.ok) return preconditionFailed(c, result.current);
      return c.body(null, 204);
    });
  });

  app.route("/", client);
  return app;
}

function preconditionFailed(c: Context, current: string | null): Response {
  if (current !== null) c.header("ETag", etag(current));
  return problem(c, 412, "Precondition failed: the key's version does not match", { current });
}

/** The compare-and-set condition of a write: `If-Match`, `?cas=`, or `If-None-Match: *`. */
function conditionOf(c: Context): { ifVersion: string | null | undefined } | { error: Response } {
  const ifMatch = entityTag(c.req.header("if-match")) ?? c.req.query("cas");
  const ifNoneMatch = entityTag(c.req.header("if-none-match"));
  if (ifNoneMatch !== undefined && ifNoneMatch !== "*") {
    return { error: problem(c, 400, "If-None-Match supports only *, meaning create only") };
  }
  if (ifMatch !== undefined && ifNoneMatch !== undefined) {
    return { error: problem(c, 400, "Use either If-Match or If-None-Match, not both") };
  }
  if (ifNoneMatch === "*") return { ifVersion: null };
  if (ifMatch === undefined) return { ifVersion: undefined };
  if (ifMatch === "*" || ifMatch.length === 0 || ifMatch.length > 64) {
    return { error: problem(c, 400, "If-Match needs one version, as returned in ETag") };
  }
  return { ifVersion: ifMatch };
}
