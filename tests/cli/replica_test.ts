import assert from "node:assert/strict";
import { parseArgs, UsageError } from "../../src/cli/args.ts";
import {
  clockRateOption,
  joinStoreProblem,
  MAX_SNAPSHOT_RATE_MBPS,
  peerSnapshotFetch,
  runReplica,
  snapshotRateOption,
} from "../../src/cli/replica.ts";
import { corsOriginsOption } from "../../src/cli/cors_option.ts";
import { SnapshotRefusedError } from "../../src/net/snapshot_fetch.ts";
import { DEFAULT_SNAPSHOT_RATE_MBPS } from "../../src/server/snapshot_route.ts";

const rate = (...argv: string[]) =>
  snapshotRateOption(parseArgs(argv, { options: ["snapshot-rate"] }));

Deno.test("--snapshot-rate takes an integer MB/s from 1 to 1000, by default the route's", () => {
  assert.equal(rate(), DEFAULT_SNAPSHOT_RATE_MBPS);
  assert.equal(rate("--snapshot-rate", "1"), 1);
  assert.equal(rate("--snapshot-rate=250"), 250);
  assert.equal(rate("--snapshot-rate", String(MAX_SNAPSHOT_RATE_MBPS)), 1000);
  for (const bad of ["0", "1001", "1.5", "-3", "fast", ""]) {
    assert.throws(
      () => rate("--snapshot-rate", bad),
      (error: unknown) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.equal(
          error.message,
          `--snapshot-rate must be an integer from 1 to 1000, got ${bad}`,
        );
        return true;
      },
    );
  }
});

const clockRate = (...argv: string[]) =>
  clockRateOption(
    parseArgs(argv, { options: ["unsafe-clock-rate"], flags: ["enable-fault-injection"] }),
  );

Deno.test("--unsafe-clock-rate is a test fault: only with --enable-fault-injection", () => {
  assert.equal(clockRate(), undefined);
  assert.equal(clockRate("--enable-fault-injection"), undefined);
  assert.equal(clockRate("--enable-fault-injection", "--unsafe-clock-rate", "0.5"), 0.5);
  assert.equal(clockRate("--enable-fault-injection", "--unsafe-clock-rate=1.004"), 1.004);
  assert.throws(
    () => clockRate("--unsafe-clock-rate", "0.5"),
    (error: unknown) =>
      error instanceof UsageError && /needs --enable-fault-injection/.test(error.message),
  );
  for (const bad of ["0", "-1", "0.05", "11", "fast", "", "NaN"]) {
    assert.throws(
      () => clockRate("--enable-fault-injection", "--unsafe-clock-rate", bad),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message === `--unsafe-clock-rate must be a number from 0.1 to 10, got ${bad}`,
      bad,
    );
  }
});

/** Runs a replica with `flags` on a missing cluster file: it must refuse with `reason` and make nothing. */
async function refusesBeforeOpening(flags: readonly string[], reason: RegExp): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-replica-" });
  try {
    await assert.rejects(
      runReplica([
        "--config",
        `${dir}/no-such-cluster.json`,
        "--id",
        "0",
        "--data",
        `${dir}/data`,
        ...flags,
      ]),
      (error: unknown) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.match(error.message, reason);
        return true;
      },
    );
    assert.deepEqual([...Deno.readDirSync(dir)], [], "no data directory was made");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a replica refuses a bad --snapshot-rate before it reads or opens anything", async () => {
  await refusesBeforeOpening(
    ["--snapshot-rate", "0"],
    /^--snapshot-rate must be an integer from 1 to 1000, got 0$/,
  );
});

Deno.test("a replica refuses --unsafe-clock-rate without fault injection before it opens anything", async () => {
  await refusesBeforeOpening(["--unsafe-clock-rate", "0.5"], /needs --enable-fault-injection/);
});

const corsOrigins = (...argv: string[]) =>
  corsOriginsOption(parseArgs(argv, { options: ["cors-origin"] }));

Deno.test("--cors-origin is repeatable, takes origins as browsers send them, and none by default", () => {
  assert.deepEqual(corsOrigins(), []);
  assert.deepEqual(
    corsOrigins(
      "--cors-origin",
      "https://app.example",
      "--cors-origin=http://localhost:5173",
      "--cors-origin",
      "https://app.example",
    ),
    ["https://app.example", "http://localhost:5173"],
  );
  for (
    const [bad, reason] of [
      ["*", /is not an origin such as https:\/\/app.example/],
      ["app.example", /is not an origin such as/],
      ["ftp://app.example", /is not an http or https origin/],
      ["https://app.example/", /scheme, host and port only.*\(https:\/\/app.example\)/],
      ["https://App.example", /lower case/],
      ["https://app.example:443", /\(https:\/\/app.example\)/],
      ["https://app.example/path", /no trailing slash/],
    ] as const
  ) {
    assert.throws(
      () => corsOrigins("--cors-origin", bad),
      (error: unknown) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.match(error.message, /^--cors-origin: /);
        assert.match(error.message, reason);
        return true;
      },
      bad,
    );
  }
  const many = Array.from({ length: 65 }, (_, i) => `--cors-origin=http://h${i}.example`);
  assert.throws(() => corsOrigins(...many), /given 65 times; at most 64/);
});

Deno.test("a replica refuses a bad --cors-origin before it reads or opens anything", async () => {
  await refusesBeforeOpening(["--cors-origin", "*"], /^--cors-origin: "\*" is not an origin/);
});

Deno.test("after a restart, the first snapshot fetch goes on with the kept transfer's peer, once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "epaxos-replica-" });
  const partialPath = `${dir}/snapshot.partial`;
  try {
    const replicas = [0, 1, 2].map((id) => ({ id, url: `http://r${id}.test:8001` }));
    await Deno.writeFile(partialPath, new Uint8Array(7));
    await Deno.writeTextFile(
      `${partialPath}.json`,
      JSON.stringify({ peerUrl: "http://r2.test:8001", barrier: "b9", bytes: 7 }),
    );
    const asked: string[] = [];
    const lines: string[] = [];
    const fetchFromPeer = peerSnapshotFetch({
      self: 0,
      replicas: () => replicas,
      secret: "cluster-secret-0123456789",
      partialPath,
      log: (line) => lines.push(line),
      // Every peer is busy: only the request made matters here.
      fetch: (input) => {
        asked.push(String(input));
        return Promise.resolve(Response.json({ error: "busy" }, { status: 429 }));
      },
    });
    const signal = new AbortController().signal;
    await assert.rejects(fetchFromPeer(1, signal), SnapshotRefusedError);
    assert.deepEqual(asked, ["http://r2.test:8001/peer/v1/snapshot?barrier=b9&offset=7&for=0"]);
    assert.deepEqual(lines, [
      "a snapshot transfer from replica 2 was under way when this replica stopped: " +
      "going on with it there instead of asking replica 1",
      "resuming the snapshot from replica http://r2.test:8001 at byte 7 (barrier b9)",
    ]);
    assert.equal((await Deno.stat(partialPath)).size, 7, "a refusal keeps the partial");
    // Later fetches go where the driver says; the kept transfer starts afresh there.
    await assert.rejects(fetchFromPeer(1, signal), SnapshotRefusedError);
    assert.equal(asked[1], "http://r1.test:8001/peer/v1/snapshot?for=0");
    assert.match(lines[2]!, /afresh, from byte 0 \(discarded a partial transfer from http:\/\/r2/);
    await assert.rejects(
      fetchFromPeer(7, signal),
      /^Error: No member 7 in this replica's configuration$/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a joiner goes on on an empty store or its own incarnation's, and refuses another's", () => {
  const configuration = {
    epoch: 3,
    members: [0, 1, 2].map((id) => ({
      id,
      incarnation: id === 2 ? 2 : 1,
      url: `http://10.0.0.${id}:8001`,
      role: "voter" as const,
    })),
    nextId: 3,
  };
  const empty = { records: [], pruneFloor: undefined, entries: [] };
  assert.equal(joinStoreProblem(empty, configuration, 2), undefined);
  const own = { ...empty, pruneFloor: [0, 0, 0], configuration: { ...configuration, epoch: 2 } };
  assert.equal(joinStoreProblem(own, configuration, 2), undefined);
  const older = {
    ...own,
    configuration: {
      ...configuration,
      epoch: 1,
      members: configuration.members.map((m) => ({ ...m, incarnation: 1 })),
    },
  };
  assert.match(
    joinStoreProblem(older, configuration, 2)!,
    /holds a store of epoch 1 of another incarnation/,
  );
  // Epoch 1's store of the cluster file (no configuration stored), not empty.
  const epochOne = { ...empty, pruneFloor: [3, 1, 2] };
  assert.match(joinStoreProblem(epochOne, configuration, 2)!, /another incarnation/);
});
