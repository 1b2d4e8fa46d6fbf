/**
 * Time for the parts around the core. The core counts ticks; the driver turns
 * a clock into ticks, and tests and the simulator use a manual clock.
 *
 * @module
 */

/** A monotonic clock in milliseconds. */
export interface Clock {
  /** Milliseconds since an arbitrary origin; never decreases. */
  now(): number;
}

/** The process's monotonic clock (`performance.now()`). */
export class SystemClock implements Clock {
  /** Milliseconds since the process started. */
  now(): number {
    return performance.now();
  }
}

/** A clock that moves only when told to: for tests and simulation. */
export class ManualClock implements Clock {
  #now: number;

  /** Creates a clock reading `start` milliseconds. */
  constructor(start = 0) {
    this.#now = start;
  }

  /** The current reading. */
  now(): number {
    return this.#now;
  }

  /**
   * Moves the clock forward by `milliseconds`.
   *
   * @throws {RangeError} if `milliseconds` is negative: the clock is monotonic.
   */
  advance(milliseconds: number): void {
    if (!(milliseconds >= 0)) {
      throw new RangeError(`A clock only moves forward, got ${milliseconds}`);
    }
    this.#now += milliseconds;
  }
}
