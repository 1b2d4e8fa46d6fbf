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
