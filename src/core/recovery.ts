/**
 * The decisions of recovery (EPaxos* Figure 5; TLA+ `EPaxosCommitWithRecovery`)
 * as pure functions: each takes the replies a recovery has gathered, as plain
 * data, and returns what to do next. The replica's handlers
 * (`Replica#onRecoverOk`, `#onValidateOk`, `#evaluatePostWaiting`) gather the
 * replies, call these, and carry out the decision; `tests/core/recovery_test.ts`
 * checks each branch row by row.
 *
 * @module
 */

import { type Access, accessesConflict, batchAccesses, type ConflictModel } from "./conflict.ts";
import { type Deps, depsContain, depsEqual } from "./deps.ts";
import { type Instance, instanceKey, keyOwner } from "./instance.ts";
import type { RecoverReply } from "./lead.ts";
import { popCount } from "./lead.ts";
import type { QuorumSizes } from "./quorum.ts";
import { NOP, type Payload, Phase } from "./types.ts";
import type { RecoveryOutcomes } from "./stats.ts";

/** A recovery's value to accept, and the branch of Figure 5 that chose it. */
export interface AcceptDecision<C> {
  /** Accept `command` with `deps` at the recovery's ballot. */
  readonly kind: "accept";
  /** The value: a command found or validated, or {@linkcode NOP}. */
  readonly command: Payload<C>;
  /** Its dependencies (empty for a Nop). */
  readonly deps: Deps | "empty";
  /** Which counter of `RecoveryOutcomes` the decision counts in. */
  readonly outcome: keyof RecoveryOutcomes;
}

/** A committed value found among the replies: commit it, the recovery is over. */
export interface CommitDecision<C> {
  /** Commit `command` with `deps`. */
  readonly kind: "commit";
  /** The committed payload. */
  readonly command: Payload<C>;
  /** Its dependencies. */
  readonly deps: Deps;
}

/** What `HandleRecoverOK` (lines 50-60) does with a quorum of replies. */
export type RecoveryDecision<C> =
  | CommitDecision<C>
  | (AcceptDecision<C> & { readonly quorum: number })
  | {
    /** The command may have committed on the fast path: validate it (`Validate`). */
    readonly kind: "validate";
    /** The command pre-accepted with `dep = initDep`. */
    readonly command: Payload<C>;
    /** Its deps. */
    readonly deps: Deps;
    /** `|Rmax|`: replies that pre-accepted it with `dep = initDep`. */
    readonly rmaxSize: number;
    /** The quorum `Q`, as a bitmask. */
    readonly quorum: number;
  };

/**
 * Decides a recovery from the `RecoverOK` replies gathered (by position, at
 * least `n - f` of them, from voters only: the caller drops any other's) for
 * an instance of row `owner`.
 */
export function decideRecovery<C>(
  replies: readonly (RecoverReply<C> | undefined)[],
  owner: number,
  sizes: QuorumSizes,
): RecoveryDecision<C> {
  let quorum = 0;
  let maxAccepted = -1;
  // Replies are indexed by position, and positions may outnumber the voters
  // (`sizes.replicas`): learners and removed members hold positions too.
  for (let replica = 0; replica < replies.length; replica++) {
    const reply = replies[replica];
    if (reply === undefined) continue;
    quorum |= 1 << replica;
    // Departure: any committed reply decides, not only those in U. A
    // committed value is final, so this can only save a round.
    const committed = committedValue(reply);
    if (committed !== undefined) return committed;
    if (reply.acceptedBallot > maxAccepted) maxAccepted = reply.acceptedBallot;
  }
  // U: the replies with the highest abal. An accepted one carries the only
  // value that may have been chosen at a lower ballot.
  for (let replica = 0; replica < replies.length; replica++) {
    const reply = replies[replica];
    if (reply === undefined || reply.acceptedBallot !== maxAccepted) continue;
    const found = acceptedValue(reply, "foundAccepted");
    if (found !== undefined) return { ...found, quorum };
  }
  // The original coordinator answered, so it can no longer take the fast
  // path (its ballot moved past 0): nothing was decided.
  if ((quorum & (1 << owner)) !== 0) return nop("nopCoordinatorAnswered", quorum);
  let rmaxSize = 0;
  let chosen: RecoverReply<C> | undefined;
  for (let replica = 0; replica < replies.length; replica++) {
    const reply = replies[replica];
    if (reply === undefined || reply.phase !== Phase.PreAccepted) continue;
    if (reply.deps === undefined || reply.initialDeps === undefined) continue;
    if (!depsEqual(reply.deps, reply.initialDeps)) continue;
    rmaxSize++;
    chosen ??= reply;
  }
  if (chosen !== undefined && rmaxSize >= popCount(quorum) - sizes.fastFailures) {
    // The command may have committed on the fast path with these deps:
    // validate them against the conflicts the quorum knows.
    return { kind: "validate", command: chosen.command!, deps: chosen.deps!, rmaxSize, quorum };
  }
  return nop("nopNoFastQuorum", quorum);
}

/** What `HandleValidateOK` (lines 61-68) does once the quorum answered. */
export type ValidationDecision =
  | {
    /** Some member of the quorum has not answered yet. */
    readonly kind: "pending";
  }
  | {
    /** No invalidating conflict (`I = {}`): accept the command. */
    readonly kind: "clean";
  }
  | {
    /** A committed invalidator, or the e-rule: accept a Nop. */
    readonly kind: "invalidated";
  }
  | {
    /** Uncommitted invalidators: enter `Waiting` on the set `I`. */
    readonly kind: "wait";
    /** `I`: instance key to the highest phase reported. */
    readonly invalidators: ReadonlyMap<number, Phase>;
  };

/**
 * Decides validation from the `ValidateOK` invalidator triples
 * (`owner, number, phase`, flattened) by replica, for the quorum `quorum`
 * (bitmask) of a recovery that found `rmaxSize` matching pre-accepts.
 */
export function decideValidation(
  quorum: number,
  replies: readonly (readonly number[] | undefined)[],
  rmaxSize: number,
  sizes: QuorumSizes,
): ValidationDecision {
  // Every position in the quorum, not only the first `sizes.replicas`.
  for (let replica = 0; quorum >>> replica !== 0; replica++) {
    if ((quorum & (1 << replica)) !== 0 && replies[replica] === undefined) {
      return { kind: "pending" };
    }
  }
  const invalidators = new Map<number, Phase>();
  for (const triples of replies) {
    if (triples === undefined) continue;
    for (let i = 0; i + 2 < triples.length; i += 3) {
      const key = instanceKey(triples[i]!, triples[i + 1]!);
      const phase = triples[i + 2]! as Phase;
      if ((invalidators.get(key) ?? -1) < phase) invalidators.set(key, phase);
    }
  }
  if (invalidators.size === 0) return { kind: "clean" };
  let committedConflict = false;
  let ownerOutsideQuorum = false;
  for (const [key, phase] of invalidators) {
    if (phase === Phase.Committed) committedConflict = true;
    if ((quorum & (1 << keyOwner(key))) === 0) ownerOutsideQuorum = true;
  }
  if (
    committedConflict ||
    (rmaxSize === popCount(quorum) - sizes.fastFailures && ownerOutsideQuorum)
  ) {
    return { kind: "invalidated" };
  }
  return { kind: "wait", invalidators };
}

/** What the waiting recovery knows, here, of one instance of `I`. */
export type InvalidatorStatus =
  /** Not held, and below the prune floor: it executed everywhere, its deps are gone. */
  | "pruned"
  /** Not held here yet, or held and not committed. */
  | "undecided"
  /** Committed with the recovered instance in its deps, or as a Nop: no obstacle. */
  | "committed-after"
  /** Committed, not a Nop, without the recovered instance in its deps. */
  | "committed-without";

/** What `HandlePostWaiting` (lines 69-80) does next. */
export type PostWaitingDecision<C> =
  | CommitDecision<C>
  | AcceptDecision<C>
  | {
    /** Nothing decided yet: keep waiting. */
    readonly kind: "wait";
  }
  | {
    /** Departure: an invalidator was pruned here; start again at a higher ballot. */
    readonly kind: "restart";
  };

/** The inputs of {@linkcode decidePostWaiting}. */
export interface PostWaitingInput<C> {
  /** Each instance of `I`, in the order it was found, with its status here. */
  readonly invalidators: ReadonlyMap<number, InvalidatorStatus>;
  /** `Waiting(id, k)` reports received: instance key to the largest `k`. */
  readonly waitingReports: ReadonlyMap<number, number>;
  /** RecoverOK replies by replica, late ones (outside `quorum`) included. */
  readonly recoverReplies: readonly (RecoverReply<C> | undefined)[];
  /** The quorum `Q` of the decision, as a bitmask. */
  readonly quorum: number;
  /** The recovered instance's original coordinator. */
  readonly owner: number;
  /** The command and deps under validation. */
  readonly validated: { readonly command: Payload<C>; readonly deps: Deps };
}

/** Decides a recovery in the `Waiting` stage. */
export function decidePostWaiting<C>(
  input: PostWaitingInput<C>,
  sizes: QuorumSizes,
): PostWaitingDecision<C> {
  let allDecided = true;
  for (const status of input.invalidators.values()) {
    // Departure: pruned here, so we cannot tell whether it depends on us.
    // Start over at a higher ballot; the new attempt will not see it.
    if (status === "pruned") return { kind: "restart" };
    if (status === "undecided") allDecided = false;
    if (status === "committed-without") return nop("waitedNop");
  }
  const { command, deps } = input.validated;
  if (allDecided) return { kind: "accept", command, deps, outcome: "waitedAccepted" };
  const deadlockBound = sizes.replicas - sizes.maxFailures - sizes.fastFailures;
  for (const key of input.invalidators.keys()) {
    if ((input.waitingReports.get(key) ?? 0) > deadlockBound) return nop("waitedNop");
  }
  // A late RecoverOK from outside Q settles it as HandleRecoverOK would.
  for (let replica = 0; replica < input.recoverReplies.length; replica++) {
    if ((input.quorum & (1 << replica)) !== 0) continue;
    const reply = input.recoverReplies[replica];
    if (reply === undefined) continue;
    const committed = committedValue(reply);
    if (committed !== undefined) return committed;
    const found = acceptedValue(reply, "waitedAccepted");
    if (found !== undefined) return found;
    if (replica === input.owner) return nop("waitedNop");
  }
  return { kind: "wait" };
}

/**
 * `ComputeI`: the conflicting instances held here, outside `deps`, that may
 * not have seen `target` (their deps, or initial deps if uncommitted, lack
 * it). Returns `owner, number, phase` triples, flattened, as `ValidateOK`
 * carries them.
 */
export function invalidatorsOf<C>(
  target: { readonly owner: number; readonly number: number },
  command: Payload<C>,
  deps: Deps,
  held: Iterable<Instance<C>>,
  conflicts: ConflictModel<C>,
): number[] {
  const result: number[] = [];
  if (command === NOP) return result;
  const accesses: readonly Access[] = batchAccesses(conflicts, command);
  const { owner, number } = target;
  for (const other of held) {
    if ((other.owner === owner && other.number === number) || other.accesses === undefined) {
      continue;
    }
    if (depsContain(deps, other.owner, other.number)) continue;
    if (other.phase === Phase.Committed) {
      if (other.command === NOP || depsContain(other.deps!, owner, number)) continue;
    } else {
      if (other.initialCommand === undefined || other.initialCommand === NOP) continue;
      if (other.initialDeps !== undefined && depsContain(other.initialDeps, owner, number)) {
        continue;
      }
    }
    if (!accessesConflict(accesses, other.accesses)) continue;
    result.push(other.owner, other.number, other.phase);
  }
  return result;
}

function acceptedValue<C>(
  reply: RecoverReply<C>,
  outcome: keyof RecoveryOutcomes,
): AcceptDecision<C> | undefined {
  if (reply.phase === Phase.Accepted && reply.command !== undefined && reply.deps) {
    return { kind: "accept", command: reply.command, deps: reply.deps, outcome };
  }
  return undefined;
}

function committedValue<C>(reply: RecoverReply<C>): CommitDecision<C> | undefined {
  if (reply.phase === Phase.Committed && reply.command !== undefined && reply.deps) {
    return { kind: "commit", command: reply.command, deps: reply.deps };
  }
  return undefined;
}

/** Accept a Nop (empty deps), counted in `outcome`. */
function nop(outcome: keyof RecoveryOutcomes, quorum = 0): AcceptDecision<never> & {
  readonly quorum: number;
} {
  return { kind: "accept", command: NOP, deps: "empty", outcome, quorum };
}
