import assert from "node:assert/strict";
import { type CpuProfile, summarize } from "../../bench/cpu_profile.ts";

/** Root → a → b; samples of a and b at one per second for 10 s, b in the last 4. */
function profile(): CpuProfile {
  const frame = (functionName: string) => ({ functionName, url: "", lineNumber: 0 });
  const samples = [2, 2, 2, 2, 2, 2, 3, 3, 3, 3];
  return {
    nodes: [
      { id: 1, callFrame: frame("(root)"), children: [2] },
      { id: 2, callFrame: frame("a"), children: [3] },
      { id: 3, callFrame: frame("b") },
    ],
    startTime: 0,
    endTime: 10_000_000,
    samples,
    timeDeltas: samples.map(() => 1_000_000),
  };
}

Deno.test("cpu profile: the whole profile, and a window before its end", () => {
  const whole = summarize(profile());
  assert.equal(whole.total, 10);
  assert.equal(whole.self.get("a"), 6);
  assert.equal(whole.inclusive.get("a"), 10);
  // Samples at 1..10 s; skipping the last 2 s and keeping 3 s before: 5, 6, 7, 8 s (ends included).
  const window = summarize(profile(), undefined, { skipEndS: 2, lastS: 3 });
  assert.equal(window.total, 4);
  assert.equal(window.self.get("a"), 2);
  assert.equal(window.self.get("b"), 2);
  const end = summarize(profile(), undefined, { lastS: 2.5 });
  assert.deepEqual([end.total, end.self.get("a")], [3, undefined]);
});

Deno.test("cpu profile: a window needs sample times", () => {
  const { timeDeltas: _, ...untimed } = profile();
  assert.throws(
    () => summarize(untimed, undefined, { lastS: 1 }),
    /needs the profile's sample times/,
  );
});
