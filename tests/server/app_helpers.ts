/**
 * The app of replica 0 of an in-process cluster, for route tests.
 *
 * @module
 */

import type { Hono } from "hono";
import type { ReplicaDriver } from "../../src/driver/driver.ts";
import { type AppOptions, createApp } from "../../src/server/app.ts";
import { startTestCluster, type TestCluster, type TestNodeOptions } from "./cluster_helpers.ts";

/** The cluster secret of these tests' apps. */
export const TEST_SECRET = "test-secret-0123456789";

/** What {@linkcode withClusterApp} hands its body. */
export interface ClusterApp {
  /** The app of replica 0. */
  readonly app: Hono;
  /** Replica 0. */
  readonly node: ReplicaDriver;
  /** The cluster. */
  readonly cluster: TestCluster;
}

/**
 * Starts a 3-replica cluster (with `nodes` settings), runs `body` with
 * replica 0's app (with `app` settings), then stops the cluster.
 */
export async function withClusterApp(
  body: (served: ClusterApp) => Promise<void>,
  options: {
    readonly nodes?: TestNodeOptions;
    readonly app?: Partial<Omit<AppOptions, "node" | "replicas" | "secret">>;
  } = {},
): Promise<void> {
  const cluster = await startTestCluster(3, options.nodes);
  try {
    const node = cluster.nodes[0]!;
    const app = createApp({ node, replicas: 3, secret: TEST_SECRET, ...options.app });
    await body({ app, node, cluster });
  } finally {
    await cluster.stop();
  }
}
