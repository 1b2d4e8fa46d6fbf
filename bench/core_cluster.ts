/**
 * An in-memory cluster for benchmarks: the production driver over real cores,
 * real KV state machines and memory storage, a FIFO network with no delay and
 * no faults, all on one thread. Only the edges differ from the service: the
 * disk completes each commit synchronously, the clock moves one millisecond
 * (one tick) per network round, and `soon` work runs when the round says so.
 *
 * @module
 */

import { ReplicaDriver } from "../src/driver/driver.ts";
import type { Message } from "../src/core/types.ts";
import type { KvCommand } from "../src/kv/commands.ts";
import { ManualClock } from "../src/runtime/clock.ts";
import { Completion } from "../src/runtime/completion.ts";
import { SeededRandom } from "../src/runtime/random.ts";
import { MemoryStorage } from "../src/storage/memory.ts";
import type { ReplicaStorage } from "../src/storage/types.ts";
import { type PeerStats, type PeerTransport, unmeasuredPeerStats } from "../src/transport/types.ts";

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

/** Memory storage whose commits complete synchronously. */
function syncStorage(): ReplicaStorage<KvCommand> {
  const memory = new MemoryStorage<KvCommand>();
  return {
    load: () => Promise.resolve(memory.loadSync()),
    commit: (batch) => {
      memory.commitSync(batch);
      return Completion.done();
    },
    install: (snapshot) => {
      memory.installSync(snapshot);
      return Completion.done();
    },
    close: () => {},
  };
}

/** A transport onto the shared FIFO queue; every peer always reachable. */
function queueTransport(
  self: number,
  replicas: number,
  queue: Message<KvCommand>[],
  clock: ManualClock,
): PeerTransport<KvCommand> {
  const peers = Array.from({ length: replicas }, (_, peer) => peer).filter((peer) => peer !== self);
  return {
    send: (messages) => {
      for (const message of messages) queue.push(message);
    },
    // A round trip of 0 ticks (the core counts at least 1): every peer is near.
    stats: (): PeerStats[] =>
      peers.map((peer) => ({ ...unmeasuredPeerStats(peer, clock.now()), roundTripMs: 0 })),
    close: () => Promise.resolve(),
  };
}

/** Runs `options.commands` commands through a fresh cluster and measures throughput. */
export function runLoad(options: LoadOptions): LoadResult {
  const n = options.replicas;
  const clock = new ManualClock();
  const random = new SeededRandom(1);
  const queue: Message<KvCommand>[] = [];
  let queueHead = 0;
  let messages = 0;
  const drivers = Array.from({ length: n }, (_, id) =>
    ReplicaDriver.fromLoaded({
      id,
      replicas: n,
      storage: syncStorage(),
      transport: queueTransport(id, n, queue, clock),
      clock,
      random,
      tickMs: 1,
      timing: { frontierTicks: 5, scanTicks: 50, forgetTicks: 1000 },
      maxBatchCommands: options.batch,
      maxPendingCommands: Number.MAX_SAFE_INTEGER,
      requestTimeoutMs: Number.MAX_SAFE_INTEGER,
      markerDelayMs: 0,
    }, { records: [], pruneFloor: undefined, entries: [] }));
  for (const driver of drivers) driver.start();
  let proposedCommands = 0;
  let sequence = 0;
  const value = new Uint8Array(64);
  const perReplicaTarget = Math.ceil(options.commands / n);
  const proposedBy = new Array<number>(n).fill(0);
  const outstanding = new Array<number>(n).fill(0);
  const sampleEvery = options.sampleEvery ?? Number.POSITIVE_INFINITY;
  let nextSample = sampleEvery;
  const fail = (error: Error) => {
    throw error;
  };

  // A window of `window` instances of `batch` commands each, per replica: the
  // commands submitted in one round join one instance (the driver's batching).
  const submit = (id: number) => {
    const driver = drivers[id]!;
    const limit = options.window * options.batch;
    while (outstanding[id]! < limit && proposedBy[id]! < perReplicaTarget) {
      const shared = options.conflict > 0 && (sequence % 1000) < options.conflict * 1000;
      const key = shared ? "hot" : `r${id}k${sequence % options.keysPerReplica}`;
      sequence++;
      outstanding[id]!++;
      proposedBy[id]!++;
      proposedCommands++;
      driver.submitWith({ op: "put", key, value }, {
        resolve: () => outstanding[id]!--,
        reject: fail,
      });
    }
  };

  const executedEverywhere = () =>
    Math.min(...drivers.map((driver) => driver.stats.executedCommands));
  const started = performance.now();
  let rounds = 0;
  while (executedEverywhere() < proposedCommands || proposedCommands < options.commands) {
    for (let id = 0; id < n; id++) submit(id);
    clock.runSoon();
    // Deliver everything queued, as the service does with a batch of peer
    // messages: step them all, then take one Ready per replica. A tick is one
    // round of the network.
    const end = queue.length;
    messages += end - queueHead;
    while (queueHead < end) {
      const message = queue[queueHead++]!;
      drivers[message.to]!.receive({ from: message.from, messages: [message] });
    }
    clock.runSoon();
    // Drop delivered messages, so that they die young instead of being promoted.
    if (queueHead === queue.length) {
      queue.length = 0;
      queueHead = 0;
    } else if (queueHead > 4096) {
      queue.splice(0, queueHead);
      queueHead = 0;
    }
    clock.advance(1);
    const everywhere = executedEverywhere();
    while (options.onProgress !== undefined && everywhere >= nextSample) {
      options.onProgress(nextSample);
      nextSample += sampleEvery;
    }
    if (++rounds > 50_000_000) throw new Error("Load did not finish");
  }
  const ms = performance.now() - started;
  const stats = drivers.map((driver) => driver.stats);
  const fast = stats.reduce((sum, s) => sum + s.fastCommits, 0);
  const slow = stats.reduce((sum, s) => sum + s.slowCommits, 0);
  return {
    commands: executedEverywhere(),
    ms,
    commandsPerSecond: executedEverywhere() / (ms / 1000),
    fastRatio: fast / Math.max(1, fast + slow),
    instancesHeld: drivers[0]!.core.instanceCount,
    messages,
  };
}
