/**
 * What a replica knows of everyone's progress: its own durably executed
 * frontier, what each peer reported executing and pruning (frontier gossip),
 * the prune floor that follows from them, and the client commands it holds
 * meanwhile. An instance every replica executed durably can never be needed
 * again (short of a replica losing its disk, which is not supported), so it is
 * pruned; one replica far behind holds pruning back everywhere.
 *
 * @module
 */

import { type Deps, depsRaise, emptyDeps } from "./deps.ts";

/** Frontiers per replica, the prune floor, and the commands held until pruning. */
export class ProgressTracker {
  readonly #self: number;
  readonly #replicas: number;
  /** Per row, every instance up to this number is executed here, durably. */
  readonly #executed: number[];
  /** Per row, numbers executed durably above the prefix (out of order). */
  readonly #executedAbove: Set<number>[];
  readonly #peerExecuted: number[][];
  readonly #peerPruned: number[][];
  readonly #pruneFloor: number[];
  #forgetFloor: number[];
  /** Client commands carried by the instances held (see `Replica.heldCommands`). */
  heldCommands = 0;

  /** A tracker for replica `self` of `replicas`. */
  constructor(self: number, replicas: number) {
    this.#self = self;
    this.#replicas = replicas;
    this.#executed = emptyDeps(replicas);
    this.#executedAbove = Array.from({ length: replicas }, () => new Set<number>());
    this.#peerExecuted = Array.from({ length: replicas }, () => emptyDeps(replicas));
    this.#peerPruned = Array.from({ length: replicas }, () => emptyDeps(replicas));
    this.#pruneFloor = emptyDeps(replicas);
    this.#forgetFloor = emptyDeps(replicas);
  }

  /** Per row, every instance up to this number is executed here (durably). */
  get executed(): Deps {
    return this.#executed;
  }

  /** Per row, every instance up to this number is pruned here. */
  get pruneFloor(): Deps {
    return this.#pruneFloor;
  }

  /** Whether instance `(owner, number)` is at or below the prune floor. */
  isPruned(owner: number, number: number): boolean {
    return number <= this.#pruneFloor[owner]!;
  }

  /** Takes the prune floor persisted before a restart; the executed frontier starts there. */
  restore(pruneFloor: Deps | undefined): void {
    if (pruneFloor !== undefined) depsRaise(this.#pruneFloor, pruneFloor);
    for (let row = 0; row < this.#replicas; row++) this.#executed[row] = this.#pruneFloor[row]!;
  }

  /** Notes that instance `(owner, number)` is executed here and its marker durable. */
  noteDurablyExecuted(owner: number, number: number): void {
    const prefix = this.#executed[owner]!;
    if (number === prefix + 1) {
      let next = number;
      const above = this.#executedAbove[owner]!;
      while (above.delete(next + 1)) next++;
      this.#executed[owner] = next;
    } else if (number > prefix) {
      this.#executedAbove[owner]!.add(number);
    }
  }

  /** Takes a peer's frontier gossip. */
  notePeer(peer: number, executed: Deps, pruned: Deps): void {
    depsRaise(this.#peerExecuted[peer]!, executed);
    depsRaise(this.#peerPruned[peer]!, pruned);
  }

  /** How far row `row` may be pruned: the lowest durably executed prefix of every replica. */
  pruneTarget(row: number): number {
    let floor = this.#executed[row]!;
    for (let replica = 0; replica < this.#replicas; replica++) {
      if (replica !== this.#self) floor = Math.min(floor, this.#peerExecuted[replica]![row]!);
    }
    return floor;
  }

  /** Raises row `row`'s prune floor to `number` (its instances up to there are gone). */
  setPruneFloor(row: number, number: number): void {
    this.#pruneFloor[row] = number;
  }

  /**
   * Starts a new forget period: returns the floor every replica had pruned to
   * one period ago (the conflict index may forget keys below it) and remembers
   * today's for next time.
   */
  rotateForgetFloor(): Deps {
    const globalFloor = [...this.#pruneFloor];
    for (let replica = 0; replica < this.#replicas; replica++) {
      if (replica === this.#self) continue;
      for (let row = 0; row < this.#replicas; row++) {
        globalFloor[row] = Math.min(globalFloor[row]!, this.#peerPruned[replica]![row]!);
      }
    }
    const previous = this.#forgetFloor;
    this.#forgetFloor = globalFloor;
    return previous;
  }

  /**
   * For each replica, how many instances this replica executed durably that
   * the replica has not reported executing (0 for this replica).
   */
  executionLag(): number[] {
    return this.#peerExecuted.map((executed, replica) => {
      if (replica === this.#self) return 0;
      let lag = 0;
      for (let row = 0; row < this.#replicas; row++) {
        lag += Math.max(0, this.#executed[row]! - executed[row]!);
      }
      return lag;
    });
  }
}
