import assert from "node:assert/strict";
import { Completion } from "../../src/runtime/completion.ts";

Deno.test("a completion calls back synchronously, in order, once", () => {
  const completion = new Completion();
  const seen: string[] = [];
  completion.then(() => seen.push("a"));
  completion.then(() => seen.push("b"));
  assert.equal(seen.join(","), "");
  completion.complete();
  assert.equal(seen.join(","), "a,b");
  completion.complete();
  assert.equal(seen.join(","), "a,b");
  completion.then(() => seen.push("late"));
  assert.equal(seen.join(","), "a,b,late");
});

Deno.test("an awaited completion resumes the awaiting function", async () => {
  let resumed = false;
  const waiting = (async () => {
    await Completion.done();
    resumed = true;
  })();
  await waiting;
  assert.ok(resumed);
});
