import assert from "node:assert/strict";
import {
  databaseIdOf,
  exchangeAuthProblem,
  negotiateVersion,
  TOKEN_GRACE_MS,
  TokenIssuer,
} from "../../src/kvconnect/metadata.ts";

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

Deno.test("tokens: accepted by any issuer with the secret, for their database, until expiry and grace", async () => {
  const now = 1_700_000_000_000;
  const issuer = new TokenIssuer("cluster-secret-1");
  const token = await issuer.issue("app", now + 60_000);
  assert.match(token, /^v1\.\d+\.[A-Za-z0-9_-]{43}$/);
  assert.equal(await new TokenIssuer("cluster-secret-1").verify(token, "app", now), true);
  assert.equal(await issuer.verify(token, "app", now + 60_000 + TOKEN_GRACE_MS), true);
  assert.equal(await issuer.verify(token, "app", now + 60_001 + TOKEN_GRACE_MS), false);
  assert.equal(await issuer.verify(token, "other", now), false);
  assert.equal(await new TokenIssuer("cluster-secret-2").verify(token, "app", now), false);
  const later = token.replace(/^v1\.(\d+)\./, (_, expiry) => `v1.${Number(expiry) + 1}.`);
  assert.equal(await issuer.verify(later, "app", now), false, "the expiry is signed");
  for (const bad of ["", "abc", "v1.x.y", `${token}x`]) {
    assert.equal(await issuer.verify(bad, "app", now), false);
  }
});

Deno.test("the exchange takes any bearer token without a client token, only it with one", () => {
  const clientToken = new TextEncoder().encode("client-token-0123");
  assert.equal(exchangeAuthProblem("Bearer anything", undefined), undefined);
  assert.equal(exchangeAuthProblem(undefined, undefined), "Malformed authorization header.");
  assert.equal(exchangeAuthProblem("Basic abc", undefined), "Malformed authorization header.");
  assert.equal(exchangeAuthProblem("Bearer client-token-0123", clientToken), undefined);
  assert.equal(exchangeAuthProblem("Bearer anything", clientToken), "Invalid access token.");
});
