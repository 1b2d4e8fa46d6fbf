/**
 * The local cluster of `deno task start`, as a newcomer runs it: three replica
 * processes under one launcher; one replica killed (the launcher reports it,
 * the others keep serving) and started again alone from the local cluster
 * file, on its own data; `deno task admin` finding the local secret by itself.
 */

import assert from "node:assert/strict";
import { answers, freePorts, waitUntil } from "../../src/chaos/process_cluster.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** The `deno` arguments of task `name` in deno.json, with its script made absolute. */
async function taskArgs(name: string): Promise<string[]> {
  const tasks = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).tasks;
  const [deno, run, ...rest] = (tasks[name] as string).split(" ");
  assert.equal(`${deno} ${run}`, "deno run", `task ${name} runs a script`);
  return [
    "run",
    `--config=${ROOT}deno.json`,
    ...rest.map((arg) => arg.startsWith("src/") ? `${ROOT}${arg}` : arg),
  ];
}

/** A process whose output is collected, line by line, as it comes. */
interface Watched {
  readonly child: Deno.ChildProcess;
  readonly lines: string[];
}

function watch(args: string[], options: { cwd: string; env?: Record<string, string> }): Watched {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: options.cwd,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let buffer = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      buffer += text;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      lines.push(...parts);
    }
    if (buffer !== "") lines.push(buffer);
  };
  collect(child.stdout);
  collect(child.stderr);
  return { child, lines };
}

function pidOf(process: Watched, name: string): number | undefined {
  for (const line of process.lines) {
    const match = new RegExp(`^launcher: ${name} started as pid (\\d+)$`).exec(line);
    if (match !== null) return Number(match[1]);
  }
  return undefined;
}

function tryKill(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

Deno.test({
  name: "local cluster: a killed replica is reported, restarts alone on its data, and admin works",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "epaxos-local-" }));
    const ports = freePorts(3);
    const urls = ports.map((port) => `http://127.0.0.1:${port}`);
    const started: Watched[] = [];
    const replicaPids = new Set<number>();
    const output = () => started.map((p) => p.lines.join("\n")).join("\n---\n");
    try {
      // As `deno task start` runs it, in a project directory of its own.
      const cluster = watch([...await taskArgs("start"), "--base-port", String(ports[0])], {
        cwd: dir,
      });
      started.push(cluster);
      await waitUntil(
        async () => (await Promise.all(urls.map((url) => answers(`${url}/readyz`)))).every(Boolean),
        { deadlineMs: 60_000, what: "the local cluster to be ready" },
      );
      for (const id of [0, 1, 2]) replicaPids.add(pidOf(cluster, `local-${id}`)!);
      assert.equal((await Deno.stat(`${dir}/data/cluster-secret`)).mode! & 0o777, 0o600);
      const put = await fetch(`${urls[0]}/kv/greeting`, { method: "PUT", body: "hello" });
      assert.equal(put.status, 200, await put.text());

      // Kill one: the launcher says so, once, and the others keep serving.
      const victim = pidOf(cluster, "local-1")!;
      Deno.kill(victim, "SIGKILL");
      const report = (line: string) => line.startsWith(`launcher: local-1 (pid ${victim})`);
      await waitUntil(() => cluster.lines.some(report), {
        deadlineMs: 10_000,
        what: "the launcher to report the exit",
      });
      assert.deepEqual(cluster.lines.filter(report), [
        `launcher: local-1 (pid ${victim}) was ended by signal SIGKILL; the other 2 replicas ` +
        `keep running; start it again with: deno task start --config ${dir}/data/local-cluster.json --id 1`,
      ]);
      assert.ok(await answers(`${urls[0]}/livez`) && await answers(`${urls[2]}/livez`));

      // Started alone from the local cluster file: its own data, the same secret.
      const alone = watch(
        [...await taskArgs("start"), "--config", "data/local-cluster.json", "--id", "1"],
        { cwd: dir },
      );
      started.push(alone);
      await waitUntil(() => pidOf(alone, "local-1") !== undefined, {
        deadlineMs: 10_000,
        what: "the replica to start alone",
      });
      replicaPids.add(pidOf(alone, "local-1")!);
      await waitUntil(() => answers(`${urls[1]}/readyz`), {
        deadlineMs: 60_000,
        what: "the restarted replica to be ready",
      });
      assert.ok(alone.lines.some((line) => line.includes(`data in ${dir}/data/replica-1`)));
      const read = await fetch(`${urls[1]}/kv/greeting`);
      assert.equal(await read.text(), "hello");

      // `deno task admin` in the project directory finds the local secret.
      const admin = await new Deno.Command(Deno.execPath(), {
        args: [...await taskArgs("admin"), "--server", urls[0]!, "members"],
        cwd: dir,
        env: { NO_COLOR: "1", EPAXOS_CLUSTER_SECRET: "" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const decoder = new TextDecoder();
      assert.equal(admin.code, 0, decoder.decode(admin.stderr));
      const members = JSON.parse(decoder.decode(admin.stdout));
      assert.equal(members.epoch, 1);
      assert.deepEqual(
        members.members.map((m: { id: number; url: string }) => [m.id, m.url]),
        urls.map((url, id) => [id, url]),
      );
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${output()}`, { cause: error });
    } finally {
      // The launchers stop their replicas on SIGTERM; anything left is killed by pid.
      for (const process of started.reverse()) {
        tryKill(process.child.pid, "SIGTERM");
        const ended = await Promise.race([
          process.child.status.then(() => true),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000)),
        ]);
        if (!ended) tryKill(process.child.pid, "SIGKILL");
        await process.child.status;
      }
      for (const pid of replicaPids) tryKill(pid, "SIGKILL");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "local cluster --tls: https on its ports, certificates made once under data/tls and reused",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "epaxos-local-tls-" }));
    const ports = freePorts(3);
    const urls = ports.map((port) => `https://127.0.0.1:${port}`);
    const caPath = `${dir}/data/tls/ca.pem`;
    const started: Watched[] = [];
    let client: Deno.HttpClient | undefined;
    // Trusts the CA once the launcher has made it.
    const tlsFetch: typeof fetch = async (input, init) => {
      client ??= Deno.createHttpClient({ caCerts: [await Deno.readTextFile(caPath)] });
      return await fetch(input, { ...init, client });
    };
    const launch = async () => {
      const launched = watch(
        [...await taskArgs("start"), "--tls", "--base-port", String(ports[0])],
        {
          cwd: dir,
        },
      );
      started.push(launched);
      await waitUntil(
        async () =>
          (await Promise.all(urls.map((url) => answers(`${url}/readyz`, tlsFetch)))).every(Boolean),
        { deadlineMs: 60_000, what: "the local TLS cluster to be ready" },
      );
      return launched;
    };
    const stop = async (process: Watched) => {
      tryKill(process.child.pid, "SIGTERM");
      await process.child.status;
    };
    try {
      const first = await launch();
      assert.ok(first.lines.some((line) => line.startsWith(`launcher: made ${caPath}`)));
      // The launcher prints the README's examples, with the CA, once it sees them ready.
      const example = `curl --cacert ${caPath} -X PUT ${urls[0]}/kv/greeting`;
      await waitUntil(() => first.lines.some((line) => line.includes(example)), {
        deadlineMs: 10_000,
        what: "the launcher's curl examples",
      });
      for (const id of [0, 1, 2]) {
        assert.equal((await Deno.stat(`${dir}/data/tls/local-${id}.key.pem`)).mode! & 0o777, 0o600);
      }
      assert.equal((await Deno.stat(`${dir}/data/tls/ca-key.pem`)).mode! & 0o777, 0o600);
      const put = await tlsFetch(`${urls[0]}/kv/greeting`, { method: "PUT", body: "hello" });
      assert.equal(put.status, 200, await put.text());
      assert.equal(await (await tlsFetch(`${urls[2]}/kv/greeting`)).text(), "hello");
      // `deno task admin` over https: the CA through DENO_CERT, the local secret found by itself.
      const admin = await new Deno.Command(Deno.execPath(), {
        args: [...await taskArgs("admin"), "--server", urls[0]!, "members"],
        cwd: dir,
        env: { NO_COLOR: "1", EPAXOS_CLUSTER_SECRET: "", DENO_CERT: caPath },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(admin.code, 0, new TextDecoder().decode(admin.stderr));
      const ca = await Deno.readTextFile(caPath);
      await stop(first);

      // Again: the same CA and certificates, the data kept.
      const second = await launch();
      assert.ok(!second.lines.some((line) => line.startsWith("launcher: made")));
      assert.equal(await Deno.readTextFile(caPath), ca);
      assert.equal(await (await tlsFetch(`${urls[1]}/kv/greeting`)).text(), "hello");
    } catch (error) {
      const output = started.map((p) => p.lines.join("\n")).join("\n---\n");
      throw new Error(`${(error as Error).message}\n${output}`, { cause: error });
    } finally {
      for (const process of started.reverse()) {
        tryKill(process.child.pid, "SIGTERM");
        await process.child.status;
      }
      client?.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
