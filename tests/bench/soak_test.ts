import assert from "node:assert/strict";
import { judgeSoak, nextDelayMs, type SoakSample } from "../../bench/soak/verdict.ts";
import { parseSoakArgs } from "../../bench/soak.ts";
import { UsageError } from "../../src/cli/args.ts";

function samples(rss: number[], files: number[]): SoakSample[] {
  return rss.map((value, i) => ({
    t_s: i * 30,
    ops_per_s: 1000,
    rss_mib: [value, 100],
    file_mib: [files[i]!, 10],
    held_commands: [0, 0],
  }));
}

Deno.test("soak: the think time converges on the target rate", () => {
  // 256 connections at 100 ms per answer make 2560 ops/s without think time.
  const answerMs = 100;
  const rate = (delayMs: number) => 256 / ((answerMs + delayMs) / 1000);
  let delayMs = nextDelayMs({
    connections: 256,
    targetOpsPerS: 2000,
    delayMs: 0,
    measuredOpsPerS: 0,
  });
  for (let segment = 0; segment < 3; segment++) {
    delayMs = nextDelayMs({
      connections: 256,
      targetOpsPerS: 2000,
      delayMs,
      measuredOpsPerS: rate(delayMs),
    });
  }
  assert.ok(Math.abs(rate(delayMs) - 2000) < 1, `rate ${rate(delayMs)}`);
  // A target above what the system does gets no think time at all.
  assert.equal(
    nextDelayMs({ connections: 256, targetOpsPerS: 5000, delayMs: 0, measuredOpsPerS: 2560 }),
    0,
  );
});

Deno.test("soak: flat memory and bounded files pass; growth in either fails", () => {
  const options = { warmupS: 60, rssTolerance: 0.2, fileTolerance: 0.2 };
  // Warm-up growth (the first two samples) does not count.
  const steady = judgeSoak(
    samples([50, 80, 100, 110, 105, 115, 108, 112], [1, 5, 9, 10, 9, 10, 10, 9]),
    options,
  );
  assert.equal(steady.rss_flat, true);
  assert.equal(steady.file_bounded, true);
  assert.equal(steady.samples_after_warmup, 6);
  const leaking = judgeSoak(
    samples([50, 80, 100, 110, 120, 130, 140, 150], [1, 5, 9, 10, 9, 10, 10, 9]),
    options,
  );
  assert.equal(leaking.rss_flat, false);
  assert.ok(Math.abs(leaking.rss_spread[0]! - 0.5) < 1e-9);
  const growing = judgeSoak(
    samples([100, 100, 100, 100, 100, 100, 100, 100], [1, 5, 9, 12, 15, 18, 21, 24]),
    options,
  );
  assert.equal(growing.rss_flat, true);
  assert.equal(growing.file_bounded, false);
  // Too few samples after warm-up decide nothing.
  assert.equal(judgeSoak(samples([100, 100, 100], [1, 1, 1]), options).rss_flat, false);
});

Deno.test("soak: the command line is checked", () => {
  const options = parseSoakArgs(["--duration", "60", "--fraction", "0.5"]);
  assert.equal(options.durationS, 60);
  assert.equal(options.fraction, 0.5);
  assert.equal(options.warmupS, 12);
  assert.throws(() => parseSoakArgs(["--fraction", "2"]), UsageError);
  assert.throws(() => parseSoakArgs(["--replicas", "4"]), UsageError);
  assert.throws(() => parseSoakArgs(["--bogus", "1"]), UsageError);
});
