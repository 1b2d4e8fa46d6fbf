/**
 * The scenario interpreter: a small cluster of EPaxos* replicas driven one
 * step at a time by a script, in the manner of etcd raft's
 * `rafttest/interaction_env*.go`. Every message waits in one network queue
 * until a command delivers or drops it, so a script decides the exact
 * interleaving; every Ready is handled at once (or, for a replica whose driver
 * a script made manual, by `process-ready`), in the driver's order (persist,
 * then send, then execute, then advance), and printed. The output is
 * deterministic: a transcript of what each replica persisted, sent and
 * executed.
 *
 * Safety is checked after every command, whatever the transcript says, so a
 * regenerated golden file cannot bless a divergence: Agreement (every copy of
 * a committed instance has the same command and dependencies, in memory and as
 * persisted), Visibility, and that conflicting commands execute in the same
 * order on every replica. The simulator's `InvariantChecker` does the
 * persisted part; this module checks the in-memory part.
 *
 * See `README.md` in this folder for the command reference.
 *
 * @module
 */

import { type Access, accessesConflict, batchAccesses } from "../../src/core/conflict.ts";
import { depsEqual } from "../../src/core/deps.ts";
import {
  describeExecution,
  describeMessage,
  describePayload,
  describeRecord,
  describeStorageRecord,
} from "../../src/core/describe.ts";
import { describeId, instanceKey, keyNumber, keyOwner } from "../../src/core/instance.ts";
import { quorumSizes } from "../../src/core/quorum.ts";
import {
  DEFAULT_TIMING,
  Replica,
  type ReplicaStats,
  type TimingOptions,
} from "../../src/core/replica.ts";
import {
  type Execution,
  type InstanceRecord,
  type Message,
  MESSAGE_TYPES,
  NOP,
  type Payload,
  Phase,
  type Ready,
} from "../../src/core/types.ts";
import { type KvCommand, kvConflicts } from "../../src/kv/commands.ts";
import { type KvMutation, KvStateMachine } from "../../src/kv/state_machine.ts";
import { InvariantChecker, InvariantViolation } from "../../src/sim/invariants.ts";
import { MemoryStorage } from "../../src/storage/memory.ts";

/**
 * Timing of scenario clusters: the production defaults, except that progress
 * gossip (frontiers, and the pruning it drives) is off unless a script turns it
 * on, so that transcripts show only the protocol under test.
 */
export const SCENARIO_TIMING: TimingOptions = {
  ...DEFAULT_TIMING,
  frontierTicks: 1_000_000_000,
};

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Renders a KV command with its value as text: `put(x=1)`, `get(x)`, `del(x)`. */
export function describeScenarioCommand(command: KvCommand): string {
  switch (command.op) {
    case "put":
      return `put(${command.key}=${decoder.decode(command.value)})`;
    case "get":
      return `get(${command.key})`;
    case "delete":
      return `del(${command.key})`;
    case "list":
      return `list(${command.prefix}*)`;
  }
}

/** A replica's driver: its core (absent while crashed), disk and state machine. */
interface Node {
  readonly id: number;
  core: Replica<KvCommand> | undefined;
  /** Survives a crash: what the replica persisted. */
  readonly storage: MemoryStorage<KvCommand>;
  kv: KvStateMachine;
  /** Effects of the last Ready's executions, persisted with the next Ready's records. */
  pendingEffects: Map<number, readonly KvMutation[]>;
  /** Executions whose effects go into the next persist. */
  pendingLog: { owner: number; number: number }[];
  /** Every instance this replica executed, in order, across restarts. */
  readonly executed: { owner: number; number: number; command: Payload<KvCommand> }[];
  /** Accumulated stats of earlier incarnations (a restart starts a fresh core). */
  readonly pastStats: ReplicaStats[];
  /** Whether Readies wait for `process-ready` instead of being handled at once. */
  manual: boolean;
}

/** A failure of a script command (bad arguments), as opposed to a broken invariant. */
export class ScenarioError extends Error {
  /** Creates an error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = "ScenarioError";
  }
}

/** Arguments of one command line: `key=value` pairs and bare words, in order. */
interface Arguments {
  readonly named: Map<string, string>;
  readonly words: string[];
}

function parseArguments(tokens: readonly string[]): Arguments {
  const named = new Map<string, string>();
  const words: string[] = [];
  for (const token of tokens) {
    const match = /^([a-zA-Z][\w-]*)=(.*)$/.exec(token);
    if (match !== null) {
      named.set(match[1]!, match[2]!);
    } else {
      words.push(token);
    }
  }
  return { named, words };
}

/** Filter of the `deliver` and `drop` commands. */
interface MessageFilter {
  readonly from?: readonly number[];
  readonly to?: readonly number[];
  readonly types?: readonly string[];
  readonly instance?: { owner: number; number: number };
  readonly count?: number;
}

/**
 * A cluster of replicas under a script's control. Create it, then call
 * {@linkcode ScenarioEnv.run} with each command line; it returns the lines of
 * output.
 */
export class ScenarioEnv {
  #nodes: Node[] = [];
  #replicas = 0;
  #timing: TimingOptions = SCENARIO_TIMING;
  /** Messages sent and not yet delivered or dropped, in send order. */
  #network: Message<KvCommand>[] = [];
  /** Every message sent since `cluster`, in send order. */
  #sent: Message<KvCommand>[] = [];
  /** Partition groups: replica to group number; undefined when healed. */
  #groups: number[] | undefined;
  #checker: InvariantChecker | undefined;
  #requests = 0;
  #output: string[] = [];

  /** Number of replicas (0 before `cluster`). */
  get replicas(): number {
    return this.#replicas;
  }

  /** The live core of replica `id`. */
  core(id: number): Replica<KvCommand> {
    const core = this.#node(id).core;
    if (core === undefined) throw new ScenarioError(`Replica ${id} is down`);
    return core;
  }

  /** Whether replica `id` is running. */
  isUp(id: number): boolean {
    return this.#node(id).core !== undefined;
  }

  /** Replica `id`'s execution order so far, as instance ids (`owner.number`). */
  executedIds(id: number): string[] {
    return this.#node(id).executed.map((entry) => describeId(entry.owner, entry.number));
  }

  /** Replica `id`'s key-value state, as `key=value` strings in key order. */
  kvState(id: number): string[] {
    return [...this.#node(id).kv.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, entry]) => `${key}=${decoder.decode(entry.value)}`);
  }

  /** Replica `id`'s counters over all its incarnations. */
  stats(id: number): ReplicaStats {
    const node = this.#node(id);
    const all = [...node.pastStats];
    if (node.core !== undefined) all.push(node.core.stats);
    return sumStats(all);
  }

  /** The messages in flight, in send order. */
  get inFlight(): readonly Message<KvCommand>[] {
    return this.#network;
  }

  /** Every message sent since the cluster started, in send order. */
  get sent(): readonly Message<KvCommand>[] {
    return this.#sent;
  }

  /**
   * Replica `id`'s record of instance `owner.number`: from memory while it
   * runs, from its storage while it is down.
   */
  record(id: number, owner: number, number: number): InstanceRecord<KvCommand> | undefined {
    const node = this.#node(id);
    if (node.core !== undefined) return node.core.instance(owner, number);
    return node.storage.loadSync().records.find((record) =>
      record.owner === owner && record.number === number
    );
  }

  /**
   * Runs one command line and returns its output lines. Checks the safety
   * invariants afterwards.
   *
   * @throws {ScenarioError} on a malformed command.
   * @throws {InvariantViolation} if a safety invariant broke.
   */
  run(line: string): string[] {
    this.#output = [];
    const [name, ...tokens] = line.trim().split(/\s+/);
    const args = parseArguments(tokens);
    if (name !== "cluster" && this.#replicas === 0) {
      throw new ScenarioError("No cluster yet: start with `cluster n=...`");
    }
    switch (name) {
      case "cluster":
        this.#cluster(args);
        break;
      case "peer-order":
        this.#peerOrder(args);
        break;
      case "propose":
        this.#propose(args);
        break;
      case "deliver":
        this.#deliver(this.#filter(args), args.words.includes("drop"));
        break;
      case "deliver-msgs":
        this.#deliver({ to: this.#replicaList(args, "r") }, args.words.includes("drop"));
        break;
      case "drop":
        this.#deliver(this.#filter(args), true);
        break;
      case "stabilize":
        this.#stabilize(args);
        break;
      case "driver":
        this.#driver(args);
        break;
      case "process-ready":
        this.#processReady(args);
        break;
      case "tick":
        this.#tick(args);
        break;
      case "crash":
        this.#crash(args);
        break;
      case "restart":
        this.#restart(args);
        break;
      case "partition":
        this.#partition(tokens);
        break;
      case "heal":
        this.#groups = undefined;
        this.#print("ok");
        break;
      case "network":
        this.#showNetwork();
        break;
      case "state":
        this.#state(args);
        break;
      case "executed":
        this.#showExecuted(args);
        break;
      case "kv":
        this.#showKv(args);
        break;
      case "stats":
        this.#showStats(args);
        break;
      case "check":
        this.#check(true);
        break;
      default:
        throw new ScenarioError(`Unknown command "${name}"`);
    }
    if (this.#replicas > 0) this.#check(false);
    if (this.#output.length === 0) this.#print("ok");
    return this.#output;
  }

  // ---------------------------------------------------------------------------
  // Commands.

  #cluster(args: Arguments): void {
    const n = this.#integer(args, "n");
    const sizes = quorumSizes(n);
    const timing: Record<string, number> = { ...SCENARIO_TIMING };
    for (const [key, value] of args.named) {
      if (key === "n") continue;
      if (!(key in DEFAULT_TIMING)) throw new ScenarioError(`Unknown timing option "${key}"`);
      const ticks = Number(value);
      if (!Number.isInteger(ticks) || ticks <= 0) {
        throw new ScenarioError(`Timing option ${key} needs a positive whole number of ticks`);
      }
      timing[key] = ticks;
    }
    this.#timing = timing as unknown as TimingOptions;
    this.#replicas = n;
    this.#network = [];
    this.#sent = [];
    this.#groups = undefined;
    this.#checker = new InvariantChecker(n);
    this.#nodes = Array.from({ length: n }, (_, id) => {
      const storage = new MemoryStorage<KvCommand>();
      return {
        id,
        core: this.#newCore(id, storage),
        storage,
        kv: new KvStateMachine(),
        pendingEffects: new Map(),
        pendingLog: [],
        executed: [],
        pastStats: [],
        manual: false,
      };
    });
    this.#print(
      `n=${n} f=${sizes.maxFailures} e=${sizes.fastFailures} fast-quorum=${sizes.fastQuorumSize} ` +
        `slow-quorum=${sizes.slowQuorumSize} preaccept-to=${sizes.preAcceptTargets} ` +
        `accept-to=${sizes.acceptTargets}`,
    );
    for (const node of this.#nodes) {
      this.#print(`${node.id}: peer order ${node.core!.peerOrder.join(",")}`);
    }
  }

  #peerOrder(args: Arguments): void {
    const id = this.#integer(args, "r");
    const order = (args.named.get("order") ?? args.words[0] ?? "").split(",").filter((s) =>
      s !== ""
    )
      .map(Number);
    const core = this.core(id);
    core.setPeerOrder(order);
    this.#print(`${id}: peer order ${core.peerOrder.join(",")}`);
  }

  #propose(args: Arguments): void {
    const id = this.#integer(args, "r");
    const core = this.core(id);
    const commands = args.words.map((word) => this.#parseKvCommand(word));
    if (commands.length === 0) throw new ScenarioError("propose needs at least one command");
    const instance = core.propose(commands);
    this.#print(
      `${id} proposes ${describeId(instance.owner, instance.number)} ${
        describePayload(commands, describeScenarioCommand)
      }`,
    );
    this.#handleReadies(this.#node(id));
  }

  #parseKvCommand(word: string): KvCommand {
    const request = `req${++this.#requests}`;
    let match = /^put\(([^=()]+)=([^()]*)\)$/.exec(word);
    if (match !== null) {
      return { op: "put", request, key: match[1]!, value: encoder.encode(match[2]!) };
    }
    match = /^get\(([^=()]+)\)$/.exec(word);
    if (match !== null) return { op: "get", request, key: match[1]! };
    match = /^del\(([^=()]+)\)$/.exec(word);
    if (match !== null) return { op: "delete", request, key: match[1]! };
    throw new ScenarioError(`Cannot parse command "${word}": use put(k=v), get(k) or del(k)`);
  }

  #filter(args: Arguments): MessageFilter {
    const filter: {
      from?: number[];
      to?: number[];
      types?: string[];
      instance?: { owner: number; number: number };
      count?: number;
    } = {};
    if (args.named.has("from")) filter.from = this.#replicaList(args, "from");
    if (args.named.has("to")) filter.to = this.#replicaList(args, "to");
    const type = args.named.get("type");
    if (type !== undefined) {
      filter.types = type.split(",");
      for (const name of filter.types) {
        if (!(MESSAGE_TYPES as readonly string[]).includes(name)) {
          throw new ScenarioError(`Unknown message type "${name}"`);
        }
      }
    }
    const id = args.named.get("id");
    if (id !== undefined) filter.instance = parseId(id);
    if (args.named.has("n")) filter.count = this.#integer(args, "n");
    for (const word of args.words) {
      if (word !== "drop") throw new ScenarioError(`Unexpected argument "${word}"`);
    }
    return filter;
  }

  /**
   * Delivers (or drops) the messages in flight that match `filter`, in send
   * order. Messages sent in reaction wait in the network for a later command.
   */
  #deliver(filter: MessageFilter, drop: boolean): void {
    const chosen: Message<KvCommand>[] = [];
    const rest: Message<KvCommand>[] = [];
    for (const message of this.#network) {
      if (
        matches(message, filter) && (filter.count === undefined || chosen.length < filter.count)
      ) {
        chosen.push(message);
      } else {
        rest.push(message);
      }
    }
    if (chosen.length === 0) throw new ScenarioError("No message in flight matches");
    this.#network = rest;
    for (const message of chosen) {
      if (drop) {
        this.#print(`drop ${this.#describeMessage(message)}`);
      } else {
        this.#deliverOne(message);
      }
    }
  }

  #deliverOne(message: Message<KvCommand>): void {
    const node = this.#node(message.to);
    if (node.core === undefined) {
      this.#print(`drop ${this.#describeMessage(message)} (${message.to} is down)`);
      return;
    }
    if (this.#groups !== undefined && this.#groups[message.from] !== this.#groups[message.to]) {
      this.#print(`drop ${this.#describeMessage(message)} (partitioned)`);
      return;
    }
    this.#print(`${message.to} receives ${this.#describeMessage(message)}`);
    node.core.step(message);
    this.#handleReadies(node);
  }

  /** Delivers everything in flight, and what that sends, until the network is empty. */
  #stabilize(args: Arguments): void {
    const limit = args.named.has("max") ? this.#integer(args, "max") : 10_000;
    let delivered = 0;
    while (this.#network.length > 0) {
      if (delivered++ >= limit) throw new ScenarioError(`Not stable after ${limit} messages`);
      this.#deliverOne(this.#network.shift()!);
    }
  }

  /**
   * `driver r=0 manual` leaves replica 0's Readies to `process-ready`, so a
   * script can crash it between two Readies (after one is sent and executed,
   * before the next is persisted: the window an asynchronous driver has while
   * its storage write is in flight). `driver r=0 auto` handles them at once
   * again, starting with any pending.
   */
  #driver(args: Arguments): void {
    const mode = args.words[0];
    if (mode !== "manual" && mode !== "auto") {
      throw new ScenarioError("Expected driver r=<replica> manual|auto");
    }
    for (const id of this.#replicaList(args, "r")) {
      const node = this.#node(id);
      node.manual = mode === "manual";
      this.#print(`${id}: driver ${mode}`);
      if (!node.manual && node.core !== undefined) this.#handleReadies(node);
    }
  }

  /** Handles up to `n` (default 1) Readies of a replica whose driver is manual. */
  #processReady(args: Arguments): void {
    const id = this.#integer(args, "r");
    const node = this.#node(id);
    const core = this.core(id);
    const limit = args.named.has("n") ? this.#integer(args, "n") : 1;
    for (let i = 0; i < limit && core.hasReady(); i++) {
      this.#print(`${id} handles a Ready`);
      this.#handleReady(node);
    }
  }

  /** Ticks the chosen live replicas (all by default) `n` times, handling each Ready. */
  #tick(args: Arguments): void {
    const ids = args.named.has("r")
      ? this.#replicaList(args, "r")
      : this.#nodes.map((node) => node.id);
    const times = args.named.has("n") ? this.#integer(args, "n") : 1;
    for (let i = 0; i < times; i++) {
      for (const id of ids) {
        const node = this.#node(id);
        if (node.core === undefined) continue;
        node.core.tick();
        if (!node.manual && node.core.hasReady()) {
          this.#print(`${id} at tick ${node.core.now}`);
          this.#handleReadies(node);
        }
      }
    }
  }

  /** Stops a replica: it loses its memory and keeps what it persisted. */
  #crash(args: Arguments): void {
    for (const id of this.#replicaList(args, "r")) {
      const node = this.#node(id);
      if (node.core === undefined) throw new ScenarioError(`Replica ${id} is already down`);
      node.pastStats.push(structuredClone(node.core.stats));
      node.core = undefined;
      node.manual = false;
      // Executions whose effects were not yet persisted (they go with the
      // next Ready) are lost with the process: the restarted replica executes
      // those instances again, so they leave the execution log too.
      const lost = new Set(node.pendingLog.map((entry) => instanceKey(entry.owner, entry.number)));
      for (let i = node.executed.length - 1; i >= 0 && lost.size > 0; i--) {
        const entry = node.executed[i]!;
        if (lost.delete(instanceKey(entry.owner, entry.number))) node.executed.splice(i, 1);
      }
      node.pendingEffects = new Map();
      node.pendingLog = [];
      this.#print(`${id} crashed`);
    }
  }

  /** Starts a replica again from its storage, as a driver does after a crash. */
  #restart(args: Arguments): void {
    for (const id of this.#replicaList(args, "r")) {
      const node = this.#node(id);
      if (node.core !== undefined) throw new ScenarioError(`Replica ${id} is up`);
      const loaded = node.storage.loadSync();
      node.kv = new KvStateMachine(loaded.entries);
      node.core = this.#newCore(id, node.storage);
      this.#print(`${id} restarts with ${loaded.records.length} records`);
      this.#handleReadies(node);
    }
  }

  /** `partition 0,1 | 2,3,4`: messages between groups are dropped on delivery. */
  #partition(tokens: readonly string[]): void {
    const groups = tokens.join(" ").split("|").map((group) =>
      group.split(/[\s,]+/).filter((s) => s !== "").map(Number)
    );
    const assignment = new Array<number>(this.#replicas).fill(-1);
    groups.forEach((members, index) => {
      for (const id of members) {
        this.#node(id);
        if (assignment[id] !== -1) throw new ScenarioError(`Replica ${id} is in two groups`);
        assignment[id] = index;
      }
    });
    // Replicas not named are each alone.
    let next = groups.length;
    for (let id = 0; id < this.#replicas; id++) if (assignment[id] === -1) assignment[id] = next++;
    this.#groups = assignment;
    this.#print(groups.map((members) => members.join(",")).join(" | "));
  }

  #showNetwork(): void {
    if (this.#network.length === 0) this.#print("(empty)");
    for (const message of this.#network) this.#print(this.#describeMessage(message));
  }

  /** `state r=1` prints `describeState()`; `state id=0.1` prints every replica's record of it. */
  #state(args: Arguments): void {
    const id = args.named.get("id");
    const ids = args.named.has("r")
      ? this.#replicaList(args, "r")
      : this.#nodes.map((node) => node.id);
    if (id === undefined) {
      for (const replica of ids) {
        const core = this.#node(replica).core;
        if (core === undefined) {
          this.#print(`replica ${replica} down`);
        } else {
          for (const line of core.describeState()) this.#print(line);
        }
      }
      return;
    }
    const { owner, number } = parseId(id);
    for (const replica of ids) {
      const core = this.#node(replica).core;
      const record = core?.instance(owner, number);
      this.#print(
        `${replica}: ${
          core === undefined
            ? "down"
            : record === undefined
            ? "-"
            : describeRecord(record, describeScenarioCommand)
        }`,
      );
    }
  }

  #showExecuted(args: Arguments): void {
    const ids = args.named.has("r")
      ? this.#replicaList(args, "r")
      : this.#nodes.map((node) => node.id);
    for (const id of ids) {
      const node = this.#node(id);
      const order = node.executed.map((entry) =>
        `${describeId(entry.owner, entry.number)}${
          entry.command === NOP
            ? ":nop"
            : `:${describePayload(entry.command, describeScenarioCommand)}`
        }`
      );
      this.#print(`${id}: ${order.length === 0 ? "-" : order.join(" ")}`);
    }
  }

  #showKv(args: Arguments): void {
    const ids = args.named.has("r")
      ? this.#replicaList(args, "r")
      : this.#nodes.map((node) => node.id);
    for (const id of ids) {
      const state = this.kvState(id);
      this.#print(`${id}: ${state.length === 0 ? "-" : state.join(" ")}`);
    }
  }

  #showStats(args: Arguments): void {
    const ids = args.named.has("r")
      ? this.#replicaList(args, "r")
      : this.#nodes.map((node) => node.id);
    for (const id of ids) {
      const stats = this.stats(id);
      const parts: string[] = [];
      for (const [key, value] of Object.entries(stats)) {
        if (typeof value === "number" && value !== 0) parts.push(`${key}=${value}`);
      }
      const outcomes = Object.entries(stats.recoveryOutcomes)
        .filter(([, value]) => value !== 0)
        .map(([key, value]) => `${key}=${value}`);
      if (outcomes.length > 0) parts.push(`recoveryOutcomes{${outcomes.join(" ")}}`);
      this.#print(`${id}: ${parts.length === 0 ? "-" : parts.join(" ")}`);
    }
  }

  // ---------------------------------------------------------------------------
  // The driver.

  #newCore(id: number, storage: MemoryStorage<KvCommand>): Replica<KvCommand> {
    const loaded = storage.loadSync();
    return new Replica<KvCommand>(
      { id, replicas: this.#replicas, conflicts: kvConflicts, timing: this.#timing },
      { records: loaded.records, pruneFloor: loaded.pruneFloor },
    );
  }

  /** The driver loop, unless the replica's driver is manual: every Ready until none is left. */
  #handleReadies(node: Node): void {
    if (node.manual) return;
    while (node.core!.hasReady()) this.#handleReady(node);
  }

  /** One Ready: persist, then send, then execute, then advance. */
  #handleReady(node: Node): void {
    const core = node.core!;
    const ready = core.ready();
    this.#persist(node, ready);
    for (const message of ready.messages) {
      this.#print(`  send ${this.#describeMessage(message)}`);
      this.#network.push(message);
      this.#sent.push(message);
    }
    this.#execute(node, ready.executions);
    for (const abandoned of ready.abandoned) {
      this.#print(`  abandon ${abandoned.commands.length}cmd: ${abandoned.reason}`);
    }
    core.advance();
  }

  #persist(node: Node, ready: Ready<KvCommand>): void {
    for (const record of ready.records) {
      this.#print(`  ${describeStorageRecord(record, describeScenarioCommand)}`);
    }
    node.storage.commitSync({ records: ready.records, effects: node.pendingEffects });
    node.pendingEffects = new Map();
    this.#checker!.onPersist(node.id, ready.records, 0);
    for (const executed of node.pendingLog) {
      this.#checker!.onDurableExecution(node.id, executed.owner, executed.number);
    }
    node.pendingLog = [];
  }

  #execute(node: Node, executions: readonly Execution<KvCommand>[]): void {
    for (const execution of executions) {
      this.#print(`  ${describeExecution(execution, describeScenarioCommand)}`);
      const applied = node.kv.apply(execution, execution.local);
      node.pendingEffects.set(instanceKey(execution.owner, execution.number), applied.mutations);
      node.pendingLog.push({ owner: execution.owner, number: execution.number });
      node.executed.push({
        owner: execution.owner,
        number: execution.number,
        command: execution.command,
      });
    }
  }

  // ---------------------------------------------------------------------------
  // Invariants.

  /**
   * Checks Agreement over every live replica's in-memory records, the
   * persisted invariants (`InvariantChecker`), that no replica executed an
   * instance twice, and that conflicting instances executed in the same
   * relative order everywhere. With `report`, prints a summary.
   */
  #check(report: boolean): void {
    const committed = new Map<number, { record: InstanceRecord<KvCommand>; replica: number }>();
    for (const node of this.#nodes) {
      if (node.core === undefined) continue;
      for (const record of node.core.instances()) {
        if (record.phase !== Phase.Committed) continue;
        const key = instanceKey(record.owner, record.number);
        const seen = committed.get(key);
        if (seen === undefined) {
          committed.set(key, { record, replica: node.id });
        } else if (
          !samePayload(seen.record.command!, record.command!) ||
          !depsEqual(seen.record.deps!, record.deps!)
        ) {
          throw new InvariantViolation(
            "Agreement",
            `replica ${seen.replica} has ${
              describeRecord(seen.record, describeScenarioCommand)
            } but replica ${node.id} has ${describeRecord(record, describeScenarioCommand)}`,
          );
        }
      }
    }
    this.#checkExecutionOrders();
    this.#checker!.checkVisibility();
    this.#checker!.checkExecutionOrder();
    if (report) {
      this.#print(
        `agreement: ${committed.size} committed instances, every copy agrees; ` +
          `execution: conflicting commands in one order on every replica`,
      );
    }
  }

  /** The in-memory execution check: once each, and pairwise the same order for conflicts. */
  #checkExecutionOrders(): void {
    const positions = this.#nodes.map((node) => {
      const position = new Map<number, number>();
      node.executed.forEach((entry, index) => {
        const key = instanceKey(entry.owner, entry.number);
        if (position.has(key)) {
          throw new InvariantViolation(
            "executed at most once",
            `replica ${node.id} executed ${describeId(entry.owner, entry.number)} twice`,
          );
        }
        position.set(key, index);
      });
      return position;
    });
    const accesses = new Map<number, readonly Access[]>();
    for (const node of this.#nodes) {
      for (const entry of node.executed) {
        if (entry.command === NOP) continue;
        accesses.set(
          instanceKey(entry.owner, entry.number),
          batchAccesses(kvConflicts, entry.command),
        );
      }
    }
    const keys = [...accesses.keys()];
    for (let i = 0; i < keys.length; i++) {
      for (let j = i + 1; j < keys.length; j++) {
        const a = keys[i]!;
        const b = keys[j]!;
        if (!accessesConflict(accesses.get(a)!, accesses.get(b)!)) continue;
        let order: { replica: number; aFirst: boolean } | undefined;
        for (let replica = 0; replica < this.#nodes.length; replica++) {
          const pa = positions[replica]!.get(a);
          const pb = positions[replica]!.get(b);
          if (pa === undefined || pb === undefined) continue;
          const aFirst = pa < pb;
          if (order === undefined) {
            order = { replica, aFirst };
          } else if (order.aFirst !== aFirst) {
            throw new InvariantViolation(
              "conflicting commands execute in the same order",
              `replicas ${order.replica} and ${replica} execute ${describeKey(a)} and ${
                describeKey(b)
              } in different orders`,
            );
          }
        }
      }
    }
  }

  // ---------------------------------------------------------------------------
  // Helpers.

  #describeMessage(message: Message<KvCommand>): string {
    return describeMessage(message, describeScenarioCommand);
  }

  #print(line: string): void {
    this.#output.push(line);
  }

  #node(id: number): Node {
    const node = this.#nodes[id];
    if (node === undefined) {
      throw new ScenarioError(
        this.#replicas === 0 ? "No cluster yet: start with `cluster n=...`" : `No replica ${id}`,
      );
    }
    return node;
  }

  #integer(args: Arguments, key: string): number {
    const text = args.named.get(key);
    const value = Number(text);
    if (text === undefined || !Number.isInteger(value) || value < 0) {
      throw new ScenarioError(`Expected ${key}=<non-negative integer>`);
    }
    return value;
  }

  #replicaList(args: Arguments, key: string): number[] {
    const text = args.named.get(key);
    if (text === undefined) throw new ScenarioError(`Expected ${key}=<replica>[,<replica>...]`);
    const ids = text.split(",").map(Number);
    for (const id of ids) this.#node(id);
    return ids;
  }
}

function parseId(text: string): { owner: number; number: number } {
  const match = /^(\d+)\.(\d+)$/.exec(text);
  if (match === null) {
    throw new ScenarioError(`Expected an instance id owner.number, got "${text}"`);
  }
  return { owner: Number(match[1]), number: Number(match[2]) };
}

function describeKey(key: number): string {
  return describeId(keyOwner(key), keyNumber(key));
}

function matches(message: Message<KvCommand>, filter: MessageFilter): boolean {
  if (filter.from !== undefined && !filter.from.includes(message.from)) return false;
  if (filter.to !== undefined && !filter.to.includes(message.to)) return false;
  if (filter.types !== undefined && !filter.types.includes(message.type)) return false;
  if (filter.instance !== undefined) {
    if (message.type === "frontier") return false;
    if (message.owner !== filter.instance.owner || message.number !== filter.instance.number) {
      return false;
    }
  }
  return true;
}

function samePayload(a: Payload<KvCommand>, b: Payload<KvCommand>): boolean {
  if (a === b) return true;
  if (a === NOP || b === NOP || a.length !== b.length) return false;
  return a.every((command, index) => command.request === b[index]!.request);
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
