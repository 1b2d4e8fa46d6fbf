import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const MAIN = new URL("../../src/check/main.ts", import.meta.url);
const TESTDATA = new URL("../testdata/linearizability/", import.meta.url);

interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function runCli(...args: string[]): Promise<CliRun> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--allow-read", fileURLToPath(MAIN), ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
  const { code, stdout, stderr } = await command.output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

function testdata(path: string): string {
  return fileURLToPath(new URL(path, TESTDATA));
}

Deno.test("cli: exit 0 and one verdict line per linearizable file", async () => {
  const run = await runCli(testdata("kv/c01-ok.txt"), testdata("jepsen-etcd/etcd_002.log"));
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split("\n");
  assert.equal(lines.length, 2);
  assert.match(lines[0], /c01-ok\.txt: linearizable \(116 events, 10 keys, \d+ ms\)$/);
  assert.match(lines[1], /etcd_002\.log: linearizable \(\d+ events, 1 key, \d+ ms\)$/);
});

Deno.test("cli: exit 1 when any file is not linearizable, naming key and operation", async () => {
  const run = await runCli(testdata("kv/c01-ok.txt"), testdata("kv/c01-bad.txt"));
  assert.equal(run.code, 1, run.stderr);
  assert.match(run.stdout, /c01-ok\.txt: linearizable/);
  assert.match(
    run.stdout,
    /c01-bad\.txt: not linearizable \(key "\d+": the longest linearizable prefix/,
  );
  assert.match(run.stdout, /cannot place: get -> /);
});

Deno.test("cli: exit 2 for unreadable or unparseable input, naming file and line", async () => {
  const missing = await runCli(testdata("kv/no-such-file.txt"));
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no-such-file\.txt: error: Cannot read file/);
  // This test file is not a history; it outranks a refuted history.
  const garbage = await runCli(fileURLToPath(import.meta.url), testdata("kv/c01-bad.txt"));
  assert.equal(garbage.code, 2);
  assert.match(
    garbage.stderr,
    /cli_test\.ts: error: Invalid history at .*cli_test\.ts line 1: unknown format/,
  );
  const usage = await runCli();
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /Usage: check-history/);
  const badOption = await runCli("--max-steps", "zero", testdata("kv/c01-ok.txt"));
  assert.equal(badOption.code, 2);
});

Deno.test("cli: exit 3 when the step budget runs out before a verdict", async () => {
  const run = await runCli("--max-steps=50", testdata("kv/c10-ok.txt"));
  assert.equal(run.code, 3, run.stderr);
  assert.match(run.stdout, /c10-ok\.txt: unknown \(key "\d+": search gave up after 50 steps/);
});
