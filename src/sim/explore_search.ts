/**
 * The search behind `explore.ts`: a depth-first walk over the states of three
 * explored replicas and the messages in flight, with each replica's
 * transitions remembered under its input history and a live core per replica
 * replayed from empty when the walk backtracks. See `explore.ts` for what is
 * explored and what is not.
 *
 * @module
 */

import { describeMessage, describePayload } from "../core/describe.ts";
import { instanceKey } from "../core/instance.ts";
import { MESSAGE_TYPES, NOP, Phase } from "../core/types.ts";
import { describeKvCommand } from "../kv/commands.ts";
import type {
  ExploreOptions,
  ExploreProposal,
  ExploreResult,
  ExploreViolation,
} from "./explore.ts";
import { checkExploredState, type ExploredReplicaView } from "./explore_check.ts";
import {
  decodeMessage,
  EXPLORE_REPLICAS,
  ExploredReplica,
  type ReplicaInput,
  type SentMessage,
} from "./explore_replica.ts";

interface Wire {
  readonly to: number;
  readonly type: string;
  readonly bytes: Uint8Array;
  readonly text: string;
}

interface History {
  readonly parent: number;
  readonly replica: number;
  readonly input: ReplicaInput | undefined;
}

/** A replica's transition on one input, remembered under the history it leads to. */
interface Step {
  readonly replica: number;
  readonly child: number;
  readonly sent: readonly number[];
  readonly fired: boolean;
  readonly ticks: number;
  readonly notes: readonly string[];
}

interface Node {
  /** Per replica, its input history. */
  readonly histories: readonly number[];
  /** Ids of the messages in flight, sorted. */
  readonly flight: readonly number[];
  /** Bitmask of the proposals made. */
  readonly proposed: number;
  readonly drops: number;
  readonly ticks: number;
  readonly crashes: number;
  readonly depth: number;
}

interface PathEntry {
  readonly text: string;
  readonly step: Step | undefined;
}

interface Choice {
  readonly text: string;
  /** The state the event leads to and the replica step it took; undefined if it fires nothing. */
  readonly apply: () => { node: Node; step: Step | undefined } | undefined;
}

/** One search over the states within a bound; use once. */
export class Explorer {
  readonly #options: ExploreOptions;
  readonly #proposals: readonly ExploreProposal[];
  readonly #maxStates: number;
  readonly #wires: Wire[] = [];
  readonly #wireIds = new Map<string, number>();
  readonly #histories: History[] = [];
  readonly #historyIds = new Map<string, number>();
  readonly #steps: (Step | undefined)[] = [];
  readonly #views: (ExploredReplicaView | undefined)[] = [];
  /** One live replica per id, at the history it has reached (undefined: must replay). */
  readonly #live: ({ replica: ExploredReplica; history: number } | undefined)[] = [];
  /** Every distinct state seen, by {@linkcode stateKey}. */
  readonly #visited = new KeySet();
  readonly #checked = new KeySet();
  #explored = 0;
  #transitions = 0;
  #maxDepth = 0;
  #quiescent = 0;
  #settled = 0;
  #truncated = false;
  #violation: ExploreViolation | undefined;

  /** A search within `options`' bounds over `proposals`, stopping after `maxStates` distinct states. */
  constructor(options: ExploreOptions, proposals: readonly ExploreProposal[], maxStates: number) {
    this.#options = options;
    this.#proposals = proposals;
    this.#maxStates = maxStates;
    for (let id = 0; id < EXPLORE_REPLICAS; id++) {
      const replica = this.#newReplica(id);
      this.#histories.push({ parent: -1, replica: id, input: undefined });
      this.#steps.push(undefined);
      this.#views.push(replica.view());
      this.#live.push({ replica, history: id });
    }
  }

  /** Walks every path from the initial state; stops at the first violation. */
  run(): ExploreResult {
    const started = performance.now();
    this.#visit(this.#root(), []);
    return {
      explored: this.#explored,
      distinct: this.#visited.size,
      transitions: this.#transitions,
      replicaStates: this.#histories.length,
      maxDepth: this.#maxDepth,
      quiescent: this.#quiescent,
      settled: this.#settled,
      truncated: this.#truncated,
      messageTypes: Object.fromEntries(
        MESSAGE_TYPES.map((type) => [type, this.#wires.filter((w) => w.type === type).length]),
      ),
      elapsedMs: Math.round(performance.now() - started),
      ...(this.#violation === undefined ? {} : { violation: this.#violation }),
    };
  }

  /** Follows the events named by `lines` from the initial state (see `replayExploration`). */
  replay(lines: readonly string[]): { violation?: ExploreViolation; trace: readonly string[] } {
    let node = this.#root();
    const path: PathEntry[] = [];
    for (const [index, raw] of lines.entries()) {
      if (raw.trim() === "state:") break; // the end of a printed trace
      if (
        raw.trim() === "" || raw.startsWith(" ") || raw.startsWith("#") ||
        raw.startsWith("violation:")
      ) {
        continue;
      }
      const line = raw.trim();
      const choice = this.#choices(node).find((candidate) => candidate.text === line);
      if (choice === undefined) {
        throw new Error(`Line ${index + 1}: no such event enabled: ${line}`);
      }
      const next = this.#attempt(choice, path);
      if (next === undefined) {
        if (this.#violation !== undefined) {
          return { violation: this.#violation, trace: this.#violation.trace };
        }
        throw new Error(`Line ${index + 1}: the timeout fires nothing: ${line}`);
      }
      node = next;
      if (!this.#check(node, path)) {
        return { violation: this.#violation!, trace: this.#violation!.trace };
      }
    }
    return { trace: this.#trace(node, path) };
  }

  #root(): Node {
    const { drops, ticks, crashes } = this.#options;
    return { histories: [0, 1, 2], flight: [], proposed: 0, drops, ticks, crashes, depth: 0 };
  }

  /** Checks and expands `node` unless it was seen before; returns false to stop the search. */
  #visit(node: Node, path: PathEntry[]): boolean {
    // The histories and the messages in flight determine the depth and every
    // budget used (each event adds one input to a history, or drops a
    // message), so a state is never reached with another budget left.
    this.#explored++;
    const key = stateKey(node.histories, node.flight);
    if (this.#visited.has(key)) return true;
    if (this.#visited.size >= this.#maxStates) {
      this.#truncated = true;
      return false;
    }
    this.#visited.add(key);
    if (!this.#check(node, path)) return false;
    if (node.flight.length === 0) {
      this.#quiescent++;
      if (this.#isSettled(node)) this.#settled++;
    }
    const left = this.#options.depth - node.depth;
    if (node.depth > this.#maxDepth) this.#maxDepth = node.depth;
    if (left <= 0) return true;
    for (const choice of this.#choices(node)) {
      const next = this.#attempt(choice, path);
      if (next === undefined) {
        if (this.#violation !== undefined) return false;
        continue;
      }
      const going = this.#visit(next, path);
      path.pop();
      if (!going) return false;
    }
    return true;
  }

  /** Applies `choice`, pushing it on `path` if it fired; a throw becomes the violation. */
  #attempt(choice: Choice, path: PathEntry[]): Node | undefined {
    let result;
    try {
      result = choice.apply();
    } catch (error) {
      path.push({ text: choice.text, step: undefined });
      this.#fail(error, path, undefined);
      path.pop();
      return undefined;
    }
    if (result === undefined) return undefined;
    this.#transitions++;
    path.push({ text: choice.text, step: result.step });
    return result.node;
  }

  /** Checks the invariants at `node` (once per combination of replica states). */
  #check(node: Node, path: readonly PathEntry[]): boolean {
    const key = stateKey(node.histories, []);
    if (this.#checked.has(key)) return true;
    this.#checked.add(key);
    try {
      checkExploredState(node.histories.map((history) => this.#views[history]!), {
        barrier: this.#options.barrier !== undefined,
      });
      return true;
    } catch (error) {
      this.#fail(error, path, node);
      return false;
    }
  }

  #fail(error: unknown, path: readonly PathEntry[], node: Node | undefined): void {
    const message = error instanceof Error
      ? (error.name === "InvariantViolation" ? error.message : `${error.name}: ${error.message}`)
      : String(error);
    this.#violation = {
      message,
      path: path.map((entry) => entry.text),
      trace: [`violation: ${message}`, ...this.#trace(node, path)],
    };
  }

  #trace(node: Node | undefined, path: readonly PathEntry[]): string[] {
    const lines: string[] = [];
    for (const entry of path) {
      lines.push(entry.text);
      const step = entry.step;
      if (step === undefined) continue;
      if (step.ticks > 0) lines.push(`  r${step.replica} waited ${step.ticks} ticks`);
      for (const id of step.sent) lines.push(`  send ${this.#wires[id]!.text}`);
      for (const note of step.notes) lines.push(`  ${note}`);
    }
    if (node === undefined) return lines;
    lines.push("state:");
    node.histories.forEach((history, id) => {
      for (const line of this.#replicaAt(id, history).core.describeState()) lines.push(`  ${line}`);
    });
    lines.push(node.flight.length === 0 ? "in flight: none" : "in flight:");
    for (const id of node.flight) lines.push(`  ${this.#wires[id]!.text}`);
    return lines;
  }

  /** Every event enabled at `node`, in a fixed order (so runs repeat). */
  #choices(node: Node): Choice[] {
    const choices: Choice[] = [];
    this.#proposals.forEach((proposal, index) => {
      if ((node.proposed & (1 << index)) !== 0) return;
      // A fenced replica proposes nothing: its driver holds commands until
      // the configuration change executes.
      if (this.#replicaAt(proposal.replica, node.histories[proposal.replica]!).core.fenced) return;
      choices.push({
        text: `propose r${proposal.replica} ${
          describePayload(proposal.commands, describeKvCommand)
        }`,
        apply: () => {
          const step = this.#step(proposal.replica, node.histories[proposal.replica]!, {
            kind: "propose",
            commands: proposal.commands,
          }, `p${index}`);
          return {
            node: this.#after(node, step, -1, { proposed: node.proposed | (1 << index) }),
            step,
          };
        },
      });
    });
    const distinct = node.flight.filter((id, i) => i === 0 || node.flight[i - 1] !== id);
    for (const id of distinct) {
      const wire = this.#wires[id]!;
      choices.push({
        text: `deliver ${wire.text}`,
        apply: () => {
          const step = this.#step(wire.to, node.histories[wire.to]!, {
            kind: "deliver",
            bytes: wire.bytes,
          }, `m${id}`);
          return { node: this.#after(node, step, id, {}), step };
        },
      });
    }
    if (node.ticks > 0) {
      for (let replica = 0; replica < EXPLORE_REPLICAS; replica++) {
        choices.push({
          text: `tick r${replica}`,
          apply: () => {
            const step = this.#step(replica, node.histories[replica]!, { kind: "tick" }, "t");
            if (!step.fired) return undefined;
            return { node: this.#after(node, step, -1, { ticks: node.ticks - 1 }), step };
          },
        });
      }
    }
    if (node.drops > 0) {
      for (const id of distinct) {
        choices.push({
          text: `drop ${this.#wires[id]!.text}`,
          apply: () => ({
            node: {
              ...node,
              flight: removeOne(node.flight, id),
              drops: node.drops - 1,
              depth: node.depth + 1,
            },
            step: undefined,
          }),
        });
      }
    }
    if (node.crashes > 0) {
      for (let replica = 0; replica < EXPLORE_REPLICAS; replica++) {
        choices.push({
          text: `crash-restart r${replica}`,
          apply: () => {
            const step = this.#step(replica, node.histories[replica]!, { kind: "crash" }, "c");
            return { node: this.#after(node, step, -1, { crashes: node.crashes - 1 }), step };
          },
        });
      }
    }
    return choices;
  }

  /** The state after `step`: its replica moved on, `consumed` (a wire id, or -1) left the network. */
  #after(node: Node, step: Step, consumed: number, changes: Partial<Node>): Node {
    const histories = [...node.histories];
    histories[step.replica] = step.child;
    const flight = consumed < 0 ? [...node.flight] : removeOne(node.flight, consumed);
    flight.push(...step.sent);
    flight.sort((a, b) => a - b);
    return { ...node, ...changes, histories, flight, depth: node.depth + 1 };
  }

  /** Replica `replica`'s transition from `history` on `input`: remembered, or computed once. */
  #step(replica: number, history: number, input: ReplicaInput, token: string): Step {
    const key = `${history}/${token}`;
    const known = this.#historyIds.get(key);
    if (known !== undefined) return this.#steps[known]!;
    const live = this.#replicaAt(replica, history);
    let output;
    try {
      output = live.apply(input);
    } catch (error) {
      this.#live[replica] = undefined;
      throw error;
    }
    const child = this.#histories.length;
    this.#histories.push({ parent: history, replica, input });
    this.#historyIds.set(key, child);
    const step: Step = {
      replica,
      child,
      sent: output.sent.map((sent) => this.#wire(sent)),
      fired: output.fired,
      ticks: output.ticks,
      notes: output.notes,
    };
    this.#steps.push(step);
    if (output.fired) {
      this.#views.push(live.view());
      this.#live[replica] = { replica: live, history: child };
    } else {
      // The clock moved and nothing fired: this core is no longer at `history`.
      this.#views.push(undefined);
      this.#live[replica] = undefined;
    }
    return step;
  }

  /** A live core of `replica` at `history`: the one kept, or one replayed from empty. */
  #replicaAt(replica: number, history: number): ExploredReplica {
    const live = this.#live[replica];
    if (live !== undefined && live.history === history) return live.replica;
    const chain: number[] = [];
    for (let at = history; this.#histories[at]!.parent >= 0; at = this.#histories[at]!.parent) {
      chain.push(at);
    }
    chain.reverse();
    const fresh = this.#newReplica(replica);
    this.#live[replica] = undefined;
    for (const at of chain) {
      const output = fresh.apply(this.#histories[at]!.input!);
      const expected = this.#steps[at]!.sent;
      const sent = output.sent.map((message) => this.#wire(message));
      if (sent.length !== expected.length || sent.some((id, i) => id !== expected[i])) {
        throw new Error(`Replica ${replica} is not deterministic: a replay sent other messages`);
      }
    }
    this.#live[replica] = { replica: fresh, history };
    return fresh;
  }

  #newReplica(id: number): ExploredReplica {
    return new ExploredReplica({
      id,
      replicas: EXPLORE_REPLICAS,
      ...(this.#options.unsafeQuorumSizes === undefined
        ? {}
        : { unsafeQuorumSizes: this.#options.unsafeQuorumSizes }),
      barrierFences: this.#options.barrier === "fenced",
    });
  }

  /** The id of the message encoded as `bytes`, interned. */
  #wire(sent: SentMessage): number {
    const key = String.fromCharCode(...sent.bytes);
    let id = this.#wireIds.get(key);
    if (id === undefined) {
      id = this.#wires.length;
      const message = decodeMessage(sent.bytes, sent.to, EXPLORE_REPLICAS);
      this.#wires.push({
        to: message.to,
        type: message.type,
        bytes: sent.bytes,
        text: describeMessage(message, describeKvCommand),
      });
      this.#wireIds.set(key, id);
    }
    return id;
  }

  /** Whether every replica applied every proposed command. */
  #isSettled(node: Node): boolean {
    const wanted = this.#proposals.flatMap((proposal) => proposal.commands.map((c) => c.request));
    return node.histories.every((history) => {
      const view = this.#views[history]!;
      const records = new Map(view.memory.map((r) => [instanceKey(r.owner, r.number), r]));
      const applied = new Set<string>();
      for (const key of view.applied) {
        const record = records.get(key);
        if (record?.phase !== Phase.Committed || record.command === NOP) continue;
        for (const command of record.command!) applied.add(command.request);
      }
      return wanted.every((request) => applied.has(request));
    });
  }
}

/**
 * A 64-bit hash of a state (replica histories, then the sorted ids of the
 * messages in flight) as a 4-character string: two lanes of MurmurHash3's
 * 32-bit mix with different constants. Among `n` states the chance that two
 * share a key (and one is wrongly skipped) is about n² / 2^65: one in four
 * million at three million states, one in ten thousand at twenty million.
 */
function stateKey(histories: readonly number[], flight: readonly number[]): string {
  let a = 0x9747b28c;
  let b = 0x2f6a7c35;
  const mix = (value: number) => {
    let k = Math.imul(value, 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    a ^= k;
    a = (Math.imul((a << 13) | (a >>> 19), 5) + 0xe6546b64) | 0;
    let j = Math.imul(value ^ 0x5bd1e995, 0x85ebca6b);
    j = Math.imul((j << 16) | (j >>> 16), 0xc2b2ae35);
    b ^= j;
    b = (Math.imul((b << 17) | (b >>> 15), 9) + 0x7feb352d) | 0;
  };
  for (const history of histories) mix(history);
  mix(-1);
  for (const id of flight) mix(id);
  mix(flight.length);
  a = finalMix(a);
  b = finalMix(b);
  return String.fromCharCode(a & 0xffff, a >>> 16, b & 0xffff, b >>> 16);
}

function finalMix(hash: number): number {
  let h = hash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * A set of {@linkcode stateKey} strings in 64 shards: one JavaScript `Set`
 * holds at most 2^24 entries, fewer than a large search visits.
 */
class KeySet {
  readonly #shards = Array.from({ length: 64 }, () => new Set<string>());
  #size = 0;

  get size(): number {
    return this.#size;
  }

  has(key: string): boolean {
    return this.#shards[key.charCodeAt(0) & 63]!.has(key);
  }

  add(key: string): void {
    const shard = this.#shards[key.charCodeAt(0) & 63]!;
    if (shard.has(key)) return;
    shard.add(key);
    this.#size++;
  }
}

function removeOne(flight: readonly number[], id: number): number[] {
  const index = flight.indexOf(id);
  return index < 0 ? [...flight] : [...flight.slice(0, index), ...flight.slice(index + 1)];
}
