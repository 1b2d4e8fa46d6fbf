import assert from "node:assert/strict";
import { checkHistoryFile, type Verdict } from "../../src/check/mod.ts";

/** Public histories with known verdicts (sources in its README). */
const TESTDATA = new URL("../testdata/linearizability/", import.meta.url);

async function readVerdicts(): Promise<Map<string, Verdict>> {
  const text = await Deno.readTextFile(new URL("jepsen-etcd/verdicts.tsv", TESTDATA));
  const verdicts = new Map<string, Verdict>();
  for (const line of text.split("\n").slice(1)) {
    if (line.trim() === "") continue;
    const [file, linearizable] = line.trim().split("\t");
    assert.ok(linearizable === "true" || linearizable === "false", `bad verdicts line ${line}`);
    verdicts.set(file, linearizable === "true" ? "linearizable" : "not-linearizable");
  }
  return verdicts;
}

Deno.test("every jepsen-etcd log gets the verdict in verdicts.tsv", async () => {
  const verdicts = await readVerdicts();
  const logs: string[] = [];
  for await (const entry of Deno.readDir(new URL("jepsen-etcd/", TESTDATA))) {
    if (entry.name.endsWith(".log")) logs.push(entry.name);
  }
  logs.sort();
  assert.equal(logs.length, verdicts.size, "every log has a verdict and vice versa");
  const wrong: string[] = [];
  for (const log of logs) {
    const expected = verdicts.get(log);
    assert.ok(expected !== undefined, `${log} has no verdict`);
    const report = await checkHistoryFile(new URL(`jepsen-etcd/${log}`, TESTDATA));
    assert.equal(report.format, "jepsen-log");
    assert.equal(report.modelName, "register");
    if (report.result.verdict !== expected) {
      wrong.push(`${log}: expected ${expected}, got ${report.result.verdict}`);
    }
  }
  assert.deepEqual(wrong, []);
  // Both verdicts are represented, so neither an always-yes nor an always-no
  // checker could pass.
  assert.ok([...verdicts.values()].includes("linearizable"));
  assert.ok([...verdicts.values()].includes("not-linearizable"));
});

Deno.test("every porcupine kv history gets its verdict", async () => {
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL("kv/", TESTDATA))) {
    if (entry.name.endsWith(".txt")) files.push(entry.name);
  }
  files.sort();
  assert.ok(files.length >= 6, `expected the six kv files, found ${files.join(", ")}`);
  for (const file of files) {
    const expected: Verdict = file.endsWith("-ok.txt") ? "linearizable" : "not-linearizable";
    assert.ok(file.endsWith("-ok.txt") || file.endsWith("-bad.txt"), `unexpected file ${file}`);
    const report = await checkHistoryFile(new URL(`kv/${file}`, TESTDATA));
    assert.equal(report.format, "porcupine-kv");
    // How fast the c50 files are decided is measured by `deno task bench:core`.
    assert.equal(report.result.verdict, expected, `${file}`);
  }
});

Deno.test("a linearizable kv history yields a linearization covering every operation", async () => {
  const report = await checkHistoryFile(new URL("kv/c10-ok.txt", TESTDATA));
  assert.equal(report.result.verdict, "linearizable");
  const covered = report.result.keys.flatMap((key) => key.linearization).sort((a, b) => a - b);
  assert.deepEqual(covered, report.history.operations.map((_, index) => index));
  assert.equal(report.keyCount, 10);
  assert.equal(report.eventCount, 674);
});

Deno.test("a refuted kv history names the key and the operation that cannot be placed", async () => {
  const report = await checkHistoryFile(new URL("kv/c01-bad.txt", TESTDATA));
  assert.equal(report.result.verdict, "not-linearizable");
  const key = report.result.keys.find((k) => k.verdict === "not-linearizable");
  assert.ok(key !== undefined);
  assert.ok(key.blockedOperation !== undefined);
  assert.match(key.explanation ?? "", /longest linearizable prefix has \d+ of \d+ operations/);
  assert.match(key.explanation ?? "", /cannot take effect/);
});
