import assert from "node:assert/strict";
import { runAdmin, USAGE } from "../../src/cli/admin.ts";
import { deadServerUrl, SECRET, startServedCluster } from "../client/helpers.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `deno task admin ...args` in the project directory, to completion. */
async function admin(args: readonly string[], secret: string): Promise<Run> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "admin", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", EPAXOS_CLUSTER_SECRET: secret },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs {@linkcode runAdmin} in process, with `env` as the environment. */
async function adminInProcess(
  args: readonly string[],
  options: { env?: Record<string, string>; localSecretPath?: string } = {},
): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await runAdmin(args, {
    env: (name) => options.env?.[name],
    localSecretPath: options.localSecretPath ?? "/nonexistent/cluster-secret",
    out: (text) => stdout += `${text}\n`,
    err: (line) => stderr += `${line}\n`,
  });
  return { code, stdout, stderr };
}

Deno.test("deno task admin members prints the members as JSON; a wrong secret exits 1 in one line", async () => {
  const cluster = await startServedCluster();
  try {
    const server = cluster.urls[0]!;
    const ok = await admin(["--server", server, "members"], SECRET);
    assert.equal(ok.code, 0, ok.stderr);
    const body = JSON.parse(ok.stdout);
    assert.equal(body.epoch, 1);
    assert.equal(body.members.length, 3);
    for (const [id, member] of body.members.entries()) {
      assert.equal(member.id, id);
      assert.equal(member.role, "voter");
      assert.ok(member.state === "caught-up" || member.state === "lagging", member.state);
      assert.equal(typeof member.lagInstances, "number");
      assert.ok("url" in member && "lastContactMsAgo" in member);
      assert.equal(member.self, id === 0);
    }

    const refused = await admin(["--server", server, "members"], "wrong-secret-0123456789");
    assert.equal(refused.code, 1);
    assert.equal(refused.stdout, "");
    assert.match(refused.stderr, /^admin: .* refused \(401\): The admin route refused/);
    assert.equal(refused.stderr.trimEnd().split("\n").length, 1, refused.stderr);
  } finally {
    await cluster.stop();
  }
});

Deno.test("admin reads the local cluster's secret file when EPAXOS_CLUSTER_SECRET is unset", async () => {
  const cluster = await startServedCluster();
  const dir = await Deno.makeTempDir({ prefix: "epaxos-admin-" });
  try {
    const path = `${dir}/cluster-secret`;
    await Deno.writeTextFile(path, `${SECRET}\n`, { mode: 0o600 });
    const run = await adminInProcess(["--server", cluster.urls[2]!, "members"], {
      localSecretPath: path,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(JSON.parse(run.stdout).members[2].self, true);

    // The environment wins over the file.
    const wrong = await adminInProcess(["--server", cluster.urls[2]!, "members"], {
      env: { EPAXOS_CLUSTER_SECRET: "wrong-secret-0123456789" },
      localSecretPath: path,
    });
    assert.equal(wrong.code, 1);

    // The file never goes to a server on another machine.
    const remote = await adminInProcess(["--server", "http://203.0.113.7:8001", "members"], {
      localSecretPath: path,
    });
    assert.equal(remote.code, 1);
    assert.match(remote.stderr, /used only for a server on this machine/);
  } finally {
    await cluster.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin: usage errors exit 2 with usage; failures exit 1 with one line", async () => {
  for (
    const args of [
      [],
      ["add"],
      ["add", "--url", "http://x", "extra"],
      ["promote"],
      ["remove", "x"],
      ["replace", "1", "2"],
      ["members", "--url", "http://x"],
      ["members", "extra"],
      ["--bogus"],
    ]
  ) {
    const run = await adminInProcess(args, { env: { EPAXOS_CLUSTER_SECRET: SECRET } });
    assert.equal(run.code, 2, JSON.stringify(args));
    assert.ok(run.stderr.includes(USAGE), JSON.stringify(args));
    assert.match(run.stderr, /^admin: /);
  }
  for (const command of ["members", "add --url URL", "promote ID", "remove ID", "replace ID"]) {
    assert.ok(USAGE.includes(command), command);
  }
  const help = await adminInProcess(["--help"]);
  assert.equal(help.code, 0);
  assert.ok(help.stdout.includes("members"));

  const badServer = await adminInProcess(["--server", "ftp://x", "members"]);
  assert.equal(badServer.code, 2);

  const noSecret = await adminInProcess(["--server", "http://127.0.0.1:1", "members"]);
  assert.equal(noSecret.code, 1);
  assert.match(noSecret.stderr, /^admin: no cluster secret: set EPAXOS_CLUSTER_SECRET.*\n$/);

  const unreachable = await adminInProcess(["--server", deadServerUrl(), "members"], {
    env: { EPAXOS_CLUSTER_SECRET: SECRET },
  });
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /^admin: cannot reach http:\/\/127\.0\.0\.1:\d+: .*\n$/);
  assert.equal(unreachable.stderr.split("\n").length, 2, unreachable.stderr);

  // A backup reaches the replica the same way, and says so the same way.
  const out = await Deno.makeTempFile();
  const noBackup = await adminInProcess(
    ["--server", deadServerUrl(), "backup", "--out", out],
    { env: { EPAXOS_CLUSTER_SECRET: SECRET } },
  );
  await Deno.remove(out);
  assert.equal(noBackup.code, 1);
  assert.match(noBackup.stderr, /^admin: cannot reach http:\/\/127\.0\.0\.1:\d+: .*\n$/);
});

Deno.test("admin add, promote, remove and replace: changes print JSON, refusals exit 1 in one line and change nothing", async () => {
  const cluster = await startServedCluster();
  try {
    const server = cluster.urls[0]!;
    const env = { env: { EPAXOS_CLUSTER_SECRET: SECRET } };
    const run = (...args: string[]) => adminInProcess(["--server", server, ...args], env);
    const members = async () => JSON.parse((await run("members")).stdout);

    const added = await run("add", "--url", "http://127.0.0.1:1");
    assert.equal(added.code, 0, added.stderr);
    const addedBody = JSON.parse(added.stdout);
    assert.equal(addedBody.id, 3);
    assert.equal(addedBody.epoch, 2);
    let now = await members();
    assert.equal(now.epoch, 2);
    assert.deepEqual(now.members.map((m: { role: string }) => m.role), [
      "voter",
      "voter",
      "voter",
      "learner",
    ]);

    // Each refusal: exit 1, one line, the epoch unchanged.
    for (
      const [args, reason] of [
        [["promote", "3"], /not caught up|does not answer|even/],
        [["remove", "2"], /below the minimum of 3/],
        [["promote", "1"], /already a voter/],
        [["remove", "9"], /9/],
      ] as const
    ) {
      const refused = await run(...args);
      assert.equal(refused.code, 1, `${args.join(" ")}: ${refused.stdout}`);
      assert.match(refused.stderr, /^admin: .*refused \(409\)/);
      assert.match(refused.stderr, reason);
      assert.equal(refused.stderr.trimEnd().split("\n").length, 1);
    }
    assert.equal((await members()).epoch, 2);

    // The learner leaves; then member 2 gets a new incarnation.
    const removed = await run("remove", "3");
    assert.equal(removed.code, 0, removed.stderr);
    const replaced = await run("replace", "2");
    assert.equal(replaced.code, 0, replaced.stderr);
    now = await members();
    assert.equal(now.epoch, 4);
    assert.deepEqual(now.members.map((m: { incarnation: number }) => m.incarnation), [1, 1, 2]);
    // The new incarnation of 2 has not started: adding now is refused.
    const addWhileDead = await run("add", "--url", "http://127.0.0.1:2");
    assert.equal(addWhileDead.code, 1);
    assert.match(addWhileDead.stderr, /voter 2 does not answer; remove or replace/);
  } finally {
    await cluster.stop();
  }
});
