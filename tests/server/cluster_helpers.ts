/**
 * In-process clusters for tests: real `ReplicaDriver`s, memory storage and the
 * in-memory transport (with the real codec), on the system clock.
 *
 * @module
 */

import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { SystemClock } from "../../src/runtime/clock.ts";
import { SystemRandom } from "../../src/runtime/random.ts";
import { ReplicaDriver, type ReplicaDriverOptions } from "../../src/driver/driver.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import { MemoryNetwork } from "../../src/transport/memory.ts";
import { waitFor } from "../wait.ts";

/** A running in-process cluster. */
export interface TestCluster {
  readonly network: MemoryNetwork<KvCommand>;
  readonly storages: MemoryStorage<KvCommand>[];
  readonly nodes: ReplicaDriver[];
  /** Stops replica `id` (its storage survives) and starts it again from storage. */
  restart(id: number): Promise<void>;
  /** Stops every replica. */
  stop(): Promise<void>;
}

/** Node settings a test may override. */
export type TestNodeOptions = Partial<
  Omit<ReplicaDriverOptions, "id" | "replicas" | "storage" | "transport" | "clock" | "random">
>;

/** Starts `replicas` nodes and waits until each reaches a quorum. */
export async function startTestCluster(
  replicas = 3,
  options: TestNodeOptions & { readonly snapshotEveryCommits?: number } = {},
): Promise<TestCluster> {
  const clock = new SystemClock();
  const network = new MemoryNetwork<KvCommand>({ replicas, isCommand: isKvCommand, clock });
  const { snapshotEveryCommits, ...nodeOptions } = options;
  const storages = Array.from(
    { length: replicas },
    () => new MemoryStorage<KvCommand>({ snapshotEveryCommits }),
  );
  const open = async (id: number) => {
    const node = await ReplicaDriver.open({
      // A replica its peers pruned past takes a snapshot from one of them,
      // in process, unless the link between them is down.
      fetchSnapshot: (peer) => {
        if (network.isDown(id) || network.isDown(peer)) {
          return Promise.reject(new Error(`replica ${peer} is unreachable`));
        }
        return nodes[peer]!.takeSnapshot(id, nodes[id]?.configuration.epoch);
      },
      // What GET /admin/configuration answers there, unless the link is down.
      fetchConfiguration: (peer) => {
        if (network.isDown(id) || network.isDown(peer) || nodes[peer] === undefined) {
          return Promise.reject(new Error(`replica ${peer} is unreachable`));
        }
        return Promise.resolve(nodes[peer]!.configuration);
      },
      // Wall-clock time as the process has it (expiry, TTLs: src/driver/expiry.ts).
      wallClockOriginMs: performance.timeOrigin,
      ...nodeOptions,
      id,
      replicas,
      storage: storages[id]!,
      transport: network.transport(id),
      clock,
      random: new SystemRandom(),
    });
    network.attach(id, (batch) => node.receive(batch));
    node.start();
    return node;
  };
  const nodes: ReplicaDriver[] = [];
  nodes.push(...await Promise.all(storages.map((_, id) => open(id))));
  await waitFor(() => nodes.every((node) => node.quorumReachable()), 5000, "quorum");
  return {
    network,
    storages,
    nodes,
    async restart(id: number) {
      network.detach(id);
      await nodes[id]!.stop();
      nodes[id] = await open(id);
    },
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
    },
  };
}

export { waitFor };
