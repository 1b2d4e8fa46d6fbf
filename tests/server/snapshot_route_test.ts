import assert from "node:assert/strict";
import { Hono } from "hono";
import type { KvCommand } from "../../src/kv/commands.ts";
import { readSnapshot } from "../../src/kv/snapshot_file.ts";
import { ManualClock } from "../../src/runtime/clock.ts";
import {
  MAX_HELD_SNAPSHOTS,
  MAX_SNAPSHOT_STREAMS,
  SNAPSHOT_BARRIER_HEADER,
  SNAPSHOT_HOLD_MS,
  SNAPSHOT_OFFSET_HEADER,
  SNAPSHOT_PATH,
  snapshotRoute,
  type SnapshotRouteOptions,
} from "../../src/server/snapshot_route.ts";
import type { ReplicaSnapshot } from "../../src/storage/types.ts";
import { sampleSnapshot } from "../kv/snapshot_helpers.ts";
import { waitFor } from "../wait.ts";

const SECRET = "cluster-secret-0123456789";
const AUTH = { authorization: `Bearer ${SECRET}` };
/** Entries of the sample: a file of several 64 KiB chunks, so that a stream not read stays open. */
const SIZE = 200;

/** A source whose snapshots have barriers b1, b2, ...; `gate` (if set) holds each take. */
function source() {
  const base = sampleSnapshot(SIZE);
  const state = {
    taken: 0,
    forPeers: [] as (number | undefined)[],
    gate: undefined as Promise<void> | undefined,
    takeSnapshot: async (forPeer?: number): Promise<ReplicaSnapshot<KvCommand>> => {
      state.forPeers.push(forPeer);
      const barrier = `b${++state.taken}`;
      if (state.gate !== undefined) await state.gate;
      return { ...base, barrier };
    },
  };
  return state;
}

/** The route mounted at the root of an app that has another route too. */
function appWith(options: Partial<SnapshotRouteOptions> & { source: ReturnType<typeof source> }) {
  const app = new Hono();
  app.get("/other", (c) => c.text("open"));
  app.route("/", snapshotRoute({ secret: SECRET, rateMbps: Infinity, ...options }));
  return app;
}

async function get(app: Hono, query = "", headers: Record<string, string> = AUTH) {
  return await app.request(`${SNAPSHOT_PATH}${query}`, { headers });
}

async function bodyOf(response: Response): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await response.arrayBuffer());
}

function parse(bytes: Uint8Array<ArrayBuffer>) {
  return readSnapshot(new Response(bytes).body!);
}

Deno.test("the snapshot route refuses without the cluster secret, and guards only itself", async () => {
  const snapshots = source();
  const app = appWith({ source: snapshots });
  const strangers: Record<string, string>[] = [
    {},
    { authorization: "Bearer wrong-secret" },
    { authorization: SECRET },
  ];
  for (const headers of strangers) {
    const answer = await get(app, "", headers);
    assert.equal(answer.status, 401, JSON.stringify(headers));
    assert.match(answer.headers.get("www-authenticate") ?? "", /^Bearer /);
    assert.match((await answer.json()).error, /^The snapshot route (needs|refused)/);
  }
  assert.equal((await get(app, "?barrier=b1&offset=0", {})).status, 401);
  assert.equal(snapshots.taken, 0, "nothing was taken");
  // Mounted at the root, it does not guard the app's other routes.
  const other = await app.request("/other");
  assert.equal(other.status, 200);
  assert.equal(await other.text(), "open");
});

Deno.test("a snapshot streams with its barrier, and resumes from any offset", async () => {
  const snapshots = source();
  const logs: string[] = [];
  const app = appWith({
    source: snapshots,
    checkElsewhere: (barrier) => {
      assert.equal(barrier, "b1");
      return Promise.resolve({ replica: 2, stateDigest: sampleSnapshot(SIZE).digest });
    },
    log: (line) => logs.push(line),
  });
  const answer = await get(app);
  assert.equal(answer.status, 200);
  assert.equal(answer.headers.get(SNAPSHOT_BARRIER_HEADER), "b1");
  assert.equal(answer.headers.get(SNAPSHOT_OFFSET_HEADER), "0");
  assert.equal(answer.headers.get("epaxos-snapshot-checked-by"), "2");
  const bytes = await bodyOf(answer);
  const expected = { ...sampleSnapshot(SIZE), barrier: "b1" };
  assert.deepEqual(await parse(bytes), expected);
  assert.match(logs.join("\n"), /snapshot at barrier b1: .* checked by replica 2/);
  for (const offset of [0, 1, 1000, Math.floor(bytes.length / 2), bytes.length - 1, bytes.length]) {
    const rest = await get(app, `?barrier=b1&offset=${offset}`);
    assert.equal(rest.status, 200);
    assert.equal(rest.headers.get(SNAPSHOT_BARRIER_HEADER), "b1");
    assert.equal(rest.headers.get(SNAPSHOT_OFFSET_HEADER), String(offset));
    const tail = await bodyOf(rest);
    assert.deepEqual(tail, bytes.slice(offset));
    const joined = new Uint8Array(bytes.length);
    joined.set(bytes.subarray(0, offset));
    joined.set(tail, offset);
    assert.deepEqual(await parse(joined), expected);
  }
  // A barrier alone resumes from 0.
  assert.deepEqual(await bodyOf(await get(app, "?barrier=b1")), bytes);
  assert.equal(snapshots.taken, 1, "one snapshot, streamed many times");
});

Deno.test("bad parameters get 400, a snapshot not held 410, and nothing is taken", async () => {
  const snapshots = source();
  const app = appWith({ source: snapshots });
  const total = (await bodyOf(await get(app))).length;
  for (
    const query of [
      "?offset=5",
      "?barrier=b1&offset=abc",
      "?barrier=b1&offset=-1",
      "?barrier=b1&offset=1.5",
      "?barrier=b1&offset=1234567890123456",
      "?barrier=",
      `?barrier=${"x".repeat(129)}`,
      `?barrier=b1&offset=${total + 1}`,
    ]
  ) {
    const answer = await get(app, query);
    assert.equal(answer.status, 400, query);
    const { error } = await answer.json();
    assert.ok(typeof error === "string" && !error.includes("\n"), query);
  }
  const gone = await get(app, "?barrier=b9&offset=10");
  assert.equal(gone.status, 410);
  assert.match((await gone.json()).error, /no longer held/);
  assert.equal(snapshots.taken, 1);
});

Deno.test("at most two snapshots are taken or streamed at once: 429 beyond", async () => {
  const snapshots = source();
  let open!: () => void;
  snapshots.gate = new Promise((resolve) => open = resolve);
  const app = appWith({ source: snapshots });
  const first = get(app);
  const second = get(app);
  await waitFor(() => snapshots.taken === MAX_SNAPSHOT_STREAMS, 2000, "two takes under way");
  const busy = await get(app);
  assert.equal(busy.status, 429);
  assert.equal(busy.headers.get("retry-after"), "1");
  assert.match((await busy.json()).error, /2 snapshots are being streamed/);
  open();
  const answers = [await first, await second];
  assert.deepEqual(answers.map((answer) => answer.status), [200, 200]);
  // Streams not read to the end still hold their places.
  const barrier = answers[0]!.headers.get(SNAPSHOT_BARRIER_HEADER)!;
  assert.equal((await get(app, `?barrier=${barrier}&offset=0`)).status, 429);
  assert.equal(snapshots.taken, 2);
  // Once one ends (read, or cancelled), there is room again.
  await bodyOf(answers[0]!);
  await answers[1]!.body!.cancel();
  const again = await get(app, `?barrier=${barrier}&offset=0`);
  assert.equal(again.status, 200);
  await bodyOf(again);
  const third = await get(app);
  assert.equal(third.status, 200);
  await bodyOf(third);
});

Deno.test("a digest that differs from a second replica's: 500, logged, not held", async () => {
  const snapshots = source();
  const logs: string[] = [];
  const app = appWith({
    source: snapshots,
    checkElsewhere: () => Promise.resolve({ replica: 1, stateDigest: "1:deadbeef" }),
    log: (line) => logs.push(line),
  });
  const answer = await get(app);
  assert.equal(answer.status, 500);
  assert.match(
    (await answer.json()).error,
    /^Replica 1 computed state digest 1:deadbeef .*diverge/,
  );
  assert.equal(logs.length, 1);
  assert.match(logs[0]!, /^DIVERGENCE at snapshot barrier b1: /);
  assert.equal((await get(app, "?barrier=b1&offset=0")).status, 410);
  // A replica that did not answer in time: the snapshot goes, unchecked.
  const unchecked = appWith({
    source: snapshots,
    checkElsewhere: () => Promise.resolve({ replica: 1, stateDigest: undefined }),
  });
  const served = await get(unchecked);
  assert.equal(served.status, 200);
  assert.equal(served.headers.get("epaxos-snapshot-checked-by"), "none");
  await bodyOf(served);
});

Deno.test("a held snapshot is dropped a minute after its last read, never while read", async () => {
  const snapshots = source();
  const clock = new ManualClock(1000);
  const app = appWith({ source: snapshots, clock });
  await bodyOf(await get(app));
  clock.advance(SNAPSHOT_HOLD_MS - 1);
  // Read again: the minute starts anew when this stream ends.
  await bodyOf(await get(app, "?barrier=b1&offset=100"));
  clock.advance(SNAPSHOT_HOLD_MS - 1);
  const reading = await get(app, "?barrier=b1&offset=0");
  assert.equal(reading.status, 200);
  // An open stream keeps it, however long it takes.
  clock.advance(10 * SNAPSHOT_HOLD_MS);
  await bodyOf(reading);
  assert.equal(clock.pendingTimers, 1);
  clock.advance(SNAPSHOT_HOLD_MS);
  const gone = await get(app, "?barrier=b1&offset=0");
  assert.equal(gone.status, 410);
  assert.match((await gone.json()).error, /^The snapshot at barrier b1 is no longer held/);
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("at most two snapshots are held: a new one drops the one read longest ago", async () => {
  const snapshots = source();
  const clock = new ManualClock();
  const app = appWith({ source: snapshots, clock });
  await bodyOf(await get(app)); // b1
  clock.advance(10);
  await bodyOf(await get(app)); // b2
  clock.advance(10);
  await bodyOf(await get(app, "?barrier=b1&offset=0")); // b1 read after b2
  clock.advance(10);
  await bodyOf(await get(app)); // b3 takes b2's place
  assert.equal(MAX_HELD_SNAPSHOTS, 2);
  assert.equal((await get(app, "?barrier=b2&offset=0")).status, 410);
  for (const barrier of ["b1", "b3"]) {
    const answer = await get(app, `?barrier=${barrier}&offset=0`);
    assert.equal(answer.status, 200, barrier);
    await bodyOf(answer);
  }
  // One timer per held snapshot, no more.
  assert.equal(clock.pendingTimers, 2);
  // A snapshot being read is not the one dropped.
  const reading = await get(app, "?barrier=b1&offset=0");
  await bodyOf(await get(app)); // b4 takes b3's place, not b1's
  assert.equal((await get(app, "?barrier=b3&offset=0")).status, 410);
  await bodyOf(reading);
  const b1 = await get(app, "?barrier=b1&offset=0");
  assert.equal(b1.status, 200);
  await bodyOf(b1);
});

Deno.test("the snapshot route says whom a snapshot is for, so the replica keeps what that peer will need", async () => {
  const taken = source();
  const app = appWith({ source: taken });
  const refused = await get(app, "?for=two");
  assert.equal(refused.status, 400);
  assert.match((await refused.json()).error, /for must be a replica id/);
  const answer = await get(app, "?for=2");
  assert.equal(answer.status, 200);
  await answer.body?.cancel();
  const anonymous = await get(app);
  await anonymous.body?.cancel();
  assert.deepEqual(taken.forPeers, [2, undefined]);
});
