/**
 * Hostile input for every HTTP route of a replica's app, over a real
 * in-process cluster: each bad request gets a 4xx with a JSON error message,
 * changes nothing, and the replica keeps serving.
 */

import assert from "node:assert/strict";
import { encode } from "@msgpack/msgpack";
import fc from "fast-check";
import type { Hono } from "hono";
import {
  isKvCommand,
  type KvCommand,
  MAX_KEY_BYTES,
  MAX_LIST_LIMIT,
  MAX_VALUE_BYTES,
} from "../../src/kv/commands.ts";
import { createApp } from "../../src/server/app.ts";
import type { ReplicaDriver } from "../../src/driver/driver.ts";
import { decodeBatch, encodeBatch, MAX_BATCH_BYTES } from "../../src/transport/codec.ts";
import { PEER_BATCH_PATH } from "../../src/transport/http.ts";
import { startTestCluster, type TestCluster, waitFor } from "./cluster_helpers.ts";

const SECRET = "fuzz-secret-0123456789";
const CLIENT_TOKEN = "fuzz-client-token-0123";
const REPLICAS = 3;
/** Keys written before fuzzing, so conditions and lists have something to act on. */
const SEEDED = ["seed/a", "seed/b", "seed/ü", "bin"];
const utf8 = new TextEncoder();

// --- Fixture ---------------------------------------------------------------

interface Fixture {
  readonly app: Hono;
  readonly cluster: TestCluster;
  /** The replica the app serves. */
  readonly node: ReplicaDriver;
  /** Versions of the seeded keys. */
  readonly versions: ReadonlyMap<string, string>;
  /** Headers a legitimate client sends (the bearer token, if one is configured). */
  readonly auth: Record<string, string>;
}

/** Starts a cluster, builds the app of replica 0, seeds it, runs `body`, checks it still serves. */
async function withFixture(
  body: (fixture: Fixture) => Promise<void>,
  options: { clientToken?: string } = {},
): Promise<void> {
  const cluster = await startTestCluster(REPLICAS);
  try {
    const node = cluster.nodes[0]!;
    const app = createApp({ node, replicas: REPLICAS, secret: SECRET, ...options });
    const auth: Record<string, string> = options.clientToken === undefined
      ? {}
      : { authorization: `Bearer ${options.clientToken}` };
    const versions = new Map<string, string>();
    for (const key of SEEDED) {
      const response = await app.request(keyPath(key), {
        method: "PUT",
        body: key === "bin" ? new Uint8Array([0xff, 0x00, 0x80]) : `value of ${key}`,
        headers: auth,
      });
      assert.equal(response.status, 200);
      versions.set(key, (await response.json()).version);
    }
    await settled(cluster);
    await body({ app, cluster, node, versions, auth });
    await assertStillServing(app, auth);
  } finally {
    await cluster.stop();
  }
}

/** What must not change: every replica's state digest and key count. */
function snapshot(cluster: TestCluster): { digest: string; keys: number }[] {
  return cluster.nodes.map((node) => ({ digest: node.state.digest, keys: node.state.size }));
}

/** Asserts that, once every replica has caught up, none has changed since `before`. */
async function assertUnchanged(
  cluster: TestCluster,
  before: ReturnType<typeof snapshot>,
): Promise<void> {
  await settled(cluster);
  assert.deepEqual(snapshot(cluster), before, "hostile input changed the replicated state");
}

/** Waits until every replica has executed the same commands. */
function settled(cluster: TestCluster): Promise<void> {
  return waitFor(
    () => cluster.nodes.every((node) => node.state.digest === cluster.nodes[0]!.state.digest),
    5000,
    "replicas to agree",
  );
}

async function assertStillServing(app: Hono, auth: Record<string, string>): Promise<void> {
  assert.equal((await app.request("/livez")).status, 200);
  const put = await app.request("/kv/after-fuzz", { method: "PUT", body: "ok", headers: auth });
  assert.equal(put.status, 200, await put.clone().text());
  const { version } = await put.json();
  const get = await app.request("/kv/after-fuzz", { headers: auth });
  assert.equal(get.status, 200);
  assert.equal(await get.text(), "ok");
  assert.equal(get.headers.get("etag"), `"${version}"`);
}

/** Asserts a JSON error answer with a non-empty message and a status among `statuses` (any 4xx by default). */
async function assertProblem(
  response: Response,
  statuses?: readonly number[],
): Promise<Record<string, unknown>> {
  const text = await response.text();
  if (statuses === undefined) {
    assert.ok(
      response.status >= 400 && response.status < 500,
      `expected a 4xx, got ${response.status}: ${text}`,
    );
  } else {
    assert.ok(
      statuses.includes(response.status),
      `expected ${statuses.join(" or ")}, got ${response.status}: ${text}`,
    );
  }
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(text);
  assert.equal(typeof body.error, "string", text);
  assert.ok(body.error.length > 0, "the error has a message");
  return body;
}

function keyPath(key: string): string {
  return `/kv/${encodeURIComponent(key)}`;
}

// --- Hostile client requests -------------------------------------------------

/** One generated request. */
interface Hostile {
  readonly method: string;
  /** Path and query, as sent (raw: may hold invalid percent-encoding). */
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: Uint8Array;
  /** Acceptable statuses; any 4xx when absent. */
  readonly statuses?: readonly number[];
  /** Whether the request legitimately reaches consensus (a conditional write that fails). */
  readonly proposes?: boolean;
  /** For a 412 on a seeded key: that key. */
  readonly seeded?: string;
  /** For a 405: the `Allow` field it must carry. */
  readonly allow?: string;
}

function send(app: Hono, request: Hostile, extraHeaders: Record<string, string> = {}) {
  return app.request(request.path, {
    method: request.method,
    headers: { ...request.headers, ...extraHeaders },
    ...(request.body === undefined || request.method === "GET" || request.method === "HEAD"
      ? {}
      : { body: request.body as Uint8Array<ArrayBuffer> }),
  });
}

/** Printable ASCII, as header values may hold. */
const headerText = (minLength: number, maxLength: number) => fc.string({ minLength, maxLength });
const contentTypeArb = fc.option(
  fc.oneof(
    fc.constantFrom(
      "application/json",
      "text/plain; charset=utf-16",
      "multipart/form-data; boundary=--x",
      "application/x-www-form-urlencoded",
      "application/msgpack",
      "image/png",
    ),
    headerText(0, 40),
  ),
  { nil: undefined },
);
const bodyArb = fc.option(fc.uint8Array({ maxLength: 2048 }), { nil: undefined });
const alnum = (maxLength: number) => fc.stringMatching(new RegExp(`^[a-z0-9]{0,${maxLength}}$`));
/** A valid key's path segment: seeded keys, fresh keys, escaped or with raw slashes. */
const validKeyPath = fc.oneof(
  fc.constantFrom(...SEEDED).map(keyPath),
  fc.string({ minLength: 1, maxLength: 16 })
    .filter((key) => key !== "." && key !== ".." && !key.startsWith("seed/"))
    .map(keyPath),
  alnum(8).map((key) => `/kv/fresh/${key}`),
);
const withHeaders = (contentType: string | undefined, headers: Record<string, string> = {}) =>
  contentType === undefined ? headers : { ...headers, "content-type": contentType };

/** Printable ASCII an entity tag may hold (RFC 9110 etagc), but for the list's comma. */
const TAG_CHARS = Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i))
  .filter((char) => char !== '"' && char !== ",");

const BAD_ESCAPES = [
  "%",
  "%%",
  "%g0",
  "%0",
  "%0g",
  "%E0%A4%A",
  "%C0%AF",
  "%ED%A0%80",
  "%FF",
  "%80",
  "%F8%88%80%80%80",
  "%EF%BF",
  "%F4%90%80%80",
];

/** Keys that are not valid percent-encoding: 400. */
const badEscapeArb: fc.Arbitrary<Hostile> = fc.record({
  method: fc.constantFrom("GET", "PUT", "DELETE"),
  before: alnum(6),
  bad: fc.constantFrom(...BAD_ESCAPES),
  after: fc.constantFrom("", "z", "/z", "?consistency=local", "?cas=1.0.0"),
  contentType: contentTypeArb,
  body: bodyArb,
}).map(({ method, before, bad, after, contentType, body }) => ({
  method,
  path: `/kv/${before}${bad}${after}`,
  headers: withHeaders(contentType),
  body,
  statuses: [400],
}));

/** Keys over the limit in UTF-8 bytes (some within it in UTF-16 units): 414. */
const longKeyArb: fc.Arbitrary<Hostile> = fc.record({
  method: fc.constantFrom("GET", "PUT", "DELETE"),
  chars: fc.array(fc.constantFrom("k", "é", "€", "😀", " ", "/"), { maxLength: 400 }),
  extra: fc.nat(300),
  rawSlashes: fc.boolean(),
  body: bodyArb,
}).map(({ method, chars, extra, rawSlashes, body }) => {
  let key = chars.join("");
  key += "k".repeat(Math.max(0, MAX_KEY_BYTES + 1 + extra - utf8.encode(key).length));
  let path = keyPath(key);
  if (rawSlashes) path = path.replaceAll("%2F", "/");
  return { method, path, headers: {}, body, statuses: [414] };
});

/** Keys that are empty or hold U+FFFF: 400. */
const forbiddenKeyArb: fc.Arbitrary<Hostile> = fc.record({
  method: fc.constantFrom("GET", "PUT", "DELETE"),
  path: fc.oneof(
    fc.constantFrom("/kv/", "/kv/?consistency=local"),
    fc.tuple(alnum(6), fc.constantFrom("%EF%BF%BF", "%ef%bf%bf", "\uffff"), alnum(6))
      .map(([before, ffff, after]) => `/kv/${before}${ffff}${after}`),
  ),
  body: bodyArb,
}).map(({ method, path, body }) => ({ method, path, headers: {}, body, statuses: [400] }));

function isValidLimit(text: string): boolean {
  const limit = Number(text);
  return Number.isInteger(limit) && limit >= 1 && limit <= MAX_LIST_LIMIT;
}

/** `GET /kv` with one bad query parameter among valid ones: 400. */
const badListArb: fc.Arbitrary<Hostile> = fc.record({
  limit: fc.option(fc.integer({ min: 1, max: MAX_LIST_LIMIT }).map(String), { nil: undefined }),
  prefix: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
  cursor: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
  consistency: fc.option(fc.constantFrom("local", "linearizable"), { nil: undefined }),
  bad: fc.oneof(
    fc.oneof(
      fc.constantFrom("0", "-1", "1001", "1.5", "NaN", "Infinity", "1e9", "", "0x", "10abc", "%zz"),
      fc.string({ maxLength: 12 }),
    ).filter((limit) => !isValidLimit(limit)).map((limit) => ({ limit })),
    fc.oneof(
      fc.string({ unit: "binary", minLength: MAX_KEY_BYTES + 1, maxLength: MAX_KEY_BYTES + 200 }),
      fc.tuple(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }))
        .map(([a, b]) => `${a}\uffff${b}`),
    ).map((prefix) => ({ prefix })),
    fc.string({ minLength: MAX_KEY_BYTES + 1, maxLength: MAX_KEY_BYTES + 200 })
      .map((cursor) => ({ cursor })),
    fc.string({ maxLength: 16 }).filter((value) => value !== "local" && value !== "linearizable")
      .map((consistency) => ({ consistency })),
  ),
}).map(({ bad, ...good }) => {
  const params = { ...good, ...bad } as Record<string, string | undefined>;
  const query = Object.entries(params)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([name, value]) =>
      // "%zz" goes raw, to test the decoder; everything else is escaped.
      `${name}=${value === "%zz" ? value : encodeURIComponent(value)}`
    )
    .join("&");
  return { method: "GET", path: `/kv?${query}`, headers: {}, statuses: [400] };
});

/** `GET /kv/:key` with an unknown consistency: 400. */
const badConsistencyArb: fc.Arbitrary<Hostile> = fc.record({
  path: validKeyPath,
  consistency: fc.string({ maxLength: 16 })
    .filter((value) => value !== "local" && value !== "linearizable"),
}).map(({ path, consistency }) => ({
  method: "GET",
  path: `${path}?consistency=${encodeURIComponent(consistency)}`,
  headers: {},
  statuses: [400],
}));

/**
 * A version-shaped tag could match a real version; garbage never does. Its
 * characters are those an entity tag may hold, and it does not start as a
 * weak tag, so it is well-formed quoted and bare.
 */
const garbageTagArb = fc.string({
  unit: fc.constantFrom(...TAG_CHARS),
  minLength: 1,
  maxLength: 64,
})
  .filter((tag) => tag !== "*" && !tag.startsWith("W/") && !/^\d+\.\d+\.\d+$/.test(tag));

/** Malformed `If-Match` / `If-None-Match` / `?cas=` on a write: 400, before consensus. */
const badConditionArb: fc.Arbitrary<Hostile> = fc.record({
  method: fc.constantFrom("PUT", "DELETE"),
  path: validKeyPath,
  condition: fc.oneof(
    // A write takes If-None-Match: * only.
    headerText(0, 40).filter((value) => value.trim() !== "*")
      .map((value) => ({ headers: { "if-none-match": value }, query: "" })),
    // If-Match: empty or too long versions, *, malformed lists, weak tags
    // (strong comparison, RFC 9110 §13.1.1), more tags than a condition takes.
    fc.oneof(
      fc.constantFrom("", "*", '""', 'W/""', ",", " , ", '*, "a"', "W/*", '"a" "b"', '"a", b'),
      fc.string({ minLength: 65, maxLength: 120 }).filter((tag) => !tag.includes('"'))
        .chain((tag) => fc.constantFrom(tag, `"${tag}"`, `W/"${tag}"`)),
      garbageTagArb.chain((tag) => fc.constantFrom(`W/"${tag}"`, `"other", W/"${tag}"`)),
      fc.uniqueArray(garbageTagArb, { minLength: 17, maxLength: 20 })
        .map((tags) => tags.map((tag) => `"${tag}"`).join(", ")),
    ).map((value) => ({ headers: { "if-match": value }, query: "" })),
    headerText(0, 40).map((value) => ({
      headers: { "if-match": value, "if-none-match": "*" },
      query: "",
    })),
    fc.oneof(
      fc.constantFrom("", "*"),
      fc.string({ minLength: 65, maxLength: 100 }),
    ).map((cas) => ({ headers: {}, query: `?cas=${encodeURIComponent(cas)}` })),
    headerText(1, 20).map((cas) => ({
      headers: { "if-none-match": "*" },
      query: `?cas=${encodeURIComponent(cas)}`,
    })),
  ),
  contentType: contentTypeArb,
  body: bodyArb,
}).map(({ method, path, condition, contentType, body }) => ({
  method,
  path: path + condition.query,
  headers: withHeaders(contentType, condition.headers),
  body,
  statuses: [400],
}));

/** Writes whose condition fails: 412 with the current version, after consensus. */
const failedConditionArb: fc.Arbitrary<Hostile> = fc.record({
  method: fc.constantFrom("PUT", "DELETE"),
  key: fc.oneof(fc.constantFrom(...SEEDED), alnum(8).map((key) => `missing/${key}`)),
  condition: fc.oneof(
    garbageTagArb.chain((tag) =>
      fc.constantFrom(`"${tag}"`, tag, `"${tag}", "other"`, ` "other" ,, "${tag}" `)
        .map((value) => ({ headers: { "if-match": value }, query: "" }))
    ),
    garbageTagArb.map((tag) => ({ headers: {}, query: `?cas=${encodeURIComponent(tag)}` })),
    fc.constant({ headers: { "if-none-match": "*" }, query: "" }),
  ) as fc.Arbitrary<{ headers: Record<string, string>; query: string }>,
  contentType: contentTypeArb,
  body: bodyArb,
})
  // Create-only on a missing key would succeed (or delete nothing): not hostile.
  .filter(({ key, condition }) =>
    SEEDED.includes(key) || condition.headers["if-none-match"] === undefined
  )
  .map(({ method, key, condition, contentType, body }) => ({
    method,
    path: keyPath(key) + condition.query,
    headers: withHeaders(contentType, condition.headers),
    body,
    statuses: [412],
    proposes: true,
    ...(SEEDED.includes(key) ? { seeded: key } : {}),
  }));

/** Values over the limit: 413. */
const oversizedValueArb: fc.Arbitrary<Hostile> = fc.record({
  path: validKeyPath,
  size: fc.integer({ min: MAX_VALUE_BYTES + 1, max: MAX_VALUE_BYTES + 8192 }),
  fill: fc.nat(255),
  contentType: contentTypeArb,
  createOnly: fc.boolean(),
}).map(({ path, size, fill, contentType, createOnly }) => ({
  method: "PUT",
  path,
  headers: withHeaders(contentType, createOnly ? { "if-none-match": "*" } : {}),
  body: new Uint8Array(size).fill(fill),
  statuses: [413],
}));

const FORBIDDEN_METHODS = ["CONNECT", "TRACE", "TRACK"];
/** A method the fetch API accepts, other than those in `allowed` (any case). */
const otherMethodArb = (allowed: readonly string[]) =>
  fc.oneof(
    fc.constantFrom("POST", "PATCH", "OPTIONS", "PROPFIND", "MKCOL", "COPY", "LOCK", "pAtCh"),
    fc.stringMatching(/^[A-Za-z]{1,12}$/),
  ).filter((method) => ![...allowed, ...FORBIDDEN_METHODS].includes(method.toUpperCase()));

/** The `Allow` of a key's path and of the list's. */
const KEY_ALLOW = "GET, HEAD, PUT, DELETE";
const LIST_ALLOW = "GET, HEAD";

/** Other methods under /kv: 405 with the methods the path has. */
const wrongMethodArb: fc.Arbitrary<Hostile> = fc.oneof(
  fc.record({
    method: otherMethodArb(["GET", "HEAD", "PUT", "DELETE"]),
    path: fc.oneof(fc.constant("/kv/"), validKeyPath),
    allow: fc.constant(KEY_ALLOW),
  }),
  fc.record({
    method: fc.oneof(fc.constantFrom("PUT", "DELETE"), otherMethodArb(["GET", "HEAD"])),
    path: fc.constantFrom("/kv", "/kv?prefix=seed"),
    allow: fc.constant(LIST_ALLOW),
  }),
).chain((target) =>
  fc.record({ contentType: contentTypeArb, body: bodyArb }).map(({ contentType, body }) => ({
    ...target,
    headers: withHeaders(contentType),
    body,
    statuses: [405],
  }))
);

const hostileClientArb: fc.Arbitrary<Hostile> = fc.oneof(
  badEscapeArb,
  longKeyArb,
  forbiddenKeyArb,
  badListArb,
  badConsistencyArb,
  badConditionArb,
  failedConditionArb,
  oversizedValueArb,
  wrongMethodArb,
);

Deno.test("hostile client requests get a 4xx JSON error and change nothing", async () => {
  await withFixture(async ({ app, cluster, node, versions }) => {
    const before = snapshot(cluster);
    await fc.assert(
      fc.asyncProperty(hostileClientArb, async (request) => {
        const proposed = node.metrics.commandsProposed;
        const response = await send(app, request);
        const body = await assertProblem(response, request.statuses);
        if (request.allow !== undefined) {
          assert.equal(response.headers.get("allow"), request.allow);
          assert.deepEqual(body.allowed, request.allow.split(", "));
        }
        if (request.seeded !== undefined) {
          const current = versions.get(request.seeded)!;
          assert.equal(body.current, current);
          assert.equal(response.headers.get("etag"), `"${current}"`);
        }
        if (!request.proposes) {
          assert.equal(node.metrics.commandsProposed, proposed, "refused before consensus");
        }
        assert.deepEqual(snapshot(cluster), before);
      }),
      { numRuns: 300 },
    );
    await assertUnchanged(cluster, before);
  });
});

// --- Hostile peer requests -----------------------------------------------------

const DECODE = { replicas: REPLICAS, self: 0, isCommand: isKvCommand };
const put: KvCommand = {
  op: "put",
  request: "1.x.1",
  key: "peer-key",
  value: new Uint8Array([1, 2, 3]),
};
const list: KvCommand = { op: "list", request: "r", prefix: "", limit: 5 };
/** Real batches addressed to replica 0: every one would be accepted. */
const REAL_BATCHES: Uint8Array[] = [
  encodeBatch<KvCommand>({
    from: 1,
    messages: [{ type: "nack", from: 1, to: 0, owner: 1, number: 1, ballot: 3 }],
  }),
  encodeBatch<KvCommand>({
    from: 2,
    messages: [{
      type: "accept",
      from: 2,
      to: 0,
      owner: 2,
      number: 9,
      ballot: 5,
      command: [put],
      deps: [0, 3, 8, 2],
    }, {
      type: "frontier",
      from: 2,
      to: 0,
      executed: [0, 0, 0],
      pruned: [0, 0, 0],
      highest: 0,
    }],
  }),
  encodeBatch<KvCommand>({
    from: 1,
    messages: [{
      type: "preaccept",
      from: 1,
      to: 0,
      owner: 1,
      number: 4,
      command: [put, list],
      deps: [1, 3, 0, 4],
    }],
  }),
];

function accepted(bytes: Uint8Array): boolean {
  try {
    decodeBatch(bytes, DECODE);
    return true;
  } catch {
    return false;
  }
}

const garbage = fc.anything({ maxDepth: 3, withTypedArray: true });
/** Peer bodies that decodeBatch refuses (those it accepts are skipped). */
const badPeerBodyArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 4096 }),
  garbage.map((value) => encode(value)),
  fc.jsonValue({ maxDepth: 4 }).map((value) => encode(value)),
  fc.record({
    v: fc.oneof(fc.constant(1), garbage),
    from: fc.oneof(fc.integer({ min: -1, max: 4 }), garbage),
    messages: fc.oneof(fc.array(garbage, { maxLength: 3 }), garbage),
  }, { requiredKeys: [] }).map((value) => encode(value)),
  // Truncated real batches.
  fc.tuple(fc.constantFrom(...REAL_BATCHES), fc.nat()).map(([bytes, cut]) =>
    bytes.subarray(0, cut % bytes.length)
  ),
  // Real batches with flipped bytes.
  fc.tuple(
    fc.constantFrom(...REAL_BATCHES),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 }),
  ).map(([bytes, flips]) => {
    const copy = bytes.slice();
    for (const [index, xor] of flips) copy[index % copy.length]! ^= xor;
    return copy;
  }),
  // Real batches with trailing bytes.
  fc.tuple(fc.constantFrom(...REAL_BATCHES), fc.uint8Array({ minLength: 1, maxLength: 8 }))
    .map(([bytes, tail]) => new Uint8Array([...bytes, ...tail])),
);

/** The token the app reads from an Authorization header, as `bearer()` in the app does. */
function presentedToken(header: string): string | undefined {
  return /^Bearer\s+(.+)$/i.exec(header.trim())?.[1];
}

/** Authorization headers (or none) that do not present `secret`. */
function wrongAuthArb(secret: string): fc.Arbitrary<string | undefined> {
  return fc.oneof(
    fc.constant(undefined),
    headerText(0, 40).map((text) => `Bearer ${text}`),
    headerText(0, 40),
    fc.constantFrom(
      `Basic ${btoa(`peer:${secret}`)}`,
      secret,
      "Bearer",
      "Bearer ",
      `Bearer ${secret.slice(0, -1)}`,
      `Bearer ${secret}x`,
      `Bearer x${secret}`,
      `Bearer ${secret.toUpperCase()}`,
      `Token ${secret}`,
      `Bearer ${secret} ${secret}`,
      `Bearer ${secret},Bearer ${secret}`,
    ),
    fc.tuple(fc.nat(secret.length - 1), fc.string({ minLength: 1, maxLength: 1 }))
      .map(([index, char]) => `Bearer ${secret.slice(0, index)}${char}${secret.slice(index + 1)}`),
  ).filter((header) => header === undefined || presentedToken(header) !== secret);
}

Deno.test("hostile peer requests are refused with a 4xx JSON error and reach nothing", async () => {
  await withFixture(async ({ app, cluster }) => {
    const before = snapshot(cluster);
    const post = (body: Uint8Array, headers: Record<string, string>) =>
      app.request(PEER_BATCH_PATH, {
        method: "POST",
        body: body as Uint8Array<ArrayBuffer>,
        headers,
      });
    for (const batch of REAL_BATCHES) assert.ok(accepted(batch), "the samples are valid");

    // Malformed batches with the right credential: 400, or 403 for a stranger.
    await fc.assert(
      fc.asyncProperty(badPeerBodyArb, contentTypeArb, async (body, contentType) => {
        fc.pre(!accepted(body));
        const response = await post(
          body,
          withHeaders(contentType, { authorization: `Bearer ${SECRET}` }),
        );
        await assertProblem(response, [400, 403]);
        assert.deepEqual(snapshot(cluster), before);
      }),
      { numRuns: 300 },
    );
    // Every strict prefix of a real batch.
    for (const batch of REAL_BATCHES) {
      for (let length = 0; length < batch.length; length++) {
        const response = await post(batch.subarray(0, length), {
          authorization: `Bearer ${SECRET}`,
        });
        await assertProblem(response, [400]);
      }
    }
    assert.deepEqual(snapshot(cluster), before);

    // Valid or garbage batches without the credential: 401.
    await fc.assert(
      fc.asyncProperty(
        wrongAuthArb(SECRET),
        fc.oneof(fc.constantFrom(...REAL_BATCHES), badPeerBodyArb),
        async (authorization, body) => {
          const response = await post(
            body,
            authorization === undefined ? {} : { authorization },
          );
          await assertProblem(response, [401]);
          assert.deepEqual(snapshot(cluster), before);
        },
      ),
      { numRuns: 200 },
    );

    // Other methods on the peer path: 405, allowing POST.
    await fc.assert(
      fc.asyncProperty(otherMethodArb(["POST"]), bodyArb, async (method, body) => {
        const response = await app.request(PEER_BATCH_PATH, {
          method,
          headers: { authorization: `Bearer ${SECRET}` },
          ...(body === undefined || /^(get|head)$/i.test(method)
            ? {}
            : { body: body as Uint8Array<ArrayBuffer> }),
        });
        assert.equal(response.headers.get("allow"), "POST");
        if (method.toUpperCase() === "HEAD") {
          assert.equal(response.status, 405);
        } else {
          await assertProblem(response, [405]);
        }
      }),
      { numRuns: 50 },
    );

    // The route still takes a real batch (a nack about nothing: harmless).
    await assertUnchanged(cluster, before);
    const response = await post(REAL_BATCHES[0]!, { authorization: `Bearer ${SECRET}` });
    assert.equal(response.status, 204);
  });
});

// --- Client token --------------------------------------------------------------

Deno.test("with a client token, requests without it get 401 on every client route", async () => {
  await withFixture(async ({ app, cluster, node }) => {
    const before = snapshot(cluster);
    // Requests that would succeed with the token, and hostile ones.
    const clientRequestArb: fc.Arbitrary<Hostile> = fc.oneof(
      fc.record({ path: validKeyPath, body: fc.uint8Array({ maxLength: 64 }) })
        .map(({ path, body }) => ({ method: "PUT", path, headers: {}, body })),
      validKeyPath.map((path) => ({ method: "DELETE", path, headers: {} })),
      fc.oneof(validKeyPath, fc.constant("/kv?prefix=seed&limit=2"))
        .map((path) => ({ method: "GET", path, headers: {} })),
      hostileClientArb,
    );
    await fc.assert(
      fc.asyncProperty(
        clientRequestArb,
        wrongAuthArb(CLIENT_TOKEN),
        async (request, authorization) => {
          const proposed = node.metrics.commandsProposed;
          const response = await send(
            app,
            request,
            authorization === undefined ? {} : { authorization },
          );
          // Everything under the client routes is a 401, wrong methods included.
          await assertProblem(response, [401]);
          assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="epaxos-kv"');
          assert.equal(node.metrics.commandsProposed, proposed);
          assert.deepEqual(snapshot(cluster), before);
        },
      ),
      { numRuns: 200 },
    );
    // Probes and peer routes do not take the client token; the operations pages follow it.
    for (const path of ["/livez", "/readyz"]) {
      assert.equal((await app.request(path)).status, 200, path);
    }
    for (const path of ["/status", "/metrics"]) {
      assert.equal((await app.request(path)).status, 401, path);
      const authorized = await app.request(path, {
        headers: { authorization: `Bearer ${CLIENT_TOKEN}` },
      });
      assert.equal(authorized.status, 200, path);
    }
    const peer = await app.request(PEER_BATCH_PATH, {
      method: "POST",
      body: REAL_BATCHES[0]! as Uint8Array<ArrayBuffer>,
      headers: { authorization: `Bearer ${SECRET}` },
    });
    assert.equal(peer.status, 204);
    await assertUnchanged(cluster, before);
  }, { clientToken: CLIENT_TOKEN });
});

// --- Operations routes and unknown paths ----------------------------------------

Deno.test("operations routes and unknown paths never fail and change nothing", async () => {
  await withFixture(async ({ app, cluster }) => {
    const before = snapshot(cluster);
    const opsPath = fc.constantFrom("/livez", "/readyz", "/status", "/metrics");
    const query = fc.option(
      fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 16 }), { maxKeys: 3 })
        .map((params) => `?${new URLSearchParams(params)}`),
      { nil: "" },
    );
    const noise = fc.dictionary(
      fc.constantFrom("accept", "content-type", "authorization", "x-forwarded-for", "if-match"),
      headerText(0, 30),
      { maxKeys: 3 },
    );

    // Noise on GET: still a normal answer.
    await fc.assert(
      fc.asyncProperty(opsPath, query, noise, async (path, search, headers) => {
        const response = await app.request(path + search, { headers });
        assert.equal(response.status, 200, `${path}${search}: ${await response.clone().text()}`);
        if (path === "/status") assert.equal((await response.json()).id, 0);
        else await response.body?.cancel();
        assert.deepEqual(snapshot(cluster), before);
      }),
      { numRuns: 60 },
    );
    // Other methods: 405 with Allow and a JSON error.
    await fc.assert(
      fc.asyncProperty(
        opsPath,
        otherMethodArb(["GET", "HEAD"]),
        bodyArb,
        async (path, method, body) => {
          const response = await app.request(path, {
            method,
            ...(body === undefined ? {} : { body: body as Uint8Array<ArrayBuffer> }),
          });
          await assertProblem(response, [405]);
          assert.equal(response.headers.get("allow"), "GET, HEAD");
          assert.deepEqual(snapshot(cluster), before);
        },
      ),
      { numRuns: 60 },
    );
    // Arbitrary paths with methods that cannot write: never a 5xx, errors in JSON.
    await fc.assert(
      fc.asyncProperty(
        fc.webPath(),
        fc.oneof(fc.constant("GET"), otherMethodArb(["HEAD", "PUT", "DELETE"])),
        async (path, method) => {
          const response = await app.request(path.startsWith("/") ? path : `/${path}`, {
            method,
          });
          assert.ok(response.status < 500, `${method} ${path}: ${response.status}`);
          if (response.status >= 400) await assertProblem(response);
          else await response.body?.cancel();
          assert.deepEqual(snapshot(cluster), before);
        },
      ),
      { numRuns: 100 },
    );
    await assertUnchanged(cluster, before);
  });
});

// --- Body size limits ------------------------------------------------------------

/** An endless body that counts how many chunks were read from it. */
function endlessBody(chunkBytes: number) {
  let pulls = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulls++;
      controller.enqueue(new Uint8Array(chunkBytes).fill(0x61));
    },
  }, { highWaterMark: 0 });
  return { body, pulls: () => pulls };
}

Deno.test("bodies over the limit get 413 without being read whole; strangers' bodies are not read", async () => {
  await withFixture(async ({ app, cluster }) => {
    // The value limit is exact.
    const atLimit = await app.request("/kv/limit", {
      method: "PUT",
      body: new Uint8Array(MAX_VALUE_BYTES).fill(1),
    });
    assert.equal(atLimit.status, 200);
    await settled(cluster);
    const before = snapshot(cluster);
    const over = await app.request("/kv/limit", {
      method: "PUT",
      body: new Uint8Array(MAX_VALUE_BYTES + 1).fill(2),
    });
    await assertProblem(over, [413]);

    // An endless value: refused once past the limit.
    const chunk = 8 * 1024;
    const endless = endlessBody(chunk);
    await assertProblem(await app.request("/kv/limit", { method: "PUT", body: endless.body }), [
      413,
    ]);
    assert.ok(endless.pulls() <= Math.ceil(MAX_VALUE_BYTES / chunk) + 2, `${endless.pulls()}`);
    // A declared length over the limit: refused before reading anything.
    const declared = endlessBody(chunk);
    const declaredResponse = await app.request("/kv/limit", {
      method: "PUT",
      body: declared.body,
      headers: { "content-length": String(MAX_VALUE_BYTES + 1) },
    });
    await assertProblem(declaredResponse, [413]);
    assert.equal(declared.pulls(), 0);
    // A declared length that lies low (only possible in process) is still caught.
    const lying = await app.request("/kv/limit", {
      method: "PUT",
      body: new Uint8Array(MAX_VALUE_BYTES + 1),
      headers: { "content-length": "1" },
    });
    await assertProblem(lying, [413]);
    // Routes that take no body never read one.
    const ignored = endlessBody(chunk);
    await assertProblem(await app.request("/kv/%zz", { method: "DELETE", body: ignored.body }), [
      400,
    ]);
    assert.equal(ignored.pulls(), 0);

    // The peer route: an endless batch with the credential is refused past 16 MiB...
    const peerChunk = 256 * 1024;
    const batch = endlessBody(peerChunk);
    const peerOver = await app.request(PEER_BATCH_PATH, {
      method: "POST",
      body: batch.body,
      headers: { authorization: `Bearer ${SECRET}` },
    });
    await assertProblem(peerOver, [413]);
    assert.ok(batch.pulls() <= Math.ceil(MAX_BATCH_BYTES / peerChunk) + 2, `${batch.pulls()}`);
    const peerDeclared = endlessBody(peerChunk);
    await assertProblem(
      await app.request(PEER_BATCH_PATH, {
        method: "POST",
        body: peerDeclared.body,
        headers: {
          authorization: `Bearer ${SECRET}`,
          "content-length": String(MAX_BATCH_BYTES + 1),
        },
      }),
      [413],
    );
    assert.equal(peerDeclared.pulls(), 0);
    // ...and one without it is refused before any of it is read (regression: the
    // app used to buffer up to 16 MiB from anyone before checking the credential).
    for (const authorization of [undefined, "Bearer wrong-secret-0123456789"]) {
      const stranger = endlessBody(peerChunk);
      const response = await app.request(PEER_BATCH_PATH, {
        method: "POST",
        body: stranger.body,
        headers: authorization === undefined ? {} : { authorization },
      });
      await assertProblem(response, [401]);
      assert.equal(stranger.pulls(), 0, "a stranger's body is not read");
    }

    // With a client token, a write without it is refused before its body is read.
    const guarded = createApp({
      node: cluster.nodes[0]!,
      replicas: REPLICAS,
      secret: SECRET,
      clientToken: CLIENT_TOKEN,
    });
    const unauthenticated = endlessBody(chunk);
    await assertProblem(
      await guarded.request("/kv/limit", { method: "PUT", body: unauthenticated.body }),
      [401],
    );
    assert.equal(unauthenticated.pulls(), 0);

    await assertUnchanged(cluster, before);
    const get = await app.request("/kv/limit");
    assert.equal(get.status, 200);
    assert.deepEqual(
      new Uint8Array(await get.arrayBuffer()),
      new Uint8Array(MAX_VALUE_BYTES).fill(1),
    );
  });
});
