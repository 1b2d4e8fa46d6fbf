import assert from "node:assert/strict";
import {
  parseResponse,
  PEER_EPOCH_HEADER,
  PeerRequestError,
  PipelinedClient,
} from "../../src/transport/pipelined_client.ts";

const ascii = new TextEncoder();

Deno.test("parseResponse reads content-length and bodyless answers, waits for the rest", () => {
  const ok = ascii.encode("HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
  assert.deepEqual(parseResponse(ok), { status: 204, consumed: ok.length, close: false });
  const error = ascii.encode(
    'HTTP/1.1 400 Bad Request\r\nContent-Length: 13\r\n\r\n{"error":"x"}',
  );
  assert.deepEqual(parseResponse(error), { status: 400, consumed: error.length, close: false });
  // Incomplete head or body: not yet.
  assert.equal(parseResponse(error.subarray(0, 20)), undefined);
  assert.equal(parseResponse(error.subarray(0, error.length - 1)), undefined);
  // Two answers back to back: the first only.
  const two = new Uint8Array([...ok, ...error]);
  assert.equal(parseResponse(two)!.consumed, ok.length);
  const closing = ascii.encode("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
  assert.equal(parseResponse(closing)!.close, true);
});

Deno.test("parseResponse reads the epoch of a peer that refuses a batch of an earlier one", () => {
  const refused = ascii.encode(
    `HTTP/1.1 409 Conflict\r\n${PEER_EPOCH_HEADER}: 3\r\nContent-Length: 2\r\n\r\n{}`,
  );
  assert.deepEqual(parseResponse(refused), {
    status: 409,
    consumed: refused.length,
    close: false,
    epoch: 3,
  });
  // A malformed value is ignored, not fatal: the header frames nothing.
  const malformed = ascii.encode(
    `HTTP/1.1 409 Conflict\r\n${PEER_EPOCH_HEADER}: x3\r\nContent-Length: 0\r\n\r\n`,
  );
  assert.equal(parseResponse(malformed)!.epoch, undefined);
});

Deno.test("parseResponse refuses what it cannot frame", () => {
  const cases: [string, RegExp][] = [
    ["SMTP ready\r\n\r\n", /Malformed status line/],
    ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", /Unsupported transfer-encoding/],
    ["HTTP/1.1 200 OK\r\n\r\n", /no content-length/],
    ["HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", /Malformed content-length/],
    ["HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", /Malformed/],
    ["HTTP/1.1 200 OK\r\nno colon\r\n\r\n", /Malformed header line/],
    ["HTTP/1.1 100 Continue\r\n\r\n", /interim/],
    ["HTTP/1.1 200 OK\r\nContent-Length: 9999999\r\n\r\n", /too large/],
  ];
  for (const [text, reason] of cases) {
    assert.throws(() => parseResponse(ascii.encode(text)), reason, text);
  }
  assert.throws(() => parseResponse(new Uint8Array(20_000).fill(65)), /head is too large/);
});

/** A Deno.serve server answering each POST with the status its body names, after `delayMs`. */
function statusServer(delayMs = 0) {
  const seen: string[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    const body = await request.text();
    seen.push(
      `${request.method} ${new URL(request.url).pathname} ${body} ${
        request.headers.get("authorization")
      }`,
    );
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    const status = Number(body);
    return new Response(status === 204 ? null : "answer", { status });
  });
  return { server, seen, url: `http://127.0.0.1:${server.addr.port}/peer/v1/batch` };
}

Deno.test("requests pipelined on one connection get their own answers, in order", async () => {
  const { server, seen, url } = statusServer();
  const client = new PipelinedClient({ url, headers: { authorization: "Bearer s" } });
  try {
    const statuses = [204, 400, 204, 503, 204, 200];
    const answers = await Promise.all(statuses.map((s) => client.post(ascii.encode(String(s)))));
    assert.deepEqual(answers.map((answer) => answer.status), statuses);
    assert.deepEqual(seen, statuses.map((s) => `POST /peer/v1/batch ${s} Bearer s`));
    // Still usable after.
    assert.equal((await client.post(ascii.encode("204"))).status, 204);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("an aborted request drops the connection and fails the requests behind it", async () => {
  const { server, url } = statusServer(300);
  const client = new PipelinedClient({ url, headers: {} });
  try {
    const controller = new AbortController();
    const first = client.post(ascii.encode("204"), controller.signal);
    const second = client.post(ascii.encode("204"));
    setTimeout(() => controller.abort(new Error("deadline")), 20);
    await assert.rejects(first, PeerRequestError);
    await assert.rejects(second, PeerRequestError);
    assert.equal(client.pending, 0);
    // The next request opens a new connection.
    assert.equal((await client.post(ascii.encode("204"))).status, 204);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("a refused connection, a peer that hangs up and a malformed answer fail with PeerRequestError", async () => {
  // Nothing listens on a port just freed.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const freePort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const refused = new PipelinedClient({ url: `http://127.0.0.1:${freePort}/x`, headers: {} });
  await assert.rejects(refused.post(new Uint8Array(1)), PeerRequestError);
  refused.close();

  // A raw server: the first connection gets garbage, the second is closed unanswered.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const served = (async () => {
    let index = 0;
    for await (const conn of listener) {
      await conn.read(new Uint8Array(4096));
      if (index++ === 0) await conn.write(ascii.encode("HTTP/1.1 200 OK\r\n\r\n"));
      conn.close();
      if (index === 2) break;
    }
  })();
  const client = new PipelinedClient({ url: `http://127.0.0.1:${port}/x`, headers: {} });
  await assert.rejects(client.post(new Uint8Array(1)), /no content-length/);
  await assert.rejects(client.post(new Uint8Array(1)), /closed the connection|Connection failed/);
  client.close();
  // Leaving the `for await` closed the listener.
  await served;
  await assert.rejects(client.post(new Uint8Array(1)), /closed/);
});

Deno.test("a request whose deadline passes while its connection opens fails at the deadline", async () => {
  let opened = 0;
  const client = new PipelinedClient({
    url: "http://127.0.0.1:1/x",
    headers: {},
    // A peer whose host does not answer: the connection never opens.
    connect: () => {
      opened++;
      return new Promise<Deno.Conn>(() => {});
    },
  });
  const controller = new AbortController();
  const started = performance.now();
  const first = client.post(new Uint8Array(1), controller.signal);
  const second = client.post(new Uint8Array(1), AbortSignal.timeout(60));
  setTimeout(() => controller.abort(new Error("deadline")), 20);
  // Bounded, so that a request that ignores its deadline fails the test
  // instead of hanging it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("still pending after 1000 ms")), 1000);
  });
  try {
    await Promise.race([assert.rejects(first, /aborted while connecting/), late]);
    await Promise.race([assert.rejects(second, /aborted while connecting/), late]);
  } finally {
    clearTimeout(timer);
  }
  assert.ok(performance.now() - started < 1000, "failed at the deadline, not later");
  // Both waited on the same attempt.
  assert.equal(opened, 1);
  client.close();
});

Deno.test("requests in flight share one connection", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let connections = 0;
  // A raw server: counts connections, answers 204 to every request it reads.
  const served = (async () => {
    for await (const conn of listener) {
      connections++;
      (async () => {
        const buffer = new Uint8Array(65536);
        let text = "";
        for (;;) {
          const count = await conn.read(buffer).catch(() => null);
          if (count === null) return;
          text += new TextDecoder().decode(buffer.subarray(0, count));
          for (;;) {
            const end = text.indexOf("\r\n\r\n");
            if (end < 0) break;
            const length = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
            if (text.length < end + 4 + length) break;
            text = text.slice(end + 4 + length);
            await conn.write(ascii.encode("HTTP/1.1 204 No Content\r\n\r\n"));
          }
        }
      })();
    }
  })();
  const client = new PipelinedClient({ url: `http://127.0.0.1:${port}/x`, headers: {} });
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, index) => client.post(ascii.encode(`batch ${index}`))),
  );
  assert.deepEqual(answers, Array(20).fill({ status: 204 }));
  assert.equal(connections, 1);
  client.close();
  listener.close();
  await served.catch(() => {});
});

Deno.test("header values with line breaks are refused up front", () => {
  assert.throws(
    () => new PipelinedClient({ url: "http://127.0.0.1:1/x", headers: { a: "b\r\nc: d" } }),
    /line break/,
  );
  assert.throws(() => new PipelinedClient({ url: "ftp://x/y", headers: {} }), /http or https/);
});
