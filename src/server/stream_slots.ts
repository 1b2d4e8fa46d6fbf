/**
 * A bound on the streams a route serves at once (backups, snapshots): each
 * holds the state it read until it is sent, so a replica serves only a few.
 *
 * @module
 */

/** At most `max` slots taken at once; each taken slot is given back once. */
export class StreamSlots {
  readonly #max: number;
  #taken = 0;

  /** Slots for `max` streams. */
  constructor(max: number) {
    this.#max = max;
  }

  /**
   * Takes a slot: returns the function that gives it back (calling it again
   * does nothing), or `undefined` if all `max` are taken.
   */
  take(): (() => void) | undefined {
    if (this.#taken >= this.#max) return undefined;
    this.#taken++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#taken--;
    };
  }
}
