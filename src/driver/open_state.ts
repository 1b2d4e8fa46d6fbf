/**
 * A replica's state in memory, built from what its storage holds: the core
 * (its instances, for the configuration of its epoch), the key-value state
 * and the set of instances applied to it. Built when the driver opens, and
 * again when storage's state is replaced (a snapshot installed, an epoch
 * started).
 *
 * @module
 */

import type { Configuration } from "../core/configuration.ts";
import { Replica } from "../core/replica.ts";
import { type KvCommand, kvConflicts } from "../kv/commands.ts";
import { KvStateMachine } from "../kv/state_machine.ts";
import type { LoadedState } from "../storage/types.ts";
import { AppliedSet } from "./applied.ts";
import { coreMembership, versionTagFor } from "./epoch.ts";
import { DEFAULT_MAX_HELD_COMMANDS, NODE_TIMING, type ReplicaDriverOptions } from "./options.ts";

/** The parts of a replica's state rebuilt from storage. */
export interface OpenedState {
  /** The core, holding the loaded instances. */
  readonly core: Replica<KvCommand>;
  /** The executed key-value state. */
  readonly kv: KvStateMachine;
  /** The instances whose effects `kv` holds. */
  readonly applied: AppliedSet;
}

/** Settings of {@linkcode openState}. */
export interface OpenStateOptions {
  /** The configuration of the epoch `loaded` belongs to. */
  readonly configuration: Configuration;
  /**
   * The state replaces one this process ran (an install or an epoch start):
   * nothing of it was in flight (the core resumes no proposal of its own).
   */
  readonly rebuilt?: boolean;
}

/** Builds replica `options.id`'s core and key-value state from `loaded`. */
export function openState(
  options: ReplicaDriverOptions,
  loaded: LoadedState<KvCommand>,
  settings: OpenStateOptions,
): OpenedState {
  const { configuration, rebuilt = false } = settings;
  const core = new Replica<KvCommand>(
    {
      id: options.id,
      ...coreMembership(configuration, options.id),
      conflicts: kvConflicts,
      timing: { ...NODE_TIMING, ...options.timing },
      retentionCommands: options.maxHeldCommands ?? DEFAULT_MAX_HELD_COMMANDS,
      ...(configuration.leases === undefined ? {} : { leases: configuration.leases }),
      // Every new core is a grantor that forgot its promises (a process
      // start, an installed snapshot): it names every holder for a lease
      // length (src/core/lease.ts, the restart rule).
      leaseRestartedAt: options.clock.now(),
      // Request numbers of its own: a grant that answered an earlier
      // core's request (delayed across the restart) matches none of them.
      // Drawn only where leases run, so other runs draw as they did.
      ...(configuration.leases === undefined || configuration.leases.rules.length === 0
        ? {}
        : { leaseRequestBase: options.random.int(2 ** 32) * 2 ** 20 }),
      ...(options.unsafeLeases === undefined ? {} : { unsafeLeases: options.unsafeLeases }),
      // Fresh read numbers for every core: an answer to a read of the core
      // before (a restart, with answers still in flight) must not count for
      // one of this core (src/core/quorum_read.ts).
      quorumReadSeqBase: 1 + options.random.int(2 ** 30) * 2 ** 22,
      ...(options.unsafeQuorumReads === undefined
        ? {}
        : { unsafeQuorumReads: options.unsafeQuorumReads }),
    },
    {
      records: loaded.records,
      pruneFloor: loaded.pruneFloor,
      ...(rebuilt ? { nothingInFlight: true } : {}),
    },
  );
  const versionTag = versionTagFor(options.versionTag, configuration.epoch);
  const kv = new KvStateMachine(loaded.entries, versionTag === undefined ? {} : { versionTag });
  const applied = new AppliedSet(core.replicas, loaded.pruneFloor, loaded.records);
  return { core, kv, applied };
}
