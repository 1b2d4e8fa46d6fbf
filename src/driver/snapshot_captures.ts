/**
 * Snapshots taken here for peers that were pruned past: each is a barrier
 * command (a backup command, which conflicts with every write) whose
 * execution here captures the state with exactly the instances applied to it
 * (`applied.ts`). At most {@linkcode MAX_SNAPSHOTS_IN_PROGRESS} at once.
 *
 * The state is read at the end of the barrier's strongly connected component,
 * not at the barrier itself: members of the component ordered after the
 * barrier would otherwise execute at the receiver without the cycle through
 * the barrier (it counts as executed there), in another order than here (the
 * simulator found it: `conflicting commands execute in the same order`). Every
 * replica records its digest at the same point for every barrier, so a second
 * replica can check a snapshot (`digestAfter`).
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

/** Barrier digests kept ({@linkcode SnapshotCaptures.digestAfter}). */
export const BARRIER_DIGESTS_KEPT = 64;

/** The snapshots being taken, by the request id of their barrier. */
export class SnapshotCaptures {
  readonly #captures = new Map<string, SnapshotCapture>();
  /** Barriers of the component being applied, and the captures among them. */
  #inComponent: string[] = [];
  /** The digest at the end of each recent barrier's component, by request id (oldest first). */
  readonly #digests = new Map<string, string>();

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
      // The barrier's own answer comes once it was applied here: after
      // onApplied resolved the snapshot, or while its component is still
      // being applied (onApplied resolves it at the end).
      resolve: () => {
        if (settled) return;
        if (barrier.request !== undefined && this.#inComponent.includes(barrier.request)) return;
        capture.reject(new UnavailableError("The snapshot barrier executed elsewhere"));
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
   * Notes `execution`, just applied here; at the end of a component that held
   * barriers, records the digest (`digest()`) for each, and resolves the
   * snapshots taken here among them with `snapshotAt`, which reads the state
   * at that point.
   */
  onApplied(
    execution: Execution<KvCommand>,
    snapshotAt: (barrier: string) => ReplicaSnapshot<KvCommand>,
    digest: () => string,
  ): void {
    if (execution.command !== NOP) {
      for (const command of execution.command) {
        // A configuration change is one too: the state at the end of its
        // component is the next epoch's first, served to peers behind it.
        if (command.op === "backup" || command.op === "reconf") {
          this.#inComponent.push(command.request);
        }
      }
    }
    if (execution.lastOfComponent === false || this.#inComponent.length === 0) return;
    const barriers = this.#inComponent;
    this.#inComponent = [];
    const state = digest();
    for (const barrier of barriers) {
      this.#digests.set(barrier, state);
      if (this.#digests.size > BARRIER_DIGESTS_KEPT) {
        this.#digests.delete(this.#digests.keys().next().value!);
      }
      const capture = this.#captures.get(barrier);
      if (capture === undefined) continue;
      this.#captures.delete(barrier);
      capture.resolve(snapshotAt(barrier));
    }
  }

  /**
   * The digest of the state at the end of the component of barrier `request`
   * (a backup command), if it executed here recently: equal on every replica,
   * so it checks a snapshot taken at it elsewhere.
   */
  digestAfter(request: string): string | undefined {
    return this.#digests.get(request);
  }

  /** Fails every snapshot being taken (the replica stops or rebuilds). */
  rejectAll(message: string): void {
    const captures = [...this.#captures.values()];
    this.#captures.clear();
    for (const capture of captures) capture.reject(new OutcomeUnknownError(message));
  }
}
