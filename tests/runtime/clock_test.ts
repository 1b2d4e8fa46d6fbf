/**
 * The `Clock` contract (`src/runtime/clock.ts`), run against both
 * implementations, then what each promises besides.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Clock,
  ManualClock,
  MAX_CLOCK_RATE,
  MIN_CLOCK_RATE,
  ScaledClock,
  SystemClock,
} from "../../src/runtime/clock.ts";

/** One clock under test, and a way to let time pass for it. */
interface ClockSubject {
  readonly clock: Clock;
  /** Lets at least `milliseconds` pass, as the clock counts them. */
  elapse(milliseconds: number): Promise<void>;
  /** Slack allowed when comparing a reading with the time let pass. */
  readonly slackMs: number;
}

interface ClockFactory {
  readonly name: string;
  create(): ClockSubject;
  /** Runs for the fast-check property (each run may wait for real time). */
  readonly propertyRuns: number;
}

function runClockContract(factory: ClockFactory): void {
  Deno.test(`${factory.name}: a reading is a finite number`, () => {
    const { clock } = factory.create();
    for (let i = 0; i < 100; i++) assert.ok(Number.isFinite(clock.now()));
  });

  Deno.test(`${factory.name}: readings in a tight loop never decrease`, () => {
    const { clock } = factory.create();
    let previous = clock.now();
    for (let i = 0; i < 100_000; i++) {
      const reading = clock.now();
      assert.ok(reading >= previous, `${reading} after ${previous}`);
      previous = reading;
    }
  });

  Deno.test(`${factory.name}: readings never decrease and count the time let pass`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 4 })), {
          minLength: 1,
          maxLength: 8,
        }),
        async (steps) => {
          const subject = factory.create();
          const { clock } = subject;
          let previous = clock.now();
          for (const step of steps) {
            await subject.elapse(step);
            const reading = clock.now();
            assert.ok(reading >= previous, `${reading} after ${previous}`);
            assert.ok(
              reading - previous >= step - subject.slackMs,
              `${step} ms passed but the reading moved ${reading - previous} ms`,
            );
            previous = reading;
          }
        },
      ),
      { numRuns: factory.propertyRuns },
    );
  });

  Deno.test(`${factory.name}: readings across tasks never decrease`, async () => {
    const { clock } = factory.create();
    const readings: number[] = [];
    await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      readings.push(clock.now());
      await (i % 2 === 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, 0)));
      readings.push(clock.now());
    }));
    for (let i = 1; i < readings.length; i++) {
      assert.ok(readings[i]! >= readings[i - 1]!, `reading ${i} went back`);
    }
  });
}

/**
 * Waits until `milliseconds` have passed by the wall clock, an independent
 * reference for the monotonic clock under test.
 */
async function wallClockWait(milliseconds: number): Promise<void> {
  const until = Date.now() + milliseconds;
  while (Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, until - Date.now())));
  }
}

runClockContract({
  name: "SystemClock",
  propertyRuns: 10,
  create: () => ({
    clock: new SystemClock(),
    elapse: wallClockWait,
    // Date.now() counts whole milliseconds: a wait may end up to 1 ms short.
    slackMs: 1,
  }),
});

/** A fresh ManualClock, and time passing for it by `advance` (which fires due timers). */
function manualSubject(): { clock: ManualClock; elapse(milliseconds: number): Promise<void> } {
  const clock = new ManualClock();
  return {
    clock,
    elapse(milliseconds) {
      clock.advance(milliseconds);
      return Promise.resolve();
    },
  };
}

runClockContract({
  name: "ManualClock",
  propertyRuns: 200,
  create: () => ({ ...manualSubject(), slackMs: 0 }),
});

// --- SystemClock ------------------------------------------------------------

Deno.test("SystemClock reads performance.now()", () => {
  const clock = new SystemClock();
  for (let i = 0; i < 1000; i++) {
    const before = performance.now();
    const reading = clock.now();
    const after = performance.now();
    assert.ok(before <= reading && reading <= after, `${reading} not in [${before}, ${after}]`);
  }
});

// --- ManualClock ------------------------------------------------------------

Deno.test("ManualClock starts where told, 0 by default", () => {
  assert.equal(new ManualClock().now(), 0);
  assert.equal(new ManualClock(1234.5).now(), 1234.5);
  assert.equal(new ManualClock(-10).now(), -10);
});

Deno.test("ManualClock moves only when told", async () => {
  const clock = new ManualClock(7);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(clock.now(), 7);
  clock.advance(0);
  assert.equal(clock.now(), 7);
});

Deno.test("ManualClock advances exactly as told", () => {
  fc.assert(
    fc.property(
      fc.double({ min: -1e9, max: 1e9, noNaN: true }),
      fc.array(fc.double({ min: 0, max: 1e6, noNaN: true })),
      (start, steps) => {
        const clock = new ManualClock(start);
        let expected = start;
        for (const step of steps) {
          clock.advance(step);
          expected += step;
          assert.equal(clock.now(), expected);
        }
      },
    ),
  );
  // Whole milliseconds add up exactly.
  const clock = new ManualClock();
  for (let i = 0; i < 1000; i++) clock.advance(3);
  assert.equal(clock.now(), 3000);
});

Deno.test("ManualClock refuses to go back, and stays put", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.double({ max: -Number.MIN_VALUE, noNaN: true }),
        fc.constant(Number.NaN),
        fc.constant(Number.NEGATIVE_INFINITY),
      ),
      (step) => {
        const clock = new ManualClock(100);
        assert.throws(() => clock.advance(step), RangeError);
        assert.equal(clock.now(), 100);
      },
    ),
  );
});

// --- Timers -------------------------------------------------------------------

/** One clock with timers, and a way to let time pass for it. */
interface TimerSubject {
  readonly clock: Clock;
  elapse(milliseconds: number): Promise<void>;
}

function runTimerContract(name: string, create: () => TimerSubject): void {
  Deno.test(`${name}: a timer fires once, not before its delay, never inside setTimer`, async () => {
    const { clock, elapse } = create();
    const started = clock.now();
    const fired: number[] = [];
    clock.setTimer(5, () => fired.push(clock.now()));
    assert.deepEqual(fired, []);
    await elapse(2);
    assert.deepEqual(fired, []);
    await elapse(20);
    assert.equal(fired.length, 1);
    assert.ok(fired[0]! - started >= 5 - 1, `fired after ${fired[0]! - started} ms`);
  });

  Deno.test(`${name}: a cancelled timer never fires; cancelling twice is harmless`, async () => {
    const { clock, elapse } = create();
    let fired = 0;
    const timer = clock.setTimer(1, () => fired++);
    timer.cancel();
    timer.cancel();
    await elapse(10);
    assert.equal(fired, 0);
  });

  Deno.test(`${name}: timers due together fire in the order set; soon runs before them`, async () => {
    const { clock, elapse } = create();
    const order: string[] = [];
    clock.setTimer(3, () => order.push("a"));
    clock.setTimer(3, () => order.push("b"));
    clock.setTimer(1, () => order.push("first"));
    clock.soon(() => order.push("soon"));
    assert.deepEqual(order, []);
    await elapse(15);
    assert.deepEqual(order, ["soon", "first", "a", "b"]);
  });
}

runTimerContract("SystemClock", () => ({ clock: new SystemClock(), elapse: wallClockWait }));
runTimerContract("ManualClock", manualSubject);

Deno.test("ManualClock fires a timer at its own due time, even set by another timer", () => {
  const clock = new ManualClock(100);
  const seen: number[] = [];
  clock.setTimer(10, () => {
    seen.push(clock.now());
    clock.setTimer(5, () => seen.push(clock.now()));
  });
  clock.advance(50);
  assert.deepEqual(seen, [110, 115]);
  assert.equal(clock.now(), 150);
  assert.equal(clock.pendingTimers, 0);
});

// --- ScaledClock --------------------------------------------------------------

/** A ScaledClock at `rate` over a ManualClock; time passes by advancing the base. */
function scaledSubject(rate: number): TimerSubject & { base: ManualClock } {
  const base = new ManualClock(1000);
  const clock = new ScaledClock(base, rate);
  return {
    base,
    clock,
    elapse(milliseconds) {
      base.advance(milliseconds / rate);
      return Promise.resolve();
    },
  };
}

for (const rate of [0.5, 0.995, 2]) {
  runClockContract({
    name: `ScaledClock at ${rate}`,
    propertyRuns: 100,
    // Division and multiplication by the rate may lose a few ulps.
    create: () => ({ ...scaledSubject(rate), slackMs: 1e-9 }),
  });
  runTimerContract(`ScaledClock at ${rate}`, () => scaledSubject(rate));
}

Deno.test("ScaledClock starts at its base's reading and moves at its rate, timers too", () => {
  const { base, clock } = scaledSubject(0.5);
  assert.equal(clock.now(), 1000);
  base.advance(400);
  assert.equal(clock.now(), 1200);
  // A 100 ms timer of a half-speed clock fires after 200 ms of the base's.
  let firedAt: number | undefined;
  clock.setTimer(100, () => firedAt = base.now());
  base.advance(199);
  assert.equal(firedAt, undefined);
  base.advance(1);
  assert.equal(firedAt, 1600);
  assert.equal(clock.now(), 1300);
});

Deno.test("ScaledClock refuses a rate outside its bounds", () => {
  for (const rate of [0, -1, MIN_CLOCK_RATE / 2, MAX_CLOCK_RATE * 2, Number.NaN]) {
    assert.throws(() => new ScaledClock(new ManualClock(), rate), RangeError, String(rate));
  }
  assert.equal(new ScaledClock(new ManualClock(), MIN_CLOCK_RATE).rate, MIN_CLOCK_RATE);
  assert.equal(new ScaledClock(new ManualClock(), MAX_CLOCK_RATE).rate, MAX_CLOCK_RATE);
});
