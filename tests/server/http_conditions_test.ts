import assert from "node:assert/strict";
import { MAX_CONDITION_VERSIONS } from "../../src/kv/commands.ts";
import { notModified, parseEntityTags, writeCondition } from "../../src/server/http_conditions.ts";

const strong = (opaque: string) => ({ weak: false, opaque });
const weak = (opaque: string) => ({ weak: true, opaque });
const tags = (count: number) => Array.from({ length: count }, (_, i) => `"${i}.0.0"`).join(", ");

Deno.test("parseEntityTags reads * and lists of entity tags (RFC 9110 §8.8.3, §5.6.1)", () => {
  const cases: [string, ReturnType<typeof parseEntityTags>][] = [
    ["*", { any: true }],
    [" * ", { any: true }],
    ['"1.0.0"', { any: false, tags: [strong("1.0.0")] }],
    ['W/"1.0.0"', { any: false, tags: [weak("1.0.0")] }],
    ['"a", W/"b" ,"c"', { any: false, tags: [strong("a"), weak("b"), strong("c")] }],
    // Empty list elements are allowed; a comma inside the quotes is the tag's.
    [' ,"a",, "b", ', { any: false, tags: [strong("a"), strong("b")] }],
    ['"a,b"', { any: false, tags: [strong("a,b")] }],
    ['""', { any: false, tags: [strong("")] }],
    // obs-text: a byte past ASCII, as Headers holds it (one character per byte).
    ['"\xe9"', { any: false, tags: [strong("\xe9")] }],
    // A bare version, alone, as curl users write it.
    ["3.0.1", { any: false, tags: [strong("3.0.1")] }],
    [tags(MAX_CONDITION_VERSIONS), {
      any: false,
      tags: Array.from({ length: MAX_CONDITION_VERSIONS }, (_, i) => strong(`${i}.0.0`)),
    }],
  ];
  for (const [value, expected] of cases) {
    assert.deepEqual(parseEntityTags("If-Match", value), expected, value);
  }
});

Deno.test("parseEntityTags refuses what is not * or a list of entity tags, saying where", () => {
  const malformed = ['"a" "b"', '"a", b', '*, "a"', "W/*", "W/1.0.0", '"a b"', '"a', "a b"];
  for (const value of malformed) {
    const parsed = parseEntityTags("If-Match", value);
    assert.ok("problem" in parsed, value);
    assert.match(parsed.problem, /^If-Match must be \* or a list of entity tags .*; cannot read /);
  }
  assert.deepEqual(parseEntityTags("If-None-Match", ""), {
    problem: "If-None-Match names no entity tag",
  });
  assert.deepEqual(parseEntityTags("If-Match", " , ,"), {
    problem: "If-Match names no entity tag",
  });
  assert.deepEqual(parseEntityTags("If-Match", tags(MAX_CONDITION_VERSIONS + 1)), {
    problem: `If-Match lists more than ${MAX_CONDITION_VERSIONS} entity tags`,
  });
});

Deno.test("writeCondition: If-Match compares strongly, takes lists; If-None-Match takes * only", () => {
  const ok: [Parameters<typeof writeCondition>[0], unknown][] = [
    [{}, undefined],
    [{ ifNoneMatch: "*" }, null],
    [{ ifMatch: '"1.0.0"' }, "1.0.0"],
    [{ ifMatch: "1.0.0" }, "1.0.0"],
    [{ cas: "1.0.0" }, "1.0.0"],
    [{ ifMatch: '"1.0.0", "2.0.0"' }, ["1.0.0", "2.0.0"]],
    // Repeated tags name one version: one version is a string.
    [{ ifMatch: '"1.0.0", "1.0.0"' }, "1.0.0"],
    [{ ifMatch: '"1.0.0", "2.0.0", "1.0.0"' }, ["1.0.0", "2.0.0"]],
  ];
  for (const [input, condition] of ok) {
    assert.deepEqual(writeCondition(input), { condition }, JSON.stringify(input));
  }
  const refused: [Parameters<typeof writeCondition>[0], RegExp][] = [
    [{ ifMatch: 'W/"1.0.0"' }, /^If-Match compares strongly \(RFC 9110 §13\.1\.1\): the weak tag/],
    [{ ifMatch: '"2.0.0", W/"1.0.0"' }, /weak tag W\/"1\.0\.0" can never match.*without W\//],
    [{ ifMatch: "*" }, /If-Match: \* \(any current version\) is not supported/],
    [{ ifMatch: '""' }, /If-Match needs versions of 1 to 64 characters/],
    [{ ifMatch: `"${"x".repeat(65)}"` }, /If-Match needs versions of 1 to 64 characters/],
    [{ ifMatch: '"a" "b"' }, /If-Match must be \* or a list/],
    [{ ifNoneMatch: '"1.0.0"' }, /If-None-Match on a write supports only \*/],
    [{ ifNoneMatch: "*, *" }, /If-None-Match on a write supports only \*/],
    [{ ifMatch: '"1.0.0"', ifNoneMatch: "*" }, /^Use only one of If-Match, If-None-Match$/],
    [{ ifMatch: '"1.0.0"', cas: "1.0.0" }, /^Use only one of If-Match, \?cas=$/],
    [{ ifNoneMatch: "*", cas: "1.0.0" }, /^Use only one of If-None-Match, \?cas=$/],
    [{ cas: "" }, /cas needs one version/],
    [{ cas: "*" }, /cas needs one version/],
    [{ cas: "x".repeat(65) }, /cas needs one version/],
  ];
  for (const [input, reason] of refused) {
    const result = writeCondition(input);
    assert.ok("problem" in result, JSON.stringify(input));
    assert.match(result.problem, reason);
  }
});

Deno.test("notModified compares If-None-Match weakly and only for a key that exists", () => {
  const cases: [string | undefined, string | undefined, boolean][] = [
    [undefined, "1.0.0", false],
    ['"1.0.0"', "1.0.0", true],
    ['W/"1.0.0"', "1.0.0", true],
    ['"0.0.1", W/"1.0.0"', "1.0.0", true],
    ["1.0.0", "1.0.0", true],
    ['"2.0.0"', "1.0.0", false],
    ["*", "1.0.0", true],
    ["*", undefined, false],
    ['"1.0.0"', undefined, false],
    // A missing key ignores the field, even a malformed one (RFC 9110 §13.2.1).
    ['"a" "b"', undefined, false],
  ];
  for (const [ifNoneMatch, current, expected] of cases) {
    assert.deepEqual(
      notModified(ifNoneMatch, current),
      { notModified: expected },
      `${ifNoneMatch} against ${current}`,
    );
  }
  const malformed = notModified('"a" "b"', "1.0.0");
  assert.ok("problem" in malformed);
  assert.match(malformed.problem, /^If-None-Match must be \* or a list/);
});
