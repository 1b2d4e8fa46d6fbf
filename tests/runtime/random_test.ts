/**
 * The `Random` contract (`src/runtime/random.ts`), run against both
 * implementations, then what `SeededRandom` promises besides.
 *
 * The statistical checks draw enough values that a correct generator fails
 * them with a probability below one in a million.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type Random, SeededRandom, SystemRandom } from "../../src/runtime/random.ts";

interface RandomFactory {
  readonly name: string;
  /** A fresh generator; `seed` is a hint a non-seeded one ignores. */
  create(seed: number): Random;
}

const seedArb = fc.integer({ min: 0, max: 0xffff_ffff });

/** Bounds `int` accepts: small and large positive integers, the extremes included. */
const boundArb = fc.oneof(
  fc.integer({ min: 1, max: 100 }),
  fc.integer({ min: 1, max: 0x7fff_ffff }),
  fc.constantFrom(1, 2, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER),
);

function runRandomContract(factory: RandomFactory): void {
  const test = (name: string, fn: () => void) => Deno.test(`${factory.name}: ${name}`, fn);

  test("next() is in [0, 1)", () => {
    fc.assert(
      fc.property(seedArb, fc.integer({ min: 1, max: 2000 }), (seed, count) => {
        const random = factory.create(seed);
        for (let i = 0; i < count; i++) {
          const value = random.next();
          assert.ok(typeof value === "number" && value >= 0 && value < 1, `${value}`);
        }
      }),
      { numRuns: 50 },
    );
  });

  test("int(bound) is an integer in [0, bound)", () => {
    fc.assert(
      fc.property(seedArb, boundArb, (seed, bound) => {
        const random = factory.create(seed);
        for (let i = 0; i < 100; i++) {
          const value = random.int(bound);
          assert.ok(Number.isInteger(value), `${value} is not an integer`);
          assert.ok(value >= 0 && value < bound, `${value} not in [0, ${bound})`);
        }
      }),
    );
  });

  test("int(1) is always 0", () => {
    const random = factory.create(1);
    for (let i = 0; i < 1000; i++) assert.equal(random.int(1), 0);
  });

  test("int(bound) covers every value from 0 to bound - 1", () => {
    fc.assert(
      fc.property(seedArb, fc.integer({ min: 1, max: 32 }), (seed, bound) => {
        const random = factory.create(seed);
        const seen = new Set<number>();
        // Missing a value after 100 * bound draws: probability about bound * e^-100.
        for (let i = 0; i < 100 * bound && seen.size < bound; i++) seen.add(random.int(bound));
        assert.equal(seen.size, bound, `saw only ${[...seen].sort((a, b) => a - b)}`);
      }),
      { numRuns: 30 },
    );
  });

  test("int(bound) reaches both ends of large ranges", () => {
    const random = factory.create(2);
    const bound = 1_000_000;
    let low = bound;
    let high = -1;
    for (let i = 0; i < 20_000; i++) {
      const value = random.int(bound);
      low = Math.min(low, value);
      high = Math.max(high, value);
    }
    // 20,000 uniform draws all miss the lowest (or highest) 0.1 % with probability e^-20.
    assert.ok(low < bound / 1000, `lowest ${low}`);
    assert.ok(high >= bound - bound / 1000, `highest ${high}`);
  });

  test("int refuses a bound below 1", () => {
    const random = factory.create(3);
    for (const bound of [0, -1, 0.5, -Infinity, Number.NaN]) {
      assert.throws(() => random.int(bound), RangeError, `bound ${bound}`);
    }
  });

  test("next() is uniform: mean, deciles and successive pairs", () => {
    const random = factory.create(4);
    const n = 20_000;
    const buckets = new Array<number>(10).fill(0);
    const pairs = new Array<number>(16).fill(0);
    let sum = 0;
    let previous = random.next();
    for (let i = 0; i < n; i++) {
      const value = random.next();
      sum += value;
      buckets[Math.floor(value * 10)]!++;
      pairs[Math.floor(previous * 4) * 4 + Math.floor(value * 4)]!++;
      previous = value;
    }
    // Standard error of the mean: 0.2887 / sqrt(n) = 0.002; 0.012 is six of them.
    assert.ok(Math.abs(sum / n - 0.5) < 0.012, `mean ${sum / n}`);
    // Chi-squared, 9 and 15 degrees of freedom: p < 1e-6 at 45 and 60.
    assert.ok(chiSquared(buckets) < 45, `deciles ${buckets}`);
    assert.ok(chiSquared(pairs) < 60, `pairs ${pairs}`);
  });

  test("int(bound) is uniform", () => {
    const random = factory.create(5);
    const counts = new Array<number>(7).fill(0);
    for (let i = 0; i < 14_000; i++) counts[random.int(7)]!++;
    // 6 degrees of freedom: p < 1e-6 at 38.
    assert.ok(chiSquared(counts) < 38, `counts ${counts}`);
  });
}

/** Pearson's statistic for `counts` against equal expected counts. */
function chiSquared(counts: readonly number[]): number {
  const expected = counts.reduce((a, b) => a + b, 0) / counts.length;
  return counts.reduce((sum, count) => sum + (count - expected) ** 2 / expected, 0);
}

runRandomContract({ name: "SeededRandom", create: (seed) => new SeededRandom(seed) });
runRandomContract({ name: "SystemRandom", create: () => new SystemRandom() });

// --- SeededRandom -----------------------------------------------------------

/** The first `count` values of `random`, by `draw`. */
function draws<R>(random: R, count: number, draw: (random: R) => number): number[] {
  return Array.from({ length: count }, () => draw(random));
}

Deno.test("SeededRandom: the same seed repeats its sequence", () => {
  fc.assert(
    fc.property(seedArb, fc.array(fc.integer({ min: 1, max: 1000 }), { maxLength: 50 }), (
      seed,
      bounds,
    ) => {
      const a = new SeededRandom(seed);
      const b = new SeededRandom(seed);
      // Whatever mix of calls: the same calls give the same values.
      for (const bound of bounds) {
        assert.equal(a.next(), b.next());
        assert.equal(a.int(bound), b.int(bound));
        assert.equal(a.nextUint32(), b.nextUint32());
      }
    }),
  );
});

Deno.test("SeededRandom: different seeds give different sequences", () => {
  fc.assert(
    fc.property(seedArb, seedArb, (x, y) => {
      fc.pre(x !== y);
      const first = draws(new SeededRandom(x), 4, (r) => r.nextUint32());
      const second = draws(new SeededRandom(y), 4, (r) => r.nextUint32());
      assert.notDeepStrictEqual(first, second);
    }),
  );
  // Neighbouring seeds, the common case, share no leading value.
  const leading = new Set(
    Array.from({ length: 10_000 }, (_, seed) => new SeededRandom(seed).nextUint32()),
  );
  assert.equal(leading.size, 10_000);
});

Deno.test("SeededRandom: nextUint32 is a 32-bit unsigned integer and next() is it over 2^32", () => {
  fc.assert(
    fc.property(seedArb, (seed) => {
      const a = new SeededRandom(seed);
      const b = new SeededRandom(seed);
      for (let i = 0; i < 100; i++) {
        const word = a.nextUint32();
        assert.ok(Number.isInteger(word) && word >= 0 && word <= 0xffff_ffff, `${word}`);
        assert.equal(b.next(), word / 2 ** 32);
      }
    }),
    { numRuns: 50 },
  );
});

Deno.test("SeededRandom: the sequence of a seed is stable across versions", () => {
  // Recorded simulations and reported failing seeds replay only if these never change.
  assert.deepStrictEqual(draws(new SeededRandom(0), 4, (r) => r.nextUint32()), SEED_0);
  assert.deepStrictEqual(draws(new SeededRandom(42), 4, (r) => r.nextUint32()), SEED_42);
});

Deno.test("SeededRandom: a fork is reproducible and independent of its parent", () => {
  fc.assert(
    fc.property(seedArb, (seed) => {
      const parent = new SeededRandom(seed);
      const fork = parent.fork();
      const again = new SeededRandom(seed).fork();
      const forked = draws(fork, 8, (r) => r.nextUint32());
      assert.deepStrictEqual(draws(again, 8, (r) => r.nextUint32()), forked);
      assert.notDeepStrictEqual(draws(parent, 8, (r) => r.nextUint32()), forked);
    }),
  );
});

// First four words of seeds 0 and 42, computed independently (a Python
// transcription of splitmix32 seeding and the reference xoshiro128**).
const SEED_0 = [3809008728, 1133695204, 53579671, 2891528803];
const SEED_42 = [2837322924, 544945897, 479756282, 3500138142];
