/**
 * Randomness for the parts around the core (jittered backoff, load generators,
 * the simulator). The core itself never draws a random number.
 *
 * @module
 */

/** A source of uniformly distributed numbers. */
export interface Random {
  /** A number in `[0, 1)`. */
  next(): number;
  /** An integer in `[0, bound)`; `bound` must be a positive integer. */
  int(bound: number): number;
}

/**
 * A seeded generator (xoshiro128**, seeded through splitmix32): the same seed
 * always gives the same sequence, which is what makes a simulation reproducible.
 */
export class SeededRandom implements Random {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** Creates a generator from an integer seed. */
  constructor(seed: number) {
    let state = seed >>> 0;
    const splitmix = () => {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = splitmix();
    this.#b = splitmix();
    this.#c = splitmix();
    this.#d = splitmix();
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
  }

  /** The next 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.#b, 5), 7), 9) >>> 0;
    const t = this.#b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return result;
  }

  /** A number in `[0, 1)`. */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /** An integer in `[0, bound)`. */
  int(bound: number): number {
    if (!(bound >= 1)) throw new RangeError(`Bound must be at least 1, got ${bound}`);
    return Math.floor(this.next() * bound);
  }

  /** A new generator derived from this one, for an independent stream. */
  fork(): SeededRandom {
    return new SeededRandom(this.nextUint32());
  }
}

/** Randomness from the platform's cryptographic generator, for production use. */
export class SystemRandom implements Random {
  readonly #buffer = new Uint32Array(256);
  #index = 256;

  /** A number in `[0, 1)`. */
  next(): number {
    if (this.#index >= this.#buffer.length) {
      crypto.getRandomValues(this.#buffer);
      this.#index = 0;
    }
    return this.#buffer[this.#index++]! / 4294967296;
  }

  /** An integer in `[0, bound)`. */
  int(bound: number): number {
    if (!(bound >= 1)) throw new RangeError(`Bound must be at least 1, got ${bound}`);
    return Math.floor(this.next() * bound);
  }
}

function rotl(value: number, shift: number): number {
  return (value << shift) | (value >>> (32 - shift));
}
