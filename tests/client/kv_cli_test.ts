import assert from "node:assert/strict";
import { escapeField, percentile, readProblem, type WriteRecord } from "../../src/cli/kv.ts";
import { KvClient } from "../../src/client/mod.ts";
import { deadServerUrl, type ServedCluster, startServedCluster } from "./helpers.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stdoutBytes: Uint8Array;
  readonly stderr: string;
}

/** Runs `deno run -A src/cli/kv.ts ...args` to completion (asynchronously: the servers live in this process). */
async function kv(
  args: readonly string[],
  options: { readonly stdin?: Uint8Array } = {},
): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "src/cli/kv.ts", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", EPAXOS_CLIENT_TOKEN: "" },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(options.stdin);
    await writer.close();
  }
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stdoutBytes: output.stdout,
    stderr: decoder.decode(output.stderr),
  };
}

async function withCluster(
  body: (cluster: ServedCluster, servers: string) => Promise<void>,
  options: Parameters<typeof startServedCluster>[0] = {},
): Promise<void> {
  const cluster = await startServedCluster(options);
  try {
    await body(cluster, cluster.urls.join(","));
  } finally {
    await cluster.stop();
  }
}

function assertExit(run: Run, code: number, what: string): void {
  assert.equal(
    run.code,
    code,
    `${what}: exit ${run.code}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`,
  );
}

Deno.test("kv CLI: put, get, cas, del, list and status against real replicas", async (t) => {
  await withCluster(async (cluster, servers) => {
    const s = ["--servers", servers];
    let version = "";
    await t.step("put prints the new version; get prints the raw value", async () => {
      const put = await kv([...s, "put", "greeting", "hello world"]);
      assertExit(put, 0, "put");
      version = put.stdout.trim();
      assert.match(version, /^\d+\.\d+\.\d+$/);
      const get = await kv([...s, "get", "greeting", "--verbose"]);
      assertExit(get, 0, "get");
      assert.equal(get.stdout, "hello world");
      assert.match(get.stderr, new RegExp(`version ${version.replaceAll(".", "\\.")}`));
      const local = await kv(["--server", cluster.urls[2]!, "get", "--local", "greeting"]);
      assertExit(local, 0, "get --local");
    });

    await t.step("a missing key exits 1 with a message", async () => {
      const missing = await kv([...s, "get", "nope"]);
      assertExit(missing, 1, "get missing");
      assert.equal(missing.stdout, "");
      assert.match(missing.stderr, /key not found: nope/);
    });

    await t.step("compare-and-set: a wrong version exits 3 and names the current one", async () => {
      const absent = await kv([...s, "put", "--if-absent", "greeting", "again"]);
      assertExit(absent, 3, "put --if-absent on an existing key");
      assert.match(
        absent.stderr,
        new RegExp(`precondition failed: the key is at version ${version}`),
      );
      const cas = await kv([...s, "cas", "greeting", version, "hello again"]);
      assertExit(cas, 0, "cas");
      const next = cas.stdout.trim();
      assert.notEqual(next, version);
      const stale = await kv([...s, "cas", "greeting", version, "lost"]);
      assertExit(stale, 3, "stale cas");
      const staleFlag = await kv([...s, "put", "greeting", "lost", "--if-version", version]);
      assertExit(staleFlag, 3, "stale put --if-version");
      const staleDelete = await kv([...s, "del", "greeting", "--if-version", version]);
      assertExit(staleDelete, 3, "stale del");
      assert.equal((await kv([...s, "get", "greeting"])).stdout, "hello again");
      assertExit(await kv([...s, "del", "greeting", "--if-version", next]), 0, "del --if-version");
      assertExit(await kv([...s, "get", "greeting"]), 1, "get after del");
      assertExit(await kv([...s, "del", "greeting"]), 0, "del is idempotent");
    });

    await t.step("put - reads the value from stdin, bytes unchanged", async () => {
      const value = new Uint8Array([0, 1, 2, 0xff, 0x0a, 0x09, 0x5c]);
      assertExit(await kv([...s, "put", "bin/blob", "-"], { stdin: value }), 0, "put -");
      const get = await kv([...s, "get", "bin/blob"]);
      assert.deepEqual(get.stdoutBytes, value);
    });

    await t.step(
      "list prints key, version and escaped value; pages with --cursor or --all",
      async () => {
        for (
          const [key, value] of [["fruit/apple", "red"], ["fruit/banana", "yel\tlow"], [
            "fruit/cherry",
            "two\nlines",
          ]]
        ) {
          assertExit(await kv([...s, "put", key!, value!]), 0, `put ${key}`);
        }
        const all = await kv([...s, "list", "--prefix", "fruit/", "--all", "--limit", "2"]);
        assertExit(all, 0, "list --all");
        const lines = all.stdout.trimEnd().split("\n").map((line) => line.split("\t"));
        assert.deepEqual(lines.map((line) => line[0]), [
          "fruit/apple",
          "fruit/banana",
          "fruit/cherry",
        ]);
        assert.deepEqual(lines.map((line) => line[2]), ["red", "yel\\tlow", "two\\nlines"]);
        for (const line of lines) assert.match(line[1]!, /^\d+\.\d+\.\d+$/);
        const page = await kv([...s, "list", "--prefix", "fruit/", "--limit", "2"]);
        assertExit(page, 0, "list one page");
        assert.equal(page.stdout.trimEnd().split("\n").length, 2);
        assert.match(page.stderr, /more keys follow: continue with --cursor "fruit\/banana"/);
        const rest = await kv([
          ...s,
          "list",
          "--prefix",
          "fruit/",
          "--limit",
          "2",
          "--cursor",
          "fruit/banana",
        ]);
        assert.match(rest.stdout, /^fruit\/cherry\t/);
        assert.equal(rest.stderr, "");
        const binary = await kv([...s, "list", "--prefix", "bin/", "--local"]);
        assert.match(binary.stdout, /^bin\/blob\t[\d.]+\t\\x00\\x01\\x02\\xff\\x0a\\x09\\x5c\n$/);
      },
    );

    await t.step("status summarizes every server", async () => {
      const status = await kv([...s, "status"]);
      assertExit(status, 0, "status");
      for (const [id, url] of cluster.urls.entries()) {
        assert.match(status.stdout, new RegExp(`^${url}  replica-${id}  ready  .*keys \\d+`, "m"));
      }
      assert.match(status.stdout, /peers: replica-1 rtt/);
      const withDead = await kv(["--servers", `${cluster.urls[0]},${deadServerUrl()}`, "status"]);
      assertExit(withDead, 1, "status with an unreachable server");
      assert.match(withDead.stdout, /UNREACHABLE: Cannot connect/);
    });
  });
});

Deno.test("kv CLI: usage errors exit 2 with a clear message", async () => {
  const cases: [string[], RegExp][] = [
    [[], /No command given/],
    [["frobnicate"], /Unknown command frobnicate/],
    [["get"], /get needs KEY: get KEY/],
    [["put", "k", "v", "extra"], /Too many arguments for put/],
    [["get", "k", "--prefix", "p"], /--prefix does not apply to get/],
    [["list", "--limit", "0"], /--limit must be an integer from 1 to 1000, got 0/],
    [["list", "--bogus"], /Unknown option --bogus/],
    [
      ["put", "k", "v", "--if-absent", "--if-version", "1.0.0"],
      /either --if-version or --if-absent/,
    ],
    [["batch-put", "many"], /N must be an integer/],
    [["batch-put", "10", "--pipeline", "0"], /--pipeline must be an integer/],
    [["--servers", "ftp://x", "get", "k"], /must be an http or https URL/],
    [["--servers", ",", "get", "k"], /need at least one URL/],
  ];
  for (const [args, message] of cases) {
    const run = await kv(args);
    assertExit(run, 2, args.join(" "));
    assert.match(run.stderr, message, args.join(" "));
    assert.match(run.stderr, /Run with --help for usage/);
  }
  const help = await kv(["--help"]);
  assertExit(help, 0, "--help");
  assert.match(help.stdout, /^Usage: deno task kv/);
  assert.match(help.stdout, /batch-put N \[--pipeline P\]/);
});

Deno.test("kv CLI: batch-put 200 --pipeline 20 --random-key --random-server --verify", async () => {
  await withCluster(async (cluster, servers) => {
    const run = await kv([
      "--servers",
      servers,
      "batch-put",
      "200",
      "--pipeline",
      "20",
      "--random-key",
      "--random-server",
      "--key-prefix",
      "load/",
      "--verify",
    ]);
    assertExit(run, 0, "batch-put");
    assert.match(
      run.stdout,
      /^batch-put: 200 puts of 32 B to 3 servers \(random server\), 200 random draws/m,
    );
    assert.match(
      run.stdout,
      /^ok 200 {2}failed 0 {2}unknown 0 {2}in [\d.]+ s {2}\([\d.]+ ops\/s\)$/m,
    );
    assert.match(run.stdout, /^latency p50 [\d.]+ ms {2}p99 [\d.]+ ms {2}max [\d.]+ ms$/m);
    const verified = /^verify: (\d+) keys read from 3 servers \((\d+) linearizable reads/m.exec(
      run.stdout,
    );
    assert.ok(verified !== null, run.stdout);
    const keys = Number(verified[1]);
    assert.ok(keys > 100 && keys <= 200, `random draws hit ${keys} distinct keys`);
    assert.equal(Number(verified[2]), keys * 3);
    assert.match(run.stdout, /every read holds the last acknowledged value/);

    // Every replica took some of the writes, and they agree on the result.
    for (const node of cluster.nodes) {
      assert.ok(node.metrics.commandsProposed > 0, `replica ${node.id} got puts`);
    }
    const client = new KvClient({ servers: cluster.urls });
    let listed = 0;
    for await (const entry of client.entries({ prefix: "load/" })) {
      assert.match(entry.text(), /^[0-9a-f]{8}:\d+:\.*$/);
      assert.equal(entry.value.length, 32);
      listed++;
    }
    assert.equal(listed, keys);
  });
});

Deno.test("kv CLI: batch-put fails over past a dead server, and --verify fails when a server cannot be read", async () => {
  await withCluster(async (cluster) => {
    const servers = `${deadServerUrl()},${cluster.urls[0]},${cluster.urls[1]}`;
    const run = await kv(["--servers", servers, "batch-put", "30", "--pipeline", "5", "--verify"]);
    assertExit(run, 1, "batch-put with a dead server and --verify");
    assert.match(
      run.stdout,
      /^ok 30 {2}failed 0 {2}unknown 0 /m,
      "every put failed over to a live server",
    );
    assert.match(run.stdout, /^verify: FAILED: 30 of 90 reads/m);
    assert.match(run.stderr, /30x reads on http:\S+ failed: Cannot connect/);
    const sequential = await kv([
      "--servers",
      cluster.urls.join(","),
      "batch-put",
      "12",
      "--key-prefix",
      "seq/",
    ]);
    assertExit(sequential, 0, "sequential batch-put");
    const listed = await kv(["--servers", cluster.urls.join(","), "list", "--prefix", "seq/"]);
    assert.deepEqual(
      listed.stdout.trimEnd().split("\n").map((line) => line.split("\t")[0]),
      Array.from({ length: 12 }, (_, i) => `seq/${String(i).padStart(2, "0")}`),
    );
  });
});

Deno.test("kv CLI: batch-put exits 1 and counts failures when every put is refused", async () => {
  await withCluster(async (_cluster, servers) => {
    const run = await kv(["--servers", servers, "batch-put", "20", "--pipeline", "4"]);
    assertExit(run, 1, "batch-put without the token");
    assert.match(run.stdout, /^ok 0 {2}failed 20 {2}unknown 0 /m);
    assert.match(run.stdout, /latency p50 - {2}p99 - {2}max -/);
    assert.match(run.stderr, /20x This route needs the client token \(HTTP 401 from http:/);
    const withToken = await kv([
      "--servers",
      servers,
      "--token",
      "client-token-0123456",
      "batch-put",
      "20",
    ]);
    assertExit(withToken, 0, "batch-put with the token");
  }, { clientToken: "client-token-0123456" });
});

Deno.test("readProblem accepts exactly the values a linearizable store may hold after the puts", () => {
  const ok = (
    value: string,
    startMs: number,
    endMs: number,
    version = `v-${value}`,
  ): WriteRecord => ({
    value,
    startMs,
    endMs,
    outcome: "ok",
    version,
  });
  const read = (value: string, version = `v-${value}`) => ({ value, version });

  // Sequential puts: only the last acknowledged one.
  const sequential = [ok("a", 0, 1), ok("b", 2, 3)];
  assert.equal(readProblem(sequential, read("b")), undefined);
  assert.match(
    readProblem(sequential, read("a"))!,
    /overwritten by a later acknowledged put; expected "b"/,
  );
  assert.match(readProblem(sequential, undefined)!, /the key is missing/);
  assert.match(readProblem(sequential, read("b", "other"))!, /acknowledged with version v-b/);
  assert.match(readProblem(sequential, read("zzz"))!, /written by none of these puts/);

  // Overlapping puts: either may be last.
  const overlapping = [ok("a", 0, 10), ok("b", 5, 6)];
  assert.equal(readProblem(overlapping, read("a")), undefined);
  assert.equal(readProblem(overlapping, read("b")), undefined);
  // ...unless a third put started after both were acknowledged.
  assert.match(readProblem([...overlapping, ok("c", 11, 12)], read("a"))!, /overwritten/);

  // A put of unknown outcome may have happened at any time, or never.
  const unknown: WriteRecord = { value: "u", startMs: 0, outcome: "unknown" };
  assert.equal(readProblem([unknown, ok("b", 5, 6)], read("u", "anything")), undefined);
  assert.equal(readProblem([unknown, ok("b", 5, 6)], read("b")), undefined);
  assert.equal(readProblem([unknown], undefined), undefined);

  // A refused put must leave no trace; with only refused puts, an older value is fine.
  const failed: WriteRecord = { value: "f", startMs: 0, outcome: "failed" };
  assert.match(readProblem([failed, ok("b", 5, 6)], read("f"))!, /whose put was refused/);
  assert.match(readProblem([failed], read("f"))!, /whose put was refused/);
  assert.equal(readProblem([failed], undefined), undefined);
  assert.equal(readProblem([failed], read("from an earlier run")), undefined);
});

Deno.test("escapeField and percentile", () => {
  assert.equal(escapeField("plain ünïcødé"), "plain ünïcødé");
  assert.equal(escapeField("a\tb\nc\rd\\e\x01"), "a\\tb\\nc\\rd\\\\e\\x01");
  assert.equal(escapeField(new TextEncoder().encode("ok\t")), "ok\\t");
  assert.equal(escapeField(new Uint8Array([0x61, 0xff, 0x5c, 0x0a])), "a\\xff\\x5c\\x0a");
  assert.equal(escapeField(new Uint8Array([0xef, 0xbb, 0xbf, 0x61])), "\ufeffa");
  const sorted = Float64Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(sorted, 0.5), 50);
  assert.equal(percentile(sorted, 0.99), 99);
  assert.equal(percentile(sorted, 1), 100);
  assert.equal(percentile([7], 0.5), 7);
  assert.ok(Number.isNaN(percentile([], 0.5)));
});
