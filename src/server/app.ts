/**
 * The Hono app of one replica: client routes, the peer route and operations
 * routes. Conventions follow the HTTP APIs of Consul's KV store, etcd and
 * rqlite: raw bodies, ETags for versions, compare-and-set with `If-Match` and
 * `If-None-Match: *`, JSON errors with a message, 503 with `Retry-After` when
 * nothing was proposed, 504 when the outcome is unknown. And HTTP as clients
 * expect it: 405 with `Allow` for a wrong method on a path that exists, 431
 * for oversized header fields, CORS for configured origins only.
 *
 * @module
 */

import { Hono } from "hono";
import { describeConfiguration } from "../core/configuration.ts";
import { isKvCommand } from "../kv/commands.ts";
import { peerRoute } from "../transport/http_route.ts";
import { peerProtocolGate, ProtocolRefusals } from "../transport/peer_protocol.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import { KvError } from "../errors.ts";
import { ClientAccess, requireOps } from "./access.ts";
import { adminRoute, checkDigestElsewhere } from "./admin_route.ts";
import { corsMiddleware } from "./cors.ts";
import { headerLimit } from "./header_limit.ts";
import { kvRoutes } from "./kv_routes.ts";
import { methodNotAllowed } from "./method_not_allowed.ts";
import {
  fedWatchHub,
  KV_CONNECT_BASE_PATH,
  kvConnectErrorResponse,
  kvConnectRoute,
} from "../kvconnect/routes.ts";
import { kvProblem, problem } from "./problem.ts";
import { snapshotRoute } from "./snapshot_route.ts";
import { renderMetrics } from "./render_metrics.ts";
import type { RecentWindow } from "../runtime/metrics.ts";
import { uiRoute } from "../ui/route.ts";

/** Settings of the app. */
export interface AppOptions {
  /** The replica this app serves. */
  readonly node: ReplicaDriver;
  /** Cluster size. */
  readonly replicas: number;
  /** The cluster credential peers must present. */
  readonly secret: string;
  /**
   * If set, client routes require `Authorization: Bearer <token>`: this
   * token (all-powerful) or a named token (`src/server/access.ts`).
   */
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
  /**
   * Origins whose pages may call this replica from a browser (CORS), each
   * checked by `corsOriginProblem`; absent or empty, CORS is off: no answer
   * carries an `Access-Control-*` field.
   */
  readonly corsOrigins?: readonly string[];
  /**
   * Most watchers on this replica (default `DEFAULT_MAX_WATCHERS`): KV
   * Connect's watches, the curl API's `GET /watch` streams and blocking
   * reads, together.
   */
  readonly maxWatchers?: number;
  /** Time without a change before a keep-alive of a KV Connect watch or a `GET /watch` stream, ms (defaults 5 s and 15 s; tests shorten it). */
  readonly watchKeepAliveMs?: number;
}

function recentQuantiles(window: RecentWindow): Record<string, number | null> {
  const [p50, p99] = window.quantiles([0.5, 0.99]);
  const round = (value: number | null) => value === null ? null : Number(value.toFixed(2));
  return { samples: window.size, p50: round(p50!), p99: round(p99!) };
}

/** Builds the app of one replica. */
export function createApp(options: AppOptions): Hono {
  const { node } = options;
  const app = new Hono();
  // One watch hub for Deno KV's watches and the curl API's: one bound on watchers.
  const watchHub = fedWatchHub(node, options.maxWatchers);
  // The client credentials of every client route and operations page: the
  // client token and the named tokens of the executed state (`access.ts`).
  const access = new ClientAccess({
    tokens: () => node.state.tokens,
    ...(options.clientToken === undefined ? {} : { clientToken: options.clientToken }),
  });
  // Peer protocol version refusals of peers' requests here, for `/status`.
  const protocolRefusals = new ProtocolRefusals();

  app.onError((error, c) => {
    if (c.req.path.startsWith(`${KV_CONNECT_BASE_PATH}/`)) {
      return kvConnectErrorResponse(error, c, node.id);
    }
    if (error instanceof KvError) return kvProblem(c, error);
    console.error(`replica ${node.id}: ${c.req.method} ${c.req.path}: ${error.stack ?? error}`);
    return problem(c, 500, "Internal error");
  });
  app.notFound(methodNotAllowed(app));
  // First, so that a page of an allowed origin can read every answer,
  // refusals included, and a preflight needs no credential.
  if (options.corsOrigins !== undefined && options.corsOrigins.length > 0) {
    app.use("*", corsMiddleware(options.corsOrigins));
  }
  app.use("*", headerLimit());

  // --- Operations --------------------------------------------------------
  // Probes carry no credentials: /livez and /readyz are never guarded; the
  // pages that tell about the cluster follow the client credentials.
  const opsGuard = requireOps(access);
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
  app.get("/status", opsGuard, (c) => {
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
        // A peer protocol version refusal either way, naming both versions.
        protocolRefusal: peer.protocolRefusal ?? protocolRefusals.of(peer.peer) ?? null,
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
      // Replicated expiry (src/driver/expiry.ts): this replica's expire commands.
      expiry: node.expiryStatus(),
      // Watches open here (KV Connect's, GET /watch streams, blocking reads) and their bound.
      watchers: { open: watchHub.size, max: watchHub.maxWatchers },
      keys: node.state.size,
      stateDigest: node.state.digest,
    });
  });
  app.get("/metrics", opsGuard, (c) => {
    c.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return c.body(renderMetrics(node, options.names));
  });
  app.route("/ui", uiRoute({ ...options, access })); // The dashboard (src/ui/route.ts), behind the same credentials.
  if (options.extraOps !== undefined) app.route("/ops", options.extraOps);
  // Replicas call each other's admin routes too: the same version check.
  app.use("/admin/*", peerProtocolGate(options.log === undefined ? {} : { log: options.log }));
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
      protocolRefusals,
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
      protocolRefusals,
    }),
  );

  app.route(KV_CONNECT_BASE_PATH, kvConnectRoute({ ...options, watchHub, access })); // Deno KV's protocol, before the curl API's bearer check
  // --- Client routes -----------------------------------------------------
  app.route(
    "/",
    kvRoutes({
      node,
      access,
      watchHub,
      ...(options.watchKeepAliveMs === undefined
        ? {}
        : { watchKeepAliveMs: options.watchKeepAliveMs }),
    }),
  );
  return app;
}
