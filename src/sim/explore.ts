/**
 * Bounded exhaustive exploration of the pure core for the smallest cluster
 * (issue 15: no TLA+ tools here, so the implementation itself is explored):
 * n = 3 replicas, two or three conflicting commands, every order of the
 * events below up to a depth, with state hashing so a state reached twice is
 * expanded once.
 *
 * What a state is: each replica's core, its store of persisted records and
 * the commands it applied, plus the multiset of messages in flight (each
 * encoded by the real peer codec, `src/transport/codec.ts`, and decoded by it
 * on delivery, as in the simulator). The core is deterministic, so a
 * replica's state is a function of the inputs it was handed: a state is named
 * by each replica's input history (interned to a number) and the sorted ids of
 * the messages in flight, hashed to 64 bits. Two paths that interleave the same
 * per-replica inputs differently meet in one state. (A name from the
 * `describe*` renderers would be smaller but is not exact: they leave out
 * volatile state such as a lead's collected replies, and merging states that
 * behave differently would hide paths.) Replicas are not copied: a replica's
 * transition on an input is computed once and remembered; to compute a new
 * one, the explorer keeps one live core per replica and replays its input
 * history from empty when the search backtracks (checking that the replay
 * sends the same messages: a determinism check for free).
 *
 * The events at each state, each followed by the Readies it makes (records
 * persisted to the replica's in-memory store, messages sent, executions
 * applied, advance; a Ready of executed markers only is held back, as the
 * driver holds it):
 *
 * - propose: one of the fixed commands not yet proposed, at its replica
 *   (`put(x="a")` at r0, `put(x="b")` at r1, and with three commands
 *   `get(x)` at r2), at any point of a path;
 * - deliver any one message in flight (a duplicate appears only when a
 *   replica sends it again);
 * - drop any one message in flight, while the drop budget lasts;
 * - a timeout at one replica, while the tick budget lasts: a held Ready of
 *   markers goes out, or else the replica's clock moves one tick at a time
 *   until it has something to hand out (the smallest jump that fires a timer:
 *   a widened quorum, a retransmission, a commit request, a recovery), at
 *   most {@linkcode MAX_TICK_JUMP} ticks; a timeout that fires nothing is not
 *   an event;
 * - a crash-restart of one replica, while the crash budget lasts: memory is
 *   lost, the core restarts from its store, and what it applied without a
 *   durable executed marker is applied again.
 *
 * Budgets: `depth` events per path; `drops`, `ticks` and `crashes` per path.
 * A state determines the budgets it has left, so it is expanded once.
 * At every new state the invariants of `explore_check.ts` are checked
 * (Agreement, no instance both a Nop and a command, each replica applies at
 * most once and in an order that respects committed dependencies, Visibility,
 * one order of conflicting commands on every replica); each persist is
 * checked as it happens (ballots never decrease, commits never change).
 * Liveness is not checked: budgets cut paths short. A state with nothing in
 * flight counts as quiescent, and as settled if every replica applied every
 * command.
 *
 * Cost: distinct states grow about tenfold per two events of depth, and a
 * crash-restart costs most: the restarted replica recovers the eight numbers
 * of its row it may have used in early PreAccepts at once, sixteen Recover
 * messages whose delivery orders multiply, so a crash budget goes with a short
 * depth (see {@linkcode CI_CRASH_BOUND}). A search stops after `maxStates`
 * distinct states and says so. Memory is about 0.3 KB per distinct state.
 *
 * What it cannot see: timers beyond the tick budget (so a recovery that needs
 * several timeouts, and every retry after one), the relative order of two
 * timers of one replica (the earlier always fires first; `EXPLORE_TIMING`
 * puts recovery before commit requests so one timeout reaches it), ticks that
 * fire nothing observable, a crash in the middle of handling a Ready (a crash
 * after persisting and before sending equals a crash followed by drops, which
 * is explored within the drop budget; a crash after the coordinator's early
 * PreAccepts left and before its record was written is not), restarts from a
 * lost disk, progress gossip and pruning (off), client answers and
 * linearizability (the simulator checks those), more than three replicas or
 * commands, and duplicated messages the core did not send twice.
 *
 * Configuration changes: with {@linkcode ExploreOptions.barrier}, one more
 * proposal is a barrier that fences (the core's `ConflictModel.fences`), and
 * every state is checked for the fence's promise: no write executes after the
 * barrier at any replica (so the barrier's state is its epoch's last). The
 * epoch change itself (the configuration the barrier installs) is not built
 * yet; the barrier changes nothing once executed.
 *
 * @module
 */

import type { QuorumSizes } from "../core/quorum.ts";
import type { KvCommand } from "../kv/commands.ts";
import { Explorer } from "./explore_search.ts";

export { EXPLORE_REPLICAS, EXPLORE_TIMING, MAX_TICK_JUMP } from "./explore_replica.ts";

/** Distinct states after which a search stops, unless `maxStates` says otherwise. */
export const DEFAULT_MAX_STATES = 3_000_000;

/** One proposal of the fixed setup: a batch proposed once, at one replica, at any point of a path. */
export interface ExploreProposal {
  /** The replica it is proposed at. */
  readonly replica: number;
  /** The batch. */
  readonly commands: readonly KvCommand[];
}

/** The bounds of one exploration. */
export interface ExploreOptions {
  /** Most events on a path. */
  readonly depth: number;
  /** Most dropped messages on a path. */
  readonly drops: number;
  /** Most timeouts on a path. */
  readonly ticks: number;
  /** Most crash-restarts on a path (0 or 1 is sensible). */
  readonly crashes: number;
  /** How many of the fixed commands: two conflicting puts, or also a get of their key. */
  readonly commands: 2 | 3;
  /** Stop (and report truncated) after this many distinct states; default {@linkcode DEFAULT_MAX_STATES}. */
  readonly maxStates?: number;
  /** For tests only: quorum sizes every replica uses instead of the correct ones. */
  readonly unsafeQuorumSizes?: Partial<QuorumSizes>;
  /**
   * Adds a configuration-change barrier at r2 (a command that conflicts with
   * every write), `fenced` as the core fences for one (`Replica.fenced`), or,
   * for the negative test, `unfenced` (the fence off). Checked: no write
   * executes after the barrier anywhere, so the state at the barrier is the
   * epoch's last.
   */
  readonly barrier?: "fenced" | "unfenced";
}

/** The bound `tests/sim/explore_test.ts` runs in CI. */
export const CI_EXPLORE_BOUND: ExploreOptions = {
  depth: 14,
  drops: 1,
  ticks: 1,
  crashes: 0,
  commands: 2,
};

/**
 * The crash-restart bound CI runs. A restart recovers the numbers of its row
 * it may have used in early PreAccepts (`MAX_EARLY_PREACCEPTS`, eight) at
 * once: sixteen Recover messages whose delivery orders multiply, so a crash
 * budget goes with a short depth.
 */
export const CI_CRASH_BOUND: ExploreOptions = {
  depth: 6,
  drops: 1,
  ticks: 1,
  crashes: 1,
  commands: 2,
};

/** A broken invariant and the path that reaches it. */
export interface ExploreViolation {
  /** The invariant and what broke it. */
  readonly message: string;
  /** The events from the initial state, one per line, as `replayExploration` takes them. */
  readonly path: readonly string[];
  /** The path with what each event sent and applied, then the replicas' states. */
  readonly trace: readonly string[];
}

/** The figures of one exploration. */
export interface ExploreResult {
  /** States reached, repeats included (a state reached again is not expanded again). */
  readonly explored: number;
  /** Distinct states seen. */
  readonly distinct: number;
  /** Events applied. */
  readonly transitions: number;
  /** Distinct replica states (input histories). */
  readonly replicaStates: number;
  /** The longest path expanded. */
  readonly maxDepth: number;
  /** Distinct states with nothing in flight. */
  readonly quiescent: number;
  /** Of those, states where every replica applied every command. */
  readonly settled: number;
  /** Whether `maxStates` stopped the search. */
  readonly truncated: boolean;
  /** Distinct messages sent, by type: which parts of the protocol the search reached. */
  readonly messageTypes: Readonly<Record<string, number>>;
  /** Wall time. */
  readonly elapsedMs: number;
  /** The first violation found, if any. */
  readonly violation?: ExploreViolation;
}

/** The request id of the barrier proposal ({@linkcode ExploreOptions.barrier}). */
export const BARRIER_REQUEST = "eb";

/**
 * The fixed commands: `put(x="a")` at r0, `put(x="b")` at r1, then `get(x)`
 * at r2; with `barrier`, a barrier at r2 after them (a backup command: it
 * conflicts with every write, as a configuration change does).
 */
export function exploreProposals(count: 2 | 3, barrier = false): ExploreProposal[] {
  const encoder = new TextEncoder();
  const all: ExploreProposal[] = [
    { replica: 0, commands: [{ op: "put", request: "e0", key: "x", value: encoder.encode("a") }] },
    { replica: 1, commands: [{ op: "put", request: "e1", key: "x", value: encoder.encode("b") }] },
    { replica: 2, commands: [{ op: "get", request: "e2", key: "x" }] },
  ];
  const proposals = all.slice(0, count);
  if (barrier) {
    proposals.push({ replica: 2, commands: [{ op: "backup", request: BARRIER_REQUEST }] });
  }
  return proposals;
}

/** Explores every path within `options`' bounds; stops at the first violation. */
export function explore(options: ExploreOptions): ExploreResult {
  checkBounds(options);
  const proposals = exploreProposals(options.commands, options.barrier !== undefined);
  return new Explorer(options, proposals, options.maxStates ?? DEFAULT_MAX_STATES).run();
}

/**
 * Replays a path printed by a violation (`ExploreViolation.path`, or its
 * whole `trace`: blank lines, lines starting with a space or `#` and the
 * `violation:` line are skipped, and a `state:` line ends the path), checking
 * every state on it. Budgets do not apply.
 *
 * @throws {Error} if a line names no event enabled at that point.
 */
export function replayExploration(
  options: Pick<ExploreOptions, "commands" | "unsafeQuorumSizes" | "barrier">,
  lines: readonly string[],
): { readonly violation?: ExploreViolation; readonly trace: readonly string[] } {
  const unbounded = {
    ...options,
    depth: Infinity,
    drops: Infinity,
    ticks: Infinity,
    crashes: Infinity,
  };
  const explorer = new Explorer(
    unbounded,
    exploreProposals(options.commands, options.barrier !== undefined),
    Infinity,
  );
  return explorer.replay(lines);
}

/**
 * Checks `options`' bounds.
 *
 * @throws {RangeError} naming the first bound out of range.
 */
export function checkBounds(options: ExploreOptions): void {
  const ranges = [["depth", 1023], ["drops", 15], ["ticks", 15], ["crashes", 3]] as const;
  for (const [name, max] of ranges) {
    const value = options[name];
    if (!Number.isInteger(value) || value < 0 || value > max) {
      throw new RangeError(`${name} must be an integer from 0 to ${max}, got ${value}`);
    }
  }
  if (options.commands !== 2 && options.commands !== 3) {
    throw new RangeError(`commands must be 2 or 3, got ${options.commands}`);
  }
  const maxStates = options.maxStates ?? DEFAULT_MAX_STATES;
  if (!Number.isInteger(maxStates) || maxStates < 1) {
    throw new RangeError(`maxStates must be a positive integer, got ${maxStates}`);
  }
}
