/**
 * The permission decider of named tokens: a table of grants × requests and
 * the answers, refusals with what was needed and why.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type AccessRequest,
  decideAccess,
  decideEvery,
  type Needed,
} from "../../src/kv/permissions.ts";
import type { TokenGrants } from "../../src/kv/tokens.ts";

const READER: TokenGrants = {
  name: "reader",
  prefixes: [{ prefix: "app/", access: "read" }],
  databases: [{ database: "main", access: "read" }],
  ops: false,
};

const WRITER: TokenGrants = {
  name: "writer",
  prefixes: [
    { prefix: "app/", access: "read-write" },
    { prefix: "shared/", access: "read" },
  ],
  databases: [{ database: "main", access: "read-write" }, { database: "logs", access: "read" }],
  ops: false,
};

const EVERYTHING: TokenGrants = {
  name: "admin",
  prefixes: [{ prefix: "", access: "read-write" }],
  databases: [],
  ops: true,
};

const SCRAPER: TokenGrants = { name: "prometheus", prefixes: [], databases: [], ops: true };

/** [grants, request, undefined if allowed or the needed permission and a pattern of the reason]. */
const CASES: [TokenGrants, AccessRequest, [Needed, RegExp] | undefined][] = [
  // Keys: read with either access, write only with read-write, inside a prefix.
  [READER, { kind: "key", key: "app/x", write: false }, undefined],
  [READER, { kind: "key", key: "app/", write: false }, undefined],
  [READER, { kind: "key", key: "app/x", write: true }, [
    "read-write",
    /may only read under "app\/"/,
  ]],
  [READER, { kind: "key", key: "other", write: false }, [
    "read",
    /none of its prefixes covers key "other"/,
  ]],
  [READER, { kind: "key", key: "app", write: false }, ["read", /covers key "app"/]],
  [READER, { kind: "key", key: "App/x", write: false }, ["read", /covers/]],
  [WRITER, { kind: "key", key: "app/x", write: true }, undefined],
  [WRITER, { kind: "key", key: "shared/x", write: false }, undefined],
  [WRITER, { kind: "key", key: "shared/x", write: true }, [
    "read-write",
    /may only read under "shared\/"/,
  ]],
  [EVERYTHING, { kind: "key", key: "anything", write: true }, undefined],
  [SCRAPER, { kind: "key", key: "app/x", write: false }, ["read", /covers/]],
  // Prefixes: only inside a granted prefix.
  [READER, { kind: "prefix", prefix: "app/" }, undefined],
  [READER, { kind: "prefix", prefix: "app/sub/" }, undefined],
  [READER, { kind: "prefix", prefix: "app" }, [
    "read",
    /"app" is not inside one of its prefixes \("app\/"\)/,
  ]],
  [READER, { kind: "prefix", prefix: "" }, ["read", /not inside/]],
  [EVERYTHING, { kind: "prefix", prefix: "" }, undefined],
  [SCRAPER, { kind: "prefix", prefix: "x" }, ["read", /\(it has none\)/]],
  // Databases: exact names.
  [READER, { kind: "database", database: "main", write: false }, undefined],
  [READER, { kind: "database", database: "main", write: true }, [
    "read-write",
    /may only read database "main"/,
  ]],
  [READER, { kind: "database", database: "mainx", write: false }, [
    "read",
    /no grant on database "mainx"/,
  ]],
  [WRITER, { kind: "database", database: "main", write: true }, undefined],
  [WRITER, { kind: "database", database: "logs", write: true }, ["read-write", /may only read/]],
  [EVERYTHING, { kind: "database", database: "main", write: false }, ["read", /no grant/]],
  // The operations pages.
  [SCRAPER, { kind: "ops" }, undefined],
  [EVERYTHING, { kind: "ops" }, undefined],
  [WRITER, { kind: "ops" }, ["ops", /no grant on the operations pages/]],
];

Deno.test("decideAccess: a table of grants and requests", () => {
  for (const [grants, request, expected] of CASES) {
    const decision = decideAccess(grants, request);
    const label = `${grants.name} ${JSON.stringify(request)}`;
    if (expected === undefined) {
      assert.deepEqual(decision, { allowed: true }, label);
    } else {
      assert.equal(decision.allowed, false, label);
      if (decision.allowed) continue;
      assert.equal(decision.needed, expected[0], label);
      assert.match(decision.reason, expected[1], label);
    }
  }
});

Deno.test("decideEvery: the first refusal, with the request it refused", () => {
  const requests: AccessRequest[] = [
    { kind: "key", key: "app/a", write: false },
    { kind: "key", key: "app/b", write: true },
    { kind: "key", key: "other", write: true },
    { kind: "key", key: "shared/c", write: true },
  ];
  const decision = decideEvery(WRITER, requests);
  assert.equal(decision.allowed, false);
  if (decision.allowed) return;
  assert.deepEqual(decision.request, requests[2]);
  assert.equal(decision.needed, "read-write");
  assert.deepEqual(decideEvery(WRITER, requests.slice(0, 2)), { allowed: true });
  assert.deepEqual(decideEvery(READER, []), { allowed: true });
});

Deno.test("properties: what a prefix list allows, every key under it allows to read; write implies read", () => {
  const text = fc.string({ unit: fc.constantFrom("a", "b", "/"), maxLength: 4 });
  const grantsArb: fc.Arbitrary<TokenGrants> = fc.record({
    name: fc.constant("t"),
    prefixes: fc.array(
      fc.record({ prefix: text, access: fc.constantFrom("read" as const, "read-write" as const) }),
      { maxLength: 3 },
    ),
    databases: fc.constant([]),
    ops: fc.boolean(),
  });
  fc.assert(
    fc.property(grantsArb, text, text, (grants, prefix, rest) => {
      if (decideAccess(grants, { kind: "prefix", prefix }).allowed) {
        assert.ok(decideAccess(grants, { kind: "key", key: prefix + rest, write: false }).allowed);
      }
      const key = prefix + rest;
      if (decideAccess(grants, { kind: "key", key, write: true }).allowed) {
        assert.ok(decideAccess(grants, { kind: "key", key, write: false }).allowed);
      }
    }),
    { numRuns: 500 },
  );
});
