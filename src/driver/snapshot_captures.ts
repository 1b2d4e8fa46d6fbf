/**
 * Snapshots taken here for peers that were pruned past: each is a barrier
 * command (a backup command, which conflicts with every write) whose
 * execution here captures the state with exactly the instances applied to it
 * (`applied.ts`). At most {@linkcode MAX_SNAPSHOTS_IN_PROGRESS} at once.
 *
 * @module
 */

import { NOP } from "../core/types.ts";
import type { Execution } from "../core/types.ts";
import { OutcomeUnknownError, UnavailableError } from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import { MAX_SNAPSHOTS_IN_PROGRESS, type SnapshotCapture } from "./options.ts";
import type { Answer } from "./waiters.ts";

/** The snapshots being taken, by the request id of their barrier. */
export class SnapshotCaptures {
  readonly #captures = new Map<string, SnapshotCapture>();

  /** How many are being taken. */
  get size(): number {
    return this.#captures.size;
  }

  /**
   * Takes a snapshot: `submit` proposes the barrier with the answer it is
   * given and returns its request id (it may answer a refusal before it
   * returns); `answer` gets the snapshot once {@linkcode onApplied} sees the
   * barrier applied, or the barrier's refusal or failure.
   */
  take(answer: SnapshotCapture, submit: (barrier: Answer) => string): void {
    if (this.#captures.size >= MAX_SNAPSHOTS_IN_PROGRESS) {
      answer.reject(
        new UnavailableError(
          `${MAX_SNAPSHOTS_IN_PROGRESS} snapshots are being taken here already`,
          { retryAfterSeconds: 1 },
        ),
      );
      return;
    }
    let settled = false;
    const capture: SnapshotCapture = {
      resolve: (snapshot) => {
        settled = true;
        answer.resolve(snapshot);
      },
      reject: (error) => {
        settled = true;
        answer.reject(error);
      },
    };
    // The request id is known once `submit` returns: a refusal answers before.
    const barrier: { request?: string } = {};
    const forget = () => {
      if (barrier.request !== undefined) this.#captures.delete(barrier.request);
    };
    barrier.request = submit({
      // The barrier's own answer comes after onApplied resolved the snapshot.
      resolve: () => {
        if (!settled) {
          capture.reject(new UnavailableError("The snapshot barrier executed elsewhere"));
        }
        forget();
      },
      reject: (error) => {
        forget();
        if (!settled) capture.reject(error);
      },
    });
    if (!settled) this.#captures.set(barrier.request, capture);
  }

  /**
   * Resolves the snapshots whose barrier is in `execution`, just applied here:
   * `snapshotAt` reads the state at that point.
   */
  onApplied(
    execution: Execution<KvCommand>,
    snapshotAt: (barrier: string) => ReplicaSnapshot<KvCommand>,
  ): void {
    if (this.#captures.size === 0 || execution.command === NOP) return;
    for (const command of execution.command) {
      if (command.op !== "backup") continue;
      const capture = this.#captures.get(command.request);
      if (capture === undefined) continue;
      this.#captures.delete(command.request);
      capture.resolve(snapshotAt(command.request));
    }
  }

  /** Fails every snapshot being taken (the replica stops or rebuilds). */
  rejectAll(message: string): void {
    const captures = [...this.#captures.values()];
    this.#captures.clear();
    for (const capture of captures) capture.reject(new OutcomeUnknownError(message));
  }
}
