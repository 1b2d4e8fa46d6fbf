/**
 * Writes for a client that retries blindly (src/kvconnect/outcome_hold.ts),
 * on a real in-process cluster: unavailable only when nothing was proposed;
 * after the driver gave up on a proposed command, its result once it
 * executes, or unknown after the hold.
 */

import assert from "node:assert/strict";
import { OutcomeHold } from "../../src/kvconnect/outcome_hold.ts";
import { startTestCluster, waitFor } from "../server/cluster_helpers.ts";

const put = (key: string) => ({
  op: "put" as const,
  key,
  value: new TextEncoder().encode("v"),
  ifVersion: null,
});

Deno.test("a write proposed but not executed in time is held until its result, then answered with it", async () => {
  const cluster = await startTestCluster(3, { contactWindowMs: 1000, requestTimeoutMs: 200 });
  try {
    const hold = new OutcomeHold(cluster.nodes[0]!, { holdMs: 20_000 });
    cluster.network.setDown(0, true);
    const outcome = hold.submit(put("a"));
    await waitFor(() => hold.held === 1, 5000, "the driver to give up and the write to be held");
    cluster.network.setDown(0, false);
    const answered = await outcome;
    assert.equal(answered.kind, "result");
    assert.equal(
      answered.kind === "result" && answered.result.op === "put" && answered.result.ok,
      true,
    );
    assert.equal(hold.held, 0);
  } finally {
    await cluster.stop();
  }
});

Deno.test("a held write still unknown after the hold is answered unknown; one never proposed, unavailable", async () => {
  const cluster = await startTestCluster(3, { contactWindowMs: 1000, requestTimeoutMs: 200 });
  try {
    const hold = new OutcomeHold(cluster.nodes[0]!, { holdMs: 300 });
    cluster.network.setDown(0, true);
    const started = Date.now();
    const unknown = await hold.submit(put("a"));
    assert.equal(unknown.kind, "unknown");
    assert.ok(Date.now() - started >= 450, "held past the driver's timeout");
    assert.equal(hold.held, 0);
    await waitFor(() => !cluster.nodes[0]!.quorumReachable(), 5000, "the quorum to be lost");
    const refused = await hold.submit(put("b"));
    assert.equal(refused.kind, "unavailable");
  } finally {
    await cluster.stop();
  }
});
