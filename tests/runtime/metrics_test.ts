import assert from "node:assert/strict";
import { Histogram, RecentWindow } from "../../src/runtime/metrics.ts";

Deno.test("Histogram renders cumulative buckets, sum and count", () => {
  const histogram = new Histogram([1, 10]);
  for (const value of [0.5, 5, 5, 50]) histogram.observe(value);
  assert.deepEqual(histogram.render("x"), [
    'x_bucket{le="1"} 1',
    'x_bucket{le="10"} 3',
    'x_bucket{le="+Inf"} 4',
    "x_sum 60.5",
    "x_count 4",
  ]);
});

Deno.test("RecentWindow gives nearest-rank quantiles of the last observations only", () => {
  const window = new RecentWindow(4);
  assert.deepEqual(window.quantiles([0.5]), [null]);
  for (const value of [100, 1, 2, 3, 4]) window.observe(value);
  // 100 fell out of the ring: the window holds 1..4.
  assert.equal(window.size, 4);
  assert.deepEqual(window.quantiles([0, 0.5, 0.99, 1]), [1, 2, 4, 4]);
  assert.throws(() => new RecentWindow(0), RangeError);
});
