/**
 * Which commands conflict, and the index that finds a command's conflicts.
 *
 * The core knows nothing of keys or values. The replicated state machine says,
 * for each command, which spans of its key space the command touches and whether
 * it writes them (seed 003's `Span` and `Writing`). Two commands conflict when
 * one of their spans overlap and at least one of the two writes it; reads never
 * conflict with reads.
 *
 * @module
 */

import type { Deps } from "./deps.ts";

/**
 * One span a command touches: the single key `key` when `end` is absent,
 * otherwise every key `k` with `key <= k < end` (UTF-16 code unit order).
 */
export interface Access {
  /** The key, or the first key of the span. */
  readonly key: string;
  /** The end of the span (exclusive); absent for a single key. */
  readonly end?: string;
  /** Whether the command writes the span. */
  readonly write: boolean;
}

/** What the replicated state machine tells the core about its commands. */
export interface ConflictModel<C> {
  /** The spans `command` touches. Must be a pure function of the command. */
  accesses(command: C): readonly Access[];
  /**
   * Whether `command` closes the epoch (a configuration change, which
   * conflicts with every write): once a replica holds an instance carrying
   * one that is not replaced by a Nop, it is fenced (`Replica.fenced`).
   * Absent: no command fences. Must be a pure function of the command.
   */
  fences?(command: C): boolean;
}

function spansOverlap(a: Access, b: Access): boolean {
  if (a.end === undefined && b.end === undefined) return a.key === b.key;
  if (a.end === undefined) return a.key >= b.key && a.key < b.end!;
  if (b.end === undefined) return b.key >= a.key && b.key < a.end;
  return a.key < b.end && b.key < a.end;
}

/** Whether two access lists conflict: some pair overlaps and at least one of the pair writes. */
export function accessesConflict(a: readonly Access[], b: readonly Access[]): boolean {
  for (const x of a) {
    for (const y of b) {
      if ((x.write || y.write) && spansOverlap(x, y)) return true;
    }
  }
  return false;
}

/**
 * Merges the accesses of a batch of commands: one entry per distinct span, a
 * write wherever any member writes. A batch conflicts with whatever any of its
 * members conflicts with (SOSP'13 §5).
 */
export function batchAccesses<C>(
  model: ConflictModel<C>,
  commands: readonly C[],
): readonly Access[] {
  if (commands.length === 1) return model.accesses(commands[0]!);
  const merged = new Map<string, Access>();
  for (const command of commands) {
    for (const access of model.accesses(command)) {
      const id = access.end === undefined ? access.key : `${access.key}\u0000${access.end}`;
      const seen = merged.get(id);
      if (seen === undefined || (!seen.write && access.write)) merged.set(id, access);
    }
  }
  return [...merged.values()];
}

/** Recent keys {@linkcode ConflictIndex.maybeSweepRecent} lets grow above twice the kept ones. */
export const RECENT_SWEEP_SLACK = 1024;

interface KeyEntry {
  /** Per row, the highest instance number that writes this key; then one more than the highest `seq` of those writes. */
  readonly write: number[];
  /** Per row, the highest instance number that touches this key at all; then one more than the highest `seq`. */
  readonly any: number[];
}

/**
 * Answers `ConflictingIds(p, c)` of EPaxos* Figure 3 as a dependency vector: for
 * each row, the highest instance number known here whose command conflicts with
 * `c`. The set it denotes (see `deps.ts`) is a superset of the exact conflicts,
 * which is all the protocol needs.
 *
 * Per key it keeps the latest write and the latest access of each row, so a
 * write depends on the latest write and the reads since, and a read only on the
 * latest write. Spans (range accesses) are indexed coarsely: a range read
 * conflicts with every write, a range write with everything. Coarser is safe;
 * it only adds dependencies.
 *
 * Each vector has one entry more than the rows: one more than the highest
 * `seq` (SOSP'13 §4.1) of the instances it covers, so that collecting also
 * computes the `seq` a command needs to come after every conflict it knows.
 * A `seq` is indexed at the highest value the replica has seen for the
 * instance (pre-accepted, accepted or committed): a higher `seq` is always
 * safe, it only orders a later command later.
 *
 * Memory stays bounded by forgetting keys whose every entry is at or below a
 * floor every replica has pruned past. A key the index does not know answers
 * `absentFloor`, which covers every instance whose key was forgotten and, after
 * a restart, every instance pruned before it; so the answer is always a superset.
 * Its `seq` entry stays 0: a forgotten instance executed everywhere, so its
 * strongly connected component is closed and a new command cannot join it.
 * Coordinators put their own prune floor into D0, so in the common case the
 * absent floor adds nothing a PreAccept did not already carry.
 */
export class ConflictIndex {
  readonly #replicas: number;
  readonly #keys = new Map<string, KeyEntry>();
  /**
   * The point keys of every instance `add`ed since the last `sweepRecent`,
   * and those an earlier sweep kept: a key is left out only once its every
   * instance is at or below the executed frontier given to a sweep. A small,
   * hot map, so that a local read (`collectRecent`) does not look its key up
   * in `#keys`, which holds every key of the last prune window (a cache miss
   * per read, 10-25 % of a replica's CPU under a read load).
   */
  readonly #recent = new Map<string, KeyEntry>();
  /** Keys `#recent` kept at its last sweep. */
  #recentKept = 0;
  readonly #anyWrite: number[];
  readonly #anyAccess: number[];
  readonly #spanWrite: number[];
  readonly #spanAccess: number[];
  readonly #absentFloor: number[];
  /** Whether any span access was ever indexed (most workloads have none). */
  #hasSpans = false;

  /** Creates an empty index for `replicas` rows. */
  constructor(replicas: number) {
    this.#replicas = replicas;
    // Rows, then the `seq` entry.
    this.#anyWrite = new Array<number>(replicas + 1).fill(0);
    this.#anyAccess = new Array<number>(replicas + 1).fill(0);
    this.#spanWrite = new Array<number>(replicas + 1).fill(0);
    this.#spanAccess = new Array<number>(replicas + 1).fill(0);
    this.#absentFloor = new Array<number>(replicas + 1).fill(0);
  }

  /** Number of keys indexed exactly. */
  get size(): number {
    return this.#keys.size;
  }

  /** What a key the index does not know answers: covers everything forgotten or lost. */
  get absentFloor(): Deps {
    return this.#absentFloor;
  }

  /**
   * Raises the answer for unknown keys to cover `floor`. After a restart the
   * per-key history of pruned instances is gone, so the replica raises it to its
   * persisted prune floor.
   */
  raiseAbsentFloor(floor: Deps): void {
    raise(this.#absentFloor, floor);
  }

  /**
   * Adds `into` (an instance's dependencies: rows, then `seq`) the instances
   * that conflict with `accesses` and raises its `seq` above theirs; entries
   * only ever rise.
   */
  collect(accesses: readonly Access[], into: number[]): void {
    this.#collectFrom(this.#keys, this.#absentFloor, accesses, into);
  }

  /**
   * What {@linkcode collect} adds for every row where that exceeds the
   * executed frontier last given to {@linkcode sweepRecent}: exact there,
   * and possibly less elsewhere (a key swept out adds nothing). For a caller
   * that only needs the instances above its executed frontier, which only
   * rises (the lease read check), at the cost of a lookup in a small map.
   */
  collectRecent(accesses: readonly Access[], into: number[]): void {
    this.#collectFrom(this.#recent, undefined, accesses, into);
  }

  /** {@linkcode collect} with point keys looked up in `keys`; one it lacks adds `absent`. */
  #collectFrom(
    keys: Map<string, KeyEntry>,
    absent: Deps | undefined,
    accesses: readonly Access[],
    into: number[],
  ): void {
    for (const access of accesses) {
      if (access.end !== undefined) {
        raise(into, access.write ? this.#anyAccess : this.#anyWrite);
        continue;
      }
      const entry = keys.get(access.key);
      const found = entry === undefined ? absent : access.write ? entry.any : entry.write;
      if (found !== undefined) raise(into, found);
      if (this.#hasSpans) raise(into, access.write ? this.#spanAccess : this.#spanWrite);
    }
  }

  /** Keys {@linkcode collectRecent} looks at (the recent keys not swept out yet). */
  get recentSize(): number {
    return this.#recent.size;
  }

  /**
   * {@linkcode sweepRecent}, once the recent keys have grown past twice those
   * the last sweep kept plus {@linkcode RECENT_SWEEP_SLACK}: a sweep each
   * tick walked every unexecuted key every 5 ms (5 % of a replica's main
   * thread under the mixed load); this way each key added costs O(1) sweep
   * work, and the map stays within about twice the keys still above the
   * frontier. Returns the keys left out.
   */
  maybeSweepRecent(executed: Deps): number {
    if (this.#recent.size < 2 * this.#recentKept + RECENT_SWEEP_SLACK) return 0;
    return this.sweepRecent(executed);
  }

  /**
   * Leaves out of {@linkcode collectRecent} the keys whose every instance is
   * at or below `executed` (per row), the replica's executed frontier, which
   * must never fall below a frontier given before. Returns the keys left out.
   */
  sweepRecent(executed: Deps): number {
    const swept = deleteCovered(this.#recent, executed, this.#replicas);
    this.#recentKept = this.#recent.size;
    return swept;
  }

  /**
   * Records that instance `(owner, number)` with `seq` touches `accesses`.
   * Adding an instance again with a higher `seq` raises it.
   */
  add(owner: number, number: number, accesses: readonly Access[], seq: number): void {
    const seqSlot = this.#replicas;
    const above = seq + 1;
    for (const access of accesses) {
      note(this.#anyAccess, owner, number, seqSlot, above);
      if (access.write) note(this.#anyWrite, owner, number, seqSlot, above);
      if (access.end !== undefined) {
        this.#hasSpans = true;
        note(this.#spanAccess, owner, number, seqSlot, above);
        if (access.write) note(this.#spanWrite, owner, number, seqSlot, above);
        continue;
      }
      let entry = this.#keys.get(access.key);
      if (entry === undefined) {
        entry = { write: [...this.#absentFloor], any: [...this.#absentFloor] };
        this.#keys.set(access.key, entry);
      }
      this.#recent.set(access.key, entry);
      note(entry.any, owner, number, seqSlot, above);
      if (access.write) note(entry.write, owner, number, seqSlot, above);
    }
  }

  /**
   * Forgets keys whose every instance is at or below `globalFloor`, a prune
   * floor every replica had reached some time ago, and raises the absent floor
   * to it. Returns the number of keys forgotten.
   */
  forgetBelow(globalFloor: Deps): number {
    raise(this.#absentFloor, globalFloor);
    return deleteCovered(this.#keys, globalFloor, this.#replicas);
  }
}

/** Deletes from `keys` every key whose instances are all at or below `floor`; returns how many. */
function deleteCovered(keys: Map<string, KeyEntry>, floor: Deps, replicas: number): number {
  let deleted = 0;
  for (const [key, entry] of keys) {
    let covered = true;
    for (let r = 0; r < replicas; r++) {
      if (entry.any[r]! > floor[r]!) {
        covered = false;
        break;
      }
    }
    if (covered) {
      keys.delete(key);
      deleted++;
    }
  }
  return deleted;
}

/** Raises row `owner` to `number` and the `seq` entry to `above`. */
function note(
  vector: number[],
  owner: number,
  number: number,
  seqSlot: number,
  above: number,
): void {
  if (number > vector[owner]!) vector[owner] = number;
  if (above > vector[seqSlot]!) vector[seqSlot] = above;
}

/** Raises `target` to `source` entry by entry; entries `source` lacks count as 0. */
function raise(target: number[], source: readonly number[]): void {
  const length = Math.min(target.length, source.length);
  for (let r = 0; r < length; r++) {
    if (source[r]! > target[r]!) target[r] = source[r]!;
  }
}
