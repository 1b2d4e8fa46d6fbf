/**
 * Multi-process tests on loopback: real replica processes, real HTTP between
 * them, real Deno KV files.
 */

import assert from "node:assert/strict";
import { HistoryRecorder } from "../../src/check/mod.ts";
import { encodeBatch } from "../../src/transport/codec.ts";
import { PEER_BATCH_PATH } from "../../src/transport/http.ts";
import { startProcessCluster, waitUntil } from "../../src/chaos/process_cluster.ts";

interface Written {
  readonly status: number;
  readonly version?: string;
}

async function put(
  url: string,
  key: string,
  value: string,
  headers: Record<string, string> = {},
): Promise<Written> {
  const response = await fetch(`${url}/kv/${encodeURIComponent(key)}`, {
    method: "PUT",
    body: value,
    headers,
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.json();
  return { status: response.status, ...(response.ok ? { version: body.version } : {}) };
}

async function get(url: string, key: string, local = false): Promise<string | null> {
  const response = await fetch(
    `${url}/kv/${encodeURIComponent(key)}${local ? "?consistency=local" : ""}`,
    {
      signal: AbortSignal.timeout(10_000),
    },
  );
  if (response.status === 404) {
    await response.body?.cancel();
    return null;
  }
  assert.equal(response.status, 200, `GET ${key} from ${url}`);
  return await response.text();
}

async function status(url: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(5000) });
  return await response.json();
}

async function converged(urls: readonly string[]): Promise<boolean> {
  try {
    const all = await Promise.all(urls.map(status));
    const digests = new Set(all.map((s) => s.stateDigest));
    const frontiers = new Set(
      all.map((s) => JSON.stringify((s.frontiers as { executed: number[] }).executed)),
    );
    return digests.size === 1 && frontiers.size === 1;
  } catch {
    return false;
  }
}

Deno.test({
  name: "multi-process: writes through one replica read back through every other",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    try {
      for (let i = 0; i < 10; i++) {
        const written = await put(cluster.urls[i % 3]!, `key-${i}`, `value-${i}`);
        assert.equal(written.status, 200);
      }
      for (const url of cluster.urls) {
        for (let i = 0; i < 10; i++) assert.equal(await get(url, `key-${i}`), `value-${i}`);
      }
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "multi-process: concurrent conflicting writers stay linearizable and converge",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    try {
      const recorder = new HistoryRecorder({ now: () => performance.now() });
      let unique = 0;
      const client = async (process: number) => {
        const url = cluster.urls[process % 3]!;
        for (let i = 0; i < 30; i++) {
          const key = `hot-${i % 2}`;
          if (i % 3 === 2) {
            recorder.invoke(process, { f: "get", key });
            try {
              recorder.ok(process, { value: await get(url, key) });
            } catch {
              recorder.info(process);
            }
          } else {
            const value = `w${process}-${++unique}`;
            recorder.invoke(process, { f: "put", key, value });
            try {
              const written = await put(url, key, value);
              if (written.status === 200) recorder.ok(process);
              else if (written.status === 503) recorder.fail(process);
              else recorder.info(process);
            } catch {
              recorder.info(process);
            }
          }
        }
      };
      await Promise.all([0, 1, 2, 3, 4, 5].map(client));
      const result = recorder.check();
      assert.equal(result.verdict, "linearizable", recorder.toJsonLines());
      await waitUntil(() => converged(cluster.urls), {
        deadlineMs: 20_000,
        what: "identical state digests",
      });
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "multi-process: a compare-and-set race has exactly one winner",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    try {
      const created = await put(cluster.urls[0]!, "lock", "free", { "if-none-match": "*" });
      assert.equal(created.status, 200);
      const attempts = await Promise.all(
        Array.from(
          { length: 12 },
          (_, i) =>
            put(cluster.urls[i % 3]!, "lock", `owner-${i}`, { "if-match": `"${created.version}"` }),
        ),
      );
      assert.equal(attempts.filter((attempt) => attempt.status === 200).length, 1);
      assert.equal(attempts.filter((attempt) => attempt.status === 412).length, 11);
      const winner = attempts.findIndex((attempt) => attempt.status === 200);
      for (const url of cluster.urls) assert.equal(await get(url, "lock"), `owner-${winner}`);
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name:
    "multi-process: a replica killed with SIGKILL under load loses no acknowledged write and catches up",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    try {
      const acknowledged = new Map<string, string>();
      let acknowledgements = 0;
      let stop = false;
      const writer = async (worker: number) => {
        // Writes go to replicas 0 and 1; replica 2 is the one killed.
        for (let i = 0; !stop; i++) {
          const key = `load-${worker}-${i % 20}`;
          const value = `${worker}.${i}`;
          try {
            const written = await put(cluster.urls[worker % 2]!, key, value);
            if (written.status === 200) {
              acknowledged.set(key, value);
              acknowledgements++;
            }
          } catch {
            // Unknown outcome: not acknowledged, so not checked.
          }
        }
      };
      const writers = [0, 1, 2, 3].map(writer);
      await waitUntil(() => acknowledgements >= 20, { deadlineMs: 20_000, what: "load to start" });
      await cluster.kill(2, "SIGKILL");
      const whileDown = acknowledgements;
      await waitUntil(() => acknowledgements >= whileDown + 100, {
        deadlineMs: 20_000,
        what: "writes to continue with one replica down",
      });
      await cluster.restart(2);
      const afterRestart = acknowledgements;
      await waitUntil(() => acknowledgements >= afterRestart + 100, {
        deadlineMs: 20_000,
        what: "writes after restart",
      });
      stop = true;
      await Promise.all(writers);
      await waitUntil(() => converged(cluster.urls), {
        deadlineMs: 30_000,
        what: "the restarted replica to catch up",
      });
      for (const [key, value] of acknowledged) {
        assert.equal(
          await get(cluster.urls[2]!, key, true),
          value,
          `${key} on the restarted replica`,
        );
        assert.equal(await get(cluster.urls[0]!, key), value, `${key} through consensus`);
      }
    } finally {
      await cluster.stop();
    }
  },
});

Deno.test({
  name: "multi-process: a peer request without the credential is refused and changes nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startProcessCluster(3);
    try {
      await put(cluster.urls[0]!, "guarded", "original");
      // Quiet means the write's execution is recorded everywhere: executed
      // frontiers advance only after a (possibly deferred) marker Ready.
      await waitUntil(async () =>
        await converged(cluster.urls) &&
        ((await status(cluster.urls[1]!)).frontiers as { executed: number[] }).executed[0]! >= 1, {
        deadlineMs: 10_000,
        what: "a quiet cluster",
      });
      const before = await status(cluster.urls[1]!);
      // A forged commit of a new value for an instance, addressed to replica 1.
      const forged = encodeBatch({
        from: 0,
        messages: [{
          type: "commit",
          from: 0,
          to: 1,
          owner: 0,
          number: 1000,
          ballot: 0,
          command: [{
            op: "put",
            request: "forged",
            key: "guarded",
            value: new TextEncoder().encode("forged"),
          }],
          deps: [0, 0, 0, 0],
        }],
      }) as Uint8Array<ArrayBuffer>;
      const attempts: Record<string, string>[] = [{}, {
        authorization: "Bearer not-the-secret-at-all",
      }];
      for (const headers of attempts) {
        const response = await fetch(`${cluster.urls[1]}${PEER_BATCH_PATH}`, {
          method: "POST",
          body: forged,
          headers,
        });
        assert.equal(response.status, 401);
        assert.match((await response.json()).error, /credential/);
      }
      const after = await status(cluster.urls[1]!);
      assert.deepEqual(
        (after.frontiers as { executed: number[] }).executed,
        (before.frontiers as { executed: number[] }).executed,
      );
      assert.equal(after.stateDigest, before.stateDigest);
      assert.equal(await get(cluster.urls[1]!, "guarded"), "original");
    } finally {
      await cluster.stop();
    }
  },
});
