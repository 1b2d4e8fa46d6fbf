/**
 * What the dashboard shows of one replica, gathered from the figures `/status`
 * and `/admin/members` give (`src/server/app.ts`, `src/server/admin_route.ts`)
 * into one plain object that the page renders (`page.tsx`) and each live
 * event carries anew.
 *
 * @module
 */

import {
  type AdminRouteOptions,
  describeMembers,
  type MemberStatus,
} from "../server/admin_route.ts";
import type { RecentWindow } from "../runtime/metrics.ts";
import { describeConfiguration } from "../core/configuration.ts";
import type { ConfigurationChangeRecord } from "./configuration_log.ts";
import type { RoundTripMatrix } from "./round_trips.ts";

/** Median and 99th percentile of a recent window, ms (null before any sample). */
export interface LatencyFigures {
  /** Observations held (the last 1024 at most). */
  readonly samples: number;
  /** The median, ms. */
  readonly p50: number | null;
  /** The 99th percentile, ms. */
  readonly p99: number | null;
}

/** One replica as its dashboard shows it. */
export interface DashboardView {
  /** The replica that renders it. */
  readonly replica: {
    readonly id: number;
    readonly name: string;
    readonly region: string | null;
    readonly epoch: number;
    readonly configuration: string;
    readonly role: "voter" | "learner";
    /** Ready as `/readyz` says: a fast quorum reachable (and not joining or retired). */
    readonly ready: boolean;
    readonly joining: boolean;
    readonly retired: string | null;
    readonly uptimeSeconds: number;
    readonly keys: number;
    readonly stateDigest: string;
  };
  /** Every member as this replica sees it (`GET /admin/members`). */
  readonly members: readonly MemberStatus[];
  /** Round trips between the members. */
  readonly roundTrips: RoundTripMatrix;
  /** Instances this replica coordinated, by commit path. */
  readonly commits: {
    readonly fast: number;
    readonly slow: number;
    /** Fast over fast and slow, null before any. */
    readonly fastRatio: number | null;
    readonly recoveriesStarted: number;
    readonly recoveriesCommitted: number;
  };
  /** Client-seen latency (submit to execution) and commit latency (propose to decide). */
  readonly latencyMs: { readonly request: LatencyFigures; readonly commit: LatencyFigures };
  /** Quorum leases (`src/core/lease.ts`). */
  readonly leases: {
    readonly configured: boolean;
    readonly valid: boolean;
    readonly leaseMs: number | null;
    readonly rules: number;
    /** By grantor id: ms left of its grant to this replica. */
    readonly grantRemainingMs: Readonly<Record<string, number>>;
    /** Local reads over every linearizable read answered (null before any). */
    readonly localReadRatio: number | null;
  };
  /** Retention of executed instances (`src/core/retention.ts`). */
  readonly retention: {
    readonly heldCommands: number;
    readonly limit: number;
    readonly prunedPast: readonly number[];
    readonly prunedBy: readonly number[];
    readonly catchingUpBySnapshot: boolean;
    readonly snapshotsInstalled: number;
  };
  /** Instances known and not yet committed, and waiting to execute. */
  readonly pending: { readonly instances: number; readonly execution: number };
  /** Configurations this replica entered while it ran, newest first. */
  readonly changes: readonly ConfigurationChangeRecord[];
  /** When this view was taken, ms since the Unix epoch (the replica's wall clock). */
  readonly atMs: number;
}

/** Settings of {@linkcode dashboardView}: the admin route's, and the replica's region. */
export interface DashboardViewOptions extends AdminRouteOptions {
  /** This replica's region. */
  readonly region?: string;
}

/** The median and 99th percentile of `window`, to 0.01 ms. */
export function latencyFigures(window: RecentWindow): LatencyFigures {
  const [p50, p99] = window.quantiles([0.5, 0.99]);
  const round = (value: number | null | undefined) =>
    value === null || value === undefined ? null : Number(value.toFixed(2));
  return { samples: window.size, p50: round(p50), p99: round(p99) };
}

/** The fast-path ratio of `fast` and `slow` commits, to 4 places (null before any commit). */
export function fastRatio(fast: number, slow: number): number | null {
  return fast + slow === 0 ? null : Number((fast / (fast + slow)).toFixed(4));
}

/** The dashboard's view of `options.node` now. */
export function dashboardView(
  options: DashboardViewOptions,
  extras: {
    readonly roundTrips: RoundTripMatrix;
    readonly changes: readonly ConfigurationChangeRecord[];
  },
): DashboardView {
  const { node } = options;
  const core = node.core;
  const stats = core.stats;
  const leases = node.leaseStatus();
  const snapshotSources = core.snapshotSources();
  return {
    replica: {
      id: node.id,
      name: options.names?.[node.id] ?? `replica-${node.id}`,
      region: options.region ?? null,
      epoch: node.configuration.epoch,
      configuration: describeConfiguration(node.configuration),
      role: core.isVoter ? "voter" : "learner",
      ready: node.retired === undefined && !node.joining && !node.catchingUpBySnapshot &&
        snapshotSources.length === 0 && node.fastQuorumReachable(),
      joining: node.joining,
      retired: node.retired ?? null,
      uptimeSeconds: Math.round(node.uptimeMs / 1000),
      keys: node.state.size,
      stateDigest: node.state.digest,
    },
    members: describeMembers(options).members,
    roundTrips: extras.roundTrips,
    commits: {
      fast: stats.fastCommits,
      slow: stats.slowCommits,
      fastRatio: fastRatio(stats.fastCommits, stats.slowCommits),
      recoveriesStarted: stats.recoveriesStarted,
      recoveriesCommitted: stats.recoveriesCommitted,
    },
    latencyMs: {
      request: latencyFigures(node.metrics.recentRequestMs),
      commit: latencyFigures(node.metrics.recentCommitMs),
    },
    leases: {
      configured: leases.configured,
      valid: leases.valid,
      leaseMs: leases.leaseMs ?? null,
      rules: leases.rules?.length ?? 0,
      grantRemainingMs: leases.grantRemainingMs,
      localReadRatio: leases.localReadRatio,
    },
    retention: {
      heldCommands: core.heldCommands,
      limit: node.maxHeldCommands,
      prunedPast: core.prunedPastPeers(),
      prunedBy: snapshotSources,
      catchingUpBySnapshot: node.catchingUpBySnapshot,
      snapshotsInstalled: node.metrics.snapshotsInstalled,
    },
    pending: { instances: core.uncommittedCount, execution: core.pendingExecution },
    changes: extras.changes,
    atMs: node.wallClockMs(),
  };
}
