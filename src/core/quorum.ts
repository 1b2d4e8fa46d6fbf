/**
 * Quorum sizes and ballot ownership for EPaxos* (Ryabinin, Gotsman, Sutra,
 * OPODIS 2025, §3): `n = 2f + 1` voters (learners count in no quorum), `e = ceil((f + 1) / 2)`, slow
 * quorum `n - f`, fast quorum `n - e` (the optimized `f + floor((f + 1) / 2)`
 * of SOSP'13 §4.4).
 *
 * @module
 */

/**
 * The most positions (member ids, removed members' included) a replica's core
 * has, and so the most voters: bitmasks of positions (32-bit integers),
 * instance keys (four bits for the owner) and snapshot files' rows are all
 * sized within it.
 */
export const MAX_REPLICAS = 9;

/**
 * Every quorum size the protocol uses, derived from the number of voters
 * (every replica, unless some are learners: they count in no quorum).
 */
export interface QuorumSizes {
  /** Number of voters, `n`. */
  readonly replicas: number;
  /** Crashes tolerated, `f = (n - 1) / 2`. */
  readonly maxFailures: number;
  /** Crashes tolerated on the fast path, `e = ceil((f + 1) / 2)`. */
  readonly fastFailures: number;
  /** Replies (the coordinator's own included) needed by Accept and Recover: `n - f`. */
  readonly slowQuorumSize: number;
  /** Matching PreAccept replies (the coordinator's own included) for a fast commit: `n - e`. */
  readonly fastQuorumSize: number;
  /** Peers a thrifty coordinator sends PreAccept to first: `n - e - 1`. */
  readonly preAcceptTargets: number;
  /** Peers a thrifty coordinator sends Accept to first: `n - f - 1`. */
  readonly acceptTargets: number;
}

/**
 * Computes the quorum sizes for `replicas` voters.
 *
 * @throws {RangeError} unless `replicas` is odd and between 3 and {@linkcode MAX_REPLICAS}.
 */
export function quorumSizes(replicas: number): QuorumSizes {
  if (
    !Number.isInteger(replicas) || replicas < 3 || replicas > MAX_REPLICAS || replicas % 2 === 0
  ) {
    throw new RangeError(
      `A cluster needs an odd number of replicas from 3 to ${MAX_REPLICAS}, got ${replicas}`,
    );
  }
  const maxFailures = (replicas - 1) / 2;
  const fastFailures = Math.ceil((maxFailures + 1) / 2);
  return {
    replicas,
    maxFailures,
    fastFailures,
    slowQuorumSize: replicas - maxFailures,
    fastQuorumSize: replicas - fastFailures,
    preAcceptTargets: replicas - fastFailures - 1,
    acceptTargets: replicas - maxFailures - 1,
  };
}

/**
 * The replica that owns `ballot`. Ballot 0 belongs to the instance's original
 * coordinator; every other ballot `b` belongs to replica `(b - 1) mod n`, so no
 * two replicas ever lead the same instance at the same ballot.
 *
 * The TLA+ module picks `bal + N` for a retry, which keeps the *previous*
 * owner's residue; we pick the next ballot the recovering replica owns, which is
 * what Paxos needs (distinct proposers never share a ballot).
 */
export function ballotOwner(ballot: number, owner: number, replicas: number): number {
  return ballot === 0 ? owner : (ballot - 1) % replicas;
}

/** The smallest ballot above `above` that `replica` owns (never 0). */
export function nextBallot(above: number, replica: number, replicas: number): number {
  const round = Math.floor(Math.max(0, above) / replicas);
  let candidate = round * replicas + replica + 1;
  while (candidate <= above) candidate += replicas;
  return candidate;
}

/** What the coordinator does with the PreAcceptOK replies it has (`HandlePreAcceptOK`). */
export type PreAcceptDecision =
  /** At least `n - e` replies equal `initDep`: commit on the fast path. */
  | "fast"
  /** A slow quorum answered and the fast path is lost (or waited for long enough): Accept. */
  | "slow"
  /** Too few peers were asked to ever form a quorum: ask the rest. */
  | "widen"
  /** Wait for more replies. */
  | "wait";

/** The inputs of {@linkcode decidePreAccept}. */
export interface PreAcceptTally {
  /** Replies (the coordinator's own vote included) with deps equal to `initDep`. */
  readonly matching: number;
  /** Replies received, matching or not. */
  readonly replies: number;
  /** Peers asked that have not answered. */
  readonly outstanding: number;
  /** Whether the lead's timer ran out (then a slow quorum is enough). */
  readonly timedOut: boolean;
  /** Whether the PreAccept already went to every peer. */
  readonly widened: boolean;
}

/**
 * Decides the coordinator's next step after PreAccept (EPaxos* Figure 3 lines
 * 19-25): the fast path needs `n - e` replies equal to `initDep` exactly (the
 * only fast-path rule, thrifty or not); otherwise a slow quorum of `n - f`
 * replies goes to Accept once the fast path can no longer happen, or once the
 * timer ran out.
 */
export function decidePreAccept(tally: PreAcceptTally, sizes: QuorumSizes): PreAcceptDecision {
  if (tally.matching >= sizes.fastQuorumSize) return "fast";
  const fastStillPossible = tally.matching + tally.outstanding >= sizes.fastQuorumSize;
  if (tally.replies >= sizes.slowQuorumSize && (tally.timedOut || !fastStillPossible)) {
    return "slow";
  }
  if (
    !fastStillPossible && !tally.widened && tally.replies + tally.outstanding < sizes.slowQuorumSize
  ) {
    return "widen";
  }
  return "wait";
}
