import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import { Hono } from "hono";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { encodeBatch, MAX_BATCH_BYTES, type PeerBatch } from "../../src/transport/codec.ts";
import { PEER_BATCH_PATH } from "../../src/transport/http.ts";
import { peerRoute } from "../../src/transport/http_route.ts";

const SECRET = "route-secret-0123456789";
const AUTH = { authorization: `Bearer ${SECRET}` };

/** Replica 0's peer route, mounted as `src/server/app.ts` mounts it, and what it handed over. */
function receiver(receive?: (batch: PeerBatch<KvCommand>) => void) {
  const received: PeerBatch<KvCommand>[] = [];
  const app = new Hono();
  app.onError((error, c) => c.json({ error: `parent: ${error.message}` }, 500));
  app.route(
    "/",
    peerRoute<KvCommand>({
      self: 0,
      replicas: 3,
      secret: SECRET,
      isCommand: isKvCommand,
      receive: receive ?? ((batch) => {
        received.push(batch);
      }),
    }),
  );
  const post = (body: BodyInit, headers: Record<string, string> = {}) =>
    app.request(PEER_BATCH_PATH, { method: "POST", body, headers });
  return { app, received, post };
}

const nack = { type: "nack", from: 1, to: 0, owner: 1, number: 1, ballot: 3 } as const;

Deno.test("the peer route hands a well-formed batch to the replica and answers 204", async () => {
  const { received, post } = receiver();
  const answer = await post(encodeBatch({ from: 1, messages: [nack] }) as BodyInit, AUTH);
  assert.equal(answer.status, 204);
  assert.equal(await answer.text(), "");
  assert.deepEqual(received, [{ from: 1, messages: [nack] }]);
});

Deno.test("the peer route refuses a request without the credential before reading its body", async () => {
  const { received, post } = receiver();
  let pulled = false;
  const body = () =>
    new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled = true;
        controller.enqueue(encodeBatch({ from: 1, messages: [nack] }));
        controller.close();
      },
    }, { highWaterMark: 0 });
  const strangers: Record<string, string>[] = [
    {},
    { authorization: "Bearer wrong-secret-0123456789" },
    { authorization: `Basic ${SECRET}` },
  ];
  for (const headers of strangers) {
    const answer = await post(body(), headers);
    assert.equal(answer.status, 401);
    assert.deepEqual(await answer.json(), {
      error: "The peer route needs the cluster credential",
    });
  }
  assert.equal(pulled, false, "a stranger's body is never read");
  assert.deepEqual(received, []);
});

Deno.test("the peer route refuses strangers, malformed and oversized batches whole", async () => {
  const { received, post } = receiver();
  const refusal = async (body: Uint8Array, status: number, error: RegExp) => {
    const answer = await post(body as BodyInit, AUTH);
    assert.equal(answer.status, status, String(error));
    assert.match((await answer.json()).error, error);
  };
  await refusal(
    encode({ v: 1, from: 7, messages: [] }),
    403,
    /^Batch sender is not a replica of this cluster$/,
  );
  await refusal(new Uint8Array([0xc1, 0x00]), 400, /^Batch is not valid MessagePack/);
  await refusal(
    encodeBatch({ from: 1, messages: [nack, { ...nack, to: 2 }] }),
    400,
    /^Message 1 is addressed to 2, not 0$/,
  );
  await refusal(
    encode({
      v: 1,
      from: 1,
      messages: [{ ...nack, type: "preaccept", command: [{ op: "put" }], deps: [0, 0, 0, 0] }],
    }),
    400,
    /Malformed preaccept/,
  );
  await refusal(
    new Uint8Array(MAX_BATCH_BYTES + 1),
    413,
    new RegExp(`^Batch is larger than ${MAX_BATCH_BYTES} bytes$`),
  );
  assert.deepEqual(received, [], "nothing refused reached the replica");
});

Deno.test("the peer route answers only POST to its path; other errors reach the parent app", async () => {
  const { app } = receiver();
  assert.equal((await app.request(PEER_BATCH_PATH, { headers: AUTH })).status, 404);
  assert.equal(
    (await app.request("/peer/v1/other", { method: "POST", headers: AUTH })).status,
    404,
  );

  const failing = receiver(() => {
    throw new Error("replica stopped");
  });
  const answer = await failing.post(encodeBatch({ from: 1, messages: [nack] }) as BodyInit, AUTH);
  assert.equal(answer.status, 500);
  assert.deepEqual(await answer.json(), { error: "parent: replica stopped" });
});
