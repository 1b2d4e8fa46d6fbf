/**
 * The control routes of the test-only fault layer, mounted at `/ops/faults`
 * when a replica runs with `--enable-fault-injection`, and guarded by the
 * cluster credential like the peer route:
 *
 * - `GET /ops/faults`: the configuration and how many batches it affected.
 * - `PUT /ops/faults` (JSON, see `FaultConfig`): replaces the configuration.
 * - `DELETE /ops/faults`: removes every fault.
 *
 * @module
 */

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { type FaultInjector, parseFaultConfig } from "../transport/faults.ts";

/** Builds the fault control routes (relative to `/ops`). */
export function faultRoutes(
  injector: FaultInjector,
  options: { secret: string; replicas: number },
): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    if (c.req.header("authorization") !== `Bearer ${options.secret}`) {
      return c.json({ error: "The fault routes need the cluster credential" }, 401);
    }
    await next();
    return undefined;
  });
  app.get("/faults", (c) => c.json({ config: injector.config, counts: injector.counts }));
  app.put("/faults", bodyLimit({ maxSize: 64 * 1024 }), async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: "Body must be JSON" }, 400);
    }
    const parsed = parseFaultConfig(body, options.replicas);
    if (!parsed.ok) return c.json({ error: parsed.reason }, 400);
    injector.set(parsed.config);
    return c.json({ config: injector.config });
  });
  app.delete("/faults", (c) => {
    injector.clear();
    return c.body(null, 204);
  });
  return app;
}
