import assert from "node:assert/strict";
import { fastFloor, leaderLatencies, parseRttMatrix, slowFloor } from "../../src/wan/matrix.ts";

const aws5 = parseRttMatrix(
  JSON.parse(await Deno.readTextFile(new URL("../../bench/wan/aws5.json", import.meta.url))),
);
const aws3 = parseRttMatrix(
  JSON.parse(await Deno.readTextFile(new URL("../../bench/wan/aws3.json", import.meta.url))),
);

Deno.test("floors of the five-region matrix match wan.md", () => {
  // VA, CA, OR, IE, TK: fast path, slow path, best leader-based (leader in CA).
  const expected = [[70.5, 141.0, 119.8], [59.9, 119.8, 59.9], [72.5, 145.0, 81.0], [
    127.3,
    254.6,
    201.1,
  ], [
    111.7,
    223.4,
    171.6,
  ]];
  const leader = leaderLatencies(aws5);
  assert.equal(aws5.regions[leader.leader], "CA");
  expected.forEach(([fast, slow, leaderBased], region) => {
    assert.ok(Math.abs(fastFloor(aws5, region) - fast!) < 1e-9, `${aws5.regions[region]} fast`);
    assert.ok(Math.abs(slowFloor(aws5, region) - slow!) < 1e-9, `${aws5.regions[region]} slow`);
    // wan.md gives IE 201.1 where its rounded matrix gives 141.1 + 59.9 = 201.0:
    // the table was computed from unrounded round trips.
    assert.ok(
      Math.abs(leader.latencies[region]! - leaderBased!) < 0.15,
      `${aws5.regions[region]} leader`,
    );
  });
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  assert.ok(Math.abs(mean([0, 1, 2, 3, 4].map((r) => fastFloor(aws5, r))) - 88.38) < 0.01);
  assert.ok(Math.abs(mean(leader.latencies) - 126.7) < 0.05); // wan.md: 126.7
});

Deno.test("floors of the three-region matrix match wan.md", () => {
  const expected = [[59.9, 119.8, 59.9], [59.9, 119.8, 119.8], [70.5, 141.0, 130.4]];
  const leader = leaderLatencies(aws3);
  assert.equal(aws3.regions[leader.leader], "VA");
  expected.forEach(([fast, slow, leaderBased], region) => {
    assert.ok(Math.abs(fastFloor(aws3, region) - fast!) < 1e-9);
    assert.ok(Math.abs(slowFloor(aws3, region) - slow!) < 1e-9);
    assert.ok(Math.abs(leader.latencies[region]! - leaderBased!) < 1e-9);
  });
});

Deno.test("a dead replica is routed around: floors are recomputed without it", () => {
  const ca = 1;
  // Without CA, VA's two closest live peers are IE (70.5) and OR (72.5).
  assert.equal(fastFloor(aws5, 0, new Set([ca])), 72.5);
  assert.equal(fastFloor(aws5, 2, new Set([ca])), 100.9);
});

Deno.test("malformed matrices are refused with a reason", () => {
  assert.throws(
    () => parseRttMatrix({ regions: ["A", "B"], rtt_ms: [[0, 1], [1, 0]] }),
    /odd number/,
  );
  assert.throws(
    () => parseRttMatrix({ regions: ["A", "B", "C"], rtt_ms: [[0, 1, 2], [1, 0, 3]] }),
    /3 rows/,
  );
  assert.throws(
    () => parseRttMatrix({ regions: ["A", "B", "C"], rtt_ms: [[1, 1, 2], [1, 0, 3], [2, 3, 0]] }),
    /must be 0/,
  );
  assert.throws(
    () => parseRttMatrix({ regions: ["A", "A", "C"], rtt_ms: [[0, 1, 2], [1, 0, 3], [2, 3, 0]] }),
    /repeat/,
  );
});
