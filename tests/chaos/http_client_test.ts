/**
 * Pins down a fact the chaos workload and the client library depend on: with
 * a reused keep-alive connection, a request whose server dies after receiving
 * it can fail with "Connection refused" (Deno's HTTP client retries it on a new
 * connection), so a refusal does not prove the request was never delivered.
 * Without connection reuse, a delivered request never reports a refusal.
 */

import assert from "node:assert/strict";
import { failedToConnect } from "../../src/client/client.ts";

const SERVER = `
const port = Number(Deno.args[0]);
Deno.serve({ hostname: "127.0.0.1", port, onListen() { console.log("up"); } }, async (request) => {
  const body = await request.text();
  if (body === "fast") return new Response("quick");
  console.log("got");
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  return new Response("late");
});
`;

/**
 * Starts a server, warms a connection with a quick request, sends a slow one,
 * and kills the server once it has read the slow one. Returns the fetch error.
 */
async function killAfterDelivery(
  options: { client?: Deno.HttpClient; headers?: Record<string, string> },
): Promise<unknown> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const server = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", SERVER, String(port)],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let output = "";
  const waitFor = async (text: string) => {
    while (!output.includes(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`Server exited before printing ${text}`);
      output += value;
    }
  };
  try {
    await waitFor("up");
    const url = `http://127.0.0.1:${port}/`;
    const init = {
      method: "POST",
      headers: options.headers ?? {},
      ...(options.client === undefined ? {} : { client: options.client }),
    };
    await (await fetch(url, { ...init, body: "fast" })).text();
    const pending = fetch(url, { ...init, body: "slow" }).then(
      () => undefined,
      (error) => error,
    );
    await waitFor("got");
    server.kill("SIGKILL");
    await server.status;
    return await pending;
  } finally {
    reader.releaseLock();
    await server.stdout.cancel().catch(() => {});
  }
}

Deno.test({
  name: "without connection reuse, a request the server received never fails as refused",
  sanitizeResources: false,
  async fn() {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      for (let round = 0; round < 4; round++) {
        const error = await killAfterDelivery({ client });
        assert.ok(error !== undefined, "the request failed");
        assert.equal(failedToConnect(error), false, String((error as Error).cause ?? error));
      }
    } finally {
      client.close();
    }
  },
});

Deno.test({
  name:
    "with Connection: close (what KvClient sends), a request the server received never fails as refused",
  sanitizeResources: false,
  async fn() {
    for (let round = 0; round < 4; round++) {
      const error = await killAfterDelivery({ headers: { connection: "close" } });
      assert.ok(error !== undefined, "the request failed");
      assert.equal(failedToConnect(error), false, String((error as Error).cause ?? error));
    }
  },
});
