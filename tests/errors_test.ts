import assert from "node:assert/strict";
import {
  ClientRequestError,
  KvError,
  OutcomeUnknownError,
  PreconditionFailedError,
  UnavailableError,
} from "../src/errors.ts";

Deno.test("each error carries the status it means, and its name", () => {
  const cases: [KvError, number, string][] = [
    [new UnavailableError("no quorum"), 503, "UnavailableError"],
    [new OutcomeUnknownError("too slow"), 504, "OutcomeUnknownError"],
    [new PreconditionFailedError("other version", null), 412, "PreconditionFailedError"],
    [new ClientRequestError("too large", 413), 413, "ClientRequestError"],
    [new KvError("bad answer", 502), 502, "KvError"],
  ];
  for (const [error, status, name] of cases) {
    assert.ok(error instanceof KvError, name);
    assert.ok(error instanceof Error, name);
    assert.equal(error.status, status, name);
    assert.equal(error.name, name);
    assert.equal(error.server, undefined, `${name} raised without a client`);
    assert.equal(error.answerStatus, undefined, `${name} raised without an answer`);
  }
});

Deno.test("a replica's refusal suggests no wait of its own and counts one attempt", () => {
  const refusal = new UnavailableError("no quorum");
  assert.equal(refusal.retryAfterSeconds, undefined);
  assert.equal(refusal.attempts, 1);
  const slow = new UnavailableError("cannot persist", { retryAfterSeconds: 5 });
  assert.equal(slow.retryAfterSeconds, 5);
  assert.equal(slow.status, 503);
});

Deno.test("a client's error records where it came from, what was answered, and its cause", () => {
  const cause = new TypeError("connection reset");
  const lost = new OutcomeUnknownError("HTTP 500", {
    server: "http://a:1",
    answerStatus: 500,
    cause,
  });
  assert.equal(lost.status, 504, "a 500 is an unknown outcome");
  assert.equal(lost.answerStatus, 500);
  assert.equal(lost.server, "http://a:1");
  assert.equal(lost.cause, cause);

  const refused = new UnavailableError("every replica refused", {
    attempts: 3,
    retryAfterSeconds: 2,
    server: "http://b:2",
    answerStatus: 503,
  });
  assert.equal(refused.attempts, 3);
  assert.equal(refused.retryAfterSeconds, 2);
  assert.equal(refused.server, "http://b:2");

  const failed = new PreconditionFailedError("other version", "3.1.0", { answerStatus: 412 });
  assert.equal(failed.current, "3.1.0");
  assert.equal(failed.answerStatus, 412);
  assert.ok(!("cause" in new KvError("no cause", 500)), "no cause unless one is given");
});
