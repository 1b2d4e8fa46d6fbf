/**
 * What a replica knows of everyone's progress: its own durably executed
 * frontier, what each peer reported executing and pruning (frontier gossip),
 * the prune floor that follows from them, and the client commands it holds
 * meanwhile. An instance every replica executed durably can never be needed
 * again (short of a replica losing its disk, which is not supported), so it is
 * pruned. One replica far behind holds pruning back everywhere, up to the
 * retention bound; past it, peers prune past that replica (`retention.ts`),
 * which then installs a snapshot.
 *
 * @module
 */

import { type Deps, depsRaise, emptyDeps } from "./deps.ts";

/** What else {@linkcode ProgressTracker} takes. */
export interface ProgressOptions {
  /**
   * The positions that are members, voters and learners (default every
   * position). A removed member's position is never heard from: it holds
   * back no floor, and is never a peer behind.
   */
  readonly members?: readonly number[] | undefined;
}

/**
 * Frontiers per replica, the prune floor, and the commands held until
 * pruning. Only members count (learners like voters: the voters keep what a
 * learner still needs).
 */
export class ProgressTracker {
  readonly #self: number;
  readonly #replicas: number;
  /** Per position, whether it is a member. */
  readonly #member: boolean[];
  /** Per row, every instance up to this number is executed here, durably. */
  readonly #executed: number[];
  /** Per row, numbers executed durably above the prefix (out of order). */
  readonly #executedAbove: Set<number>[];
  readonly #peerExecuted: number[][];
  readonly #peerPruned: number[][];
  /** Per replica, whether its frontier gossip arrived since this tracker was created. */
  readonly #heard: boolean[];
  /** Per replica, the tick its frontier gossip last arrived (this replica: never read). */
  readonly #heardAtTick: number[];
  /**
   * Per replica, a snapshot sent to it: kept as if it had executed the
   * snapshot's prefix, until it reports that much or the hold expires.
   */
  readonly #holds = new Map<
    number,
    {
      readonly prefix: Deps;
      readonly sinceTick: number;
      readonly untilTick: number;
      readonly silenceTicks: number;
    }
  >();
  readonly #pruneFloor: number[];
  #forgetFloor: number[];
  /** Client commands carried by the instances held (see `Replica.heldCommands`). */
  heldCommands = 0;
  /**
   * Raised by every change of a frontier, a floor or a peer's report, so that
   * what is derived from them can be kept until the next change.
   */
  version = 0;

  /** A tracker for replica `self` of `replicas` positions. */
  constructor(self: number, replicas: number, options: ProgressOptions = {}) {
    this.#self = self;
    this.#replicas = replicas;
    this.#member = new Array<boolean>(replicas).fill(options.members === undefined);
    for (const member of options.members ?? []) this.#member[member] = true;
    this.#executed = emptyDeps(replicas);
    this.#executedAbove = Array.from({ length: replicas }, () => new Set<number>());
    this.#peerExecuted = Array.from({ length: replicas }, () => emptyDeps(replicas));
    this.#peerPruned = Array.from({ length: replicas }, () => emptyDeps(replicas));
    this.#heard = new Array<boolean>(replicas).fill(false);
    this.#heard[self] = true;
    this.#heardAtTick = new Array<number>(replicas).fill(0);
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
    this.version++;
    if (pruneFloor !== undefined) depsRaise(this.#pruneFloor, pruneFloor);
    for (let row = 0; row < this.#replicas; row++) this.#executed[row] = this.#pruneFloor[row]!;
  }

  /** Notes that instance `(owner, number)` is executed here and its marker durable. */
  noteDurablyExecuted(owner: number, number: number): void {
    this.version++;
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

  /** Takes a peer's frontier gossip (a removed member's is ignored). */
  notePeer(peer: number, executed: Deps, pruned: Deps, tick = 0): void {
    if (!this.#member[peer]) return;
    this.version++;
    this.#heard[peer] = true;
    this.#heardAtTick[peer] = tick;
    depsRaise(this.#peerExecuted[peer]!, executed);
    depsRaise(this.#peerPruned[peer]!, pruned);
  }

  /**
   * How far row `row` may be pruned: the lowest durably executed prefix of
   * every member but those in `pastPeers` (left behind: `retention.ts`).
   */
  pruneTarget(row: number, pastPeers: readonly number[] = []): number {
    let floor = this.#executed[row]!;
    for (let replica = 0; replica < this.#replicas; replica++) {
      if (!this.#member[replica]) continue;
      const hold = this.#holds.get(replica);
      if (replica === this.#self || (pastPeers.includes(replica) && hold === undefined)) continue;
      const executed = this.#peerExecuted[replica]![row]!;
      floor = Math.min(
        floor,
        hold === undefined ? executed : Math.max(executed, hold.prefix[row]!),
      );
    }
    return floor;
  }

  /**
   * Keeps what `peer` needs after installing a snapshot with `prefix` (sent
   * to it from here at tick `sinceTick`): until it reports executing that
   * much, until tick `untilTick`, or once it has been silent for
   * `silenceTicks` (it died: holding on would only cost this replica memory,
   * and at the hard limit its writes), this replica prunes no further than
   * `prefix` for it, whatever the retention bound says, so the peer catches
   * up from here instance by instance instead of needing another snapshot.
   */
  holdFor(
    peer: number,
    prefix: Deps,
    ticks: {
      readonly sinceTick: number;
      readonly untilTick: number;
      readonly silenceTicks: number;
    },
  ): void {
    if (peer === this.#self || peer < 0 || peer >= this.#replicas || !this.#member[peer]) return;
    this.#holds.set(peer, { prefix: [...prefix], ...ticks });
  }

  /** Whether `peer` has a hold, after dropping the holds done or expired at `tick`. */
  held(peer: number, tick: number): boolean {
    const hold = this.#holds.get(peer);
    if (hold === undefined) return false;
    const executed = this.#peerExecuted[peer]!;
    const silentFor = tick - Math.max(hold.sinceTick, this.#heardAtTick[peer]!);
    if (
      tick >= hold.untilTick || silentFor > hold.silenceTicks ||
      hold.prefix.every((number, row) => executed[row]! >= number)
    ) {
      this.#holds.delete(peer);
      return false;
    }
    return true;
  }

  /**
   * Per replica, whether it was heard from within `windowTicks` of `tick`
   * (this replica: true; a removed member: never).
   */
  heardLately(tick: number, windowTicks: number): boolean[] {
    return this.#heard.map((heard, replica) =>
      replica === this.#self || (heard && tick - this.#heardAtTick[replica]! <= windowTicks)
    );
  }

  /**
   * Whether this replica pruned past `peer`: its prune floor is above what the
   * peer reported executing in some row, so it can no longer send the peer
   * what it misses (the peer installs a snapshot). Never a removed member.
   */
  prunedPast(peer: number): boolean {
    if (peer === this.#self || !this.#member[peer]) return false;
    const executed = this.#peerExecuted[peer]!;
    for (let row = 0; row < this.#replicas; row++) {
      if (this.#pruneFloor[row]! > executed[row]!) return true;
    }
    return false;
  }

  /** Per replica, the executed prefix it last reported (this replica's own: its own). */
  get peerExecuted(): readonly Deps[] {
    return this.#peerExecuted.map((executed, replica) =>
      replica === this.#self ? this.#executed : executed
    );
  }

  /** Per replica, the prune floor it last reported (this replica's own: its floor). */
  get peerPruned(): readonly Deps[] {
    return this.#peerPruned.map((pruned, replica) =>
      replica === this.#self ? this.#pruneFloor : pruned
    );
  }

  /** Raises row `row`'s prune floor to `number` (its instances up to there are gone). */
  setPruneFloor(row: number, number: number): void {
    this.version++;
    this.#pruneFloor[row] = number;
  }

  /**
   * Starts a new forget period: returns the floor every replica had pruned to
   * one period ago (the conflict index may forget keys below it) and remembers
   * today's for next time. A replica this one pruned past does not hold the
   * floor back: its reported floor is stale (it may be down for good), and it
   * installs a snapshot, with a floor above this one, before it proposes
   * anything that executes.
   */
  rotateForgetFloor(): Deps {
    const globalFloor = [...this.#pruneFloor];
    for (let replica = 0; replica < this.#replicas; replica++) {
      if (replica === this.#self || !this.#member[replica] || this.prunedPast(replica)) continue;
      for (let row = 0; row < this.#replicas; row++) {
        globalFloor[row] = Math.min(globalFloor[row]!, this.#peerPruned[replica]![row]!);
      }
    }
    const previous = this.#forgetFloor;
    this.#forgetFloor = globalFloor;
    return previous;
  }

  /**
   * Whether `peer`'s frontier gossip arrived since this replica started (until
   * then its frontier here reads as zero, which says nothing about it). A
   * removed member is never heard from.
   */
  heard(peer: number): boolean {
    return this.#heard[peer]!;
  }

  /** Whether position `peer` is a member (a voter or a learner). */
  isMember(peer: number): boolean {
    return this.#member[peer] ?? false;
  }

  /**
   * For each replica, how many instances this replica executed durably that
   * the replica has not reported executing (0 for this replica and for a
   * removed member: it is never behind).
   */
  executionLag(): number[] {
    return this.#peerExecuted.map((executed, replica) => {
      if (replica === this.#self || !this.#member[replica]) return 0;
      let lag = 0;
      for (let row = 0; row < this.#replicas; row++) {
        lag += Math.max(0, this.#executed[row]! - executed[row]!);
      }
      return lag;
    });
  }
}
