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
import { seqOf } from "./deps.ts";
import { type Instance, instanceKey } from "./instance.ts";
import { NOP, Phase } from "./types.ts";

/** A pending instance that touches a key, and whether it writes it. */
interface KeyEntry<C> {
  readonly instance: Instance<C>;
  readonly write: boolean;
}

/**
 * Pending instances touching one key: per row, sorted by instance number.
 * Executed entries are removed lazily (skipped, then compacted).
 */
interface KeyRows<C> {
  /** Per row; a row is created when its first entry arrives. */
  readonly rows: (KeyEntry<C>[] | undefined)[];
  /** Unexecuted entries in all rows. */
  live: number;
  /** Executed entries not yet compacted away. */
  stale: number;
}

const NOTHING: readonly never[] = Object.freeze([]);

/** Keys whose pending rows are kept while empty, before idle ones are dropped. */
const MAX_IDLE_KEYS = 16384;

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
  readonly #byKey = new Map<string, KeyRows<C>>();
  /** Known, unexecuted instances with a span (range) access. */
  readonly #withSpans = new Set<Instance<C>>();
  /** Number of known, unexecuted instances (those with accesses). */
  #pendingCount = 0;
  /** Instances parked on the key of the instance they wait for. */
  readonly #parked = new Map<number, Instance<C>[]>();
  /** Committed instances to try. */
  #queue: Instance<C>[] = [];
  /** Instances executed since the last drain, in order. */
  #output: Instance<C>[] = [];
  #epoch = 0;
  #visitCounter = 0;
  /** Reused by the fast path of `run`, which needs the edges only to count them. */
  readonly #scratchEdges: Instance<C>[] = [];

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
    return this.#pendingCount;
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
      this.#pendingCount++;
      for (const access of instance.accesses) {
        if (access.end !== undefined) {
          this.#withSpans.add(instance);
          continue;
        }
        let rows = this.#byKey.get(access.key);
        if (rows === undefined) {
          rows = { rows: new Array(this.#replicas), live: 0, stale: 0 };
          this.#byKey.set(access.key, rows);
        }
        insertSorted(rows.rows[instance.owner] ??= [], { instance, write: access.write });
        rows.live++;
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
   * For a read of `accesses` that must come after every instance of the
   * dependency set `bound` (rows only; `quorum_read.ts`): the key of an
   * instance it must wait for, or undefined once every instance of `bound`
   * that conflicts with it is executed here. Like {@linkcode Executor}'s own
   * placement of a command: an instance of the set not known here (its
   * command unknown) may conflict, so the first of a row's unknown ones is
   * returned; a known one that conflicts is waited for until it executed,
   * committed or not (it commits as its command or as a Nop); a committed
   * Nop and a non-conflicting command are no edge. Unlike placement, no
   * write ends a row's walk: a later write of the row may be a Nop, or be
   * executed while an earlier one is not (nothing orders a read's waits).
   */
  readBlocker(accesses: readonly Access[], bound: readonly number[]): number | undefined {
    for (let r = 0; r < this.#replicas; r++) {
      const number = bound[r] ?? 0;
      if (number > this.#executedPrefix[r]! && number > this.#knownPrefix[r]!) {
        return instanceKey(r, this.#knownPrefix[r]! + 1);
      }
    }
    const blocks = (candidate: Instance<C>, write: boolean, access: Access): boolean =>
      !candidate.executed && candidate.number <= (bound[candidate.owner] ?? 0) &&
      (write || access.write) &&
      !(candidate.phase === Phase.Committed && candidate.command === NOP);
    for (const access of accesses) {
      if (access.end !== undefined) {
        // A span read is rare: look at every pending instance, key by key.
        for (const [key, keyRows] of this.#byKey) {
          if (key < access.key || key >= access.end || keyRows.live === 0) continue;
          for (const row of keyRows.rows) {
            for (const entry of row ?? NOTHING) {
              if (blocks(entry.instance, entry.write, access)) return entry.instance.key;
            }
          }
        }
      } else {
        const keyRows = this.#byKey.get(access.key);
        for (let r = 0; keyRows !== undefined && keyRows.live > 0 && r < this.#replicas; r++) {
          const row = keyRows.rows[r];
          if (row === undefined) continue;
          for (let i = lastAtMost(row, bound[r] ?? 0); i >= 0; i--) {
            const entry = row[i]!;
            if (blocks(entry.instance, entry.write, access)) return entry.instance.key;
          }
        }
      }
      for (const candidate of this.#withSpans) {
        if (!spanConflicts(access, candidate.accesses!)) continue;
        if (blocks(candidate, true, access)) return candidate.key;
      }
    }
    return undefined;
  }

  /**
   * Executes everything that can be executed now and returns it in execution
   * order. Work is bounded by the instances queued and those they reach.
   */
  run(): readonly Instance<C>[] {
    if (this.#queue.length === 0 && this.#output.length === 0) return NOTHING;
    while (this.#queue.length > 0) {
      const queue = this.#queue;
      this.#queue = [];
      for (const root of queue) {
        if (root.executed || root.phase !== Phase.Committed || root.blockedOn !== undefined) {
          continue;
        }
        // Fast path: nothing pending conflicts with it, so it is a component
        // of its own with no unexecuted dependency (the usual case without
        // conflicts). Anything else goes through the full search.
        const edges = this.#scratchEdges;
        edges.length = 0;
        const missing = this.#edges(root, edges);
        if (missing === undefined && edges.length === 0) {
          this.#execute(root, true);
        } else if (missing !== undefined) {
          this.#park([root], missing);
        } else {
          this.#search(root);
        }
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
   *
   * Edges are a transitive reduction that keeps reachability, which is all the
   * execution order depends on: in one row, a later command that conflicts with
   * an earlier one on the same key always has it in its dependencies (its
   * coordinator indexed the earlier one before proposing it; slow-path and
   * recovered dependencies are supersets of the coordinator's). So per row and
   * key, an edge to the latest non-Nop write in the set covers every instance
   * below it; a write also needs the reads above that write. In the instance's
   * own row only a write below the instance ends the walk.
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
    for (const access of accesses) {
      if (access.end !== undefined) {
        // A span is rare: scan every pending instance, key by key.
        const blocked = this.#spanEdges(instance, access, mark, edges);
        if (blocked !== undefined) return blocked;
        continue;
      }
      const keyRows = this.#byKey.get(access.key);
      if (keyRows !== undefined) {
        for (let r = 0; r < this.#replicas; r++) {
          const row = keyRows.rows[r];
          if (row === undefined) continue;
          for (let i = lastAtMost(row, deps[r]!); i >= 0; i--) {
            const entry = row[i]!;
            const candidate = entry.instance;
            if (candidate === instance || candidate.executed) continue;
            if (!access.write && !entry.write) continue;
            if (candidate.phase !== Phase.Committed) return candidate.key;
            if (candidate.command === NOP) continue;
            addEdge(candidate, mark, edges);
            // A write covers what lies below it in its row, by induction on the
            // number: its own walk of its row always ends at a lower write. In
            // this instance's own row a later write (our deps may name one)
            // covers nothing for us: its walk would end at us.
            if (entry.write && (r !== instance.owner || candidate.number < instance.number)) break;
          }
        }
      }
      for (const candidate of this.#withSpans) {
        if (candidate === instance || candidate.edgeMark === mark || candidate.executed) continue;
        if (candidate.number > deps[candidate.owner]!) continue;
        if (!spanConflicts(access, candidate.accesses!)) continue;
        if (candidate.phase !== Phase.Committed) return candidate.key;
        if (candidate.command !== NOP) addEdge(candidate, mark, edges);
      }
    }
    return undefined;
  }

  #spanEdges(
    instance: Instance<C>,
    access: Access,
    mark: number,
    edges: Instance<C>[],
  ): number | undefined {
    const deps = instance.deps!;
    const consider = (candidate: Instance<C>): number | undefined => {
      if (candidate === instance || candidate.edgeMark === mark || candidate.executed) {
        return undefined;
      }
      if (candidate.number > deps[candidate.owner]!) return undefined;
      if (!spanConflicts(access, candidate.accesses!)) return undefined;
      if (candidate.phase !== Phase.Committed) return candidate.key;
      if (candidate.command !== NOP) addEdge(candidate, mark, edges);
      return undefined;
    };
    for (const keyRows of this.#byKey.values()) {
      for (const row of keyRows.rows) {
        if (row === undefined) continue;
        for (const entry of row) {
          const blocked = consider(entry.instance);
          if (blocked !== undefined) return blocked;
        }
      }
    }
    for (const candidate of this.#withSpans) {
      const blocked = consider(candidate);
      if (blocked !== undefined) return blocked;
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
        // Inside a component, execute by `seq`, then instance id (SOSP'13
        // §4.3.2). EPaxos* §4 orders by id alone, which is enough when every
        // answer waits for execution; answering blind writes at commit needs
        // `seq`: a command proposed after a commit has a higher one.
        const rows = this.#replicas;
        component.sort((a, b) =>
          seqOf(a.deps!, rows) - seqOf(b.deps!, rows) || a.number - b.number || a.owner - b.owner
        );
        for (let i = 0; i < component.length; i++) {
          this.#execute(component[i]!, i === component.length - 1);
        }
      }
    }
    for (const instance of stack) instance.onStack = false;
    if (missing !== undefined) this.#park(visited, missing);
  }

  #execute(instance: Instance<C>, lastOfComponent: boolean): void {
    instance.executed = true;
    instance.lastOfComponent = lastOfComponent;
    this.#output.push(instance);
    if (instance.accesses !== undefined) this.#pendingCount--;
    this.#withSpans.delete(instance);
    if (instance.accesses !== undefined) {
      for (const access of instance.accesses) {
        if (access.end !== undefined) continue;
        const keyRows = this.#byKey.get(access.key);
        if (keyRows === undefined) continue;
        keyRows.live--;
        keyRows.stale++;
        if (keyRows.live === 0) {
          // Keep the rows of a key that may come back soon; forget keys only
          // when many are idle, so memory stays bounded by the working set.
          for (const row of keyRows.rows) if (row !== undefined) row.length = 0;
          keyRows.stale = 0;
          if (this.#byKey.size > MAX_IDLE_KEYS) this.#byKey.delete(access.key);
        } else if (keyRows.stale > 32 && keyRows.stale > keyRows.live) {
          for (let r = 0; r < keyRows.rows.length; r++) {
            const row = keyRows.rows[r];
            if (row !== undefined) {
              keyRows.rows[r] = row.filter((entry) => !entry.instance.executed);
            }
          }
          keyRows.stale = 0;
        }
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

function addEdge<C>(candidate: Instance<C>, mark: number, edges: Instance<C>[]): void {
  if (candidate.edgeMark === mark) return;
  candidate.edgeMark = mark;
  edges.push(candidate);
}

/** Inserts `entry` keeping `row` sorted by instance number (usually at the end). */
function insertSorted<C>(row: KeyEntry<C>[], entry: KeyEntry<C>): void {
  const last = row[row.length - 1];
  if (last === undefined || last.instance.number <= entry.instance.number) {
    row.push(entry);
    return;
  }
  let index = row.length;
  while (index > 0 && row[index - 1]!.instance.number > entry.instance.number) index--;
  row.splice(index, 0, entry);
}

/** Index of the last entry of `row` whose number is at most `bound`, or -1. */
function lastAtMost<C>(row: readonly KeyEntry<C>[], bound: number): number {
  let low = 0;
  let high = row.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (row[middle]!.instance.number <= bound) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low - 1;
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
