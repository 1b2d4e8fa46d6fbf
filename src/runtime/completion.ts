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

/**
 * A promise-like value that calls back synchronously once settled, for the
 * simulator's edges that deliver a value on virtual time (a snapshot fetched
 * from a peer). `then` chaining is not supported.
 */
export class Eventual<T> implements PromiseLike<T> {
  #settled: { readonly ok: true; readonly value: T } | {
    readonly ok: false;
    readonly error: unknown;
  } | undefined;
  #callbacks: (() => void)[] = [];

  /**
   * Calls `onFulfilled` or `onRejected` once settled (at once if already).
   * The returned value is inert: callers must not chain on it.
   */
  then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): PromiseLike<A | B> {
    const call = () => {
      const settled = this.#settled!;
      if (settled.ok) onFulfilled?.(settled.value);
      else onRejected?.(settled.error);
    };
    if (this.#settled !== undefined) call();
    else this.#callbacks.push(call);
    return new Eventual<A | B>();
  }

  /** Settles with `value` (the first settlement wins). */
  resolve(value: T): void {
    this.#settle({ ok: true, value });
  }

  /** Settles with `error` (the first settlement wins). */
  reject(error: unknown): void {
    this.#settle({ ok: false, error });
  }

  #settle(
    settled: { readonly ok: true; readonly value: T } | {
      readonly ok: false;
      readonly error: unknown;
    },
  ): void {
    if (this.#settled !== undefined) return;
    this.#settled = settled;
    const callbacks = this.#callbacks;
    this.#callbacks = [];
    for (const callback of callbacks) callback();
  }
}
