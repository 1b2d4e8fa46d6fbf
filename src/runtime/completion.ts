/**
 * A promise-like completion that calls back synchronously once completed, for
 * edges that finish on a simulated or benchmark time line: the driver's
 * `then` runs on the caller's stack at the moment the edge completes, with no
 * microtask in between, so a run stays deterministic and needs no event loop.
 *
 * @module
 */

/** A completion of work with no value; `then` chaining is not supported. */
export class Completion implements PromiseLike<void> {
  #done = false;
  #callbacks: (() => void)[] = [];

  /** A completion that is already complete. */
  static done(): Completion {
    const completion = new Completion();
    completion.complete();
    return completion;
  }

  /**
   * Calls `onFulfilled` when complete (at once if already). Never rejects.
   * The returned value is inert: callers must not chain on it.
   */
  then<A = void, B = never>(
    onFulfilled?: ((value: void) => A | PromiseLike<A>) | null,
    _onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): PromiseLike<A | B> {
    if (onFulfilled) {
      if (this.#done) onFulfilled();
      else this.#callbacks.push(() => void onFulfilled());
    }
    return new Completion() as unknown as PromiseLike<A | B>;
  }

  /** Completes, calling every waiting callback in the order they were added. */
  complete(): void {
    if (this.#done) return;
    this.#done = true;
    const callbacks = this.#callbacks;
    this.#callbacks = [];
    for (const callback of callbacks) callback();
  }
}
