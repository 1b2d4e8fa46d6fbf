/**
 * The example `examples/deno_kv_counter.ts` runs as its README says, as its
 * own process, against a real local 3-replica cluster: its workers through
 * every replica, its counters exact, its watch seeing the final values; a
 * second run keeps counting. So the example cannot rot.
 */

import assert from "node:assert/strict";
import { startProcessCluster } from "../../src/chaos/process_cluster.ts";
import { CHECKED_KEY, DEFAULT_URL, parseArgs, SUMMED_KEY } from "../../examples/deno_kv_counter.ts";

const EXAMPLE = new URL("../../examples/deno_kv_counter.ts", import.meta.url).pathname;
const TOKEN = "any-token-at-all";
/** The permissions the README gives the example. */
const PERMISSIONS = ["--allow-net=127.0.0.1", "--allow-env=DENO_KV_ACCESS_TOKEN,KV_URL"];

/**
 * Runs the example with `args`, with `env` added to this process's
 * environment (or alone, with `clearEnv`); its exit code and output.
 */
async function runExample(
  args: readonly string[],
  env: Record<string, string>,
  clearEnv = false,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--unstable-kv", ...PERMISSIONS, EXAMPLE, ...args],
    env,
    clearEnv,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("the example's command line: URLs, counts, KV_URL, the default", () => {
  assert.deepEqual(parseArgs([]), { urls: [DEFAULT_URL], workers: 4, increments: 10 });
  assert.deepEqual(parseArgs([], { KV_URL: "http://h:1/databases/x/connect" }).urls, [
    "http://h:1/databases/x/connect",
  ]);
  assert.deepEqual(parseArgs(["http://a/c", "http://b/c", "--workers", "6", "--increments", "2"]), {
    urls: ["http://a/c", "http://b/c"],
    workers: 6,
    increments: 2,
  });
  assert.throws(() => parseArgs(["--workers", "0"]), /--workers takes an integer from 1 to 1000/);
  assert.throws(() => parseArgs(["--increments", "x"]), /--increments takes an integer/);
  assert.throws(() => parseArgs(["--verbose"]), /Unknown flag --verbose/);
});

Deno.test({
  name: "the Deno KV counter example against a real 3-replica cluster",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    const urls = cluster.urls.map((url) => `${url}/databases/counter-example/connect`);
    try {
      // Six workers over the three replicas, the watch at the third.
      const first = await runExample([...urls, "--workers", "6", "--increments", "5"], {
        DENO_KV_ACCESS_TOKEN: TOKEN,
      });
      assert.equal(first.code, 0, `${first.stdout}\n${first.stderr}`);
      assert.match(first.stdout, /^counters before: checked=0 summed=0$/m);
      assert.match(first.stdout, /^watch: checked=30 summed=30$/m, first.stdout);
      assert.match(
        first.stdout,
        /^done: 30 increments each; check-and-set retried \d+ times; checked=30 summed=30; \d+ watch frames$/m,
      );

      // Again, through one replica named by KV_URL: the counters go on.
      const second = await runExample(["--workers", "1", "--increments", "3"], {
        DENO_KV_ACCESS_TOKEN: TOKEN,
        KV_URL: urls[1]!,
      });
      assert.equal(second.code, 0, `${second.stdout}\n${second.stderr}`);
      assert.match(second.stdout, /^counters before: checked=30 summed=30$/m);
      assert.match(second.stdout, /checked=33 summed=33; \d+ watch frames$/m);

      // What the example left, read by another client through another replica.
      Deno.env.set("DENO_KV_ACCESS_TOKEN", TOKEN);
      const kv = await Deno.openKv(urls[0]!);
      try {
        const [checked, summed] = await kv.getMany<[number, Deno.KvU64]>([
          CHECKED_KEY,
          SUMMED_KEY,
        ]);
        assert.equal(checked.value, 33);
        assert.equal(summed.value?.value, 33n);
      } finally {
        kv.close();
      }

      // Without DENO_KV_ACCESS_TOKEN it says what to set, and exits 2.
      const env = Deno.env.toObject();
      delete env.DENO_KV_ACCESS_TOKEN;
      const refused = await runExample([urls[0]!], env, true);
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, /Set DENO_KV_ACCESS_TOKEN/);
    } catch (error) {
      for (let id = 0; id < 3; id++) console.log(`--- replica ${id}\n${cluster.output(id)}`);
      throw error;
    } finally {
      await cluster.stop();
    }
  },
});
