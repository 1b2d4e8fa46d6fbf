/**
 * Real replicas behind real HTTP servers, in process: `ReplicaDriver`s on the
 * in-memory transport (as in `tests/server/cluster_helpers.ts`, with node
 * options the client tests need), each served by its own `Deno.serve` on an
 * ephemeral port, so a client can talk to several replicas.
 *
 * @module
 */

import type { KvCommand } from "../../src/kv/commands.ts";
import { createApp } from "../../src/server/app.ts";
import type { ReplicaDriver } from "../../src/driver/driver.ts";
import type { MemoryNetwork } from "../../src/transport/memory.ts";
import { startTestCluster, waitFor } from "../server/cluster_helpers.ts";

export { waitFor };

/** The cluster credential of test clusters. */
export const SECRET = "test-secret-0123456789";

/** Settings of a served cluster. */
export interface ServedClusterOptions {
  /** Cluster size (default 3). */
  readonly replicas?: number;
  /** If set, client routes need this token. */
  readonly clientToken?: string;
  /** How long a replica waits for a command to execute before answering 504 (default 5000). */
  readonly requestTimeoutMs?: number;
  /** How recently a peer must have been heard from to count as reachable (default 3000). */
  readonly contactWindowMs?: number;
}

/** A running cluster with one HTTP server per replica. */
export interface ServedCluster {
  /** The in-memory network (partition replicas with `setDown`). */
  readonly network: MemoryNetwork<KvCommand>;
  /** The replicas, by id. */
  readonly nodes: readonly ReplicaDriver[];
  /** Base URL of each replica's server, by id. */
  readonly urls: readonly string[];
  /** Stops the replicas (answering what is pending), then the servers. */
  stop(): Promise<void>;
}

/** Starts a cluster, waits until every replica reaches a quorum, and serves each replica over HTTP. */
export async function startServedCluster(
  options: ServedClusterOptions = {},
): Promise<ServedCluster> {
  const replicas = options.replicas ?? 3;
  const cluster = await startTestCluster(replicas, {
    ...(options.requestTimeoutMs === undefined
      ? {}
      : { requestTimeoutMs: options.requestTimeoutMs }),
    ...(options.contactWindowMs === undefined ? {} : { contactWindowMs: options.contactWindowMs }),
  });
  const { network, nodes } = cluster;
  const servers: Deno.HttpServer<Deno.NetAddr>[] = [];
  try {
    await waitFor(() => nodes.every((node) => node.quorumReachable()), 5000, "quorum");
    for (const node of nodes) {
      const app = createApp({
        node,
        replicas,
        secret: SECRET,
        ...(options.clientToken === undefined ? {} : { clientToken: options.clientToken }),
      });
      servers.push(Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch));
    }
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    await Promise.all(servers.map((server) => server.shutdown()));
    throw error;
  }
  return {
    network,
    nodes,
    urls: servers.map((server) => `http://127.0.0.1:${server.addr.port}`),
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
      await Promise.all(servers.map((server) => server.shutdown()));
    },
  };
}

/** The URL of a port nothing listens on (bound, then released). */
export function deadServerUrl(): string {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return `http://127.0.0.1:${port}`;
}
