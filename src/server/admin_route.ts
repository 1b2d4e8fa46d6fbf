/**
 * The admin route of a replica, mounted at `/admin` (`src/server/app.ts`) and
 * guarded by the cluster secret as a bearer token, like the peer route: the
 * operations that `deno task admin` (`src/cli/admin.ts`) asks for.
 *
 * - `GET /admin/members`: the cluster's configuration as this replica sees it,
 *   `{"epoch", "members": [{"id", "name", "url", "role", "state", "alive",
 *   "lagInstances", "lastContactMsAgo", "roundTripMs", "self"}]}`.
 * - `GET /admin/backup`: a consistent backup of the whole key-value state,
 *   streamed as a backup file (`backup_route.ts`, `src/kv/backup.ts`), once a
 *   second replica's digest at the same point agrees.
 * - `GET /admin/backup/digest?request=ID[&at=command|component]`: this
 *   replica's state digest at backup command `ID` (or at the end of its
 *   component, where snapshots are taken), which the replica taking a backup
 *   or a snapshot asks for.
 *
 * - `GET /admin/configuration` and `POST /admin/members/change`: the
 *   configuration of this replica's epoch, and configuration changes
 *   (`membership_route.ts`).
 * - `GET`, `POST /admin/tokens` and `DELETE /admin/tokens/{name}`: the named
 *   client tokens (`token_route.ts`).
 *
 * The members are those of this replica's epoch (`ReplicaDriver.configuration`:
 * the cluster file's in epoch 1). A member's `state` is `"caught-up"` when it has
 * reported executing all but at most `caughtUpInstances` of the instances this
 * replica executed (`lagInstances`, from frontier gossip, which peers send
 * every 100 ms or so: a healthy peer under load reads a little behind), and
 * `"lagging"` otherwise. This replica is always caught up with itself. The
 * gossip last heard from a member that is down stays as it was: its
 * `lastContactMsAgo` tells how old it is, and `alive` is false once that is
 * over {@linkcode ALIVE_WITHIN_MS} (peers send frontier gossip every 50 ms or
 * so, so a live peer is heard from many times in that window).
 *
 * More operations are added here as further routes of the same sub-app, behind
 * the same guard.
 *
 * @module
 */

import { Hono } from "hono";
import type { MemberRole } from "../core/configuration.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import { requireBearer } from "../net/bearer.ts";
import { type BackupCheck, backupRoute } from "./backup_route.ts";
import { membershipRoutes } from "./membership_route.ts";
import { tokenRoutes } from "./token_route.ts";

/** Settings of {@linkcode adminRoute}. */
export interface AdminRouteOptions {
  /** The replica the route answers for. */
  readonly node: ReplicaDriver;
  /** The cluster credential an admin request must present as its bearer token. */
  readonly secret: string;
  /**
   * Base URLs of the members, by id (default: the URL the transport dials for
   * each peer; `null` for this replica).
   */
  readonly urls?: readonly string[];
  /** Names of the members, by id (default `replica-<id>`). */
  readonly names?: readonly string[];
  /**
   * Most instances a member may be behind this replica and still count as
   * caught up (default {@linkcode DEFAULT_CAUGHT_UP_INSTANCES}).
   */
  readonly caughtUpInstances?: number;
  /** A member heard from within this many milliseconds is alive (default {@linkcode ALIVE_WITHIN_MS}). */
  readonly aliveWithinMs?: number;
  /** Receives a line per notable event (a backup refused for divergence). */
  readonly log?: (line: string) => void;
  /** How this replica reaches another's admin route (default the global `fetch`; tests swap it). */
  readonly fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

/** How long a backup waits for a second replica's digest at the same command. */
export const BACKUP_CHECK_DEADLINE_MS = 5000;
/** Most replicas asked for their digest, one after another. */
const BACKUP_CHECK_REPLICAS = 2;

/** Default of {@linkcode AdminRouteOptions.caughtUpInstances}. */
export const DEFAULT_CAUGHT_UP_INSTANCES = 1000;

/** A member heard from within this many milliseconds counts as alive. */
export const ALIVE_WITHIN_MS = 3000;

/** One member, as `GET /admin/members` describes it. */
export interface MemberStatus {
  /** The member's id. */
  readonly id: number;
  /** Its name. */
  readonly name: string;
  /** Its base URL, if known. */
  readonly url: string | null;
  /** Its role: a voter counts in quorums, a learner receives everything and counts in none. */
  readonly role: MemberRole;
  /** Its incarnation: raised by each replace. */
  readonly incarnation: number;
  /**
   * `caught-up`: it executed about what this replica has; `lagging`: more
   * than the tolerance behind; `pruned-past`: so far behind that this replica
   * pruned past it (it returns by snapshot); `catching-up`: (this replica
   * itself) its peers pruned past it and it is fetching or installing a
   * snapshot.
   */
  readonly state: "caught-up" | "lagging" | "pruned-past" | "catching-up";
  /** Instances this replica executed that the member has not reported executing. */
  readonly lagInstances: number;
  /** Whether it was heard from within {@linkcode ALIVE_WITHIN_MS} (always true for itself). */
  readonly alive: boolean;
  /** Milliseconds since this replica last heard from it (0 for itself; null if never). */
  readonly lastContactMsAgo: number | null;
  /** Smoothed round trip to it, in milliseconds, once measured (null for itself). */
  readonly roundTripMs: number | null;
  /** Whether it is the replica that answered. */
  readonly self: boolean;
}

/** The answer of `GET /admin/members`. */
export interface MembersAnswer {
  /** The configuration's epoch. */
  readonly epoch: number;
  /** Every member, by id. */
  readonly members: readonly MemberStatus[];
}

const encoder = new TextEncoder();

/** The members as `node` sees them (the body of `GET /admin/members`). */
export function describeMembers(options: AdminRouteOptions): MembersAnswer {
  const { node } = options;
  const tolerance = options.caughtUpInstances ?? DEFAULT_CAUGHT_UP_INSTANCES;
  const aliveWithinMs = options.aliveWithinMs ?? ALIVE_WITHIN_MS;
  const lag = node.core.executionLag();
  const prunedPast = new Set(node.core.prunedPastPeers());
  const catchingUp = node.catchingUpBySnapshot || node.core.snapshotSources().length > 0;
  const peers = new Map(node.peers().map((peer) => [peer.peer, peer]));
  const now = node.now();
  const configuration = node.configuration;
  const members = configuration.members.map((member): MemberStatus => {
    const id = member.id;
    const self = id === node.id;
    const peer = peers.get(id);
    // Epoch 1's URLs are the cluster file's, as the transport dials them
    // (the in-process default configuration has placeholders).
    const url = options.urls?.[id] ??
      (configuration.epoch === 1 && peer?.url !== undefined
        ? new URL(peer.url).origin
        : member.url.endsWith(".invalid")
        ? null
        : member.url);
    const lastContactMs = peer?.lastContactMs;
    const behind = lag[id] ?? 0;
    return {
      id,
      name: options.names?.[id] ?? `replica-${id}`,
      url,
      role: member.role,
      incarnation: member.incarnation,
      state: self
        ? (catchingUp ? "catching-up" : "caught-up")
        : prunedPast.has(id)
        ? "pruned-past"
        : behind <= tolerance
        ? "caught-up"
        : "lagging",
      lagInstances: self ? 0 : behind,
      // Heard from lately, as the incarnation this epoch names (a replaced
      // member's old process is answered but never taken).
      alive: self ||
        (lastContactMs !== undefined && now - lastContactMs <= aliveWithinMs &&
          node.heardAsCurrent(id)),
      lastContactMsAgo: self
        ? 0
        : lastContactMs === undefined
        ? null
        : Math.max(0, Math.round(now - lastContactMs)),
      roundTripMs: peer?.roundTripMs === undefined ? null : Number(peer.roundTripMs.toFixed(2)),
      self,
    };
  });
  return { epoch: configuration.epoch, members };
}

/**
 * Asks up to {@linkcode BACKUP_CHECK_REPLICAS} other replicas (those heard
 * from and not pruned past, nearest first, but `exclude`) for their digest at
 * backup command `request` (a backup's, or a snapshot's barrier), each for at
 * most half of {@linkcode BACKUP_CHECK_DEADLINE_MS}, until one has executed
 * it; `undefined` if none could say. A snapshot's receiver is excluded: it
 * executes nothing until it has the snapshot, so waiting for its digest only
 * delayed every snapshot by the whole deadline.
 */
export async function checkDigestElsewhere(
  options: AdminRouteOptions,
  request: string,
  exclude?: number,
  at: "command" | "component" = "command",
): Promise<BackupCheck | undefined> {
  const { node } = options;
  const fetcher = options.fetch ?? fetch;
  const members = describeMembers(options).members
    .filter((member) =>
      !member.self && member.alive && member.url !== null && member.id !== exclude &&
      member.state !== "pruned-past"
    )
    .sort((a, b) => (a.roundTripMs ?? Infinity) - (b.roundTripMs ?? Infinity))
    .slice(0, BACKUP_CHECK_REPLICAS);
  for (const member of members) {
    const url = `${member.url}/admin/backup/digest?request=${encodeURIComponent(request)}&at=${at}`;
    const deadline = node.now() + BACKUP_CHECK_DEADLINE_MS / BACKUP_CHECK_REPLICAS;
    while (node.now() < deadline) {
      let response: Response;
      try {
        response = await fetcher(url, {
          headers: { authorization: `Bearer ${options.secret}` },
          signal: AbortSignal.timeout(Math.max(1, deadline - node.now())),
        });
      } catch {
        break; // Unreachable: ask the next one.
      }
      if (response.ok) {
        const body = await response.json();
        if (typeof body?.stateDigest === "string") {
          return { replica: member.id, stateDigest: body.stateDigest };
        }
        break;
      }
      await response.body?.cancel();
      if (response.status !== 404) break;
      // Not executed there yet: it will be, soon after the commit.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return undefined;
}

/**
 * The admin route as a Hono sub-app, to mount at `/admin`. Every request needs
 * `Authorization: Bearer <cluster secret>`; without it, or with another, the
 * answer is 401 with a JSON error and nothing is done.
 */
export function adminRoute(options: AdminRouteOptions): Hono {
  const secretBytes = encoder.encode(options.secret);
  const route = new Hono();
  route.use(
    "*",
    requireBearer(secretBytes, {
      realm: "epaxos-kv admin",
      refusal: (presented) =>
        presented
          ? "The admin route refused this cluster secret"
          : "The admin route needs the cluster secret (Authorization: Bearer <secret>)",
    }),
  );
  route.get("/members", (c) => c.json(describeMembers(options)));
  membershipRoutes(route, options);
  tokenRoutes(route, options);
  route.get("/backup/digest", (c) => {
    const request = c.req.query("request");
    if (request === undefined || request.length === 0 || request.length > 128) {
      return c.json({ error: "request must name a backup command's request id" }, 400);
    }
    const at = c.req.query("at");
    if (at !== undefined && at !== "command" && at !== "component") {
      return c.json({ error: "at must be command or component" }, 400);
    }
    // A backup reads the state at its command; a snapshot at the end of
    // its barrier's component (src/driver/snapshot_captures.ts).
    const stateDigest = at === "component"
      ? options.node.digestAfterBarrier(request)
      : options.node.state.digestAtBackup(request);
    if (stateDigest === undefined) {
      return c.json({ error: `Backup command ${request} has not executed here (recently)` }, 404);
    }
    return c.json({ request, stateDigest });
  });
  route.route(
    "/backup",
    backupRoute({
      source: options.node,
      checkElsewhere: (request) => checkDigestElsewhere(options, request),
      ...(options.log === undefined ? {} : { log: options.log }),
    }),
  );
  return route;
}
