/**
 * Atomic writes for a client that retries blindly. Deno's KV client sends
 * the identical request again after any 5xx or lost connection, forever
 * (denokv `remote/lib.rs`, `call_raw`): after a command was proposed, a 5xx
 * would apply a `sum` twice, or report a check-guarded write that committed
 * as failed. So a write is answered 5xx only when nothing was proposed
 * ({@linkcode UnavailableError}); when the driver gives up waiting on one it
 * proposed ({@linkcode OutcomeUnknownError}), the answer is held until its
 * result shows up among the instances this replica applies, up to a bound,
 * and then, still unknown, given as a 4xx (an error to the caller, never a
 * retry).
 *
 * @module
 */

import { KvError, OutcomeUnknownError, UnavailableError } from "../errors.ts";
import type { AppliedChange } from "../driver/driver.ts";
import type { Answer } from "../driver/waiters.ts";
import type { KvCommandInput } from "../kv/commands.ts";
import type { KvResult } from "../kv/state_machine.ts";

/** How an atomic write ended. */
export type WriteOutcome =
  /** Executed: its result (success or failed check or invalid mutation). */
  | { readonly kind: "result"; readonly result: KvResult }
  /** Nothing was proposed, or it never executed: safe to retry (a 503). */
  | { readonly kind: "unavailable"; readonly error: UnavailableError }
  /** Proposed, and still unknown after the hold: a 4xx. */
  | { readonly kind: "unknown"; readonly error: OutcomeUnknownError }
  /** Refused for another reason (its status is a 4xx). */
  | { readonly kind: "refused"; readonly error: KvError };

/** What an {@linkcode OutcomeHold} needs of its replica. */
export interface HoldNode {
  /** `ReplicaDriver.submitWith`: returns the request id. */
  submitWith(input: KvCommandInput, answer: Answer): string;
  /** `ReplicaDriver.onApplied`. */
  onApplied(listener: (change: AppliedChange) => void): () => void;
}

/** Settings of an {@linkcode OutcomeHold}. */
export interface OutcomeHoldOptions {
  /** How long to wait for a result after the driver gave up (default {@linkcode DEFAULT_HOLD_MS}). */
  readonly holdMs?: number;
  /** Most writes held at once (default {@linkcode DEFAULT_MAX_HELD}); beyond, unknown at once. */
  readonly maxHeld?: number;
}

/** Default wait for a result after the driver's own timeout. */
export const DEFAULT_HOLD_MS = 30_000;
/** Default most writes held at once. */
export const DEFAULT_MAX_HELD = 4096;

/** Submits commands, holding those whose outcome the driver could not tell in time. */
export class OutcomeHold {
  readonly #node: HoldNode;
  readonly #holdMs: number;
  readonly #maxHeld: number;
  /** Held writes by request id: what to call with their result. */
  readonly #held = new Map<string, (result: KvResult) => void>();
  #unsubscribe: (() => void) | undefined;

  /** Holds writes submitted to `node`. */
  constructor(node: HoldNode, options: OutcomeHoldOptions = {}) {
    this.#node = node;
    this.#holdMs = options.holdMs ?? DEFAULT_HOLD_MS;
    this.#maxHeld = options.maxHeld ?? DEFAULT_MAX_HELD;
  }

  /** Writes held now. */
  get held(): number {
    return this.#held.size;
  }

  /** Submits `input` and resolves with its outcome; never rejects. */
  submit(input: KvCommandInput): Promise<WriteOutcome> {
    return new Promise((resolve) => {
      let request: string | undefined = undefined;
      request = this.#node.submitWith(input, {
        resolve: (result) => resolve({ kind: "result", result }),
        reject: (error) => {
          if (error instanceof UnavailableError) {
            resolve({ kind: "unavailable", error });
          } else if (error instanceof OutcomeUnknownError && request !== undefined) {
            this.#hold(request, error, resolve);
          } else if (error instanceof OutcomeUnknownError) {
            resolve({ kind: "unknown", error });
          } else if (error instanceof KvError && error.status < 500) {
            resolve({ kind: "refused", error });
          } else {
            // Not a refusal the driver makes before proposing: treat as unknown.
            resolve({ kind: "unknown", error: new OutcomeUnknownError(String(error)) });
          }
        },
      });
    });
  }

  #hold(
    request: string,
    error: OutcomeUnknownError,
    resolve: (outcome: WriteOutcome) => void,
  ): void {
    if (this.#held.size >= this.#maxHeld) {
      resolve({ kind: "unknown", error });
      return;
    }
    const timer = setTimeout(() => {
      this.#release(request);
      resolve({ kind: "unknown", error });
    }, this.#holdMs);
    this.#held.set(request, (result) => {
      clearTimeout(timer);
      resolve({ kind: "result", result });
    });
    this.#unsubscribe ??= this.#node.onApplied((change) => this.#applied(change));
  }

  #applied(change: AppliedChange): void {
    if (change.kind !== "instance") return;
    for (const { request, result } of change.applied.results) {
      const answer = this.#held.get(request);
      if (answer === undefined) continue;
      this.#release(request);
      answer(result);
    }
  }

  #release(request: string): void {
    this.#held.delete(request);
    if (this.#held.size === 0) {
      this.#unsubscribe?.();
      this.#unsubscribe = undefined;
    }
  }
}
