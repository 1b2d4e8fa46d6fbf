/**
 * The non-blocking executor (EPaxos* §4, "Execution protocol"; SOSP'13 §4.3.2).
 *
 * Committed instances form a graph whose edges point from an instance to the
 * instances in its dependency set whose commands conflict with its own.
 * Strongly connected components are executed in reverse topological order
 * (dependencies first, as Tarjan's algorithm emits them), and inside a
 * component by instance id. Every replica builds the same graph from the same
 * committed values (Agreement), so conflicting commands run in the same order
 * everywhere.
 *
 * Because a dependency set is downward closed (see `deps.ts`), an instance can
 * only be placed once every instance of its set is known here, so that the
 * executor can tell which of them conflict. "Known" means this replica has seen
 * the instance's original command, or the instance has committed: an instance
 * whose original command is known and does not conflict is no edge even before
 * it commits, because its final value is that command or a Nop, and a Nop
 * executes as nothing. An instance seen only as an accepted Nop is not known:
 * a recovery at a higher ballot may still choose its original command.
 *
 * The executor never waits in a loop. A search that meets an instance that is
 * unknown or not yet committed parks every instance it visited on that missing
 * one; they are retried when it arrives or commits (the fix for efficient/epaxos
 * issue #26, where the executor spun on uncommitted dependencies). The replica
 * asks the executor what it is waiting for and recovers those instances.
 *
 * @module
 */

import type { Access } from "./conflict.ts";
import { type Instance, instanceKey } from "./instance.ts";
import { NOP, Phase } from "./types.ts";

/** Pending instances that touch one key, with whether each writes it. */
type KeyWaiters<C> = Map<Instance<C>, boolean>;

/** Executes committed instances in dependency order without ever blocking. */
export class Executor<C> {
  readonly #replicas: number;
  readonly #lookup: (key: number) => Instance<C> | undefined;
  /** Per row: every instance up to here is known here (its command is). */
  readonly #knownPrefix: number[];
  /** Per row: every instance up to here is executed here (in memory). */
  readonly #executedPrefix: number[];
  /** Per row: executed instance numbers above the prefix. */
  readonly #executedAbove: Set<number>[];
  /** Known, unexecuted instances by key they touch. */
  readonly #byKey = new Map<string, KeyWaiters<C>>();
  /** Known, unexecuted instances with a span (range) access. */
  readonly #withSpans = new Set<Instance<C>>();
  /** Known, unexecuted instances. */
  readonly #pending = new Set<Instance<C>>();
  /** Instances parked on the key of the instance they wait for. */
  readonly #parked = new Map<number, Instance<C>[]>();
  /** Committed instances to try. */
  #queue: Instance<C>[] = [];
  /** Instances executed since the last drain, in order. */
  #output: Instance<C>[] = [];
  #epoch = 0;
  #visitCounter = 0;

  /**
   * Creates an executor over `replicas` rows; `lookup` finds an instance by its
   * key in the replica's table.
   */
  constructor(replicas: number, lookup: (key: number) => Instance<C> | undefined) {
    this.#replicas = replicas;
    this.#lookup = lookup;
    this.#knownPrefix = new Array<number>(replicas).fill(0);
    this.#executedPrefix = new Array<number>(replicas).fill(0);
    this.#executedAbove = Array.from({ length: replicas }, () => new Set<number>());
  }

  /** Per row, the highest number up to which every instance is known here. */
  get knownPrefix(): readonly number[] {
    return this.#knownPrefix;
  }

  /** Per row, the highest number up to which every instance is executed here. */
  get executedPrefix(): readonly number[] {
    return this.#executedPrefix;
  }

  /** Number of known instances not yet executed. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Keys of the instances something is parked on (unknown or uncommitted). */
  waitedOn(): IterableIterator<number> {
    return this.#parked.keys();
  }

  /** Whether instance `(owner, number)` has been executed here. */
  isExecuted(owner: number, number: number): boolean {
    return number <= this.#executedPrefix[owner]! || this.#executedAbove[owner]!.has(number);
  }

  /**
   * Marks every instance of row `owner` up to `number` as known and executed:
   * they were executed before a restart and pruned.
   */
  markPrunedPrefix(owner: number, number: number): void {
    if (number > this.#executedPrefix[owner]!) {
      this.#executedPrefix[owner] = number;
      for (const above of this.#executedAbove[owner]!) {
        if (above <= number) this.#executedAbove[owner]!.delete(above);
      }
      this.#advanceExecutedPrefix(owner);
    }
    if (number > this.#knownPrefix[owner]!) {
      this.#knownPrefix[owner] = number;
      this.#advanceKnownPrefix(owner);
    }
  }

  /**
   * Tells the executor that `instance`'s original command is now known here
   * (`accesses` was just set). Call once per instance.
   */
  noteKnown(instance: Instance<C>): void {
    if (!instance.executed && instance.accesses !== undefined) {
      this.#pending.add(instance);
      for (const access of instance.accesses) {
        if (access.end !== undefined) {
          this.#withSpans.add(instance);
          continue;
        }
        let waiters = this.#byKey.get(access.key);
        if (waiters === undefined) {
          waiters = new Map();
          this.#byKey.set(access.key, waiters);
        }
        waiters.set(instance, (waiters.get(instance) ?? false) || access.write);
      }
    }
    if (instance.number === this.#knownPrefix[instance.owner]! + 1) {
      this.#advanceKnownPrefix(instance.owner);
    }
    this.#wake(instance.key);
  }

  /** Tells the executor that `instance` committed here. */
  noteCommitted(instance: Instance<C>): void {
    if (instance.number === this.#knownPrefix[instance.owner]! + 1) {
      this.#advanceKnownPrefix(instance.owner);
    }
    this.#queue.push(instance);
    this.#wake(instance.key);
  }

  /** Records an instance that was executed (durably) before a restart. */
  restoreExecuted(instance: Instance<C>): void {
    this.#recordExecuted(instance);
    if (instance.number === this.#knownPrefix[instance.owner]! + 1) {
      this.#advanceKnownPrefix(instance.owner);
    }
  }

  /**
   * Executes everything that can be executed now and returns it in execution
   * order. Work is bounded by the instances queued and those they reach.
   */
  run(): Instance<C>[] {
    while (this.#queue.length > 0) {
      const queue = this.#queue;
      this.#queue = [];
      for (const root of queue) {
        if (root.executed || root.phase !== Phase.Committed || root.blockedOn !== undefined) {
          continue;
        }
        this.#search(root);
      }
    }
    const output = this.#output;
    this.#output = [];
    return output;
  }

  #advanceKnownPrefix(owner: number): void {
    let next = this.#knownPrefix[owner]! + 1;
    for (;;) {
      const instance = this.#lookup(instanceKey(owner, next));
      if (instance === undefined) break;
      if (instance.accesses === undefined && instance.phase !== Phase.Committed) break;
      next++;
    }
    this.#knownPrefix[owner] = next - 1;
  }

  #advanceExecutedPrefix(owner: number): void {
    const above = this.#executedAbove[owner]!;
    let prefix = this.#executedPrefix[owner]!;
    while (above.delete(prefix + 1)) prefix++;
    this.#executedPrefix[owner] = prefix;
  }

  #wake(key: number): void {
    const parked = this.#parked.get(key);
    if (parked === undefined) return;
    this.#parked.delete(key);
    for (const instance of parked) {
      instance.blockedOn = undefined;
      this.#queue.push(instance);
    }
  }

  #park(instances: Iterable<Instance<C>>, missing: number): void {
    let parked = this.#parked.get(missing);
    if (parked === undefined) {
      parked = [];
      this.#parked.set(missing, parked);
    }
    for (const instance of instances) {
      if (instance.executed || instance.blockedOn !== undefined) continue;
      instance.blockedOn = missing;
      parked.push(instance);
    }
    if (parked.length === 0) this.#parked.delete(missing);
  }

  /**
   * Computes the outgoing edges of `instance` into `edges`, or returns the key
   * of an instance that must arrive or commit first.
   */
  #edges(instance: Instance<C>, edges: Instance<C>[]): number | undefined {
    if (instance.blockedOn !== undefined) return instance.blockedOn;
    const deps = instance.deps!;
    const accesses = instance.accesses;
    if (instance.command === NOP || accesses === undefined) return undefined;
    for (let r = 0; r < this.#replicas; r++) {
      const bound = deps[r]!;
      if (bound > this.#executedPrefix[r]! && bound > this.#knownPrefix[r]!) {
        return instanceKey(r, this.#knownPrefix[r]! + 1);
      }
    }
    const mark = ++this.#epoch;
    instance.edgeMark = mark;
    let blocked: number | undefined;
    const consider = (candidate: Instance<C>): boolean => {
      if (candidate.edgeMark === mark || candidate.executed) return true;
      if (candidate.number > deps[candidate.owner]!) return true;
      candidate.edgeMark = mark;
      if (candidate.phase !== Phase.Committed) {
        blocked = candidate.key;
        return false;
      }
      if (candidate.command !== NOP) edges.push(candidate);
      return true;
    };
    for (const access of accesses) {
      if (access.end !== undefined) {
        for (const candidate of this.#pending) {
          if (candidate.edgeMark === mark) continue;
          if (!spanConflicts(access, candidate.accesses!)) continue;
          if (!consider(candidate)) return blocked;
        }
        continue;
      }
      const waiters = this.#byKey.get(access.key);
      if (waiters !== undefined) {
        for (const [candidate, writes] of waiters) {
          if (!access.write && !writes) continue;
          if (!consider(candidate)) return blocked;
        }
      }
      for (const candidate of this.#withSpans) {
        if (candidate.edgeMark === mark) continue;
        if (!spanConflicts(access, candidate.accesses!)) continue;
        if (!consider(candidate)) return blocked;
      }
    }
    return undefined;
  }

  /** Iterative Tarjan from `root`; executes every component it completes. */
  #search(root: Instance<C>): void {
    const visitEpoch = ++this.#epoch;
    const stack: Instance<C>[] = [];
    const visited: Instance<C>[] = [];
    const frames: { instance: Instance<C>; edges: Instance<C>[]; next: number }[] = [];
    const visit = (instance: Instance<C>): number | undefined => {
      instance.visitEpoch = visitEpoch;
      instance.visitIndex = instance.lowLink = this.#visitCounter++;
      instance.onStack = true;
      stack.push(instance);
      visited.push(instance);
      const edges: Instance<C>[] = [];
      const missing = this.#edges(instance, edges);
      if (missing !== undefined) return missing;
      frames.push({ instance, edges, next: 0 });
      return undefined;
    };
    let missing = visit(root);
    while (missing === undefined && frames.length > 0) {
      const frame = frames[frames.length - 1]!;
      if (frame.next < frame.edges.length) {
        const target = frame.edges[frame.next++]!;
        if (target.executed) continue;
        if (target.visitEpoch !== visitEpoch) {
          missing = visit(target);
        } else if (target.onStack && target.visitIndex < frame.instance.lowLink) {
          frame.instance.lowLink = target.visitIndex;
        }
        continue;
      }
      frames.pop();
      const instance = frame.instance;
      const parent = frames[frames.length - 1];
      if (parent !== undefined && instance.lowLink < parent.instance.lowLink) {
        parent.instance.lowLink = instance.lowLink;
      }
      if (instance.lowLink === instance.visitIndex) {
        const component: Instance<C>[] = [];
        for (;;) {
          const member = stack.pop()!;
          member.onStack = false;
          component.push(member);
          if (member === instance) break;
        }
        // Inside a component, execute by instance id (EPaxos* §4: no `seq`).
        component.sort((a, b) => a.number - b.number || a.owner - b.owner);
        for (const member of component) this.#execute(member);
      }
    }
    for (const instance of stack) instance.onStack = false;
    if (missing !== undefined) this.#park(visited, missing);
  }

  #execute(instance: Instance<C>): void {
    instance.executed = true;
    this.#output.push(instance);
    this.#pending.delete(instance);
    this.#withSpans.delete(instance);
    if (instance.accesses !== undefined) {
      for (const access of instance.accesses) {
        if (access.end !== undefined) continue;
        const waiters = this.#byKey.get(access.key);
        if (waiters === undefined) continue;
        waiters.delete(instance);
        if (waiters.size === 0) this.#byKey.delete(access.key);
      }
    }
    this.#recordExecuted(instance);
  }

  #recordExecuted(instance: Instance<C>): void {
    const owner = instance.owner;
    if (instance.number <= this.#executedPrefix[owner]!) return;
    if (instance.number === this.#executedPrefix[owner]! + 1) {
      this.#executedPrefix[owner] = instance.number;
      this.#advanceExecutedPrefix(owner);
    } else {
      this.#executedAbove[owner]!.add(instance.number);
    }
  }
}

function spanConflicts(access: Access, others: readonly Access[]): boolean {
  for (const other of others) {
    if (!access.write && !other.write) continue;
    if (access.end === undefined && other.end === undefined) {
      if (access.key === other.key) return true;
      continue;
    }
    const aEnd = access.end;
    const bEnd = other.end;
    if (aEnd === undefined) {
      if (access.key >= other.key && access.key < bEnd!) return true;
    } else if (bEnd === undefined) {
      if (other.key >= access.key && other.key < aEnd) return true;
    } else if (access.key < bEnd && other.key < aEnd) {
      return true;
    }
  }
  return false;
}
