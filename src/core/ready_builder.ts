/**
 * Collects what the next {@linkcode Ready} hands out and builds it in the order
 * storage and the driver rely on. One Ready is in flight at a time: built by
 * `take()`, acknowledged by `advance()`.
 *
 * @module
 */

import { type Instance, toRecord } from "./instance.ts";
import type { Abandoned, Decided, Execution, Message, Ready, StorageRecord } from "./types.ts";

/** What the Ready in flight carried that `advance()` must follow up. */
export interface InFlight<C> {
  /** The executions handed out: their executed markers go into the next Ready. */
  readonly executions: readonly Execution<C>[];
  /** The instances whose executed markers it carried: durable once advanced. */
  readonly markers: readonly Instance<C>[];
  /** Whether it carried any record. */
  readonly wroteRecords: boolean;
}

/** The next Ready, as it fills, and the one in flight. */
export class ReadyBuilder<C> {
  /** Instances to write in the next Ready (each once: see `Instance.dirty`). */
  #dirty: Instance<C>[] = [];
  #extraRecords: StorageRecord<C>[] = [];
  #outbox: Message<C>[] = [];
  #early: Message<C>[] = [];
  #executions: Execution<C>[] = [];
  #abandoned: Abandoned<C>[] = [];
  #decided: Decided<C>[] = [];
  /** Instances executed and applied; their executed markers go into the next Ready. */
  #markers: Instance<C>[] = [];
  #inFlight: InFlight<C> | undefined;

  /** Lists `instance`'s record for the next Ready (once, however often it changes). */
  markDirty(instance: Instance<C>): void {
    if (instance.dirty) return;
    instance.dirty = true;
    this.#dirty.push(instance);
  }

  /** Adds a record that is not an instance's: a prune floor or a delete. */
  addRecord(record: StorageRecord<C>): void {
    this.#extraRecords.push(record);
  }

  /** Queues a message to send once the next Ready's records are durable. */
  send(message: Message<C>): void {
    this.#outbox.push(message);
  }

  /**
   * Queues a message that may leave while the next Ready's records are being
   * written: a coordinator's own PreAccept (Raft thesis §10.2.1). Its sender
   * counts its own vote only once those records are durable.
   */
  sendEarly(message: Message<C>): void {
    this.#early.push(message);
  }

  /** Queues an execution for the state machine. */
  execute(execution: Execution<C>): void {
    this.#executions.push(execution);
  }

  /** Queues an abandoned proposal. */
  abandon(abandoned: Abandoned<C>): void {
    this.#abandoned.push(abandoned);
  }

  /** Queues a decision of one of this replica's own instances. */
  decide(decided: Decided<C>): void {
    this.#decided.push(decided);
  }

  /** Notes that `instance` executed and its effects are applied: its marker goes next. */
  markExecuted(instance: Instance<C>): void {
    this.#markers.push(instance);
  }

  /** Whether the next Ready holds anything but executed markers. */
  hasUrgent(): boolean {
    return this.#dirty.length > 0 || this.#extraRecords.length > 0 || this.#outbox.length > 0 ||
      this.#early.length > 0 || this.#executions.length > 0 || this.#abandoned.length > 0;
  }

  /** Whether the next Ready holds anything. */
  hasAny(): boolean {
    return this.hasUrgent() || this.#markers.length > 0;
  }

  /**
   * Builds the next Ready and puts it in flight. `isHeld` tells whether an
   * instance is still the one held in memory (not pruned or replaced).
   */
  take(isHeld: (instance: Instance<C>) => boolean): Ready<C> {
    if (this.#inFlight !== undefined) {
      throw new Error("The previous Ready has not been advanced");
    }
    const markers = this.#markers;
    this.#markers = [];
    // Order matters to storage, which may split a Ready into several atomic
    // commits applied in order: the prune floor before the deletes it implies
    // (an instance at or below a persisted floor is dropped on reload), and
    // executed markers in execution order, so that whatever part of a split
    // commit survives a crash is a prefix of the execution order.
    const records: StorageRecord<C>[] = [];
    const extra = this.#extraRecords;
    for (const record of extra) if (record.kind === "floor") records.push(record);
    // An instance already executed in memory is usually written once, with its
    // executed marker in a later Ready: its commit record is not needed for
    // safety, because a recovery finds the decision in the PreAccept or Accept
    // records a quorum persisted (a fast-path decision through Validate, a
    // slow one as the accepted value).
    // Except a fast-path commit at its own coordinator (found by
    // tests/scenarios/testdata/fast_commit_durability.txt): recovery trusts
    // the coordinator's answer (Figure 5: initCoord in Q => accept a Nop). If
    // it crashed after this Ready's Commits left and before the marker, it
    // would restart "pre-accepted", answer Recover so, and a recovery with it
    // in the quorum could commit a Nop over the committed command.
    const deferCommit = (instance: Instance<C>) =>
      instance.executed && !instance.executedMarked && !instance.commitMustPersist;
    if (markers.length === 0) {
      for (const instance of this.#dirty) {
        if (!instance.dirty || deferCommit(instance)) continue;
        records.push(toRecord(instance));
      }
    } else {
      const markerKeys = new Set<number>();
      for (const instance of markers) markerKeys.add(instance.key);
      for (const instance of this.#dirty) {
        if (!instance.dirty || deferCommit(instance)) continue;
        if (!markerKeys.has(instance.key)) {
          records.push(toRecord(instance));
        }
      }
      for (const instance of markers) {
        if (!isHeld(instance) || !markerKeys.delete(instance.key)) continue;
        instance.executedMarked = true;
        records.push(toRecord(instance));
      }
    }
    for (const record of extra) if (record.kind !== "floor") records.push(record);
    const ready: Ready<C> = {
      records,
      messages: this.#outbox,
      executions: this.#executions,
      abandoned: this.#abandoned,
      earlyMessages: this.#early,
      decided: this.#decided,
    };
    this.#inFlight = { executions: this.#executions, markers, wroteRecords: records.length > 0 };
    for (const instance of this.#dirty) instance.dirty = false;
    this.#dirty = [];
    this.#extraRecords = [];
    this.#outbox = [];
    this.#early = [];
    this.#executions = [];
    this.#abandoned = [];
    this.#decided = [];
    return ready;
  }

  /** Ends the Ready in flight (its records are durable) and returns what it carried. */
  advance(): InFlight<C> {
    const inFlight = this.#inFlight;
    if (inFlight === undefined) throw new Error("There is no Ready to advance");
    this.#inFlight = undefined;
    return inFlight;
  }
}
