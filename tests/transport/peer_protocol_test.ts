/**
 * The peer protocol version (`src/transport/peer_protocol.ts`): the verdict
 * table; the peer route refusing a sender whose version is past its range
 * either way, before reading the batch, naming both versions; a real
 * transport told so, logging once and showing it in its stats until the peer
 * accepts it; the snapshot fetch saying so; and `/status` showing it for the
 * peer.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import {
  fetchSnapshot,
  SNAPSHOT_PATH,
  SnapshotRefusedError,
} from "../../src/net/snapshot_fetch.ts";
import { SystemClock } from "../../src/runtime/clock.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import { encodeBatch, type PeerBatch } from "../../src/transport/codec.ts";
import { HttpTransport, PEER_BATCH_PATH, PEER_SENDER_HEADER } from "../../src/transport/http.ts";
import { peerRoute } from "../../src/transport/http_route.ts";
import {
  describeProtocolRange,
  formatProtocolRange,
  MAX_PEER_PROTOCOL_VERSION,
  MIN_PEER_PROTOCOL_VERSION,
  parseProtocolRange,
  PEER_PROTOCOL_HEADER,
  PEER_PROTOCOL_RANGE_HEADER,
  PEER_PROTOCOL_VERSION,
  peerProtocolGate,
  peerProtocolVerdict,
  type ProtocolRange,
  ProtocolRefusals,
} from "../../src/transport/peer_protocol.ts";
import { TEST_SECRET, withClusterApp } from "../server/app_helpers.ts";
import { DEADLINE_MS, messages, statsOf, waitFor } from "./contract.ts";

const SECRET = "peer-protocol-secret-0123";

Deno.test("this build sends a version it takes itself", () => {
  assert.ok(MIN_PEER_PROTOCOL_VERSION <= PEER_PROTOCOL_VERSION);
  assert.ok(PEER_PROTOCOL_VERSION <= MAX_PEER_PROTOCOL_VERSION);
  assert.deepEqual(peerProtocolVerdict(String(PEER_PROTOCOL_VERSION)), {
    ok: true,
    version: PEER_PROTOCOL_VERSION,
  });
});

Deno.test("the verdict on a request's version, for a receiver taking 2 to 3", () => {
  const range = { min: 2, max: 3 };
  const table: [string | undefined, boolean | string][] = [
    ["2", true],
    ["3", true],
    [" 3 ", true],
    // N+1 past the top: the receiver is behind.
    ["4", "The request speaks peer protocol 4; this replica speaks 2 to 3: upgrade this replica"],
    // N-1 below the bottom: the sender is behind.
    ["1", "The request speaks peer protocol 1; this replica speaks 2 to 3: upgrade the sender"],
    // No header: a build from before versions, which spoke 1.
    [
      undefined,
      "The request names no peer protocol version (a build before versions, version 1); " +
      "this replica speaks peer protocol 2 to 3: upgrade the sender",
    ],
    [
      "0",
      'The request\'s peer protocol version "0" is not a version number; this replica speaks peer protocol 2 to 3',
    ],
    [
      "2.0",
      'The request\'s peer protocol version "2.0" is not a version number; this replica speaks peer protocol 2 to 3',
    ],
    [
      "1234567",
      'The request\'s peer protocol version "1234567" is not a version number; this replica speaks peer protocol 2 to 3',
    ],
  ];
  for (const [header, expected] of table) {
    const verdict = peerProtocolVerdict(header, range);
    if (expected === true) {
      assert.deepEqual(verdict, { ok: true, version: Number(header) }, `${header}`);
    } else {
      assert.equal(verdict.ok, false, `${header}`);
      assert.equal(!verdict.ok && verdict.message, expected);
    }
  }
  // This build takes a request without the header: builds before it spoke version 1.
  assert.deepEqual(peerProtocolVerdict(undefined, { min: 1, max: 1 }), { ok: true, version: 1 });
});

Deno.test("version ranges read back as they are written; malformed ones are not ranges", () => {
  for (const range of [{ min: 1, max: 1 }, { min: 2, max: 17 }]) {
    assert.deepEqual(parseProtocolRange(formatProtocolRange(range)), range);
  }
  for (const text of ["", "1", "2-1", "0-1", "a-b", "1-2-3", "1 - 2"]) {
    assert.equal(parseProtocolRange(text), undefined, text);
  }
  assert.equal(describeProtocolRange({ min: 1, max: 1 }), "1");
  assert.equal(describeProtocolRange({ min: 1, max: 2 }), "1 to 2");
});

/** Replica 1's peer route taking `range`, recording batches, log lines and refusals. */
function receiver(range: ProtocolRange | undefined) {
  const batches: PeerBatch<KvCommand>[] = [];
  const lines: string[] = [];
  const refusals = new ProtocolRefusals();
  const route = peerRoute<KvCommand>({
    self: 1,
    replicas: 3,
    secret: SECRET,
    isCommand: isKvCommand,
    receive: (batch) => {
      batches.push(batch);
    },
    log: (line) => lines.push(line),
    protocolRefusals: refusals,
    ...(range === undefined ? {} : { protocols: range }),
  });
  return { route, batches, lines, refusals };
}

function post(route: Hono, version: string | undefined): Promise<Response> {
  return Promise.resolve(route.request(PEER_BATCH_PATH, {
    method: "POST",
    headers: {
      authorization: `Bearer ${SECRET}`,
      [PEER_SENDER_HEADER]: "0",
      ...(version === undefined ? {} : { [PEER_PROTOCOL_HEADER]: version }),
    },
    body: encodeBatch({ from: 0, messages: messages(0, 1, 1, 2) }) as BodyInit,
  }));
}

for (
  const [label, range, sent, upgrade] of [
    ["N+1, past the top", undefined, PEER_PROTOCOL_VERSION + 1, "upgrade this replica"],
    [
      "N-1, below the bottom",
      { min: PEER_PROTOCOL_VERSION + 1, max: PEER_PROTOCOL_VERSION + 1 },
      PEER_PROTOCOL_VERSION,
      "upgrade the sender",
    ],
  ] as const
) {
  Deno.test(`the peer route refuses a batch of version ${label}, naming both, and takes nothing`, async () => {
    const { route, batches, lines, refusals } = receiver(range);
    const taken = range ?? { min: MIN_PEER_PROTOCOL_VERSION, max: MAX_PEER_PROTOCOL_VERSION };
    for (let attempt = 0; attempt < 3; attempt++) {
      const response = await post(route, String(sent));
      assert.equal(response.status, 400);
      assert.equal(response.headers.get(PEER_PROTOCOL_RANGE_HEADER), formatProtocolRange(taken));
      const body = await response.json();
      assert.equal(
        body.error,
        `The request speaks peer protocol ${sent}; this replica speaks ${
          describeProtocolRange(taken)
        }: ${upgrade}`,
      );
      assert.deepEqual(body.protocol, { request: sent, min: taken.min, max: taken.max });
    }
    assert.equal(batches.length, 0, "nothing taken");
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0]!, new RegExp(`^refused POST ${PEER_BATCH_PATH} from replica 0: `));
    assert.match(refusals.of(0) ?? "", new RegExp(`speaks peer protocol ${sent};`));

    // The sender upgraded: taken, and its refusal forgotten.
    const response = await post(route, String(taken.max));
    assert.equal(response.status, 204);
    assert.equal(batches.length, 1);
    assert.equal(refusals.of(0), undefined);
  });
}

Deno.test("the peer route takes a batch without the version header: builds before it spoke 1", async () => {
  const { route, batches } = receiver(undefined);
  assert.equal((await post(route, undefined)).status, 204);
  assert.equal(batches.length, 1);
});

Deno.test("the peer route checks the credential before the version", async () => {
  const { route, lines } = receiver(undefined);
  const response = await route.request(PEER_BATCH_PATH, {
    method: "POST",
    headers: { [PEER_PROTOCOL_HEADER]: "999" },
    body: new Uint8Array(8),
  });
  assert.equal(response.status, 401);
  assert.ok(lines.every((line) => !line.includes("peer protocol")), lines.join("\n"));
});

for (
  const [label, senderVersion, receiverRange, upgrade] of [
    [
      "a receiver behind the sender",
      PEER_PROTOCOL_VERSION + 1,
      undefined,
      "upgrade it",
    ],
    [
      "a receiver ahead of the sender",
      undefined,
      { min: PEER_PROTOCOL_VERSION + 1, max: PEER_PROTOCOL_VERSION + 2 },
      "upgrade this replica",
    ],
  ] as const
) {
  Deno.test({
    name: `a transport refused by ${label} logs it once and shows it until accepted`,
    sanitizeOps: true,
    sanitizeResources: true,
    async fn() {
      let subject = receiver(receiverRange);
      const server = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen() {} },
        (request, info) => subject.route.fetch(request, info),
      );
      const url = `http://127.0.0.1:${server.addr.port}`;
      const sent: string[] = [];
      const sender = new HttpTransport<KvCommand>({
        self: 0,
        peers: [{ id: 0, url: "http://127.0.0.1:1" }, { id: 1, url }],
        secret: SECRET,
        clock: new SystemClock(),
        random: new SeededRandom(3),
        backoffMs: 1,
        maxBackoffMs: 5,
        maxAttempts: 1000,
        log: (line) => sent.push(line),
        ...(senderVersion === undefined ? {} : { protocolVersion: senderVersion }),
      });
      const ours = senderVersion ?? PEER_PROTOCOL_VERSION;
      const theirs = receiverRange ??
        { min: MIN_PEER_PROTOCOL_VERSION, max: MAX_PEER_PROTOCOL_VERSION };
      try {
        for (let i = 0; i < 10; i++) sender.send(messages(0, 1, 1 + i * 10, 2));
        await waitFor(() => statsOf(sender, 1).failedBatches >= 10, DEADLINE_MS, "10 refusals");
        const expected = `peer 1 (${url}) refused our peer protocol ${ours}: it speaks ${
          describeProtocolRange(theirs)
        }; ${upgrade}`;
        assert.equal(statsOf(sender, 1).protocolRefusal, expected);
        assert.equal(statsOf(sender, 1).lastContactMs, undefined, "a refusal is no contact");
        assert.deepEqual(sent, [`${expected} (logged once until it accepts us again)`]);
        assert.equal(subject.batches.length, 0);
        assert.equal(subject.lines.length, 1, subject.lines.join("\n"));

        // The receiver upgraded (or rolled back) to take the sender's version.
        subject = receiver({ min: ours, max: ours });
        await waitFor(() => subject.batches.length > 0, DEADLINE_MS, "a delivery");
        await waitFor(
          () => statsOf(sender, 1).protocolRefusal === undefined,
          DEADLINE_MS,
          "the refusal cleared",
        );
        assert.equal(sent.length, 2);
        assert.match(sent[1]!, /^peer 1 \(.*\) accepts our requests again$/);
      } finally {
        await sender.close();
        await server.shutdown();
      }
    },
  });
}

Deno.test("a snapshot fetch from a peer of another version is refused, naming both", async () => {
  const lines: string[] = [];
  const peer = new Hono();
  peer.get(
    SNAPSHOT_PATH,
    peerProtocolGate({
      range: { min: PEER_PROTOCOL_VERSION + 1, max: PEER_PROTOCOL_VERSION + 1 },
      sender: (c) => Number(c.req.query("for")),
      log: (line) => lines.push(line),
    }),
    (c) => c.text("never reached", 500),
  );
  await assert.rejects(
    fetchSnapshot("http://peer.invalid:8001", {
      secret: SECRET,
      requester: 2,
      fetch: (input, init) => Promise.resolve(peer.request(String(input), init)),
    }),
    (error: unknown) =>
      error instanceof SnapshotRefusedError && error.status === 400 &&
      error.message.includes(
        `The request speaks peer protocol ${PEER_PROTOCOL_VERSION}; this replica speaks ${
          PEER_PROTOCOL_VERSION + 1
        }: upgrade the sender`,
      ),
  );
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, new RegExp(`^refused GET ${SNAPSHOT_PATH} from replica 2: `));
});

Deno.test("/status shows a peer whose version this replica refused; the admin route checks it too", async () => {
  await withClusterApp(async ({ app }) => {
    const refused = await app.request(PEER_BATCH_PATH, {
      method: "POST",
      headers: {
        authorization: `Bearer ${TEST_SECRET}`,
        [PEER_SENDER_HEADER]: "2",
        [PEER_PROTOCOL_HEADER]: String(MAX_PEER_PROTOCOL_VERSION + 1),
      },
      body: new Uint8Array(8) as BodyInit,
    });
    assert.equal(refused.status, 400);
    const status = await (await app.request("/status")).json();
    const byId = new Map<number, { protocolRefusal: string | null }>(
      status.peers.map((peer: { id: number }) => [peer.id, peer]),
    );
    assert.equal(
      byId.get(2)?.protocolRefusal,
      `refused replica 2: The request speaks peer protocol ${
        MAX_PEER_PROTOCOL_VERSION + 1
      }; this replica speaks ${
        describeProtocolRange({
          min: MIN_PEER_PROTOCOL_VERSION,
          max: MAX_PEER_PROTOCOL_VERSION,
        })
      }: upgrade this replica`,
    );
    assert.equal(byId.get(1)?.protocolRefusal, null);

    const admin = (version: number) =>
      app.request("/admin/members", {
        headers: {
          authorization: `Bearer ${TEST_SECRET}`,
          [PEER_PROTOCOL_HEADER]: String(version),
        },
      });
    const refusedAdmin = await admin(MAX_PEER_PROTOCOL_VERSION + 1);
    assert.equal(refusedAdmin.status, 400);
    assert.match((await refusedAdmin.json()).error, /speaks peer protocol/);
    const members = await admin(PEER_PROTOCOL_VERSION);
    assert.equal(members.status, 200);
    await members.body?.cancel();
  });
});
