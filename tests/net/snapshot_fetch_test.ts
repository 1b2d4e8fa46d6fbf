import assert from "node:assert/strict";
import { Hono } from "hono";
import type { KvCommand } from "../../src/kv/commands.ts";
import { SnapshotFormatError } from "../../src/kv/snapshot_file.ts";
import {
  fetchSnapshot,
  SnapshotRefusedError,
  SnapshotUnreachableError,
} from "../../src/net/snapshot_fetch.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import {
  SNAPSHOT_BARRIER_HEADER,
  SNAPSHOT_HOLD_MS,
  SNAPSHOT_OFFSET_HEADER,
  snapshotRoute,
} from "../../src/server/snapshot_route.ts";
import type { ReplicaSnapshot } from "../../src/storage/types.ts";
import { sampleSnapshot } from "../kv/snapshot_helpers.ts";
import { waitFor } from "../wait.ts";

const SECRET = "cluster-secret-0123456789";
/** Entries of the sample: a file of about 190 KB. */
const SIZE = 200;
/** Where the first transfer is cut. */
const CUT_AT = 100_000;

/**
 * A peer serving the snapshot route on a port of its own, with barriers b1,
 * b2, ...; it records each request's query, and can cut the next answer's
 * body after `cutAfter` bytes, once the receiver has written them.
 */
function startPeer(partialPath: string) {
  const base = sampleSnapshot(SIZE);
  const clock = new ManualClock();
  const peer = {
    taken: 0,
    queries: [] as string[],
    cutAfter: undefined as number | undefined,
    /** What the route logged. */
    logs: [] as string[],
    clock,
    snapshot: (barrier: string): ReplicaSnapshot<KvCommand> => ({ ...base, barrier }),
    url: "",
    stop: async () => {},
  };
  const app = new Hono();
  app.route(
    "/",
    snapshotRoute({
      secret: SECRET,
      rateMbps: Infinity,
      clock,
      log: (line) => peer.logs.push(line),
      source: { takeSnapshot: () => Promise.resolve(peer.snapshot(`b${++peer.taken}`)) },
    }),
  );
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    peer.queries.push(new URL(request.url).search);
    const answer = await app.fetch(request);
    const cutAfter = peer.cutAfter;
    if (cutAfter === undefined || answer.body === null || answer.status !== 200) return answer;
    peer.cutAfter = undefined;
    return new Response(cut(answer.body, cutAfter, partialPath), answer);
  });
  peer.url = `http://127.0.0.1:${server.addr.port}`;
  peer.stop = () => server.shutdown();
  return peer;
}

/** `body` for its first `bytes` bytes, then an error, once the receiver has written them. */
function cut(body: ReadableStream<Uint8Array>, bytes: number, partialPath: string) {
  const reader = body.getReader();
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent >= bytes) {
        await waitFor(
          () => {
            try {
              return Deno.statSync(partialPath).size >= bytes;
            } catch {
              return false;
            }
          },
          5000,
          "the receiver to write what was sent",
        );
        await reader.cancel();
        controller.error(new DOMException("cut by the test", "AbortError"));
        return;
      }
      const { done, value } = await reader.read();
      if (done) return controller.close();
      const part = value.subarray(0, bytes - sent);
      sent += part.length;
      controller.enqueue(part);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("a transfer cut midway resumes from where it stopped, with the same snapshot", async () => {
  const directory = await Deno.makeTempDir();
  const partialPath = `${directory}/snapshot.partial`;
  const peer = startPeer(partialPath);
  try {
    peer.cutAfter = CUT_AT;
    const lines: string[] = [];
    const log = (line: string) => lines.push(line);
    await assert.rejects(
      fetchSnapshot(peer.url, { secret: SECRET, partialPath, log }),
      (error: unknown) => {
        assert.ok(error instanceof SnapshotUnreachableError, String(error));
        assert.match(error.message, /^Snapshot transfer from http:\/\/127\.0\.0\.1:\d+ was cut/);
        assert.ok(!error.message.includes("\n"));
        return true;
      },
    );
    assert.equal((await Deno.stat(partialPath)).size, CUT_AT);
    const sidecar = JSON.parse(await Deno.readTextFile(`${partialPath}.json`));
    assert.deepEqual(sidecar, { peerUrl: peer.url, barrier: "b1", bytes: CUT_AT });
    // Another call (as after a restart) asks for the rest only.
    const snapshot = await fetchSnapshot(`${peer.url}/`, { secret: SECRET, partialPath, log });
    assert.deepEqual(peer.queries, ["", `?barrier=b1&offset=${CUT_AT}`]);
    // One line per transfer, on both sides: started afresh, then resumed.
    assert.deepEqual(lines, [
      `fetching the snapshot from replica ${peer.url} afresh, from byte 0`,
      `resuming the snapshot from replica ${peer.url} at byte ${CUT_AT} (barrier b1)`,
    ]);
    const resumedStreams = peer.logs.filter((line) => line.startsWith("resuming"));
    assert.equal(resumedStreams.length, 1);
    assert.match(
      resumedStreams[0]!,
      new RegExp(`^resuming the snapshot at barrier b1 from byte ${CUT_AT}( of \\d+)?$`),
    );
    assert.deepEqual(snapshot, peer.snapshot("b1"));
    assert.equal(peer.taken, 1);
    assert.equal(await exists(partialPath), false);
    assert.equal(await exists(`${partialPath}.json`), false);
  } finally {
    await peer.stop();
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a snapshot the peer no longer holds (410) is fetched afresh from zero", async () => {
  const directory = await Deno.makeTempDir();
  const partialPath = `${directory}/snapshot.partial`;
  const peer = startPeer(partialPath);
  try {
    peer.cutAfter = CUT_AT;
    await assert.rejects(fetchSnapshot(peer.url, { secret: SECRET, partialPath }));
    // The peer drops it a minute after the cut stream ended.
    await waitFor(() => peer.clock.pendingTimers === 1, 5000, "the cut stream to end");
    peer.clock.advance(SNAPSHOT_HOLD_MS);
    const lines: string[] = [];
    const snapshot = await fetchSnapshot(peer.url, {
      secret: SECRET,
      partialPath,
      log: (line) => lines.push(line),
    });
    assert.deepEqual(peer.queries, ["", `?barrier=b1&offset=${CUT_AT}`, ""]);
    assert.equal(lines.length, 2);
    assert.equal(
      lines[0],
      `resuming the snapshot from replica ${peer.url} at byte ${CUT_AT} (barrier b1)`,
    );
    assert.match(
      lines[1]!,
      /^fetching the snapshot from replica \S+ afresh, from byte 0 \(the partial transfer could not go on: The snapshot at barrier b1 is no longer held here; ask for a new one\)$/,
    );
    // The route logs no resumed stream for a snapshot it no longer holds.
    assert.equal(peer.logs.filter((line) => line.startsWith("resuming")).length, 0);
    assert.deepEqual(snapshot, peer.snapshot("b2"));
    assert.equal(await exists(partialPath), false);
  } finally {
    await peer.stop();
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a partial that does not match starts afresh: another peer, a short or corrupt file", async () => {
  const directory = await Deno.makeTempDir();
  const partialPath = `${directory}/snapshot.partial`;
  const peer = startPeer(partialPath);
  try {
    // A sidecar naming another peer.
    const lines: string[] = [];
    const log = (line: string) => lines.push(line);
    await Deno.writeFile(partialPath, new Uint8Array(10));
    await Deno.writeTextFile(
      `${partialPath}.json`,
      JSON.stringify({ peerUrl: "http://10.0.0.9:1", barrier: "b7", bytes: 10 }),
    );
    assert.deepEqual(
      await fetchSnapshot(peer.url, { secret: SECRET, partialPath, log }),
      peer.snapshot("b1"),
    );
    // A file shorter than its sidecar says; a file without a sidecar.
    await Deno.writeFile(partialPath, new Uint8Array(10));
    await Deno.writeTextFile(
      `${partialPath}.json`,
      JSON.stringify({ peerUrl: peer.url, barrier: "b1", bytes: 11 }),
    );
    assert.deepEqual(
      await fetchSnapshot(peer.url, { secret: SECRET, partialPath, log }),
      peer.snapshot("b2"),
    );
    await Deno.writeFile(partialPath, new Uint8Array(10));
    assert.deepEqual(
      await fetchSnapshot(peer.url, { secret: SECRET, partialPath, log }),
      peer.snapshot("b3"),
    );
    const afresh = `fetching the snapshot from replica ${peer.url} afresh, from byte 0`;
    assert.deepEqual(lines, [
      `${afresh} (discarded a partial transfer from http://10.0.0.9:1)`,
      `${afresh} (discarded a partial file shorter (10 bytes) than its sidecar says (11))`,
      `${afresh} (discarded a partial file without its sidecar)`,
    ]);
    assert.deepEqual(peer.queries, ["", "", ""]);
    // A partial whose bytes were altered: the resumed file fails its check.
    peer.cutAfter = CUT_AT;
    await assert.rejects(fetchSnapshot(peer.url, { secret: SECRET, partialPath }));
    const bytes = await Deno.readFile(partialPath);
    bytes[CUT_AT - 10] = bytes[CUT_AT - 10]! ^ 0x01;
    await Deno.writeFile(partialPath, bytes);
    assert.deepEqual(
      await fetchSnapshot(peer.url, { secret: SECRET, partialPath }),
      peer.snapshot("b5"),
    );
    assert.deepEqual(peer.queries.slice(3), ["", `?barrier=b4&offset=${CUT_AT}`, ""]);
    assert.equal(await exists(partialPath), false);
  } finally {
    await peer.stop();
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a refusal carries the peer's status; an unreachable peer says so; both keep the partial", async () => {
  const directory = await Deno.makeTempDir();
  const partialPath = `${directory}/snapshot.partial`;
  const peer = startPeer(partialPath);
  try {
    await assert.rejects(
      fetchSnapshot(peer.url, { secret: "wrong", partialPath }),
      (error: unknown) => {
        assert.ok(error instanceof SnapshotRefusedError, String(error));
        assert.equal(error.status, 401);
        assert.match(error.message, /refused the snapshot \(401\): The snapshot route refused/);
        return true;
      },
    );
    assert.equal(await exists(partialPath), false, "no partial for a refused request");
    // A cut transfer, then a refusal on resuming: the partial stays for later.
    peer.cutAfter = CUT_AT;
    await assert.rejects(fetchSnapshot(peer.url, { secret: SECRET, partialPath }));
    await assert.rejects(
      fetchSnapshot(peer.url, { secret: "wrong", partialPath }),
      SnapshotRefusedError,
    );
    assert.equal((await Deno.stat(partialPath)).size, CUT_AT);
    await peer.stop();
    await assert.rejects(
      fetchSnapshot(peer.url, { secret: SECRET, partialPath }),
      (error: unknown) => {
        assert.ok(error instanceof SnapshotUnreachableError, String(error));
        assert.match(error.message, /^Cannot reach http:\/\/127\.0\.0\.1:\d+ for a snapshot: /);
        assert.ok(!error.message.includes("\n"));
        return true;
      },
    );
    assert.equal((await Deno.stat(partialPath)).size, CUT_AT);
  } finally {
    await peer.stop();
    await Deno.remove(directory, { recursive: true });
  }
});

/** A fetch answering 200 with `body`, as a snapshot route would, honouring the signal. */
function fakeFetch(body: (signal: AbortSignal) => ReadableStream<Uint8Array>): typeof fetch {
  return (_input, init) => {
    const signal = init!.signal!;
    return Promise.resolve(
      new Response(body(signal), {
        headers: { [SNAPSHOT_BARRIER_HEADER]: "b1", [SNAPSHOT_OFFSET_HEADER]: "0" },
      }),
    );
  };
}

/** A body that sends `bytes`, then nothing until `signal` aborts. */
function silentAfter(bytes: Uint8Array, signal: AbortSignal) {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytes);
      signal.addEventListener("abort", () => controller.error(signal.reason));
    },
  });
}

Deno.test("a peer that sends no valid snapshot: the partial is deleted", async () => {
  const directory = await Deno.makeTempDir();
  const partialPath = `${directory}/snapshot.partial`;
  try {
    const garbage = new TextEncoder().encode('{"format":"something else"}\n');
    await assert.rejects(
      fetchSnapshot("http://peer", {
        secret: SECRET,
        partialPath,
        fetch: fakeFetch(() => new Response(garbage).body!),
      }),
      (error: unknown) => {
        assert.ok(error instanceof SnapshotFormatError, String(error));
        assert.match(
          error.message,
          /^Snapshot from http:\/\/peer: Line 1: not an epaxos-kv-snapshot/,
        );
        return true;
      },
    );
    assert.equal(await exists(partialPath), false);
    assert.equal(await exists(`${partialPath}.json`), false);
    // Without a partial file, the body is parsed as it arrives.
    await assert.rejects(
      fetchSnapshot("http://peer", {
        secret: SECRET,
        fetch: fakeFetch(() => new Response(garbage).body!),
      }),
      SnapshotFormatError,
    );
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a silent peer times out; an abort rejects with its reason and keeps the partial", async () => {
  const directory = await Deno.makeTempDir();
  const partialPath = `${directory}/snapshot.partial`;
  try {
    const start = new TextEncoder().encode('{"format":"epaxos-kv-snapshot"');
    await assert.rejects(
      fetchSnapshot("http://peer", {
        secret: SECRET,
        partialPath,
        timeoutMs: 50,
        fetch: fakeFetch((signal) => silentAfter(start, signal)),
      }),
      (error: unknown) => {
        assert.ok(error instanceof SnapshotUnreachableError, String(error));
        assert.equal(error.message, "Snapshot from http://peer: nothing received for 50 ms");
        return true;
      },
    );
    assert.equal((await Deno.stat(partialPath)).size, start.length);
    const controller = new AbortController();
    const fetching = fetchSnapshot("http://peer", {
      secret: SECRET,
      partialPath,
      signal: controller.signal,
      fetch: fakeFetch((signal) => silentAfter(new Uint8Array(0), signal)),
    });
    controller.abort(new Error("stopping"));
    await assert.rejects(fetching, /stopping/);
    assert.ok(await exists(`${partialPath}.json`));
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});
