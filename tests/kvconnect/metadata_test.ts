import assert from "node:assert/strict";
import {
  databaseIdOf,
  dataPathRefusal,
  exchangeHolder,
  negotiateVersion,
  TOKEN_GRACE_MS,
  TokenIssuer,
} from "../../src/kvconnect/metadata.ts";
import { ClientAccess } from "../../src/server/access.ts";
import { tokenKey } from "../../src/kv/token_keys.ts";
import { encodeTokenRecord, tokenHash, TokenIndex, type TokenRecord } from "../../src/kv/tokens.ts";

Deno.test("the protocol version: 3 if offered, else 2; loosely read; v1-only clients refused", () => {
  const cases: [unknown, number | string][] = [
    [{ supportedVersions: [1, 2, 3] }, 3],
    [{ supportedVersions: [3, 4], extra: true }, 3],
    [{ supportedVersions: [1, 2] }, 2],
    [{ supportedVersions: [1] }, "The server could not negotiate a protocol version"],
    [{ supportedVersions: [] }, "The server could not negotiate a protocol version"],
    [undefined, "The server requires at least protocol version 2"],
    [{}, "The server requires at least protocol version 2"],
    [[3], "The server requires at least protocol version 2"],
  ];
  for (const [body, expected] of cases) {
    const negotiated = negotiateVersion(body);
    if (typeof expected === "number") {
      assert.deepEqual(negotiated, { version: expected }, JSON.stringify(body));
    } else {
      assert.ok("problem" in negotiated && negotiated.problem.startsWith(expected));
    }
  }
});

Deno.test("a database's id is a UUID derived from its name alone", async () => {
  const id = await databaseIdOf("app");
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(await databaseIdOf("app"), id);
  assert.notEqual(await databaseIdOf("app2"), id);
});

const HASH = "ab".repeat(32);

Deno.test("tokens: accepted by any issuer with the secret, for their database and holder, until expiry and grace", async () => {
  const now = 1_700_000_000_000;
  const issuer = new TokenIssuer("cluster-secret-1");
  for (const holder of ["open", "client", HASH]) {
    const token = await issuer.issue("app", now + 60_000, holder);
    assert.match(token, /^v2\.\d+\.(open|client|[0-9a-f]{64})\.[A-Za-z0-9_-]{43}$/);
    assert.equal(await new TokenIssuer("cluster-secret-1").verify(token, "app", now), holder);
    assert.equal(await issuer.verify(token, "app", now + 60_000 + TOKEN_GRACE_MS), holder);
    assert.equal(await issuer.verify(token, "app", now + 60_001 + TOKEN_GRACE_MS), undefined);
    assert.equal(await issuer.verify(token, "other", now), undefined);
    assert.equal(await new TokenIssuer("cluster-secret-2").verify(token, "app", now), undefined);
    const later = token.replace(/^v2\.(\d+)\./, (_, expiry) => `v2.${Number(expiry) + 1}.`);
    assert.equal(await issuer.verify(later, "app", now), undefined, "the expiry is signed");
    for (const bad of ["", "abc", "v2.x.y", `${token}x`]) {
      assert.equal(await issuer.verify(bad, "app", now), undefined);
    }
  }
  // The holder is signed: a client cannot make its token another's.
  const open = await issuer.issue("app", now + 60_000, "open");
  const forged = open.replace(".open.", ".client.");
  assert.equal(await new TokenIssuer("cluster-secret-1").verify(forged, "app", now), undefined);
  await assert.rejects(() => issuer.issue("app", now, "someone"), RangeError);
});

Deno.test("tokens of the format before holders verify as v1", async () => {
  const now = 1_700_000_000_000;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode("cluster-secret-1"),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const expiry = now + 60_000;
  const mac = new Uint8Array(
    await crypto.subtle.sign(
      "HMAC",
      key,
      new TextEncoder().encode(`epaxos-kv kvconnect token\0app\0${expiry}`),
    ),
  ).toBase64({ alphabet: "base64url", omitPadding: true });
  const issuer = new TokenIssuer("cluster-secret-1");
  assert.equal(await issuer.verify(`v1.${expiry}.${mac}`, "app", now), "v1");
  assert.equal(await issuer.verify(`v1.${expiry}.${mac}`, "other", now), undefined);
});

/** Credentials of `records` (a real index) and an optional client token. */
function accessOf(records: readonly TokenRecord[], clientToken?: string): ClientAccess {
  const index = new TokenIndex();
  for (const record of records) {
    index.note(tokenKey(record.name), { value: encodeTokenRecord(record), version: "1.0.0" });
  }
  return new ClientAccess({
    tokens: () => index,
    ...(clientToken === undefined ? {} : { clientToken }),
  });
}

const READER: TokenRecord = {
  name: "reader",
  hash: tokenHash("reader-token"),
  prefixes: [],
  databases: [{ database: "app", access: "read" }],
  ops: false,
  created: 0,
};

Deno.test("the exchange: any bearer token while open; the client token or a granted named token when enforced", () => {
  const open = accessOf([]);
  assert.deepEqual(exchangeHolder("Bearer anything", open, "app"), { holder: "open" });
  assert.deepEqual(exchangeHolder(undefined, open, "app"), {
    status: 401,
    message: "Malformed authorization header.",
  });
  assert.equal((exchangeHolder("Basic abc", open, "app") as { status: number }).status, 401);

  const guarded = accessOf([READER], "client-token-0123");
  assert.deepEqual(exchangeHolder("Bearer client-token-0123", guarded, "app"), {
    holder: "client",
  });
  assert.deepEqual(exchangeHolder("Bearer anything", guarded, "app"), {
    status: 401,
    message: "Invalid access token.",
  });
  assert.deepEqual(exchangeHolder("Bearer reader-token", guarded, "app"), { holder: READER.hash });
  const refused = exchangeHolder("Bearer reader-token", guarded, "other");
  assert.ok("status" in refused && refused.status === 403);
  assert.match(refused.message, /^Token "reader" may not connect database "other": it needs read/);

  // A named token alone turns enforcement on.
  const tokensOnly = accessOf([READER]);
  assert.equal(
    (exchangeHolder("Bearer anything", tokensOnly, "app") as { status: number }).status,
    401,
  );
});

Deno.test("the data path checks its holder again on every request", () => {
  const open = accessOf([]);
  const guarded = accessOf([READER], "client-token-0123");
  const tokensOnly = accessOf([READER]);
  const status = (refusal: { status: number } | undefined) => refusal?.status ?? 200;
  // Open tokens stop working once anything is enforced.
  assert.equal(status(dataPathRefusal("open", open, "snapshot_read", "app", false)), 200);
  assert.equal(status(dataPathRefusal("open", tokensOnly, "snapshot_read", "app", false)), 401);
  assert.equal(status(dataPathRefusal("v1", open, "atomic_write", "app", true)), 200);
  assert.equal(status(dataPathRefusal("v1", tokensOnly, "atomic_write", "app", true)), 401);
  assert.equal(status(dataPathRefusal("v1", guarded, "atomic_write", "app", true)), 200);
  assert.equal(status(dataPathRefusal("client", guarded, "atomic_write", "app", true)), 200);
  assert.equal(status(dataPathRefusal("client", tokensOnly, "atomic_write", "app", true)), 401);
  // A named token: its grant, now.
  assert.equal(status(dataPathRefusal(READER.hash, guarded, "snapshot_read", "app", false)), 200);
  assert.equal(status(dataPathRefusal(READER.hash, guarded, "watch", "app", false)), 200);
  const write = dataPathRefusal(READER.hash, guarded, "atomic_write", "app", true);
  assert.equal(write?.status, 403);
  assert.equal(
    write?.message,
    'Token "reader" may not atomic_write database "app": it needs read-write, and it may only ' +
      'read database "app".',
  );
  // Removed: 401 at once.
  assert.equal(
    status(dataPathRefusal(READER.hash, accessOf([], "c-0123456789abcdef"), "watch", "app", false)),
    401,
  );
});
