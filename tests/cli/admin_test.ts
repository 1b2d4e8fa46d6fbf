import assert from "node:assert/strict";
import { runAdmin, USAGE } from "../../src/cli/admin.ts";
import { waitUntil } from "../../src/chaos/process_cluster.ts";
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

Deno.test("deno task admin token add, list, remove: the token once, enforced everywhere, never listed", async () => {
  const cluster = await startServedCluster();
  try {
    const [server, other] = [cluster.urls[0]!, cluster.urls[2]!];
    const added = await admin(
      ["--server", server, "token", "add", "ci", "--prefix", "app/", "--read-only"],
      SECRET,
    );
    assert.equal(added.code, 0, added.stderr);
    const body = JSON.parse(added.stdout);
    assert.equal(body.name, "ci");
    assert.match(body.token, /^ekv_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(body.prefixes, [{ prefix: "app/", access: "read" }]);
    assert.deepEqual(body.databases, []);
    assert.equal(body.ops, false);
    assert.ok(!Number.isNaN(Date.parse(body.created)));
    // Enforced on another replica once it executed the addition (before
    // that, it is open: probe with a read, which changes nothing).
    const headers = { authorization: `Bearer ${body.token}` };
    await waitUntil(async () => {
      const response = await fetch(`${other}/kv/app%2Fx`);
      await response.body?.cancel();
      return response.status === 401;
    }, { deadlineMs: 5000, what: "credentials to be enforced on another replica" });
    const put = await fetch(`${other}/kv/app%2Fx`, { method: "PUT", body: "v", headers });
    assert.equal(put.status, 403);
    assert.equal((await put.json()).needed, "read-write");
    const read = await fetch(`${other}/kv/app%2Fx`, { headers });
    assert.equal(read.status, 404, "read, and the key was not written");
    await read.body?.cancel();

    const more = await adminInProcess(
      [
        "--server",
        other,
        "token",
        "add",
        "deploy",
        "--prefix",
        "app/",
        "--prefix",
        "cfg/",
        "--database",
        "main",
        "--ops",
      ],
      { env: { EPAXOS_CLUSTER_SECRET: SECRET } },
    );
    assert.equal(more.code, 0, more.stderr);
    assert.deepEqual(JSON.parse(more.stdout).prefixes, [
      { prefix: "app/", access: "read-write" },
      { prefix: "cfg/", access: "read-write" },
    ]);
    const twice = await adminInProcess(["--server", other, "token", "add", "deploy", "--ops"], {
      env: { EPAXOS_CLUSTER_SECRET: SECRET },
    });
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /^admin: .* refused \(409\): A token named deploy exists/);

    const listed = await admin(["--server", other, "token", "list"], SECRET);
    assert.equal(listed.code, 0, listed.stderr);
    const tokens = JSON.parse(listed.stdout).tokens;
    assert.deepEqual(tokens.map((token: { name: string }) => token.name), ["ci", "deploy"]);
    assert.ok(!listed.stdout.includes(body.token));
    assert.ok(!/[0-9a-f]{64}/.test(listed.stdout), "no hash is listed");

    const removed = await admin(["--server", server, "token", "remove", "ci"], SECRET);
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual(JSON.parse(removed.stdout), { name: "ci", removed: true });
    const again = await admin(["--server", server, "token", "remove", "ci"], SECRET);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /refused \(404\): No token named ci/);
    await waitUntil(async () => {
      const response = await fetch(`${other}/kv/app%2Fx`, { headers });
      await response.body?.cancel();
      return response.status === 401;
    }, { deadlineMs: 5000, what: "the removed token to be refused" });
  } finally {
    await cluster.stop();
  }
});

Deno.test("admin token: usage errors exit 2 and ask nothing", async () => {
  for (
    const args of [
      ["token"],
      ["token", "rotate"],
      ["token", "add"],
      ["token", "add", "a", "b", "--ops"],
      ["token", "add", "ci"],
      ["token", "list", "extra"],
      ["token", "list", "--prefix", "a/"],
      ["token", "remove"],
      ["token", "remove", "ci", "--read-only"],
      ["token", "add", "ci", "--ops", "--url", "http://x"],
      ["members", "--prefix", "a/"],
      ["members", "--ops"],
    ]
  ) {
    const run = await adminInProcess(["--server", deadServerUrl(), ...args], {
      env: { EPAXOS_CLUSTER_SECRET: SECRET },
    });
    assert.equal(run.code, 2, `${JSON.stringify(args)}: ${run.stderr}`);
    assert.match(run.stderr, /^admin: /);
  }
  for (const command of ["token add NAME", "token list", "token remove NAME"]) {
    assert.ok(USAGE.includes(command), command);
  }
});
