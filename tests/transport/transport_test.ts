import assert from "node:assert/strict";
import { isKvCommand, type KvCommand } from "../../src/kv/commands.ts";
import { SystemClock } from "../../src/runtime/clock.ts";
import { SeededRandom } from "../../src/runtime/random.ts";
import type { PeerBatch } from "../../src/transport/codec.ts";
import { HttpTransport, type HttpTransportOptions } from "../../src/transport/http.ts";
import { peerRoute } from "../../src/transport/http_route.ts";
import { MemoryNetwork } from "../../src/transport/memory.ts";
import type { PeerTransport } from "../../src/transport/types.ts";
import {
  DEADLINE_MS,
  messages,
  REPLICAS,
  runTransportContract,
  statsOf,
  type TransportFactory,
  type TransportSubject,
  waitFor,
} from "./contract.ts";

const memoryFactory: TransportFactory = {
  name: "MemoryNetwork",
  boundsQueue: true,
  probes: false,
  ordersBatches: true,
  create(options) {
    const clock = new SystemClock();
    const network = new MemoryNetwork<KvCommand>({
      replicas: REPLICAS,
      isCommand: isKvCommand,
      clock,
      ...options,
    });
    const received = Array.from({ length: REPLICAS }, () => [] as PeerBatch<KvCommand>[]);
    const epochs = received.map(() => 1);
    received.forEach((batches, id) =>
      network.attach(id, (batch) => {
        if ((batch.epoch ?? 1) < epochs[id]!) return { epoch: epochs[id]! };
        batches.push(batch);
        return undefined;
      })
    );
    const senders = new Map<number, PeerTransport<KvCommand>>();
    const subject: TransportSubject = {
      clock,
      refused: 0,
      sender(id) {
        let sender = senders.get(id);
        if (sender === undefined) senders.set(id, sender = network.transport(id));
        return sender;
      },
      received: (id) => received[id]!,
      laterEpoch(id, epoch) {
        epochs[id] = epoch;
      },
      down(id) {
        network.setDown(id, true);
        return Promise.resolve();
      },
      up(id) {
        network.setDown(id, false);
        return Promise.resolve();
      },
      async dispose() {
        await Promise.all([...senders.values()].map((sender) => sender.close()));
      },
    };
    return Promise.resolve(subject);
  },
};

const SECRET = "transport-contract-secret";

const httpFactory: TransportFactory = {
  name: "HttpTransport",
  boundsQueue: true,
  probes: true,
  // Several requests in flight per peer: batches may overtake one another.
  ordersBatches: false,
  create(options) {
    const clock = new SystemClock();
    const received = Array.from({ length: REPLICAS }, () => [] as PeerBatch<KvCommand>[]);
    const epochs = received.map(() => 1);
    let refused = 0;
    // The receiving side is the production one (`src/transport/http_route.ts`).
    const handler = (id: number) => {
      const route = peerRoute<KvCommand>({
        self: id,
        replicas: REPLICAS,
        secret: SECRET,
        isCommand: isKvCommand,
        receive: (batch) => {
          if ((batch.epoch ?? 1) < epochs[id]!) return { epoch: epochs[id]! };
          received[id]!.push(batch);
          return undefined;
        },
      });
      return async (request: Request): Promise<Response> => {
        const response = await route.fetch(request);
        // 409: a batch of an earlier epoch than the receiver's, answered as meant.
        if (response.status !== 204 && response.status !== 409) refused++;
        return response;
      };
    };
    const serve = (id: number, port: number) =>
      Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, handler(id));
    const servers: (Deno.HttpServer<Deno.NetAddr> | undefined)[] = received.map((_, id) =>
      serve(id, 0)
    );
    const ports = servers.map((server) => server!.addr.port);
    const peers = ports.map((port, id) => ({ id, url: `http://127.0.0.1:${port}` }));
    const senders = new Map<number, PeerTransport<KvCommand>>();
    const subject: TransportSubject = {
      clock,
      get refused() {
        return refused;
      },
      sender(id) {
        let sender = senders.get(id);
        if (sender === undefined) {
          sender = new HttpTransport<KvCommand>({
            self: id,
            peers,
            secret: SECRET,
            clock,
            random: new SeededRandom(id),
            // Short backoff and few attempts, so that a down peer costs little time.
            backoffMs: 5,
            maxBackoffMs: 40,
            maxAttempts: 3,
            timeoutMs: 2000,
            ...options,
          });
          senders.set(id, sender);
        }
        return sender;
      },
      received: (id) => received[id]!,
      laterEpoch(id, epoch) {
        epochs[id] = epoch;
      },
      async down(id) {
        await servers[id]?.shutdown();
        servers[id] = undefined;
      },
      up(id) {
        // The same port: the transport knows its peers by URL.
        servers[id] ??= serve(id, ports[id]!);
        return Promise.resolve();
      },
      async dispose() {
        await Promise.all([...senders.values()].map((sender) => sender.close()));
        await Promise.all(servers.map((server) => server?.shutdown()));
      },
    };
    return Promise.resolve(subject);
  },
};

runTransportContract(memoryFactory);
runTransportContract(httpFactory);

// --- HTTP specifics ---------------------------------------------------------

/** An `HttpTransport` from replica 0 to replica 1 at `url`, on short timers unless told. */
function httpSender(url: string, options: Partial<HttpTransportOptions> = {}) {
  return new HttpTransport<KvCommand>({
    self: 0,
    peers: [{ id: 1, url }],
    secret: SECRET,
    clock: new SystemClock(),
    random: new SeededRandom(1),
    ...options,
  });
}

/** A port with nothing listening on it. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test({
  name: "HttpTransport: close waits no longer than the request timeout for a silent peer",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    // Accepts connections and never answers.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const connections: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const connection of listener) connections.push(connection);
    })();
    const sender = httpSender(`http://127.0.0.1:${listener.addr.port}`, { timeoutMs: 200 });
    try {
      sender.send(messages(0, 1, 1, 3));
      await waitFor(() => connections.length > 0, DEADLINE_MS, "a connection");
      const started = Date.now();
      let closed = false;
      const closing = sender.close().then(() => closed = true);
      // Timeout plus the timer slot (250 ms), with room for a loaded machine.
      await waitFor(() => closed, 2000, "close to resolve");
      await closing;
      assert.ok(Date.now() - started < 2000);
      const stats = statsOf(sender, 1);
      assert.equal(stats.sentMessages, 0);
      assert.equal(stats.oldestOutstandingMs, undefined);
    } finally {
      // The peer first: a close still waiting on it then resolves.
      listener.close();
      await accepting.catch(() => {});
      for (const connection of connections) connection.close();
      await sender.close();
    }
  },
});

Deno.test({
  name: "HttpTransport: close clears the backoff of every failed request",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    // Long backoff: a timer left behind outlives the test.
    const sender = httpSender(`http://127.0.0.1:${closedPort()}`, {
      backoffMs: 2000,
      maxBackoffMs: 2000,
    });
    try {
      // Three requests in flight at once, all failing.
      for (let i = 0; i < 3; i++) sender.send(messages(0, 1, i * 10, 2));
      await waitFor(() => statsOf(sender, 1).failedBatches === 3, DEADLINE_MS, "3 failures");
    } finally {
      await sender.close();
    }
  },
});
