import assert from "node:assert/strict";
import {
  checkHistoryText,
  checkOperations,
  detectHistoryFormat,
  formatKvJsonLines,
  HistoryParseError,
  HistoryRecorder,
  type KvEvent,
  kvHistoryFromEvents,
  parseHistory,
  parseJepsenLog,
  parseKvJsonLines,
  parsePorcupineKv,
  REGISTER_KEY,
} from "../../src/check/mod.ts";
import { parseEdnMap } from "../../src/check/edn.ts";

const JEPSEN_SAMPLE = [
  "INFO  jepsen.core - Running test",
  "INFO  jepsen.util - 0\t:invoke\t:write\t1",
  "INFO  jepsen.util - :nemesis\t:info\t:start\tnil",
  "INFO  jepsen.util - 1\t:invoke\t:cas\t[1 2]",
  "INFO  jepsen.util - 0\t:ok\t:write\t1",
  "INFO  jepsen.util - 1   :fail   :cas    [1 2]",
  "INFO  jepsen.util - 2\t:invoke\t:read\tnil",
  "INFO  jepsen.util - 2\t:fail\t:read\t:timed-out",
  "INFO  jepsen.util - 3\t:invoke\t:write\t4",
  "INFO  jepsen.util - 3\t:info\t:write\t:timed-out",
  "INFO  jepsen.util - 4\t:invoke\t:read\tnil",
  "INFO  jepsen.util - 4\t:ok\t:read\t4",
  "INFO  jepsen.util - 5\t:invoke\t:cas\t[4 0]",
  "",
].join("\n");

const README_SAMPLE = `
# The example of the format's documentation.
{"process":0,"type":"invoke","f":"put","key":"a","value":"v1","time":10}
{"process":0,"type":"ok","f":"put","key":"a","value":"v1","time":20}
{"process":1,"type":"invoke","f":"get","key":"a","time":21}
{"process":1,"type":"ok","f":"get","key":"a","value":"v1","time":30}
{"process":2,"type":"invoke","f":"cas","key":"a","from":"v1","to":"v2","time":31}
{"process":2,"type":"fail","f":"cas","key":"a","from":"v1","to":"v2","time":40}
{"process":3,"type":"invoke","f":"delete","key":"a","time":41}
{"process":3,"type":"info","f":"delete","key":"a","time":50}
`;

function assertParseError(
  fn: () => unknown,
  expected: { readonly line: number; readonly pattern: RegExp },
): void {
  const { line, pattern } = expected;
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof HistoryParseError, `expected a HistoryParseError, got ${error}`);
    assert.equal(error.line, line);
    assert.match(error.message, pattern);
    assert.match(error.message, /^Invalid history at \S+ line \d+: /);
    return true;
  });
}

Deno.test("format detection", () => {
  assert.equal(detectHistoryFormat(JEPSEN_SAMPLE), "jepsen-log");
  assert.equal(
    detectHistoryFormat('{:process 0, :type :invoke, :f :get, :key "1", :value nil}'),
    "porcupine-kv",
  );
  assert.equal(detectHistoryFormat(README_SAMPLE), "json-lines");
  assert.equal(detectHistoryFormat(""), "json-lines");
  assert.equal(detectHistoryFormat("# nothing yet\n\n"), "json-lines");
  assert.equal(detectHistoryFormat("hello\nworld\n"), undefined);
  assertParseError(() => parseHistory("\nhello\n", { source: "x.txt" }), {
    line: 2,
    pattern: /unknown format/,
  });
});

Deno.test("jepsen log: events, noise, fail, info and unfinished operations", () => {
  const parsed = parseJepsenLog(JEPSEN_SAMPLE, { source: "sample.log" });
  assert.equal(parsed.format, "jepsen-log");
  assert.equal(parsed.eventCount, 11);
  const ops = parsed.history.operations;
  assert.deepEqual(ops.map((op) => op.input), [
    { f: "write", value: "1" },
    { f: "cas", from: "1", to: "2" },
    { f: "write", value: "4" },
    { f: "read" },
    { f: "cas", from: "4", to: "0" },
  ]);
  assert.ok(ops.every((op) => op.key === REGISTER_KEY));
  assert.deepEqual(ops.map((op) => op.output), [
    {},
    { ok: false },
    undefined,
    { value: "4" },
    undefined,
  ]);
  assert.deepEqual(ops.map((op) => op.completedAt === Infinity), [false, false, true, false, true]);
  assert.deepEqual(ops.map((op) => [op.invokeLine, op.completeLine]), [
    [2, 5],
    [4, 6],
    [9, 10],
    [11, 12],
    [13, undefined],
  ]);
  assert.equal(checkOperations(parsed.history.model, ops).verdict, "linearizable");
});

Deno.test("jepsen log: malformed client events are errors naming the line", () => {
  assertParseError(() => parseJepsenLog("INFO  jepsen.util - 0\t:ok\t:read\t1\n"), {
    line: 1,
    pattern: /no operation outstanding/,
  });
  assertParseError(() =>
    parseJepsenLog(
      "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:invoke\t:read\tnil",
    ), { line: 2, pattern: /outstanding/ });
  assertParseError(() => parseJepsenLog("x\nINFO  jepsen.util - 0\t:invoke\t:add\t1"), {
    line: 2,
    pattern: /unknown operation :add/,
  });
  assertParseError(() => parseJepsenLog("INFO  jepsen.util - 0\t:invoke\t:write\tabc"), {
    line: 1,
    pattern: /cannot read value/,
  });
  assertParseError(() =>
    parseJepsenLog(
      "INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:write\t1",
    ), { line: 2, pattern: /does not match/ });
});

Deno.test("porcupine kv: get, put, append, fail and info", () => {
  const text = [
    '{:process 0, :type :invoke, :f :put, :key "3", :value "x 0 0 y"}',
    '{:process 1, :type :invoke, :f :get, :key "3", :value nil}',
    '{:process 0, :type :ok, :f :put, :key "3", :value "x 0 0 y"}',
    '{:process 1, :type :ok, :f :get, :key "3", :value "x 0 0 y"}',
    '{:process 2, :type :invoke, :f :append, :key "4", :value "z"}',
    '{:process 2, :type :info, :f :append, :key "4", :value "z"}',
    '{:process 3, :type :invoke, :f :put, :key "4", :value "q"}',
    '{:process 3, :type :fail, :f :put, :key "4", :value "q"}',
    '{:process 4, :type :invoke, :f :get, :key "4", :value nil}',
    '{:process 4, :type :ok, :f :get, :key "4", :value nil}',
  ].join("\n");
  const parsed = parsePorcupineKv(text, { source: "kv.txt" });
  assert.equal(parsed.eventCount, 10);
  const ops = parsed.history.operations;
  assert.deepEqual(ops.map((op) => [op.key, op.input.f]), [["3", "put"], ["3", "get"], [
    "4",
    "append",
  ], ["4", "get"]]);
  assert.deepEqual(ops[1].output, { value: "x 0 0 y" });
  assert.equal(ops[2].output, undefined);
  assert.deepEqual(ops[3].output, { value: "" }, "nil reads as the empty string");
  assert.equal(checkOperations(parsed.history.model, ops).verdict, "linearizable");
  assertParseError(() => parsePorcupineKv('{:process 0, :type :invoke, :f :cas, :key "1"}'), {
    line: 1,
    pattern: /:f must be/,
  });
  assertParseError(() => parsePorcupineKv("{:process 0, :type :invoke"), {
    line: 1,
    pattern: /not an EDN map/,
  });
});

Deno.test("EDN maps: strings with escapes, keywords, numbers, vectors, nil", () => {
  const map = parseEdnMap('{:a "q\\"x\\\\", :b :kw, :c -12, :d [1 "2" nil], :e nil, :f true}');
  assert.deepEqual([...map.entries()], [
    ["a", 'q"x\\'],
    ["b", { keyword: "kw" }],
    ["c", -12],
    ["d", [1, "2", null]],
    ["e", null],
    ["f", true],
  ]);
  assert.throws(() => parseEdnMap('{:a "open'), SyntaxError);
  assert.throws(() => parseEdnMap("{:a 1} extra"), SyntaxError);
  assert.throws(() => parseEdnMap('{"a" 1}'), SyntaxError);
});

Deno.test("JSON lines: the documented example parses, and its failed cas refutes it", () => {
  const parsed = parseKvJsonLines(README_SAMPLE, { source: "example.jsonl" });
  assert.equal(parsed.eventCount, 8);
  const ops = parsed.operations;
  assert.deepEqual(ops.map((op) => op.input), [
    { f: "put", value: "v1" },
    { f: "get" },
    { f: "cas", from: "v1", to: "v2" },
    { f: "delete" },
  ]);
  assert.deepEqual(ops.map((op) => op.output), [{}, { value: "v1" }, { ok: false }, undefined]);
  // The cas ran after the read of v1 and before the delete was invoked, so
  // its comparison with v1 cannot have failed.
  const report = checkHistoryText(README_SAMPLE, { source: "example.jsonl" });
  assert.equal(report.result.verdict, "not-linearizable");
  assert.match(
    report.result.keys[0].explanation ?? "",
    /cas "v1" -> "v2" \(failed\) \(process 2, lines 7-8\)/,
  );
  const fixed = README_SAMPLE.replace(
    '"from":"v1","to":"v2","time":31',
    '"from":"v0","to":"v2","time":31',
  )
    .replace('"from":"v1","to":"v2","time":40', '"from":"v0","to":"v2","time":40');
  assert.equal(checkHistoryText(fixed).result.verdict, "linearizable");
});

Deno.test("JSON lines: invalid lines are errors naming the line", () => {
  assertParseError(() => parseKvJsonLines("\n{nope"), { line: 2, pattern: /not JSON/ });
  assertParseError(() => parseKvJsonLines("[1]"), { line: 1, pattern: /expected a JSON object/ });
  assertParseError(() => parseKvJsonLines('{"process":0,"type":"begin","f":"get","key":"a"}'), {
    line: 1,
    pattern: /"type"/,
  });
  assertParseError(() => parseKvJsonLines('{"process":0,"type":"invoke","f":"inc","key":"a"}'), {
    line: 1,
    pattern: /"f"/,
  });
  assertParseError(() => parseKvJsonLines('{"process":0,"type":"invoke","f":"put","key":"a"}'), {
    line: 1,
    pattern: /put invocation/,
  });
  assertParseError(
    () => parseKvJsonLines('{"process":0,"type":"invoke","f":"cas","key":"a","to":"b"}'),
    { line: 1, pattern: /"from"/ },
  );
  assertParseError(() =>
    parseKvJsonLines(
      '{"process":0,"type":"invoke","f":"get","key":"a"}\n{"process":0,"type":"ok","f":"get","key":"a"}',
    ), { line: 2, pattern: /get completion needs "value"/ });
  assertParseError(() =>
    parseKvJsonLines(
      '{"process":0,"type":"invoke","f":"get","key":"a"}\n{"process":0,"type":"ok","f":"get","key":"b","value":null}',
    ), { line: 2, pattern: /does not match/ });
  assertParseError(() => parseKvJsonLines('{"process":0,"type":"ok","f":"delete","key":"a"}'), {
    line: 1,
    pattern: /no operation/,
  });
});

Deno.test("HistoryRecorder: JSON lines round trip and timestamps", () => {
  let clock = 100;
  const recorder = new HistoryRecorder({ now: () => clock++ });
  recorder.invoke(0, { f: "put", key: "a", value: "v1" });
  recorder.invoke("c1", { f: "cas", key: "a", from: null, to: "v0" });
  recorder.ok(0);
  recorder.fail("c1");
  recorder.invoke(0, { f: "get", key: "a" });
  recorder.ok(0, { value: "v1" });
  recorder.invoke(0, { f: "delete", key: "a" });
  assert.equal(recorder.outstandingCount, 1);
  const expected: KvEvent[] = [
    { process: 0, type: "invoke", f: "put", key: "a", value: "v1", time: 100 },
    { process: "c1", type: "invoke", f: "cas", key: "a", from: null, to: "v0", time: 101 },
    { process: 0, type: "ok", f: "put", key: "a", value: "v1", time: 102 },
    { process: "c1", type: "fail", f: "cas", key: "a", from: null, to: "v0", time: 103 },
    { process: 0, type: "invoke", f: "get", key: "a", time: 104 },
    { process: 0, type: "ok", f: "get", key: "a", value: "v1", time: 105 },
    { process: 0, type: "invoke", f: "delete", key: "a", time: 106 },
  ];
  assert.deepEqual(recorder.events, expected);
  const text = recorder.toJsonLines();
  assert.equal(text, formatKvJsonLines(expected));
  assert.equal(text.split("\n").length, 8);
  const reparsed = parseKvJsonLines(text);
  assert.deepEqual(reparsed.operations, recorder.toHistory().operations);
  assert.deepEqual(reparsed.operations, kvHistoryFromEvents(expected).operations);
  assert.equal(
    reparsed.operations.at(-1)?.completedAt,
    Infinity,
    "the unfinished delete is indeterminate",
  );
  assert.equal(recorder.check().verdict, "linearizable");
  assert.equal(checkHistoryText(text).result.verdict, "linearizable");
});

Deno.test("HistoryRecorder: protocol misuse throws", () => {
  const recorder = new HistoryRecorder();
  assert.throws(() => recorder.ok(0), /Process 0 has no operation outstanding/);
  recorder.invoke(0, { f: "get", key: "a" });
  assert.throws(
    () => recorder.invoke(0, { f: "get", key: "a" }),
    /already has an operation outstanding/,
  );
  assert.throws(() => recorder.ok(0), /must record the value read/);
  recorder.info(0);
  assert.equal(recorder.outstandingCount, 0);
  assert.throws(
    () => kvHistoryFromEvents([{ process: 0, type: "ok", f: "put", key: "a" }], { source: "mem" }),
    /mem line 1/,
  );
});
