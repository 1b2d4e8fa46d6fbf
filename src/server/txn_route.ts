/**
 * `POST /txn`: multi-key transactions on the curl API (issue 17 item 6), in
 * the manner of etcd's `Txn` and Consul's `/v1/txn` (the body:
 * src/server/txn_body.ts). One atomic command, answered after it executed on
 * this replica (linearizable, like every conditional write):
 *
 * - 200 `{"ok": true, "version": "…"}`: every check held and every op
 *   applied; each written key has `version`.
 * - 412 `{"error", "ok": false, "failed": [{"key", "expected", "current"}]}`:
 *   a check failed, nothing applied; each failed check with the version it
 *   wanted and the one the key has (`null`: absent).
 * - 400 with a message: a malformed body or one past the limits (100 checks,
 *   1000 ops, the key and value limits of `PUT`, 800 KiB in all); 413 past
 *   {@linkcode MAX_TXN_BODY_BYTES}.
 * - 503 when nothing was proposed, 504 when the outcome is unknown (the
 *   app's answer to a `KvError`): read the keys to learn whether it applied.
 *
 * Credentials are checked by `kvRoutes`, which mounts this route (401), and
 * here, once the body names the keys (403): a named token needs read on
 * every key a check reads and read-write on every key an op writes
 * (`src/server/access.ts`).
 *
 * @module
 */

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ReplicaDriver } from "../driver/driver.ts";
import type { ClientAccess } from "./access.ts";
import { problem } from "./problem.ts";
import { failedChecks, MAX_TXN_BODY_BYTES, txnCommandOf } from "./txn_body.ts";

/** The `POST /txn` route of `node`, checked by `access`, as a Hono sub-app to mount at the root. */
export function txnRoute(node: ReplicaDriver, access: ClientAccess): Hono {
  const routes = new Hono();
  routes.post(
    "/txn",
    bodyLimit({
      maxSize: MAX_TXN_BODY_BYTES,
      onError: (c) => problem(c, 413, `The body is larger than ${MAX_TXN_BODY_BYTES} bytes`),
    }),
    async (c) => {
      let body: unknown;
      try {
        body = JSON.parse(await c.req.text());
      } catch {
        return problem(c, 400, "The body is not JSON");
      }
      const parsed = txnCommandOf(body, node.wallClockMs());
      if ("problem" in parsed) return problem(c, 400, parsed.problem);
      const refused = access.authorize(
        c,
        ...parsed.command.checks.map((check) => ({
          kind: "key" as const,
          key: check.key,
          write: false,
        })),
        ...parsed.command.mutations.map((mutation) => ({
          kind: "key" as const,
          key: mutation.key,
          write: true,
        })),
      );
      if (refused !== undefined) return refused;
      // A KvError that stops the command (503, 504) reaches the app's onError.
      const result = await node.submit(parsed.command);
      if (result.op !== "atomic") return problem(c, 500, "Unexpected result");
      if (result.ok) return c.json({ ok: true, version: result.version });
      if (result.failure === "invalid") return problem(c, 400, result.message);
      const failed = failedChecks(parsed.command.checks, result.current);
      return problem(
        c,
        412,
        `Precondition failed: ${failed.length} of ${parsed.command.checks.length} checks ` +
          "did not hold; nothing was applied",
        { ok: false, failed },
      );
    },
  );
  return routes;
}
