/**
 * The suite's README lists every test the suite skips, and only those: the
 * skip list (`remote_db.ts`) and its documentation cannot drift apart.
 */

import assert from "node:assert/strict";
import { SKIPPED_TESTS } from "./remote_db.ts";

/** The test names in the first column of the README's skip table. */
function namesInReadme(readme: string): string[] {
  const section = readme.split("## Tests skipped, and why")[1]?.split("\n## ")[0];
  assert.ok(section !== undefined, "README.md has a section 'Tests skipped, and why'");
  return section.split("\n").flatMap((line) => {
    const match = /^\|\s*`([^`]+)`\s*\|/.exec(line);
    return match === null ? [] : [match[1]!];
  });
}

Deno.test("the suite's README names every skipped test, and only those", async () => {
  const readme = await Deno.readTextFile(new URL("./README.md", import.meta.url));
  const listed = namesInReadme(readme);
  const skipped = [...SKIPPED_TESTS.keys()];
  assert.deepEqual([...listed].sort(), [...skipped].sort());
  assert.equal(new Set(listed).size, listed.length, "no test listed twice");
});

Deno.test("the README's table is read: a name missing from it is seen", () => {
  const readme = "## Tests skipped, and why\n\n| Test | Why |\n| --- | --- |\n| `a` | x |\n";
  assert.deepEqual(namesInReadme(readme), ["a"]);
  assert.deepEqual(namesInReadme(readme + "\n## Next\n| `b` | y |\n"), ["a"]);
});
