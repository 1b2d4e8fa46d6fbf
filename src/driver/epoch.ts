/**
 * Epochs in the driver: what the core is built from in an epoch, the state a
 * replica starts the next epoch with when it executes a configuration change
 * (the RECONF barrier, `ReconfCommand`), and which peer batches it takes.
 *
 * An epoch is a fresh instance space (membership design, as changed in this
 * project's issue 15 note): the change writes every key and fences
 * (`ConflictModel.fences`, `Replica.fenced`), so every committed non-Nop
 * instance of the old epoch executes before it, on every replica alike. The
 * state at the end of its strongly connected component is then identical
 * everywhere and final for the old epoch: each replica installs it as a
 * snapshot of the new epoch, with an empty instance space (a zero prefix and
 * no records), and rebuilds its core for the new configuration.
 *
 * @module
 */

import {
  bootstrapConfiguration,
  type Configuration,
  type Member,
  memberIds,
  positionCount,
  voterIds,
} from "../core/configuration.ts";
import type { KvCommand, ReconfCommand } from "../kv/commands.ts";
import type { KvStateMachine } from "../kv/state_machine.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import type { PeerBatch } from "../transport/codec.ts";
import type { PeerMembership } from "../transport/types.ts";

/** What the core of member `self` is built from in `config`'s epoch. */
export interface CoreMembership {
  /** Positions: the highest member id plus one (a member's position is its id). */
  readonly replicas: number;
  /** Positions that vote. */
  readonly voters: readonly number[];
  /** Positions that are members (voters and learners). */
  readonly members: readonly number[];
}

/**
 * The core's membership for member `self` in `config`. A replica that is no
 * longer a member (removed) keeps a position of its own, as a learner that
 * nobody sends anything, so its core can be built; its driver serves nothing.
 */
export function coreMembership(config: Configuration, self: number): CoreMembership {
  const members = memberIds(config);
  if (!members.includes(self)) members.push(self);
  return {
    replicas: Math.max(positionCount(config), self + 1),
    voters: voterIds(config),
    members: members.sort((a, b) => a - b),
  };
}

/** Member `id` of `config`, if it is one. */
export function memberOf(config: Configuration, id: number): Member | undefined {
  return config.members.find((member) => member.id === id);
}

/**
 * The transport's view of `config` for a process of `incarnation`
 * ({@linkcode PeerMembership}). The incarnation is the process's own, never
 * the configuration's: an old process that learns it was replaced must not
 * speak as its replacement.
 */
export function peerMembership(config: Configuration, incarnation: number): PeerMembership {
  return {
    epoch: config.epoch,
    incarnation,
    peers: config.members.map((member) => ({ id: member.id, url: member.url })),
  };
}

/**
 * The version tag of `epoch` (`KvStateMachineOptions.versionTag`): instance
 * numbers start again in each epoch, so from epoch 2 on versions carry it
 * (`…e2`), and none equals a version an earlier epoch gave (a client may hold
 * one for a compare-and-set). Epoch 1 keeps `base` (a restored cluster's tag,
 * or none).
 */
export function versionTagFor(base: string | undefined, epoch: number): string | undefined {
  if (epoch === 1) return base;
  return `${base ?? ""}e${epoch}`;
}

/** The configuration change among `command`'s commands that starts the epoch after `epoch`, if any. */
export function reconfToNext(
  command: readonly KvCommand[],
  epoch: number,
): ReconfCommand | undefined {
  for (const candidate of command) {
    if (candidate.op === "reconf" && candidate.configuration.epoch === epoch + 1) return candidate;
  }
  return undefined;
}

/**
 * The snapshot a replica installs, from its own state, to start the epoch of
 * `reconf`: the state after the change's component, an empty instance space
 * (a zero prefix over the new epoch's positions, no records) and the new
 * configuration. Every replica that executes the change builds the same one.
 */
export function nextEpochSnapshot(
  reconf: ReconfCommand,
  state: KvStateMachine,
): ReplicaSnapshot<KvCommand> {
  return {
    barrier: reconf.request,
    executedPrefix: new Array<number>(positionCount(reconf.configuration)).fill(0),
    records: [],
    entries: Array.from(state.entries()),
    digest: state.digest,
    configuration: reconf.configuration,
  };
}

/** What a replica in `config`'s epoch does with a peer's batch. */
export type BatchVerdict =
  /** Same epoch, a current member's current incarnation: step its messages. */
  | { readonly take: true }
  /**
   * Not taken; `ahead` when the sender is in a later epoch (it has a
   * snapshot of it to give), `behind` when in an earlier one (it missed a
   * change: the receiver tells it its epoch, `BatchRefusal`).
   */
  | {
    readonly take: false;
    readonly ahead: boolean;
    readonly behind: boolean;
    readonly reason: string;
  };

/** Whether to take `batch` in `config`'s epoch ({@linkcode BatchVerdict}). */
export function judgeBatch(config: Configuration, batch: PeerBatch<unknown>): BatchVerdict {
  const epoch = batch.epoch ?? 1;
  if (epoch > config.epoch) {
    return {
      take: false,
      ahead: true,
      behind: false,
      reason: `it is in epoch ${epoch}, ahead of ${config.epoch}`,
    };
  }
  if (epoch < config.epoch) {
    return {
      take: false,
      ahead: false,
      behind: true,
      reason: `it is in epoch ${epoch}, behind ${config.epoch}`,
    };
  }
  const member = memberOf(config, batch.from);
  if (member === undefined) {
    return {
      take: false,
      ahead: false,
      behind: false,
      reason: `replica ${batch.from} is not a member in epoch ${epoch}`,
    };
  }
  const incarnation = batch.incarnation ?? 1;
  if (incarnation !== member.incarnation) {
    return {
      take: false,
      ahead: false,
      behind: false,
      reason: `replica ${batch.from} sent as incarnation ${incarnation}, ` +
        `but epoch ${epoch} names incarnation ${member.incarnation} (a replaced replica still running?)`,
    };
  }
  return { take: true };
}

/**
 * The epoch-1 configuration of a cluster of `replicas` replicas known only by
 * number (the simulator, in-process tests): voters `0..replicas-1`, at
 * placeholder URLs nothing dials.
 */
export function defaultConfiguration(replicas: number): Configuration {
  return bootstrapConfiguration(
    Array.from({ length: replicas }, (_, id) => `http://replica-${id}.invalid`),
  );
}
