/**
 * The clients a replica owes an answer: one entry per command it proposed,
 * keyed by request id, answered once (by commit, execution, abandonment,
 * timeout or shutdown), bounded by the driver's admission limit.
 *
 * @module
 */

import type { KvResult } from "../kv/state_machine.ts";

/** Where a command's outcome goes: called at most once, one of the two. */
export interface Answer {
  /** The command's result. */
  resolve(result: KvResult): void;
  /** Why there is no result. */
  reject(error: Error): void;
}

interface Waiter {
  readonly answer: Answer;
  readonly submittedMs: number;
  /** When the request is answered with a timeout if nothing else answered it. */
  readonly deadlineMs: number;
}

/** Requests waiting for their outcome, oldest first. */
export class Waiters {
  readonly #waiting = new Map<string, Waiter>();

  /** Requests waiting. */
  get size(): number {
    return this.#waiting.size;
  }

  /**
   * Adds a request. Every request has the same timeout, so insertion order is
   * deadline order, which {@linkcode Waiters.expire} relies on.
   */
  add(request: string, answer: Answer, submittedMs: number, deadlineMs: number): void {
    this.#waiting.set(request, { answer, submittedMs, deadlineMs });
  }

  /**
   * Answers `request` with `result`, if it is still waiting; returns when it
   * was submitted (for latency metrics), or `undefined`.
   */
  resolve(request: string, result: KvResult): number | undefined {
    const waiter = this.#take(request);
    waiter?.answer.resolve(result);
    return waiter?.submittedMs;
  }

  /** Answers `request` with `error`, if it is still waiting. */
  reject(request: string, error: Error): void {
    this.#take(request)?.answer.reject(error);
  }

  /**
   * Answers every request past its deadline with `error()`, oldest first,
   * stopping at the first one still in time; returns how many.
   */
  expire(nowMs: number, error: () => Error): number {
    let expired = 0;
    for (const [request, waiter] of this.#waiting) {
      if (waiter.deadlineMs > nowMs) break;
      this.#waiting.delete(request);
      expired++;
      waiter.answer.reject(error());
    }
    return expired;
  }

  /** Answers every request with `error()`, but those in `keep`. */
  rejectAll(error: () => Error, keep?: ReadonlySet<string>): void {
    const all = [...this.#waiting.entries()].filter(([request]) => !keep?.has(request));
    for (const [request] of all) this.#waiting.delete(request);
    for (const [, waiter] of all) waiter.answer.reject(error());
  }

  #take(request: string): Waiter | undefined {
    const waiter = this.#waiting.get(request);
    if (waiter !== undefined) this.#waiting.delete(request);
    return waiter;
  }
}
