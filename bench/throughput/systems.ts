/**
 * The systems `deno task bench:throughput` measures, as it drives them:
 * epaxos-kv through its HTTP API, and one etcd cluster seen twice, through
 * its native gRPC API and through its JSON gateway. Also the `/metrics`
 * counters an epaxos-kv run reports on.
 *
 * @module
 */

import type { ProcessCluster } from "../../src/chaos/process_cluster.ts";
import { type EtcdCluster, etcdPost } from "./etcd.ts";
import { type System, type Target, targetsOf } from "./lua.ts";
import type { Side } from "./report.ts";

/** A system under test, as the benchmark drives it. */
export interface SystemUnderTest {
  /** Its name in the log: `epaxos`, `etcd-grpc`, `etcd-gateway`. */
  readonly label: string;
  /** Which column of the report its runs fill. */
  readonly side: Side;
  /** What sends its load: wrk with a Lua script, or the gRPC load generator. */
  readonly driver: "wrk" | "etcd_load";
  /** The HTTP API a wrk script speaks to it. */
  readonly system: System;
  /**
   * Whether the preload writes its keys through it; false for a second view
   * of a cluster another system preloads.
   */
  readonly preloads: boolean;
  /** Base URLs of its servers. */
  readonly endpoints: readonly string[];
  /** Where wrk threads send their requests. */
  readonly targets: readonly Target[];
  /** etcd's gateway prefix. */
  readonly apiPrefix?: string;
  /** Whether its API is https. */
  readonly https?: boolean;
  /** Writes `value` at `key` through target `via`; throws on failure. */
  put(via: number, key: string, value: string): Promise<void>;
  /** Reads `key` through target `via`: its value, or null when absent; throws on failure. */
  get(via: number, key: string): Promise<string | null>;
  /** EPaxos only: fast and slow commits summed over every replica. */
  commits?(): Promise<{ fast: number; slow: number }>;
  /** EPaxos only: counters of `/metrics` summed over every replica. */
  counters?(): Promise<Map<string, number>>;
  /** The server processes, for CPU accounting by thread. */
  pids(): number[];
}

/** The `/metrics` series a run reports on, summed over replicas. */
const COUNTER_SERIES = [
  "epaxos_batch_commands_sum",
  "epaxos_batch_commands_count",
  "epaxos_storage_commit_duration_seconds_sum",
  "epaxos_storage_commit_duration_seconds_count",
  "epaxos_peer_batches_received_total",
  "epaxos_peer_messages_received_total",
];

/** Sums the unlabelled series named in {@link COUNTER_SERIES} from Prometheus texts. */
export function sumSeries(texts: readonly string[]): Map<string, number> {
  const sums = new Map<string, number>(COUNTER_SERIES.map((name) => [name, 0]));
  for (const text of texts) {
    for (const line of text.split("\n")) {
      const [name, value] = line.split(" ");
      if (name !== undefined && sums.has(name)) sums.set(name, sums.get(name)! + Number(value));
    }
  }
  return sums;
}

/** What the replicas did during a run, from `/metrics` counters before and after. */
export function describeCounters(
  before: Map<string, number>,
  after: Map<string, number>,
  seconds: number,
  replicas: number,
): string {
  const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  const instances = delta("epaxos_batch_commands_count");
  const commits = delta("epaxos_storage_commit_duration_seconds_count");
  const batches = delta("epaxos_peer_batches_received_total");
  return [
    `${(instances / seconds).toFixed(0)} instances/s of ${
      instances === 0 ? "-" : (delta("epaxos_batch_commands_sum") / instances).toFixed(1)
    } commands`,
    `${(commits / seconds / replicas).toFixed(0)} storage commits/s per replica of ${
      commits === 0
        ? "-"
        : (1000 * delta("epaxos_storage_commit_duration_seconds_sum") / commits).toFixed(2)
    } ms`,
    `${(batches / seconds / replicas).toFixed(0)} peer batches/s received per replica of ${
      batches === 0 ? "-" : (delta("epaxos_peer_messages_received_total") / batches).toFixed(1)
    } messages`,
  ].join(", ");
}

/**
 * epaxos-kv's replicas, through their HTTP API (its https API for a cluster
 * with TLS, as `epaxos-tls` in the `epaxos_tls` column).
 */
export function epaxosSystem(cluster: ProcessCluster): SystemUnderTest {
  const { urls } = cluster;
  const fetch = cluster.fetch;
  const tls = cluster.ca !== undefined;
  return {
    label: tls ? "epaxos-tls" : "epaxos",
    side: tls ? "epaxos_tls" : "epaxos",
    ...(tls ? { https: true } : {}),
    driver: "wrk",
    system: "epaxos",
    preloads: true,
    endpoints: urls,
    targets: targetsOf(urls),
    pids: () => urls.flatMap((_, id) => cluster.pid(id) ?? []),
    async put(via, key, value) {
      const response = await fetch(`${urls[via % urls.length]}/kv/${key}`, {
        method: "PUT",
        body: value,
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      if (!response.ok) throw new Error(`PUT ${key}: ${response.status} ${text.slice(0, 200)}`);
    },
    async get(via, key) {
      const response = await fetch(`${urls[via % urls.length]}/kv/${key}`, {
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      if (response.status === 404) return null;
      if (!response.ok) throw new Error(`GET ${key}: ${response.status} ${text.slice(0, 200)}`);
      return text;
    },
    async counters() {
      return sumSeries(
        await Promise.all(urls.map(async (url) => {
          const response = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
          return await response.text();
        })),
      );
    },
    async commits() {
      const statuses = await Promise.all(urls.map(async (url) => {
        const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(10_000) });
        return await response.json();
      }));
      return {
        fast: statuses.reduce((sum, status) => sum + status.commits.fast, 0),
        slow: statuses.reduce((sum, status) => sum + status.commits.slow, 0),
      };
    },
  };
}

/**
 * etcd twice: through its native gRPC API by the Go load generator, and
 * through its JSON gateway by wrk. Both views read back and preload through
 * the gateway; the gRPC view preloads, since they share one cluster.
 */
export function etcdSystems(
  cluster: EtcdCluster,
): [grpc: SystemUnderTest, gateway: SystemUnderTest] {
  const { clientUrls, apiPrefix } = cluster;
  const url = (via: number, path: string) =>
    `${clientUrls[via % clientUrls.length]}${apiPrefix}${path}`;
  const gateway: SystemUnderTest = {
    label: "etcd-gateway",
    side: "etcd_gateway",
    driver: "wrk",
    system: "etcd",
    preloads: false,
    endpoints: clientUrls,
    targets: targetsOf(clientUrls),
    pids: () => [...cluster.pids],
    apiPrefix,
    async put(via, key, value) {
      await etcdPost(url(via, "/kv/put"), { key: btoa(key), value: btoa(value) }, 10_000);
    },
    async get(via, key) {
      const answer = await etcdPost(url(via, "/kv/range"), { key: btoa(key) }, 10_000);
      const kvs = answer.kvs as { value?: string }[] | undefined;
      if (kvs === undefined || kvs.length === 0) return null;
      return atob(kvs[0]!.value ?? "");
    },
  };
  return [
    { ...gateway, label: "etcd-grpc", side: "etcd", driver: "etcd_load", preloads: true },
    gateway,
  ];
}
