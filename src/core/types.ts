/**
 * The data the EPaxos core exchanges with its driver: instance records to
 * persist, messages to send, and committed commands to execute.
 *
 * Message names follow EPaxos* (Figures 3 and 5 of the OPODIS'25 paper and its
 * TLA+ module `EPaxosCommitWithRecovery`). Fields are flat so that messages are
 * cheap to build and to encode.
 *
 * @module
 */

import type { Access } from "./conflict.ts";
import type { Deps } from "./deps.ts";

/** Phase of an instance at one replica (the spec's `phase`). */
export type Phase = 0 | 1 | 2 | 3;

/** Named phases. */
export const Phase = {
  /** Nothing recorded yet. */
  Initial: 0,
  /** Recorded from a PreAccept (or the coordinator's own submit). */
  PreAccepted: 1,
  /** Recorded from an Accept. */
  Accepted: 2,
  /** Decided; never changes again. */
  Committed: 3,
} as const;

/** The payload that replaces a command whose recovery was aborted; executes as nothing. */
export const NOP = "nop";

/** What an instance carries: a batch of client commands, or {@linkcode NOP}. */
export type Payload<C> = readonly C[] | typeof NOP;

/** The persistent state of one instance at one replica (spec variables per `(p, id)`). */
export interface InstanceRecord<C> {
  /** Replica that owns the instance's row (its original coordinator). */
  readonly owner: number;
  /** Instance number within the owner's row, from 1. */
  readonly number: number;
  /** `phase[p][id]`. */
  readonly phase: Phase;
  /** `bal[p][id]`: the highest ballot this replica has promised. */
  readonly ballot: number;
  /** `abal[p][id]`: the ballot at which the current value was accepted. */
  readonly acceptedBallot: number;
  /** `cmd[p][id]`; absent until known. */
  readonly command?: Payload<C>;
  /** `dep[p][id]`; absent until known. */
  readonly deps?: Deps;
  /** `initCmd[p][id]`: the command first received in PreAccept (or Validate). */
  readonly initialCommand?: Payload<C>;
  /** `initDep[p][id]`: the dependencies the original coordinator sent. */
  readonly initialDeps?: Deps;
  /** Whether this replica has executed the instance (durably, with its effects). */
  readonly executed: boolean;
}

/** An instance record as it travels in a Ready (the record itself, tagged). */
export type StoredInstance<C> = InstanceRecord<C> & { readonly kind: "instance" };

/** A record the driver must persist before sending the messages of the same Ready. */
export type StorageRecord<C> =
  | StoredInstance<C>
  | {
    /** Delete the records of instances `from..to` (inclusive) of row `owner`: pruned. */
    readonly kind: "delete";
    readonly owner: number;
    readonly from: number;
    readonly to: number;
  }
  | { readonly kind: "floor"; readonly pruneFloor: Deps };

interface Envelope {
  /** Sender. */
  readonly from: number;
  /** Receiver. */
  readonly to: number;
}

interface About extends Envelope {
  /** Row owner of the instance the message is about. */
  readonly owner: number;
  /** Instance number of the instance the message is about. */
  readonly number: number;
}

/** `PreAccept(id, c, D0)`: Figure 3 line 10. Ballot 0 is implicit. */
export interface PreAcceptMessage<C> extends About {
  /** Discriminant. */
  readonly type: "preaccept";
  /** The batch. */
  readonly command: Payload<C>;
  /** The coordinator's dependencies D0. */
  readonly deps: Deps;
}

/** `PreAcceptOK(id, Dq)`: Figure 3 line 17. */
export interface PreAcceptOkMessage extends About {
  /** Discriminant. */
  readonly type: "preacceptok";
  /** D0 joined with the replier's own conflicts. */
  readonly deps: Deps;
  /** Lease holders this grantor has promised for the command's keys (bitmask; absent: none). */
  readonly holders?: number;
  /** How long the longest of those promises has left on the replier's clock (ms). */
  readonly leaseMs?: number;
}

/** `Accept(b, id, c, D)`: Figure 3 line 25, and recovery's Accept. */
export interface AcceptMessage<C> extends About {
  /** Discriminant. */
  readonly type: "accept";
  /** Ballot. */
  readonly ballot: number;
  /** Payload. */
  readonly command: Payload<C>;
  /** Dependencies. */
  readonly deps: Deps;
}

/** `AcceptOK(b, id)`: Figure 3 line 32. */
export interface AcceptOkMessage extends About {
  /** Discriminant. */
  readonly type: "acceptok";
  /** Ballot accepted. */
  readonly ballot: number;
  /** Lease holders this grantor has promised for the command's keys (bitmask; absent: none). */
  readonly holders?: number;
  /** How long the longest of those promises has left on the replier's clock (ms). */
  readonly leaseMs?: number;
}

/** `Commit(b, id, c, D)`: sent to every replica with the full command (thrifty peers first hear of it here). */
export interface CommitMessage<C> extends About {
  /** Discriminant. */
  readonly type: "commit";
  /** Ballot of the decision. */
  readonly ballot: number;
  /** Payload. */
  readonly command: Payload<C>;
  /** Dependencies. */
  readonly deps: Deps;
}

/** `Recover(b, id)`: Figure 5 line 45. */
export interface RecoverMessage extends About {
  /** Discriminant. */
  readonly type: "recover";
  /** The recovering replica's fresh ballot. */
  readonly ballot: number;
}

/** `RecoverOK(b, id, abal, c, D, initD, phase)`: Figure 5 line 49. */
export interface RecoverOkMessage<C> extends About {
  /** Discriminant. */
  readonly type: "recoverok";
  /** Ballot promised. */
  readonly ballot: number;
  /** The replier's `abal`. */
  readonly acceptedBallot: number;
  /** The replier's phase. */
  readonly phase: Phase;
  /** The replier's `cmd`, if any. */
  readonly command?: Payload<C>;
  /** The replier's `dep`, if any. */
  readonly deps?: Deps;
  /** The replier's `initDep`, if any. */
  readonly initialDeps?: Deps;
}

/** `Validate(b, id, c, D)`: Figure 5 line 59. */
export interface ValidateMessage<C> extends About {
  /** Discriminant. */
  readonly type: "validate";
  /** Ballot. */
  readonly ballot: number;
  /** The command that may have taken the fast path. */
  readonly command: Payload<C>;
  /** Its dependencies. */
  readonly deps: Deps;
}

/** `ValidateOK(b, id, I)`: Figure 5 line 87. */
export interface ValidateOkMessage extends About {
  /** Discriminant. */
  readonly type: "validateok";
  /** Ballot. */
  readonly ballot: number;
  /** `I`: possibly invalidating conflicts, as flat triples `owner, number, phase`. */
  readonly invalidators: readonly number[];
}

/** `Waiting(id, k)`: Figure 5 line 68; tells other recoveries this one waits with `|Rmax| = k`. */
export interface WaitingMessage extends About {
  /** Discriminant. */
  readonly type: "waiting";
  /** `|Rmax|` of the waiting recovery. */
  readonly rmaxSize: number;
}

/**
 * Tells a coordinator that the receiver has promised a higher ballot, so it
 * stops early instead of timing out. Not in the spec; carries no protocol state.
 */
export interface NackMessage extends About {
  /** Discriminant. */
  readonly type: "nack";
  /** The ballot the replier has promised. */
  readonly ballot: number;
}

/**
 * Asks peers for the commits of instances `number .. number + count - 1` of row
 * `owner` (a lost Commit, or catching up after a restart). A peer that has any of
 * them committed answers with Commit messages. Not in the spec: it only moves
 * decisions that already exist.
 */
export interface CommitRequestMessage extends About {
  /** Discriminant. */
  readonly type: "commitrequest";
  /** How many consecutive instances, from `number`. */
  readonly count: number;
}

/**
 * Gossip of progress, for pruning and catching up: the sender's durable
 * executed prefix and prune floor per row, and the highest instance number it
 * has allocated. Sent periodically to every peer.
 */
export interface FrontierMessage extends Envelope {
  /** Discriminant. */
  readonly type: "frontier";
  /** Per row, every instance up to this number is executed at the sender. */
  readonly executed: Deps;
  /** Per row, every instance up to this number has been pruned at the sender. */
  readonly pruned: Deps;
  /** The highest instance number the sender has allocated in its own row. */
  readonly highest: number;
}

/** A lease holder asks a grantor for a lease (`lease.ts`); it times the lease from sending this. */
export interface LeaseRequestMessage extends Envelope {
  /** Discriminant. */
  readonly type: "leaserequest";
  /** The holder's sequence number, echoed in the grant. */
  readonly seq: number;
  /** The holder received a grant (or an empty one) from this grantor since its last request to it. */
  readonly heard?: boolean;
}

/** A grantor's promise, answering request `seq`: it names the holder in every write it acknowledges. */
export interface LeaseGrantMessage extends Envelope {
  /** Discriminant. */
  readonly type: "leasegrant";
  /** The request answered. */
  readonly seq: number;
  /** Per row, the highest instance the grantor held: the grant counts once the holder executed that far. */
  readonly frontier: Deps;
  /**
   * No promise: the grantor withholds its grants from this holder (it left
   * a write unacknowledged) until the holder shows it hears the grantor
   * (`heard` on its next request).
   */
  readonly empty?: boolean;
}

/** Tells a lease holder outside a write's quorum of the write, so it holds reads of its keys. */
export interface LeaseNoticeMessage<C> extends About {
  /** Discriminant. */
  readonly type: "leasenotice";
  /** The write. */
  readonly command: Payload<C>;
}

/** A lease holder knows of the write (from a notice): the coordinator may decide it. */
export interface LeaseAckMessage extends About {
  /** Discriminant. */
  readonly type: "leaseack";
}

/**
 * A reader asks a voter which instances a linearizable read of `accesses`
 * must wait for (`quorum_read.ts`): what the voter would put into a
 * PreAcceptOK for it, without recording anything.
 */
export interface ReadDepsMessage extends Envelope {
  /** Discriminant. */
  readonly type: "readdeps";
  /** The reader's number for the read, echoed in the answer. */
  readonly seq: number;
  /** What the read touches: read accesses only. */
  readonly accesses: readonly Access[];
}

/** A voter's answer to {@linkcode ReadDepsMessage}. */
export interface ReadDepsOkMessage extends Envelope {
  /** Discriminant. */
  readonly type: "readdepsok";
  /** The read answered. */
  readonly seq: number;
  /**
   * Per row, the highest instance the voter knows that conflicts with the
   * read, raised to its prune floor (rows only, no `seq`).
   */
  readonly deps: Deps;
}

/** Every message replicas exchange. */
export type Message<C> =
  | PreAcceptMessage<C>
  | PreAcceptOkMessage
  | AcceptMessage<C>
  | AcceptOkMessage
  | CommitMessage<C>
  | RecoverMessage
  | RecoverOkMessage<C>
  | ValidateMessage<C>
  | ValidateOkMessage
  | WaitingMessage
  | NackMessage
  | CommitRequestMessage
  | FrontierMessage
  | LeaseRequestMessage
  | LeaseGrantMessage
  | LeaseNoticeMessage<C>
  | LeaseAckMessage
  | ReadDepsMessage
  | ReadDepsOkMessage;

/** The messages about one instance (all but gossip and the lease grants' exchange). */
export type InstanceMessage<C> = Extract<Message<C>, { readonly owner: number }>;

/** Whether `message` is about one instance (it has `owner` and `number`). */
export function isInstanceMessage<C>(message: Message<C>): message is InstanceMessage<C> {
  return "owner" in message;
}

/** The type names of every message. */
export const MESSAGE_TYPES: readonly Message<unknown>["type"][] = [
  "preaccept",
  "preacceptok",
  "accept",
  "acceptok",
  "commit",
  "recover",
  "recoverok",
  "validate",
  "validateok",
  "waiting",
  "nack",
  "commitrequest",
  "frontier",
  "leaserequest",
  "leasegrant",
  "leasenotice",
  "leaseack",
  "readdeps",
  "readdepsok",
];

/** A committed instance whose commands the state machine must now apply, in order. */
export interface Execution<C> {
  /** Row owner. */
  readonly owner: number;
  /** Instance number. */
  readonly number: number;
  /** The batch to apply, in order, or {@linkcode NOP}. */
  readonly command: Payload<C>;
  /** Whether this replica proposed the batch (in this incarnation), so a client may be waiting. */
  readonly local: boolean;
  /**
   * Whether it is the last of its strongly connected component (the
   * executor's unit): after it, the state holds whole components only, the
   * only points from which another replica can go on executing in the same
   * order (a snapshot is taken at one). Absent: not known.
   */
  readonly lastOfComponent?: boolean;
}

/**
 * Commands this replica proposed that can no longer execute: their instance was
 * replaced by a Nop more times than the retry budget allows.
 */
export interface Abandoned<C> {
  /** The commands. */
  readonly commands: readonly C[];
  /** Why. */
  readonly reason: string;
}

/** One of this replica's own instances, decided, with its payload. */
export interface Decided<C> {
  /** Instance number in this replica's row. */
  readonly number: number;
  /** The decided payload: the proposed batch, or {@linkcode NOP} if recovery replaced it. */
  readonly command: Payload<C>;
}

/**
 * What the driver must do, in this order: persist `records` (atomically), then
 * send `messages`, then apply `executions`, then call `advance()`.
 */
export interface Ready<C> {
  /** Records to persist before any message of this Ready leaves. */
  readonly records: readonly StorageRecord<C>[];
  /** Messages to send once the records are durable. */
  readonly messages: readonly Message<C>[];
  /** Committed batches to apply, in execution order. */
  readonly executions: readonly Execution<C>[];
  /** Proposals given up on; their clients should get an error. */
  readonly abandoned: readonly Abandoned<C>[];
  /**
   * Messages that may leave before `records` are durable: the coordinator's
   * own PreAccepts, sent while it writes its own record (Raft thesis §10.2.1;
   * etcd's raft lets a leader append to its log in parallel). Its own vote
   * counts toward a quorum only once that record is durable, that is once
   * this Ready is advanced.
   */
  readonly earlyMessages: readonly Message<C>[];
  /**
   * This replica's own instances decided since the last Ready (fast, slow, or
   * by a recovery), with the decided payload. Once this Ready's records are
   * durable the decision is recoverable (the coordinator's commit record is
   * among them where recovery needs it), so a driver may answer the blind
   * writes of a non-Nop payload here, before execution (the answer rule of
   * the reference implementation: reply at commit).
   */
  readonly decided: readonly Decided<C>[];
}
