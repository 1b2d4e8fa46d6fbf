/**
 * The counters a replica keeps for `/status` and `/metrics`.
 *
 * @module
 */

/** Counters a replica keeps for `/status` and `/metrics`. */
export interface ReplicaStats {
  /** Instances this replica committed on the fast path as their coordinator. */
  fastCommits: number;
  /** Instances this replica committed on the slow path as their coordinator. */
  slowCommits: number;
  /** Recoveries this replica started. */
  recoveriesStarted: number;
  /** Recoveries this replica finished by committing the instance. */
  recoveriesCommitted: number;
  /** Own proposals replaced by a Nop and proposed again. */
  reproposals: number;
  /** Commands executed here. */
  executedCommands: number;
  /** Instances executed here. */
  executedInstances: number;
  /** Instances pruned (executed everywhere and forgotten) here. */
  prunedInstances: number;
  /** First-round PreAccepts ignored because a configuration change fenced this replica. */
  fencedPreAccepts: number;
  /** Prune steps that went past peers far behind, the retention bound reached (`retention.ts`). */
  retentionPrunes: number;
  /** How this replica's recoveries decided, by branch of EPaxos* Figure 5. */
  recoveryOutcomes: RecoveryOutcomes;
}

/** Counts of each recovery decision (the branches of `HandleRecoverOK` and what follows). */
export interface RecoveryOutcomes {
  /** A reply was committed: commit it. */
  foundCommitted: number;
  /** The highest-ballot replies include an accepted value: accept it. */
  foundAccepted: number;
  /** The original coordinator answered: accept a Nop. */
  nopCoordinatorAnswered: number;
  /** Too few matching pre-accepts for a fast path: accept a Nop. */
  nopNoFastQuorum: number;
  /** Entered Validate. */
  validated: number;
  /** Validation found no invalidating conflict: accept the command. */
  validatedClean: number;
  /** Validation found a committed invalidating conflict (or the e-rule): accept a Nop. */
  validatedInvalidated: number;
  /** Entered Waiting. */
  waited: number;
  /** Waiting ended with the command accepted. */
  waitedAccepted: number;
  /** Waiting ended with a Nop. */
  waitedNop: number;
}

/** Fresh counters, all zero. */
export function newReplicaStats(): ReplicaStats {
  return {
    fastCommits: 0,
    slowCommits: 0,
    recoveriesStarted: 0,
    recoveriesCommitted: 0,
    reproposals: 0,
    executedCommands: 0,
    executedInstances: 0,
    prunedInstances: 0,
    retentionPrunes: 0,
    fencedPreAccepts: 0,
    recoveryOutcomes: {
      foundCommitted: 0,
      foundAccepted: 0,
      nopCoordinatorAnswered: 0,
      nopNoFastQuorum: 0,
      validated: 0,
      validatedClean: 0,
      validatedInvalidated: 0,
      waited: 0,
      waitedAccepted: 0,
      waitedNop: 0,
    },
  };
}
