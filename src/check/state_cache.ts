/**
 * The search's memory of explored configurations: a hash set of
 * (linearized-operations bitset, model state) pairs.
 *
 * @module
 */

/**
 * A hash set of (bitset, state) pairs with the bitsets packed into one
 * growable `Uint32Array` and chained buckets in `Int32Array`s, so that an
 * entry costs a few words rather than a typed array object of its own.
 *
 * The cache is bound to the search's live bitset: `add` and `has` take the
 * bitset's current contents, so the hot loop passes no arrays around.
 */
export class StateCache<S> {
  #wordsPerEntry: number;
  #current: Uint32Array;
  #equal: (a: S, b: S) => boolean;
  #words: Uint32Array;
  #hashes: Int32Array;
  #chain: Int32Array;
  #states: S[] = [];
  #buckets: Int32Array;
  #size = 0;

  /**
   * Creates an empty cache of the contents of `current` (the search's
   * bitset words) paired with states that compare with `equal`.
   */
  constructor(current: Uint32Array, equal: (a: S, b: S) => boolean) {
    const wordsPerEntry = current.length;
    this.#wordsPerEntry = wordsPerEntry;
    this.#current = current;
    this.#equal = equal;
    const capacity = 1024;
    this.#words = new Uint32Array(capacity * wordsPerEntry);
    this.#hashes = new Int32Array(capacity);
    this.#chain = new Int32Array(capacity);
    this.#buckets = new Int32Array(capacity).fill(-1);
  }

  /** How many pairs the cache holds. */
  get size(): number {
    return this.#size;
  }

  /**
   * Whether (current bitset, `state`) is present; `hash` must be the one it
   * was added with.
   */
  has(hash: number, state: S): boolean {
    const words = this.#current;
    const width = this.#wordsPerEntry;
    const arena = this.#words;
    for (let entry = this.#buckets[hash & (this.#buckets.length - 1)]; entry !== -1;) {
      if (this.#hashes[entry] === hash) {
        let same = true;
        const base = entry * width;
        for (let i = 0; i < width; i++) {
          if (arena[base + i] !== words[i]) {
            same = false;
            break;
          }
        }
        if (same && this.#equal(this.#states[entry], state)) return true;
      }
      entry = this.#chain[entry];
    }
    return false;
  }

  /**
   * Adds (current bitset, `state`) unless it is already present; returns
   * whether it was added. `hash` must depend only on the bitset and the state.
   */
  add(hash: number, state: S): boolean {
    const words = this.#current;
    const width = this.#wordsPerEntry;
    const arena = this.#words;
    const hashes = this.#hashes;
    const chain = this.#chain;
    for (let entry = this.#buckets[hash & (this.#buckets.length - 1)]; entry !== -1;) {
      if (hashes[entry] === hash) {
        let same = true;
        const base = entry * width;
        for (let i = 0; i < width; i++) {
          if (arena[base + i] !== words[i]) {
            same = false;
            break;
          }
        }
        if (same && this.#equal(this.#states[entry], state)) return false;
      }
      entry = chain[entry];
    }
    if (this.#size === this.#hashes.length) this.#grow();
    const entry = this.#size++;
    this.#words.set(words, entry * width);
    this.#hashes[entry] = hash;
    this.#states[entry] = state;
    const bucket = hash & (this.#buckets.length - 1);
    this.#chain[entry] = this.#buckets[bucket];
    this.#buckets[bucket] = entry;
    return true;
  }

  #grow(): void {
    const capacity = this.#hashes.length * 2;
    const words = new Uint32Array(capacity * this.#wordsPerEntry);
    words.set(this.#words);
    this.#words = words;
    const hashes = new Int32Array(capacity);
    hashes.set(this.#hashes);
    this.#hashes = hashes;
    this.#chain = new Int32Array(capacity);
    // Rehash into twice as many buckets, keeping chains short.
    this.#buckets = new Int32Array(capacity).fill(-1);
    const mask = capacity - 1;
    for (let entry = 0; entry < this.#size; entry++) {
      const bucket = hashes[entry] & mask;
      this.#chain[entry] = this.#buckets[bucket];
      this.#buckets[bucket] = entry;
    }
  }
}
