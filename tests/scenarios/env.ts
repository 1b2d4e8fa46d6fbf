/**
 * The scenario interpreter: a small cluster of EPaxos* replicas driven one
 * step at a time by a script, in the manner of etcd raft's
 * `rafttest/interaction_env*.go`. Each replica is the production driver
 * (`ReplicaDriver`) with its edges swapped (./driver_edges.ts): a disk that
 * survives crashes, a manual clock, and one network queue where every message
 * waits until a command delivers or drops it, so a script decides the exact
 * interleaving. The driver handles every Ready at once (or, for a replica
 * whose driver a script made manual, pauses at each storage commit until
 * `process-ready`), and the transcript prints what it did: what each replica
 * persisted, sent and executed. The output is deterministic.
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

import { describeMessage, describePayload, describeRecord } from "../../src/core/describe.ts";
import { describeId, keyNumber, keyOwner } from "../../src/core/instance.ts";
import { quorumSizes } from "../../src/core/quorum.ts";
import {
  DEFAULT_TIMING,
  type Replica,
  type ReplicaStats,
  type TimingOptions,
} from "../../src/core/replica.ts";
import {
  type InstanceRecord,
  isInstanceMessage,
  type Message,
  MESSAGE_TYPES,
  NOP,
} from "../../src/core/types.ts";
import type { KvCommand, KvCommandInput } from "../../src/kv/commands.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import { InvariantChecker } from "../../src/sim/invariants.ts";
import type { PersistBatch } from "../../src/storage/types.ts";
import {
  describeScenarioCommand,
  ScenarioReplica,
  type ScenarioReplicaContext,
} from "./driver_edges.ts";
import { checkAgreement, checkExecutionOrders } from "./safety.ts";

export { describeScenarioCommand } from "./driver_edges.ts";

/**
 * Timing of scenario clusters: the production defaults, except that progress
 * gossip (frontiers, and the pruning it drives) is off unless a script turns it
 * on, so that transcripts show only the protocol under test.
 */
export const SCENARIO_TIMING: TimingOptions = {
  ...DEFAULT_TIMING,
  frontierTicks: 1_000_000_000,
};

/** Seed of the boot ids in request ids (`id.bootId.n`): fixed, so runs repeat. */
const REQUEST_ID_SEED = 1;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

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
  #nodes: ScenarioReplica[] = [];
  #replicas = 0;
  #timing: TimingOptions = SCENARIO_TIMING;
  /** Messages sent and not yet delivered or dropped, in send order. */
  #network: Message<KvCommand>[] = [];
  /** Every message sent since `cluster`, in send order. */
  #sent: Message<KvCommand>[] = [];
  /** Partition groups: replica to group number; undefined when healed. */
  #groups: number[] | undefined;
  #checker: InvariantChecker | undefined;
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
    return [...(this.#node(id).state?.entries() ?? [])]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, entry]) => `${key}=${decoder.decode(entry.value)}`);
  }

  /** Replica `id`'s counters over all its incarnations. */
  stats(id: number): ReplicaStats {
    return this.#node(id).stats();
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
    return node.disk.loadSync().records.find((record) =>
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
    const checker = new InvariantChecker(n);
    this.#checker = checker;
    const context: ScenarioReplicaContext = {
      replicas: n,
      timing: this.#timing,
      random: new SeededRandom(REQUEST_ID_SEED),
      print: (line: string) => this.#print(line),
      send: (message: Message<KvCommand>) => {
        this.#print(`  send ${this.#describeMessage(message)}`);
        this.#network.push(message);
        this.#sent.push(message);
      },
      durable: (id: number, batch: PersistBatch<KvCommand>) => {
        checker.onPersist(id, batch.records, 0);
        for (const key of batch.effects.keys()) {
          checker.onDurableExecution(id, keyOwner(key), keyNumber(key));
        }
      },
    };
    this.#nodes = Array.from({ length: n }, (_, id) => new ScenarioReplica(id, context));
    for (const node of this.#nodes) node.boot();
    this.#print(
      `n=${n} f=${sizes.maxFailures} e=${sizes.fastFailures} fast-quorum=${sizes.fastQuorumSize} ` +
        `slow-quorum=${sizes.slowQuorumSize} preaccept-to=${sizes.preAcceptTargets} ` +
        `accept-to=${sizes.acceptTargets}`,
    );
    for (const node of this.#nodes) {
      this.#print(`${node.id}: peer order ${node.core!.peerOrder.join(",")}`);
    }
    for (const node of this.#nodes) node.settle();
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

  /**
   * Submits the commands through the replica's driver in one turn: it proposes
   * them together as one instance (its batching) and prints the proposal.
   */
  #propose(args: Arguments): void {
    const id = this.#integer(args, "r");
    this.core(id);
    const inputs = args.words.map(parseKvCommand);
    if (inputs.length === 0) throw new ScenarioError("propose needs at least one command");
    const refusal = this.#node(id).submit(inputs);
    if (refusal !== undefined) {
      throw new ScenarioError(`Replica ${id} refused the commands: ${refusal.message}`);
    }
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
    node.receive(message);
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
   * `driver r=0 manual` holds each of replica 0's storage commits until
   * `process-ready`, so a script can crash it between two Readies (after one
   * is sent and executed, before the next is persisted: the window an
   * asynchronous driver has while its storage write is in flight). A Ready
   * with nothing to persist does not wait. `driver r=0 auto` lands them at
   * once again, starting with any held.
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
      if (!node.manual) node.landHeld();
    }
  }

  /** Lands up to `n` (default 1) held commits of a replica whose driver is manual. */
  #processReady(args: Arguments): void {
    const id = this.#integer(args, "r");
    const node = this.#node(id);
    this.core(id);
    const limit = args.named.has("n") ? this.#integer(args, "n") : 1;
    for (let i = 0; i < limit && node.holding; i++) {
      this.#print(`${id} handles a Ready`);
      node.landHeld();
    }
  }

  /**
   * Moves the clocks of the chosen live replicas (all by default) one tick, `n`
   * times; a replica whose driver then did something is announced first.
   */
  #tick(args: Arguments): void {
    const ids = args.named.has("r")
      ? this.#replicaList(args, "r")
      : this.#nodes.map((node) => node.id);
    const times = args.named.has("n") ? this.#integer(args, "n") : 1;
    for (let i = 0; i < times; i++) {
      for (const id of ids) {
        const node = this.#node(id);
        if (node.core === undefined) continue;
        const mark = this.#output.length;
        node.tick();
        if (this.#output.length > mark) {
          this.#output.splice(mark, 0, `${id} at tick ${node.core.now}`);
        }
      }
    }
  }

  /** Stops a replica: it loses its memory and keeps what it persisted. */
  #crash(args: Arguments): void {
    for (const id of this.#replicaList(args, "r")) {
      const node = this.#node(id);
      if (node.core === undefined) throw new ScenarioError(`Replica ${id} is already down`);
      node.crash();
      this.#print(`${id} crashed`);
    }
  }

  /** Starts a replica again from its storage, as a driver does after a crash. */
  #restart(args: Arguments): void {
    for (const id of this.#replicaList(args, "r")) {
      const node = this.#node(id);
      if (node.core !== undefined) throw new ScenarioError(`Replica ${id} is up`);
      const records = node.boot();
      this.#print(`${id} restarts with ${records} records`);
      node.settle();
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
  // Invariants.

  /**
   * Checks Agreement over every live replica's in-memory records, the
   * persisted invariants (`InvariantChecker`), that no replica executed an
   * instance twice, and that conflicting instances executed in the same
   * relative order everywhere. With `report`, prints a summary.
   */
  #check(report: boolean): void {
    const committed = checkAgreement(this.#nodes.map((node) => node.core));
    checkExecutionOrders(this.#nodes.map((node) => node.executed));
    this.#checker!.checkVisibility();
    this.#checker!.checkExecutionOrder();
    if (report) {
      this.#print(
        `agreement: ${committed} committed instances, every copy agrees; ` +
          `execution: conflicting commands in one order on every replica`,
      );
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

  #node(id: number): ScenarioReplica {
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

/** Parses `put(k=v)`, `get(k)` or `del(k)`; the driver assigns the request id. */
function parseKvCommand(word: string): KvCommandInput {
  let match = /^put\(([^=()]+)=([^()]*)\)$/.exec(word);
  if (match !== null) return { op: "put", key: match[1]!, value: encoder.encode(match[2]!) };
  match = /^get\(([^=()]+)\)$/.exec(word);
  if (match !== null) return { op: "get", key: match[1]! };
  match = /^del\(([^=()]+)\)$/.exec(word);
  if (match !== null) return { op: "delete", key: match[1]! };
  throw new ScenarioError(`Cannot parse command "${word}": use put(k=v), get(k) or del(k)`);
}

function matches(message: Message<KvCommand>, filter: MessageFilter): boolean {
  if (filter.from !== undefined && !filter.from.includes(message.from)) return false;
  if (filter.to !== undefined && !filter.to.includes(message.to)) return false;
  if (filter.types !== undefined && !filter.types.includes(message.type)) return false;
  if (filter.instance !== undefined) {
    if (!isInstanceMessage(message)) return false;
    if (message.owner !== filter.instance.owner || message.number !== filter.instance.number) {
      return false;
    }
  }
  return true;
}
