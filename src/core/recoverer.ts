/**
 * Recovery (EPaxos* Figure 5; TLA+ `EPaxosCommitWithRecovery`): the handlers
 * of `Recover`, `RecoverOK`, `Validate`, `ValidateOK`, `Waiting` and `Nack`,
 * for a replica that finishes an instance its coordinator could not. Each
 * handler gathers replies into the instance's lead and carries out the pure
 * decision of `recovery.ts`; the value chosen goes through the commit
 * protocol's Accept (`Replica`, Figure 3), which the hooks reach.
 *
 * @module
 */

import { type Deps, depsContain, emptyInstanceDeps } from "./deps.ts";
import { type Instance, instanceKey, keyNumber, keyOwner } from "./instance.ts";
import type { Lead, RecoverReply } from "./lead.ts";
import { nextBallot } from "./quorum.ts";
import {
  type AcceptDecision,
  type CommitDecision,
  decidePostWaiting,
  decideRecovery,
  decideValidation,
  invalidatorsOf,
  type InvalidatorStatus,
} from "./recovery.ts";
import type { ReplicaState } from "./replica_state.ts";
import { type Message, NOP, type Payload, Phase, type RecoverOkMessage } from "./types.ts";

/** What recovery needs of the commit protocol. */
export interface RecovererHooks<C> {
  /** Records `instance` committed (`ApplyCommit`) and does what follows. */
  commit(instance: Instance<C>, ballot: number, command: Payload<C>, deps: Deps): void;
  /** Sends `lead`'s Accept to the peers in the bitmask `targets`. */
  sendAccept(lead: Lead<C>, targets: number): void;
}

/** The recovery handlers of one replica. */
export class Recoverer<C> {
  readonly #s: ReplicaState<C>;
  readonly #hooks: RecovererHooks<C>;

  /** Recovery over `state`, accepting and committing through `hooks`. */
  constructor(state: ReplicaState<C>, hooks: RecovererHooks<C>) {
    this.#s = state;
    this.#hooks = hooks;
  }

  /** Re-evaluates the waiting recoveries whose set `I` holds instance `key`, which moved. */
  reevaluateWaiting(key: number): void {
    for (const lead of this.#s.leads.waiting()) {
      if (lead.invalidators.has(key)) this.#evaluatePostWaiting(lead);
    }
  }

  /** `StartRecover` (lines 43-45), with a ballot this replica owns. */
  start(instance: Instance<C>): void {
    const above = Math.max(instance.ballot, this.#s.nackedBallots.get(instance.key) ?? 0);
    const ballot = nextBallot(above, this.#s.id, this.#s.n);
    instance.ballot = ballot;
    instance.sinceTick = this.#s.tick;
    this.#s.out.markDirty(instance);
    const lead = this.#s.leads.start(instance, ballot, "recover");
    lead.attempts = this.#s.housekeeping.attempts(instance.key);
    lead.recoverReplies[this.#s.id] = recoverReplyOf(instance);
    this.#s.stats.recoveriesStarted++;
    this.#s.sendTo(this.#s.voterPeers, (to) => ({
      type: "recover",
      from: this.#s.id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot,
    }));
    lead.contacted = this.#s.voterPeers;
    lead.widened = true;
    this.#s.setDeadline(lead, this.#s.timers.recoveryAttemptTimeout(lead.attempts));
  }

  /** `HandleRecover` (lines 46-49). */
  onRecover(from: number, owner: number, number: number, ballot: number): void {
    const instance = this.#s.getOrCreate(owner, number);
    if (instance.phase === Phase.Committed) return this.#s.sendCommit(instance, from);
    if (instance.ballot > ballot) return this.#s.sendNack(instance, from);
    if (instance.ballot < ballot) {
      this.#s.preempt(instance, ballot);
      instance.ballot = ballot;
      this.#s.out.markDirty(instance);
    }
    // At an equal ballot this repeats the answer for a retransmitted Recover.
    const reply = recoverReplyOf(instance);
    const message: RecoverOkMessage<C> = {
      type: "recoverok",
      from: this.#s.id,
      to: from,
      owner,
      number,
      ballot,
      acceptedBallot: reply.acceptedBallot,
      phase: reply.phase,
      ...(reply.command !== undefined ? { command: reply.command } : {}),
      ...(reply.deps !== undefined ? { deps: reply.deps } : {}),
      ...(reply.initialDeps !== undefined ? { initialDeps: reply.initialDeps } : {}),
    };
    this.#s.out.send(message);
  }

  /** `HandleRecoverOK` (lines 50-60), and the late-reply branch of `HandlePostWaiting`. */
  onRecoverOk(message: RecoverOkMessage<C>): void {
    const lead = this.#s.leads.get(instanceKey(message.owner, message.number));
    if (lead === undefined || lead.ballot !== message.ballot) return;
    if (lead.instance.ballot !== lead.ballot) return;
    if (lead.stage === "preaccept" || lead.stage === "accept") return;
    lead.recoverReplies[message.from] = {
      acceptedBallot: message.acceptedBallot,
      phase: message.phase,
      command: message.command,
      deps: message.deps,
      initialDeps: message.initialDeps,
    };
    if (message.phase === Phase.Committed && message.command !== undefined && message.deps) {
      return this.#finishRecoveryWithCommit(lead, { command: message.command, deps: message.deps });
    }
    if (lead.stage === "recover") {
      let replies = 0;
      for (const reply of lead.recoverReplies) if (reply !== undefined) replies++;
      if (replies >= this.#s.quorum.slowQuorumSize) this.#decideRecovery(lead);
    } else if (lead.stage === "waiting") {
      this.#evaluatePostWaiting(lead);
    }
  }

  #finishRecoveryWithCommit(lead: Lead<C>, found: Omit<CommitDecision<C>, "kind">): void {
    this.#s.stats.recoveriesCommitted++;
    this.#s.stats.recoveryOutcomes.foundCommitted++;
    this.#hooks.commit(lead.instance, lead.ballot, found.command, found.deps);
    this.#s.broadcastCommit(lead.instance);
  }

  /** Carries out `decideRecovery` on a quorum of RecoverOK replies. */
  #decideRecovery(lead: Lead<C>): void {
    const decision = decideRecovery(lead.recoverReplies, lead.instance.owner, this.#s.quorum);
    if (decision.kind === "commit") return this.#finishRecoveryWithCommit(lead, decision);
    lead.quorum = decision.quorum;
    if (decision.kind === "accept") return this.#startRecoveryAccept(lead, decision);
    this.#s.stats.recoveryOutcomes.validated++;
    this.#startValidation(lead, decision.command, decision.deps, decision.rmaxSize);
  }

  #startValidation(lead: Lead<C>, command: Payload<C>, deps: Deps, rmaxSize: number): void {
    const instance = lead.instance;
    const invalidators = invalidatorsOf(
      instance,
      command,
      deps,
      this.#s.instances.values(),
      this.#s.conflicts,
    );
    // `ApplyValidate(p, p, b, id, c, D)`.
    instance.command = command;
    instance.initialCommand = command;
    instance.initialDeps = deps;
    this.#s.learn(instance, command);
    this.#s.out.markDirty(instance);
    this.#s.leads.setStage(lead, "validate");
    lead.validatedCommand = command;
    lead.validatedDeps = deps;
    lead.rmaxSize = rmaxSize;
    lead.validateReplies = new Array(this.#s.n).fill(undefined);
    lead.validateReplies[this.#s.id] = invalidators;
    lead.attempts = 0;
    this.#s.sendTo(lead.quorum & this.#s.voterPeers, (to) => ({
      type: "validate",
      from: this.#s.id,
      to,
      owner: instance.owner,
      number: instance.number,
      ballot: lead.ballot,
      command,
      deps,
    }));
    this.#s.setDeadline(lead, this.#s.timers.recoveryAttemptTimeout(0));
    this.#decideValidation(lead);
  }

  /** `HandleValidate` (lines 81-87). */
  onValidate(message: Message<C> & { type: "validate" }): void {
    const instance = this.#s.getOrCreate(message.owner, message.number);
    if (instance.phase === Phase.Committed) return this.#s.sendCommit(instance, message.from);
    if (instance.ballot !== message.ballot) {
      if (instance.ballot > message.ballot) this.#s.sendNack(instance, message.from);
      return;
    }
    const invalidators = invalidatorsOf(
      instance,
      message.command,
      message.deps,
      this.#s.instances.values(),
      this.#s.conflicts,
    );
    instance.command = message.command;
    instance.initialCommand = message.command;
    instance.initialDeps = message.deps;
    this.#s.learn(instance, message.command);
    this.#s.out.markDirty(instance);
    this.#s.reply(message.from, instance, {
      type: "validateok",
      ballot: message.ballot,
      invalidators,
    });
  }

  /** `HandleValidateOK` (lines 61-68). */
  onValidateOk(
    from: number,
    owner: number,
    number: number,
    message: { ballot: number; invalidators: readonly number[] },
  ): void {
    const lead = this.#s.leads.get(instanceKey(owner, number));
    if (lead === undefined || lead.stage !== "validate" || lead.ballot !== message.ballot) return;
    if ((lead.quorum & (1 << from)) === 0 || lead.instance.ballot !== lead.ballot) return;
    lead.validateReplies[from] = message.invalidators;
    this.#decideValidation(lead);
  }

  /** Carries out `decideValidation` once every member of the quorum answered. */
  #decideValidation(lead: Lead<C>): void {
    const decision = decideValidation(
      lead.quorum,
      lead.validateReplies,
      lead.rmaxSize,
      this.#s.quorum,
    );
    switch (decision.kind) {
      case "pending":
        return;
      case "clean":
        return this.#startRecoveryAccept(lead, {
          command: lead.validatedCommand!,
          deps: lead.validatedDeps!,
          outcome: "validatedClean",
        });
      case "invalidated":
        return this.#startRecoveryAccept(lead, {
          command: NOP,
          deps: "empty",
          outcome: "validatedInvalidated",
        });
    }
    this.#s.stats.recoveryOutcomes.waited++;
    this.#s.leads.setStage(lead, "waiting");
    lead.invalidators = decision.invalidators;
    const instance = lead.instance;
    // Only voters recover, so only a voter has use for a Waiting report.
    this.#s.sendTo(this.#s.voterPeers, (to) => ({
      type: "waiting",
      from: this.#s.id,
      to,
      owner: instance.owner,
      number: instance.number,
      rmaxSize: lead.rmaxSize,
    }));
    // The instances in I must commit for us to finish: make sure someone drives them.
    for (const key of decision.invalidators.keys()) this.#s.housekeeping.want(key, this.#s.tick);
    this.#s.setDeadline(lead, this.#s.timers.recoveryAttemptTimeout(lead.attempts) * 2);
    this.#evaluatePostWaiting(lead);
  }

  /** `HandlePostWaiting` (lines 69-80): carries out `decidePostWaiting`. */
  #evaluatePostWaiting(lead: Lead<C>): void {
    if (!this.#s.leads.isCurrent(lead) || lead.stage !== "waiting") return;
    if (lead.instance.ballot !== lead.ballot) return;
    const self = lead.instance;
    const invalidators = new Map<number, InvalidatorStatus>();
    for (const key of lead.invalidators.keys()) {
      invalidators.set(key, this.#invalidatorStatus(key, self));
    }
    const decision = decidePostWaiting({
      invalidators,
      waitingReports: this.#s.waitingReports,
      recoverReplies: lead.recoverReplies,
      quorum: lead.quorum,
      owner: self.owner,
      validated: { command: lead.validatedCommand!, deps: lead.validatedDeps! },
    }, this.#s.quorum);
    switch (decision.kind) {
      case "wait":
        return;
      case "restart":
        return this.start(self);
      case "commit":
        return this.#finishRecoveryWithCommit(lead, decision);
      case "accept":
        return this.#startRecoveryAccept(lead, decision);
    }
  }

  /** What this replica knows of invalidator `key` of the recovery of `self`. */
  #invalidatorStatus(key: number, self: Instance<C>): InvalidatorStatus {
    const other = this.#s.instances.get(key);
    if (other === undefined) {
      return this.#s.progress.isPruned(keyOwner(key), keyNumber(key)) ? "pruned" : "undecided";
    }
    if (other.phase !== Phase.Committed) return "undecided";
    if (other.command !== NOP && !depsContain(other.deps!, self.owner, self.number)) {
      return "committed-without";
    }
    return "committed-after";
  }

  /** `Waiting(id, k)` (line 74): a recovery of `id` waits with `|Rmax| = k`. */
  onWaiting(owner: number, number: number, rmaxSize: number): void {
    const key = instanceKey(owner, number);
    const instance = this.#s.instances.get(key);
    if (instance?.phase === Phase.Committed) return;
    if (this.#s.progress.isPruned(owner, number)) return;
    if ((this.#s.waitingReports.get(key) ?? 0) >= rmaxSize) return;
    // Bounded: one entry per uncommitted instance a recovery waits on.
    if (this.#s.waitingReports.size >= 65536) return;
    this.#s.waitingReports.set(key, rmaxSize);
    this.reevaluateWaiting(key);
  }

  /**
   * Recovery's `ApplyAccept(p, p, bal, id, c, D)` and Accept to every peer, for
   * the value a decision chose (counted in its `RecoveryOutcomes` branch).
   */
  #startRecoveryAccept(lead: Lead<C>, decision: Omit<AcceptDecision<C>, "kind">): void {
    this.#s.stats.recoveryOutcomes[decision.outcome]++;
    const instance = lead.instance;
    instance.ballot = lead.ballot;
    instance.acceptedBallot = lead.ballot;
    instance.command = decision.command;
    instance.deps = decision.deps === "empty" ? emptyInstanceDeps(this.#s.n) : decision.deps;
    instance.phase = Phase.Accepted;
    this.#s.learn(instance, decision.command);
    this.#s.out.markDirty(instance);
    this.#s.leads.setStage(lead, "accept");
    lead.acks = 1 << this.#s.id;
    lead.contacted = 0;
    lead.widened = true;
    lead.attempts = 0;
    this.#hooks.sendAccept(lead, this.#s.voterPeers);
  }

  /** A peer promised a higher ballot: note it, and back off if it preempts our lead. */
  onNack(owner: number, number: number, ballot: number): void {
    const key = instanceKey(owner, number);
    if ((this.#s.nackedBallots.get(key) ?? 0) < ballot) {
      if (this.#s.nackedBallots.size >= 65536) this.#s.nackedBallots.clear();
      this.#s.nackedBallots.set(key, ballot);
    }
    const lead = this.#s.leads.get(key);
    if (lead !== undefined && lead.ballot < ballot) {
      this.#s.leads.drop(key);
      this.#s.housekeeping.deferRecovery(key, this.#s.tick);
    }
  }
}

/** What this replica answers to `Recover` for `instance`. */
export function recoverReplyOf<C>(instance: Instance<C>): RecoverReply<C> {
  return {
    acceptedBallot: instance.acceptedBallot,
    phase: instance.phase,
    command: instance.command,
    deps: instance.deps,
    initialDeps: instance.initialDeps,
  };
}
