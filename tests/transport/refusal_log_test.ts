/**
 * A peer whose credential is refused is logged on both sides, once per peer
 * and not per request; once it is accepted again, a new refusal is logged anew.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { SystemClock } from "../../src/runtime/clock.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import { encodeBatch } from "../../src/transport/codec.ts";
import { HttpTransport, PEER_BATCH_PATH } from "../../src/transport/http.ts";
import { peerRoute } from "../../src/transport/http_route.ts";
import { DEADLINE_MS, messages, statsOf, waitFor } from "./contract.ts";

const RECEIVER_SECRET = "receiver-secret-0123456789";
const SENDER_SECRET = "sender-secret-9876543210";

/** Replica 1's peer route with `secret`, logging into `lines`. */
function receiver(secret: string, lines: string[]): Hono {
  return peerRoute<KvCommand>({
    self: 1,
    replicas: 3,
    secret,
    isCommand: isKvCommand,
    receive: () => {},
    log: (line) => lines.push(line),
  });
}

Deno.test({
  name: "mismatched secrets: one log line on each side over many refused requests",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    const received: string[] = [];
    const sent: string[] = [];
    // What the receiver answers with: its own secret first, then the sender's.
    let route = receiver(RECEIVER_SECRET, received);
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (request, info) => route.fetch(request, info),
    );
    const url = `http://127.0.0.1:${server.addr.port}`;
    const sender = new HttpTransport<KvCommand>({
      self: 0,
      peers: [{ id: 0, url: "http://127.0.0.1:1" }, { id: 1, url }],
      secret: SENDER_SECRET,
      clock: new SystemClock(),
      random: new SeededRandom(7),
      backoffMs: 1,
      maxBackoffMs: 5,
      // Retried until delivered.
      maxAttempts: 1000,
      log: (line) => sent.push(line),
    });
    try {
      for (let i = 0; i < 30; i++) sender.send(messages(0, 1, 1 + i * 10, 2));
      await waitFor(
        () => statsOf(sender, 1).failedBatches >= 30,
        DEADLINE_MS,
        "30 refused requests",
      );
      assert.equal(sent.length, 1, sent.join("\n"));
      assert.match(
        sent[0]!,
        new RegExp(`^peer 1 \\(${url}\\) refused our cluster secret \\(401\\)`),
      );
      assert.equal(received.length, 1, received.join("\n"));
      assert.match(
        received[0]!,
        /^refused a peer request with a wrong cluster secret from 127\.0\.0\.1:\d+, claiming to be replica 0 /,
      );

      // Accepted once: the sender says so; a new refusal is logged again.
      route = receiver(SENDER_SECRET, received);
      const delivered = statsOf(sender, 1).sentBatches;
      sender.send(messages(0, 1, 1000, 1));
      await waitFor(() => statsOf(sender, 1).sentBatches > delivered, DEADLINE_MS, "a delivery");
      assert.equal(sent.length, 2);
      assert.match(sent[1]!, /^peer 1 \(.*\) accepts our requests again$/);
      route = receiver(RECEIVER_SECRET, received);
      const failed = statsOf(sender, 1).failedBatches;
      for (let i = 0; i < 10; i++) sender.send(messages(0, 1, 2000 + i * 10, 2));
      await waitFor(
        () => statsOf(sender, 1).failedBatches >= failed + 10,
        DEADLINE_MS,
        "10 more refused requests",
      );
      assert.equal(sent.length, 3, sent.join("\n"));
      assert.match(sent[2]!, /refused our cluster secret/);
      // A fresh route (a restarted receiver) logs again, once.
      assert.equal(received.length, 2, received.join("\n"));
    } finally {
      await sender.close();
      await server.shutdown();
    }
  },
});

Deno.test("the peer route logs a refused sender once until that sender is accepted", async () => {
  const lines: string[] = [];
  const route = receiver(RECEIVER_SECRET, lines);
  const post = (headers: Record<string, string>, from = 0) =>
    route.request(PEER_BATCH_PATH, {
      method: "POST",
      body: encodeBatch({ from, messages: messages(from, 1, 1, 1) }) as BodyInit,
      headers,
    });
  const wrong = { authorization: `Bearer ${SENDER_SECRET}`, "epaxos-sender": "0" };
  for (let i = 0; i < 20; i++) assert.equal((await post(wrong)).status, 401);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0]!,
    /with a wrong cluster secret from an unknown address, claiming to be replica 0/,
  );

  // Another claimed sender, and requests naming none (or nonsense): one line each.
  for (let i = 0; i < 5; i++) {
    await post({ ...wrong, "epaxos-sender": "2" });
    await post({});
    await post({ authorization: "Bearer x", "epaxos-sender": "99999" });
  }
  assert.equal(lines.length, 3, lines.join("\n"));
  assert.match(lines[1]!, /claiming to be replica 2/);
  assert.match(lines[2]!, /without a credential .*naming no replica as sender/);

  // Replica 0 accepted: its next refusal is logged again; replica 2's is not.
  assert.equal((await post({ authorization: `Bearer ${RECEIVER_SECRET}` })).status, 204);
  await post(wrong);
  await post({ ...wrong, "epaxos-sender": "2" });
  assert.equal(lines.length, 4, lines.join("\n"));
  assert.match(lines[3]!, /claiming to be replica 0/);
});
