import assert from "node:assert/strict";
import { sessionExpiry, sessionKey, signSession } from "../../src/ui/session.ts";

Deno.test("a session signed with a key is valid with it until it expires", async () => {
  const key = await sessionKey("cluster-secret", "client-token");
  const value = await signSession(key, 10_000);
  assert.equal(await sessionExpiry(key, value, 9_999), 10_000);
  assert.equal(await sessionExpiry(key, value, 10_000), undefined, "expired at its expiry");
});

Deno.test("a session is refused when forged, altered or signed for another credential", async () => {
  const key = await sessionKey("cluster-secret", "client-token");
  const value = await signSession(key, 10_000);
  const [expiry, mac] = value.split(".");
  // Another expiry under the same MAC: altered.
  assert.equal(await sessionExpiry(key, `${Number(expiry) + 1}.${mac}`, 0), undefined);
  // Another token, or another cluster secret: another key.
  for (
    const other of [
      sessionKey("cluster-secret", "other-token"),
      sessionKey("other", "client-token"),
    ]
  ) {
    assert.equal(await sessionExpiry(await other, value, 0), undefined);
  }
  for (
    const malformed of [
      undefined,
      "",
      "10000",
      "10000.",
      "x.y",
      `${expiry}.${mac}!`,
      "1.".padEnd(300, "a"),
    ]
  ) {
    assert.equal(await sessionExpiry(key, malformed, 0), undefined, String(malformed));
  }
});
