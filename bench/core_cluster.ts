/**
 * An in-memory cluster for benchmarks: real cores, real KV state machines and
 * memory storage, a FIFO network with no delay and no faults, all on one
 * thread. Each replica runs the driver loop (persist, send, execute, advance)
 * exactly as the service does.
 *
 * @module
 */

import { Replica } from "../src/core/replica.ts";
import { instanceKey } from "../src/core/instance.ts";
import type { Message } from "../src/core/types.ts";
import { type KvCommand, kvConflicts } from "../src/kv/commands.ts";
import { type KvMutation, KvStateMachine } from "../src/kv/state_machine.ts";
import { MemoryStorage } from "../src/storage/memory.ts";

/** How to load the cluster. */
export interface LoadOptions {
  /** Replicas. */
  readonly replicas: number;
  /** Client commands to run in all. */
  readonly commands: number;
  /** Commands per instance (1 = unbatched). */
  readonly batch: number;
  /** Fraction of commands on the one shared key (0 = none, 1 = all). */
  readonly conflict: number;
  /** Instances each replica keeps in flight. */
  readonly window: number;
  /** Distinct private keys per replica (bounds the key space). */
  readonly keysPerReplica: number;
  /** Called every `sampleEvery` commands executed everywhere (for heap samples). */
  readonly onProgress?: (executedEverywhere: number) => void;
  /** How often `onProgress` is called. */
  readonly sampleEvery?: number;
}

/** What one load run measured. */
export interface LoadResult {
  /** Commands executed on every replica. */
  readonly commands: number;
  /** Wall time in milliseconds. */
  readonly ms: number;
  /** Commands per second, committed and executed on all replicas. */
  readonly commandsPerSecond: number;
  /** Share of instances committed on the fast path. */
  readonly fastRatio: number;
  /** Instances still held in memory by replica 0 at the end. */
  readonly instancesHeld: number;
  /** Messages exchanged. */
  readonly messages: number;
}

interface BenchNode {
  readonly core: Replica<KvCommand>;
  readonly kv: KvStateMachine;
  readonly storage: MemoryStorage<KvCommand>;
  pendingEffects: Map<number, readonly KvMutation[]>;
  inflight: number;
  executedCommands: number;
}

/** Runs `options.commands` commands through a fresh cluster and measures throughput. */
export function runLoad(options: LoadOptions): LoadResult {
  const n = options.replicas;
  const nodes: BenchNode[] = Array.from({ length: n }, (_, id) => ({
    core: new Replica<KvCommand>({
      id,
      replicas: n,
      conflicts: kvConflicts,
      timing: { frontierTicks: 5, scanTicks: 50, forgetTicks: 1000 },
    }),
    kv: new KvStateMachine(),
    storage: new MemoryStorage<KvCommand>(),
    pendingEffects: new Map(),
    inflight: 0,
    executedCommands: 0,
  }));
  const queue: Message<KvCommand>[] = [];
  let queueHead = 0;
  let messages = 0;
  let proposedCommands = 0;
  let sequence = 0;
  const value = new Uint8Array(64);
  const perReplicaTarget = Math.ceil(options.commands / n);
  const proposedBy = new Array<number>(n).fill(0);
  const sampleEvery = options.sampleEvery ?? Number.POSITIVE_INFINITY;
  let nextSample = sampleEvery;

  const propose = (node: BenchNode, id: number) => {
    while (node.inflight < options.window && proposedBy[id]! < perReplicaTarget) {
      const commands: KvCommand[] = [];
      for (let i = 0; i < options.batch && proposedBy[id]! < perReplicaTarget; i++) {
        const shared = options.conflict > 0 && (sequence % 1000) < options.conflict * 1000;
        const key = shared ? "hot" : `r${id}k${sequence % options.keysPerReplica}`;
        commands.push({ op: "put", request: `${id}.${sequence++}`, key, value });
        proposedBy[id]!++;
        proposedCommands++;
      }
      node.core.propose(commands);
      node.inflight++;
    }
  };

  const drain = (node: BenchNode) => {
    while (node.core.hasReady()) {
      const ready = node.core.ready();
      node.storage.commitSync({ records: ready.records, effects: node.pendingEffects });
      node.pendingEffects = new Map();
      for (const message of ready.messages) queue.push(message);
      messages += ready.messages.length;
      for (const execution of ready.executions) {
        const applied = node.kv.apply(execution, execution.local);
        node.pendingEffects.set(instanceKey(execution.owner, execution.number), applied.mutations);
        if (execution.command !== "nop") node.executedCommands += execution.command.length;
        if (execution.local) node.inflight--;
      }
      node.core.advance();
    }
  };

  const executedEverywhere = () => Math.min(...nodes.map((node) => node.executedCommands));
  const started = performance.now();
  let rounds = 0;
  while (executedEverywhere() < proposedCommands || proposedCommands < options.commands) {
    nodes.forEach(propose);
    for (const node of nodes) drain(node);
    // Deliver everything queued, as a driver does with a batch of peer
    // messages: step them all, then take one Ready per replica. A tick is one
    // round of the network.
    const end = queue.length;
    while (queueHead < end) {
      const message = queue[queueHead++]!;
      nodes[message.to]!.core.step(message);
    }
    for (const node of nodes) drain(node);
    // Drop delivered messages, so that they die young instead of being promoted.
    if (queueHead === queue.length) {
      queue.length = 0;
      queueHead = 0;
    } else if (queueHead > 4096) {
      queue.splice(0, queueHead);
      queueHead = 0;
    }
    for (const node of nodes) node.core.tick();
    const everywhere = executedEverywhere();
    while (options.onProgress !== undefined && everywhere >= nextSample) {
      options.onProgress(nextSample);
      nextSample += sampleEvery;
    }
    if (++rounds > 50_000_000) throw new Error("Load did not finish");
  }
  const ms = performance.now() - started;
  const stats = nodes.map((node) => node.core.stats);
  const fast = stats.reduce((sum, s) => sum + s.fastCommits, 0);
  const slow = stats.reduce((sum, s) => sum + s.slowCommits, 0);
  return {
    commands: executedEverywhere(),
    ms,
    commandsPerSecond: executedEverywhere() / (ms / 1000),
    fastRatio: fast / Math.max(1, fast + slow),
    instancesHeld: nodes[0]!.core.instanceCount,
    messages,
  };
}
