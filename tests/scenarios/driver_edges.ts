/**
 * One scenario replica: the production driver (`ReplicaDriver`) with only its
 * edges swapped, as in the simulator and `bench:core`:
 *
 * - storage: a `MemoryStorage` disk that survives crashes, committed
 *   synchronously through a `Completion`. While the replica's driver is
 *   manual, each commit is held until `process-ready` lands it: the driver
 *   pauses where it persists, one Ready at a time, which is the window an
 *   asynchronous driver has while its storage write is in flight;
 * - clock: a `ManualClock` per incarnation, one millisecond per core tick; the
 *   environment advances it (`tick`) and runs its `soon` work (the driver's
 *   Ready loop) after every command that gives the replica work;
 * - transport: the environment's network queue, every message round-tripped
 *   through the peer codec at send time, so the receiver never shares an
 *   object with the sender.
 *
 * The transcript lines come from the driver's actions at these edges (persist,
 * send) and from its observer (propose, execute).
 *
 * @module
 */

import {
  describeExecution,
  describePayload,
  describeStorageRecord,
} from "../../src/core/describe.ts";
import { describeId, instanceKey } from "../../src/core/instance.ts";
import type { Replica, ReplicaStats, TimingOptions } from "../../src/core/replica.ts";
import type { Message, Payload } from "../../src/core/types.ts";
import { ReplicaDriver } from "../../src/driver/driver.ts";
import {
  describeKvCommand,
  isKvCommand,
  type KvCommand,
  type KvCommandInput,
} from "../../src/kv/commands.ts";
import type { KvStateMachine } from "../../src/kv/state_machine.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import { Completion } from "../../src/runtime/completion.ts";
import type { Random } from "../../src/runtime/random.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";
import type { PersistBatch, ReplicaStorage } from "../../src/storage/types.ts";
import { decodeBatch, encodeBatch } from "../../src/transport/codec.ts";
import {
  type PeerStats,
  type PeerTransport,
  unmeasuredPeerStats,
} from "../../src/transport/types.ts";

/** Milliseconds of a scenario replica's clock per core tick. */
const TICK_MS = 1;

const decoder = new TextDecoder();

/** Renders a KV command with its value as text: `put(x=1)`, `get(x)`, `del(x)`. */
export function describeScenarioCommand(command: KvCommandInput): string {
  switch (command.op) {
    case "put":
      return `put(${command.key}=${decoder.decode(command.value)})`;
    case "get":
      return `get(${command.key})`;
    case "delete":
      return `del(${command.key})`;
    case "list":
      return `list(${command.prefix}*)`;
    case "backup":
      return "backup(*)";
    case "reconf":
      return `reconf(e${command.configuration.epoch})`;
    default:
      return describeKvCommand({ ...command, request: "" } as KvCommand);
  }
}

/** What a scenario replica needs from the environment around it. */
export interface ScenarioReplicaContext {
  /** Cluster size. */
  readonly replicas: number;
  /** The core's timers, in ticks. */
  readonly timing: TimingOptions;
  /** Draws each incarnation's boot id (in its request ids): seeded, so runs repeat. */
  readonly random: Random;
  /** Adds a line to the transcript. */
  print(line: string): void;
  /** Puts a message (already through the codec) on the network. */
  send(message: Message<KvCommand>): void;
  /** A batch reached replica `id`'s disk (for the safety checks). */
  durable(id: number, batch: PersistBatch<KvCommand>): void;
}

/** An instance a replica executed, in its execution log. */
export interface ExecutedEntry {
  readonly owner: number;
  readonly number: number;
  readonly command: Payload<KvCommand>;
}

/** A storage commit held back while the replica's driver is manual. */
interface HeldCommits {
  held: { batch: PersistBatch<KvCommand>; completion: Completion } | undefined;
}

/** A running incarnation: its driver, the clock it runs on, and its storage edge's held commit. */
interface Incarnation {
  readonly driver: ReplicaDriver;
  readonly clock: ManualClock;
  readonly commits: HeldCommits;
}

/** One replica of a scenario: a disk that survives crashes, and a driver while it runs. */
export class ScenarioReplica {
  /** Replica id. */
  readonly id: number;
  /** What the replica persisted: survives a crash. */
  readonly disk = new MemoryStorage<KvCommand>();
  /** Every instance this replica executed, in order, across restarts. */
  readonly executed: ExecutedEntry[] = [];
  /** Whether storage commits wait for {@linkcode ScenarioReplica.landHeld}. */
  manual = false;
  readonly #context: ScenarioReplicaContext;
  #running: Incarnation | undefined;
  /** The key-value state of the last incarnation (shown while the replica is down). */
  #state: KvStateMachine | undefined;
  /** Executions whose effects have not reached the disk: a crash loses them. */
  #notDurable: ExecutedEntry[] = [];
  /** Counters of earlier incarnations. */
  readonly #pastStats: ReplicaStats[] = [];

  /** Creates a replica with an empty disk; {@linkcode ScenarioReplica.boot} starts it. */
  constructor(id: number, context: ScenarioReplicaContext) {
    this.id = id;
    this.#context = context;
  }

  /** The running driver, if the replica is up. */
  get driver(): ReplicaDriver | undefined {
    return this.#running?.driver;
  }

  /** The running core, if the replica is up. */
  get core(): Replica<KvCommand> | undefined {
    return this.#running?.driver.core;
  }

  /** The key-value state: the running one, or the last one before a crash. */
  get state(): KvStateMachine | undefined {
    return this.#running?.driver.state ?? this.#state;
  }

  /** Whether a storage commit waits for `process-ready`. */
  get holding(): boolean {
    return this.#running?.commits.held !== undefined;
  }

  /**
   * Starts a driver on what the disk holds, as a process does after a crash,
   * and returns how many records it loaded. Its first Ready runs at the next
   * {@linkcode ScenarioReplica.settle}.
   */
  boot(): number {
    const loaded = this.disk.loadSync();
    const clock = new ManualClock();
    const commits: HeldCommits = { held: undefined };
    const driver = ReplicaDriver.fromLoaded({
      id: this.id,
      replicas: this.#context.replicas,
      storage: this.#storage(commits),
      transport: this.#transport(clock),
      clock,
      random: this.#context.random,
      tickMs: TICK_MS,
      timing: this.#context.timing,
      // Each Ready is taken at once, markers too, as the script expects.
      markerDelayMs: 0,
      // Clients wait as long as the script runs; only abandoned commands fail.
      requestTimeoutMs: Number.MAX_SAFE_INTEGER,
      // The transport measures nothing: the script chooses the peer order.
      fixedPeerOrder: true,
      observer: {
        proposed: (number, commands) =>
          this.#context.print(
            `${this.id} proposes ${describeId(this.id, number)} ${
              describePayload(commands, describeScenarioCommand)
            }`,
          ),
        executed: (execution) => {
          this.#context.print(`  ${describeExecution(execution, describeScenarioCommand)}`);
          const entry = {
            owner: execution.owner,
            number: execution.number,
            command: execution.command,
          };
          this.executed.push(entry);
          this.#notDurable.push(entry);
        },
      },
    }, loaded);
    this.#running = { driver, clock, commits };
    this.#state = driver.state;
    driver.start();
    return loaded.records.length;
  }

  /**
   * Ends the process: memory, the clock and a held commit are lost; the disk
   * stays. Executions whose effects were not yet persisted (they go with the
   * next Ready) leave the execution log: the restarted replica runs them again.
   */
  crash(): void {
    const running = this.#running;
    if (running === undefined) return;
    this.#pastStats.push(structuredClone(running.driver.stats));
    this.#running = undefined;
    this.manual = false;
    const lost = new Set(this.#notDurable.map((entry) => instanceKey(entry.owner, entry.number)));
    for (let i = this.executed.length - 1; i >= 0 && lost.size > 0; i--) {
      const entry = this.executed[i]!;
      if (lost.delete(instanceKey(entry.owner, entry.number))) this.executed.splice(i, 1);
    }
    this.#notDurable = [];
  }

  /** Runs the driver's queued work (its Ready loop) until it waits for something. */
  settle(): void {
    this.#running?.clock.runSoon();
  }

  /** Moves the replica's clock one tick: the driver ticks its core and takes any Ready. */
  tick(): void {
    this.#running?.clock.advance(TICK_MS);
  }

  /** Hands the driver a message from the network and runs what follows. */
  receive(message: Message<KvCommand>): void {
    this.#running?.driver.receive({ from: message.from, messages: [message] });
    this.settle();
  }

  /**
   * Submits `inputs` through the driver in one turn, so that they are proposed
   * together as one instance; returns why the driver refused one, if it did.
   */
  submit(inputs: readonly KvCommandInput[]): Error | undefined {
    const driver = this.#running?.driver;
    if (driver === undefined) return new Error(`Replica ${this.id} is down`);
    let refusal: Error | undefined;
    for (const input of inputs) {
      let submitting = true;
      driver.submitWith(input, {
        resolve: () => {},
        reject: (error) => {
          // Synchronously: refused, nothing proposed. Later: abandoned.
          if (submitting) refusal ??= error;
          else this.#context.print(`  abandon ${describeScenarioCommand(input)}: ${error.message}`);
        },
      });
      submitting = false;
    }
    this.settle();
    return refusal;
  }

  /** Lands the held commit, if any, and lets the driver go on; returns whether there was one. */
  landHeld(): boolean {
    const commits = this.#running?.commits;
    const held = commits?.held;
    if (commits === undefined || held === undefined) return false;
    commits.held = undefined;
    this.#land(held.batch);
    held.completion.complete();
    this.settle();
    return true;
  }

  /** Counters summed over every incarnation. */
  stats(): ReplicaStats {
    const all = [...this.#pastStats];
    if (this.#running !== undefined) all.push(this.#running.driver.stats);
    return sumStats(all);
  }

  #storage(commits: HeldCommits): ReplicaStorage<KvCommand> {
    return {
      load: () => Promise.resolve(this.disk.loadSync()),
      commit: (batch) => {
        const completion = new Completion();
        if (this.manual) {
          // The driver takes one Ready at a time: it waits here.
          commits.held = { batch, completion };
        } else {
          this.#land(batch);
          completion.complete();
        }
        return completion;
      },
      install: () => Promise.reject(new Error("not supported by this test double")),
      close: () => {},
    };
  }

  #land(batch: PersistBatch<KvCommand>): void {
    for (const record of batch.records) {
      this.#context.print(`  ${describeStorageRecord(record, describeScenarioCommand)}`);
    }
    this.disk.commitSync(batch);
    this.#context.durable(this.id, batch);
    if (batch.effects.size > 0) {
      this.#notDurable = this.#notDurable.filter((entry) =>
        !batch.effects.has(instanceKey(entry.owner, entry.number))
      );
    }
  }

  #transport(clock: ManualClock): PeerTransport<KvCommand> {
    const { replicas } = this.#context;
    return {
      send: (messages) => {
        for (const message of messages) {
          const bytes = encodeBatch({ from: message.from, messages: [message] });
          const decoded = decodeBatch(bytes, {
            replicas,
            self: message.to,
            isCommand: isKvCommand,
          });
          this.#context.send(decoded.messages[0]!);
        }
      },
      // Every peer counts as reachable, so that the driver proposes whatever
      // the script submits (partitions act on delivery, as for the core).
      stats: () => peerStats(this.id, replicas, clock.now()),
      close: () => Promise.resolve(),
    };
  }
}

function peerStats(self: number, replicas: number, now: number): PeerStats[] {
  const stats: PeerStats[] = [];
  for (let peer = 0; peer < replicas; peer++) {
    if (peer !== self) stats.push(unmeasuredPeerStats(peer, now));
  }
  return stats;
}

function sumStats(all: readonly ReplicaStats[]): ReplicaStats {
  const total = structuredClone(all[0]!) as ReplicaStats;
  for (const stats of all.slice(1)) {
    for (const key of Object.keys(stats) as (keyof ReplicaStats)[]) {
      if (key === "recoveryOutcomes") continue;
      (total[key] as number) += stats[key] as number;
    }
    for (
      const key of Object.keys(stats.recoveryOutcomes) as (keyof ReplicaStats["recoveryOutcomes"])[]
    ) {
      total.recoveryOutcomes[key] += stats.recoveryOutcomes[key];
    }
  }
  return total;
}
