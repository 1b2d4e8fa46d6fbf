/**
 * Slow storage commits are logged at most once a second, with a count of
 * those left out (a loaded machine can make every commit slow).
 */

import assert from "node:assert/strict";
import { SLOW_COMMIT_LOG_INTERVAL_MS, SLOW_COMMIT_MS } from "../../src/driver/ready_loop.ts";
import { startTestCluster, waitFor } from "../server/cluster_helpers.ts";

Deno.test("slow storage commits: one line a second, counting the rest", async () => {
  const lines: string[] = [];
  const cluster = await startTestCluster(3, {
    log: (line) => {
      if (line.startsWith("slow storage commit")) lines.push(line);
    },
  });
  try {
    // Replica 0's storage takes longer than the threshold for every commit.
    const storage = cluster.storages[0]!;
    const commit = storage.commit.bind(storage);
    let slowCommits = 0;
    storage.commit = async (batch) => {
      await new Promise((resolve) => setTimeout(resolve, SLOW_COMMIT_MS + 5));
      slowCommits++;
      return await commit(batch);
    };
    const node = cluster.nodes[0]!;
    const started = performance.now();
    let written = 0;
    while (performance.now() - started < SLOW_COMMIT_LOG_INTERVAL_MS / 2) {
      await node.submit({ op: "put", key: `k${written++}`, value: new Uint8Array([1]) });
    }
    assert.ok(slowCommits >= 5, `only ${slowCommits} slow commits`);
    assert.equal(lines.length, 1, lines.join("\n"));
    // A second later, the next slow commit is logged with the count left out.
    await new Promise((resolve) => setTimeout(resolve, SLOW_COMMIT_LOG_INTERVAL_MS));
    await node.submit({ op: "put", key: "after", value: new Uint8Array([1]) });
    await waitFor(() => lines.length === 2, 5000, "the second line");
    assert.match(lines[1]!, /\(and \d+ more over 20 ms since the last line\)/);
  } finally {
    await cluster.stop();
  }
});
