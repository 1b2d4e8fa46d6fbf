/**
 * A fixed-size set of small non-negative integers over a `Uint32Array`.
 *
 * @module
 */

/** A fixed-size bitset; the search uses one bit per operation of a key. */
export class Bitset {
  /** The backing words; bit `i` lives in `words[i >>> 5]`. */
  readonly words: Uint32Array;
  /** The number of bits this set can hold. */
  readonly size: number;

  /** Creates an empty bitset holding bits `0 .. size - 1`. */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < 0) {
      throw new RangeError(`Bitset size must be a non-negative integer, got ${size}`);
    }
    this.size = size;
    this.words = new Uint32Array(Math.max(1, Math.ceil(size / 32)));
  }

  /** Adds `index` to the set. */
  set(index: number): void {
    this.words[index >>> 5] |= 1 << (index & 31);
  }

  /** Removes `index` from the set. */
  clear(index: number): void {
    this.words[index >>> 5] &= ~(1 << (index & 31));
  }

  /** Whether `index` is in the set. */
  has(index: number): boolean {
    return (this.words[index >>> 5] & (1 << (index & 31))) !== 0;
  }

  /** The number of members. */
  count(): number {
    let total = 0;
    for (const word of this.words) {
      // Population count by the classic SWAR reduction.
      let v = word - ((word >>> 1) & 0x55555555);
      v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
      total += Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
    }
    return total;
  }

  /** Whether both sets hold the same members. */
  equals(other: Bitset): boolean {
    return wordsEqual(this.words, other.words);
  }

  /** A copy that shares no storage with this set. */
  clone(): Bitset {
    const copy = new Bitset(this.size);
    copy.words.set(this.words);
    return copy;
  }
}

/** Whether two word arrays of the same length hold the same bits. */
export function wordsEqual(a: Uint32Array, b: Uint32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return false;
  }
  return true;
}
