/**
 * The handlers of quorum reads (`quorum_read.ts` has the protocol and the
 * argument): starting a read, a voter's answer, the reader collecting
 * answers and deciding, and the timers. Functions over the replica's state,
 * called by `Replica`.
 *
 * @module
 */

import type { Access } from "./conflict.ts";
import { depsRaise } from "./deps.ts";
import { popCount } from "./lead.ts";
import {
  decideQuorumRead,
  type QuorumRead,
  readDepsAnswer,
  readRetryTargets,
} from "./quorum_read.ts";
import type { ReplicaState } from "./replica_state.ts";
import { Phase } from "./types.ts";

/**
 * Starts a read of `accesses` that gives up after `timeoutTicks`; returns
 * its number, or undefined when too many reads are in flight (the driver
 * then proposes it as a command).
 */
export function startQuorumRead<C>(
  s: ReplicaState<C>,
  accesses: readonly Access[],
  timeoutTicks: number,
): number | undefined {
  const reads = s.quorumReads;
  if (reads.full) {
    reads.stats.refused++;
    return undefined;
  }
  const read = reads.add(accesses, s.tick, timeoutTicks, s.n);
  if (s.isVoter) {
    // Our own answer, taken after the read began, like any voter's.
    depsRaise(read.deps, readDepsAnswer(s.index, accesses, s.progress.pruneFloor, s.n));
    read.replied |= 1 << s.id;
  }
  // Thrifty (SOSP'13 §4.4): the closest voters that make a majority with us.
  const needed = s.quorum.slowQuorumSize - popCount(read.replied);
  sendReadDeps(s, read, s.pick(needed, 0));
  read.retryTick = s.tick + s.timers.widenTimeout(read.contacted);
  return read.seq;
}

function sendReadDeps<C>(s: ReplicaState<C>, read: QuorumRead, targets: number): void {
  // Early: the request carries nothing that needs to be durable.
  s.sendTo(
    targets,
    (to) => ({ type: "readdeps", from: s.id, to, seq: read.seq, accesses: read.accesses }),
    { early: true },
  );
  read.contacted |= targets;
}

/**
 * A voter answers a read (step 2 of `quorum_read.ts`), recording nothing.
 * The answer leaves early, before the Ready's records are durable: a write
 * the read must see was recorded durably here before its decision (and so
 * before the read began); what is not durable yet only adds to the answer.
 */
export function onReadDeps<C>(
  s: ReplicaState<C>,
  from: number,
  seq: number,
  accesses: readonly Access[],
): void {
  s.quorumReads.stats.answered++;
  s.out.sendEarly({
    type: "readdepsok",
    from: s.id,
    to: from,
    seq,
    deps: readDepsAnswer(s.index, accesses, s.progress.pruneFloor, s.n),
  });
}

/** The reader takes a voter's answer; with a majority in, it decides. */
export function onReadDepsOk<C>(
  s: ReplicaState<C>,
  from: number,
  seq: number,
  deps: readonly number[],
): void {
  const read = s.quorumReads.get(seq);
  if (read === undefined) return;
  const bit = 1 << from;
  if ((read.replied & bit) !== 0) return;
  read.replied |= bit;
  depsRaise(read.deps, deps);
  if (popCount(read.replied) < s.quorum.slowQuorumSize) return;
  // The union names instances this replica may not have heard of: the
  // housekeeping scan asks its peers for their commits.
  for (let row = 0; row < s.n; row++) s.housekeeping.noteExists(row, read.deps[row]!);
  evaluateQuorumRead(s, read);
}

/** Decides `read` and carries the decision out (`decideQuorumRead`). */
export function evaluateQuorumRead<C>(s: ReplicaState<C>, read: QuorumRead): void {
  const decision = decideQuorumRead(
    {
      replies: popCount(read.replied),
      needed: s.quorum.slowQuorumSize,
      accesses: read.accesses,
      deps: read.deps,
      mark: read.mark,
    },
    {
      readBlocker: (accesses, bound) => s.executor.readBlocker(accesses, bound),
      executionsQueued: s.executionsQueued,
      executionsApplied: s.executionsApplied,
    },
    s.unsafeQuorumReads,
  );
  switch (decision.kind) {
    case "collect":
      return;
    case "serve":
      return s.quorumReads.finish(read, "serve");
    case "applying":
      read.mark = decision.mark;
      return;
    case "blocked": {
      read.blocker = decision.key;
      // Not committed here (or not even known): ask for it, then recover it
      // (the executor's own waits go the same way, through the scan).
      if (s.instances.get(decision.key)?.phase !== Phase.Committed) {
        s.housekeeping.want(decision.key, s.tick);
      }
      return;
    }
  }
}

/** Decides every read that has its majority (executions were applied, or instances learned). */
export function evaluateQuorumReads<C>(s: ReplicaState<C>): void {
  if (s.quorumReads.size === 0) return;
  for (const read of [...s.quorumReads.values()]) evaluateQuorumRead(s, read);
}

/** Timers: reads past their deadline give up; reads short of a majority ask again. */
export function quorumReadTick<C>(s: ReplicaState<C>): void {
  if (s.quorumReads.size === 0) return;
  for (const read of [...s.quorumReads.values()]) {
    if (s.tick >= read.deadlineTick) {
      s.quorumReads.finish(read, "timeout");
      continue;
    }
    if (popCount(read.replied) >= s.quorum.slowQuorumSize || s.tick < read.retryTick) continue;
    const targets = readRetryTargets(read, s.voterPeers);
    if (read.widened) read.attempts++;
    read.widened = true;
    if (targets !== 0) {
      s.quorumReads.stats.retransmissions++;
      sendReadDeps(s, read, targets);
    }
    read.retryTick = s.tick +
      (read.attempts === 0
        ? s.timers.widenTimeout(s.voterPeers)
        : s.timers.retransmitTimeout(read.attempts));
  }
}
