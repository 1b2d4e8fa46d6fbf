/**
 * The counters and histograms a driver keeps, for `/metrics` and `/status`.
 *
 * @module
 */

import { Histogram, RecentWindow } from "../runtime/metrics.ts";

/** Bucket bounds of latency histograms, seconds: loopback to wide area. */
const LATENCY_BUCKETS_SECONDS = [
  0.001,
  0.002,
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.15,
  0.2,
  0.3,
  0.5,
  1,
  2.5,
  5,
];

/** Bucket bounds of storage commit durations, seconds. */
const STORAGE_BUCKETS_SECONDS = [
  0.0005,
  0.001,
  0.002,
  0.004,
  0.008,
  0.016,
  0.032,
  0.064,
  0.128,
  0.256,
  0.512,
  1,
];

/** Counters and histograms the metrics endpoint renders. */
export interface DriverMetrics {
  /** Client commands proposed. */
  commandsProposed: number;
  /** Client commands answered with their result (at commit or at execution). */
  commandsAnswered: number;
  /** Of those, blind writes answered at commit, before execution. */
  commandsAnsweredAtCommit: number;
  /** Client requests refused before proposing (503). */
  requestsRefused: number;
  /** Client requests timed out after proposing (504). */
  requestsTimedOut: number;
  /** Instances proposed here. */
  instancesProposed: number;
  /** Peer batches received. */
  batchesReceived: number;
  /** Peer messages received. */
  messagesReceived: number;
  /** Snapshots installed here after peers pruned past this replica. */
  snapshotsInstalled: number;
  /** Snapshot fetches (or installs) that failed and were retried later. */
  snapshotFetchesFailed: number;
  /** Time from starting to fetch a snapshot to having installed it, seconds. */
  readonly snapshotSeconds: Histogram;
  /** Storage commit durations, seconds. */
  readonly storageCommitSeconds: Histogram;
  /** Commands per proposed instance. */
  readonly batchSize: Histogram;
  /** Client-seen latency from submit to answer, seconds. */
  readonly requestSeconds: Histogram;
  /** Time from proposing an instance to deciding it (fast, slow or recovered), seconds. */
  readonly commitSeconds: Histogram;
  /** The last client-seen latencies, milliseconds (for `/status`). */
  readonly recentRequestMs: RecentWindow;
  /** The last propose-to-decide times, milliseconds (for `/status`). */
  readonly recentCommitMs: RecentWindow;
}

/** Fresh metrics, all zero. */
export function newDriverMetrics(): DriverMetrics {
  return {
    commandsProposed: 0,
    commandsAnswered: 0,
    commandsAnsweredAtCommit: 0,
    requestsRefused: 0,
    requestsTimedOut: 0,
    instancesProposed: 0,
    batchesReceived: 0,
    messagesReceived: 0,
    snapshotsInstalled: 0,
    snapshotFetchesFailed: 0,
    snapshotSeconds: new Histogram([0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120]),
    storageCommitSeconds: new Histogram(STORAGE_BUCKETS_SECONDS),
    batchSize: new Histogram([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]),
    requestSeconds: new Histogram(LATENCY_BUCKETS_SECONDS),
    commitSeconds: new Histogram(LATENCY_BUCKETS_SECONDS),
    recentRequestMs: new RecentWindow(),
    recentCommitMs: new RecentWindow(),
  };
}
