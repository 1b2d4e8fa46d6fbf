/**
 * Linearizable reads without a lease, cheaper than a command: one round trip
 * to a plain majority of voters for the instances the read must follow, a
 * wait until those are applied here, then a read of the local state: Accord's
 * ephemeral reads (Cassandra CEP-15), and the non-fault-tolerant reads of
 * Atlas (Enes, Baquero, Kuznetsov, Sutra, EuroSys'20) that fantoch runs for
 * EPaxos too; the last bullet of the design card `leases.md`. The read is
 * never an instance: nothing is recorded, nothing is executed, no other
 * command ever depends on it. A learner reads this way too (only voters
 * answer, and its own state does not count).
 *
 * The protocol (handlers in `quorum_read_protocol.ts`):
 *
 * 1. The reader sends `readdeps(seq, accesses)` to the closest voters that
 *    make a majority with it (itself included when it votes: thrifty, as
 *    SOSP'13 §4.4 does for PreAccept), and to every other voter if they do
 *    not all answer in time.
 * 2. A voter answers `readdepsok(seq, deps)`: per row, the highest instance
 *    it knows that conflicts with the read (`ConflictIndex.collect`, the
 *    absent floor for keys it forgot included), raised to its prune floor —
 *    what it would put into a PreAcceptOK for the read (EPaxos* Figure 3
 *    line 13, with its own floor as the coordinator's D0), minus the record.
 * 3. The reader unions a majority's answers into `D` and serves the read
 *    once every instance of the set `D` (downward closed: `deps.ts`) that
 *    conflicts with the read is executed and applied here — the condition
 *    under which a command with dependencies `D` could execute here
 *    (`Executor.readBlocker`). Instances of `D` it does not know, or knows
 *    uncommitted, it asks its peers for and, failing that, recovers (the
 *    housekeeping of `housekeeping.ts`: `noteExists`, `want`).
 *
 * Why the read is linearizable. Take a write `W` that completed before the
 * read began. `W` was decided (fast, slow or by a recovery) only after a
 * quorum of voters had recorded it — a PreAccept or Accept quorum, at least
 * a majority for every n (`quorum.ts`) — and each recorded it durably before
 * answering, so indexed it (`ReplicaState.learn`; after a restart,
 * `restore` indexes it again, or raises the absent floor past it if it was
 * pruned). The read's majority intersects that quorum in a voter `v`, which
 * answered after the read began, so after `W` was recorded: `v`'s answer
 * names, for `W`'s row, `W` or a later instance, and `D`, downward closed,
 * contains `W`. `W` conflicts with the read (it writes a key the read
 * reads), so the read waits until `W` is applied here. Per key, the state a
 * replica applied is a prefix of the one execution order all replicas
 * share (the executor's guarantee), so the value read is that of a write at
 * or after `W` in that order, and of a write committed before the read
 * returned. Two reads in real-time order: the value the first returned came
 * from a committed write, recorded by a quorum before it was committed, so
 * before the second read began: the second waits for it too. And a write
 * invoked after a read returned is ordered after every write that read saw
 * (EPaxos* Visibility: it hears of them from its quorum), so the read cannot
 * have seen a later state than it may.
 *
 * The corner cases, each handled by the rule "every conflicting instance
 * of `D`, applied here", not by reasoning about the latest one of a row:
 *
 * - An instance of `D` known here only as pre-accepted or accepted may
 *   commit with other dependencies, or as a Nop. The read waits until it
 *   committed and, if not a Nop, applied. A later write of a row does not
 *   stand for the earlier ones: it may have become a Nop, which orders
 *   nothing (the executor skips Nops for the same reason).
 * - Keys a voter forgot (`ConflictIndex.forgetBelow`), or the history lost
 *   at its restart: its answer is the absent floor, which covers every
 *   instance of those keys; the reader executed them (the floor is one
 *   every replica pruned past) or must catch up on them first.
 * - An epoch change: voters of another epoch take none of the read's
 *   messages (the transport's epoch check), so a majority that answers is
 *   of the reader's epoch `E`. A write of a later epoch (whose voters may
 *   be others) comes after the change that ended `E`, which a quorum of
 *   `E` recorded before it was decided: the change is in `D`, and it
 *   conflicts (it writes every key, `kv/commands.ts`). Applying it ends the
 *   epoch here, which drops the read; the driver proposes it as a command
 *   in the next epoch.
 * - A reply to a read of an earlier incarnation of this replica (a restart,
 *   with messages still in flight) must not count for a read of this one:
 *   it may predate a write that completed before the new read began. Read
 *   numbers start at a base the driver draws for each core
 *   (`ReplicaOptions.quorumReadSeqBase`).
 *
 * Messages per read: `2 · (⌊n/2⌋)` at a voter (3 voters: 2; 5 voters: 4),
 * against a command's `2 · (n - e - 1) + (n - 1)` (3: 4; 5: 8) and its
 * execution here.
 *
 * @module
 */

import type { Access, ConflictIndex } from "./conflict.ts";
import { type Deps, depsRaise, emptyDeps } from "./deps.ts";

/** Reads in flight at one replica (and their outcomes not yet taken); past it a read is refused. */
export const MAX_QUORUM_READS = 4096;

/**
 * For tests only, never in production: breaks the quorum read's rule, so a
 * test can show that the simulator catches it.
 */
export interface UnsafeQuorumReadOptions {
  /** Serve once a majority answered, without waiting for the instances they named to apply. */
  readonly serveWithoutWaiting?: boolean;
}

/** One read in flight at its reader. */
export interface QuorumRead {
  /** Its number, unique to this replica's incarnation. */
  readonly seq: number;
  /** What it reads. */
  readonly accesses: readonly Access[];
  /** Tick at which it started. */
  readonly startTick: number;
  /** Tick at which it gives up (the driver then proposes it as a command). */
  readonly deadlineTick: number;
  /** Tick of the next retransmission while a majority has not answered. */
  retryTick: number;
  /** Retransmissions so far. */
  attempts: number;
  /** Whether the request went to every voter already. */
  widened: boolean;
  /** Voters sent the request (bitmask). */
  contacted: number;
  /** Voters whose answer is in `deps`, this replica included when it votes (bitmask). */
  replied: number;
  /** The union of the answers (rows). */
  readonly deps: number[];
  /** Set once everything named executed: serve once this many executions are applied. */
  mark: number | undefined;
  /** The instance key it waited on last (for status and tests). */
  blocker: number | undefined;
}

/** What became of a read, for the driver. */
export type QuorumReadOutcome =
  | { readonly seq: number; readonly outcome: "serve" }
  | {
    readonly seq: number;
    readonly outcome: "fallback";
    /** Why: no majority answered, or the named instances did not apply, in time. */
    readonly reason: "timeout";
  };

/** Counters for `/status` and `/metrics`. */
export interface QuorumReadStats {
  /** Reads started here. */
  started: number;
  /** Reads that may be served. */
  served: number;
  /** Of those, reads that waited on at least one instance named. */
  waited: number;
  /** Reads that ran out of time. */
  timedOut: number;
  /** Reads refused at once: too many in flight. */
  refused: number;
  /** `readdeps` answered as a voter. */
  answered: number;
  /** Requests sent again (to silent or further voters). */
  retransmissions: number;
}

/**
 * A voter's answer to a read of `accesses` (step 2): per row, the highest
 * instance it knows that conflicts with the read, raised to `pruneFloor`.
 * Rows only; a read needs no `seq`, it is ordered by waiting.
 */
export function readDepsAnswer(
  index: ConflictIndex,
  accesses: readonly Access[],
  pruneFloor: Deps,
  replicas: number,
): number[] {
  // `collect` fills rows then the `seq` entry; the answer keeps the rows.
  const deps = new Array<number>(replicas + 1).fill(0);
  index.collect(accesses, deps);
  deps.length = replicas;
  depsRaise(deps, pruneFloor);
  return deps;
}

/** What the reader sees of its own replica when it decides (`Executor`, `Replica.advance`). */
export interface QuorumReadView {
  /** See `Executor.readBlocker`: an instance the read must wait for, or undefined. */
  readBlocker(accesses: readonly Access[], bound: Deps): number | undefined;
  /** Executions handed to the driver so far. */
  readonly executionsQueued: number;
  /** Of those, executions the driver applied (their Ready advanced). */
  readonly executionsApplied: number;
}

/** What to do with a read (step 3). */
export type QuorumReadDecision =
  /** Fewer than a majority answered. */
  | { readonly kind: "collect"; readonly missing: number }
  /** It must wait for instance `key`: unknown here, uncommitted, or not executed. */
  | { readonly kind: "blocked"; readonly key: number }
  /** Everything named executed; serve once `mark` executions are applied. */
  | { readonly kind: "applying"; readonly mark: number }
  /** Serve it now. */
  | { readonly kind: "serve" };

/**
 * Decides a read (step 3): collect until `needed` voters answered, then wait
 * until every conflicting instance of the union is executed here, then until
 * what was executed by then is applied. Executions are handed out and
 * applied in order, so counting them is enough for the last step.
 */
export function decideQuorumRead(
  read: {
    readonly replies: number;
    readonly needed: number;
    readonly accesses: readonly Access[];
    readonly deps: Deps;
    readonly mark: number | undefined;
  },
  view: QuorumReadView,
  unsafe: UnsafeQuorumReadOptions = {},
): QuorumReadDecision {
  if (read.replies < read.needed) return { kind: "collect", missing: read.needed - read.replies };
  if (unsafe.serveWithoutWaiting === true) return { kind: "serve" };
  let mark = read.mark;
  if (mark === undefined) {
    const key = view.readBlocker(read.accesses, read.deps);
    if (key !== undefined) return { kind: "blocked", key };
    mark = view.executionsQueued;
  }
  return view.executionsApplied >= mark ? { kind: "serve" } : { kind: "applying", mark };
}

/**
 * Whom to ask again when a majority has not answered by `retryTick`: first
 * every voter not asked yet (the thrifty set was too small or too slow),
 * then the silent ones. Returns the bitmask, possibly empty.
 */
export function readRetryTargets(
  read: { readonly widened: boolean; readonly contacted: number; readonly replied: number },
  voterPeers: number,
): number {
  return read.widened ? voterPeers & ~read.replied : voterPeers & ~read.contacted;
}

/** The reads in flight at one replica, bounded, and the outcomes the driver has not taken. */
export class QuorumReadTable {
  readonly #reads = new Map<number, QuorumRead>();
  #outcomes: QuorumReadOutcome[] = [];
  #nextSeq: number;
  /** Counters. */
  readonly stats: QuorumReadStats = {
    started: 0,
    served: 0,
    waited: 0,
    timedOut: 0,
    refused: 0,
    answered: 0,
    retransmissions: 0,
  };

  /** A table whose read numbers start at `seqBase` (at least 1). */
  constructor(seqBase = 1) {
    this.#nextSeq = Math.max(1, Math.floor(seqBase));
  }

  /** Reads in flight. */
  get size(): number {
    return this.#reads.size;
  }

  /** Whether another read would pass the bound (outcomes not taken count). */
  get full(): boolean {
    return this.#reads.size + this.#outcomes.length >= MAX_QUORUM_READS;
  }

  /** Adds a read of `accesses` at `tick`, given up at `tick + timeoutTicks`. */
  add(
    accesses: readonly Access[],
    tick: number,
    timeoutTicks: number,
    replicas: number,
  ): QuorumRead {
    const read: QuorumRead = {
      seq: this.#nextSeq++,
      accesses,
      startTick: tick,
      deadlineTick: tick + Math.max(1, Math.ceil(timeoutTicks)),
      retryTick: tick,
      attempts: 0,
      widened: false,
      contacted: 0,
      replied: 0,
      deps: emptyDeps(replicas),
      mark: undefined,
      blocker: undefined,
    };
    this.#reads.set(read.seq, read);
    this.stats.started++;
    return read;
  }

  /** The read numbered `seq`, if in flight. */
  get(seq: number): QuorumRead | undefined {
    return this.#reads.get(seq);
  }

  /** The reads in flight. */
  values(): IterableIterator<QuorumRead> {
    return this.#reads.values();
  }

  /** Ends read `seq` with `outcome` (for the driver to take). */
  finish(read: QuorumRead, outcome: "serve" | "timeout"): void {
    if (!this.#reads.delete(read.seq)) return;
    if (outcome === "serve") {
      this.stats.served++;
      if (read.blocker !== undefined || read.mark !== undefined) this.stats.waited++;
      this.#outcomes.push({ seq: read.seq, outcome: "serve" });
    } else {
      this.stats.timedOut++;
      this.#outcomes.push({ seq: read.seq, outcome: "fallback", reason: "timeout" });
    }
  }

  /** Forgets read `seq` without an outcome (the driver gave up on it). */
  cancel(seq: number): void {
    this.#reads.delete(seq);
  }

  /** The outcomes since the last call, oldest first. */
  takeOutcomes(): QuorumReadOutcome[] {
    const outcomes = this.#outcomes;
    this.#outcomes = [];
    return outcomes;
  }
}
