/**
 * The receiving side of the HTTP peer transport (`http.ts` sends): the route
 * that takes `POST /peer/v1/batch`. It checks the cluster credential before
 * reading the body, bounds the body, decodes and validates the whole batch
 * (`codec.ts`), and only then hands it to the replica; a refused batch changes
 * nothing. A replica's app mounts it (`src/server/app.ts`).
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { bearerToken, sameSecret } from "../net/bearer.ts";
import { BatchError, decodeBatch, MAX_BATCH_BYTES } from "./codec.ts";
import { PEER_BATCH_PATH } from "./http.ts";
import type { BatchHandler } from "./types.ts";

/** Settings of {@linkcode peerRoute}. */
export interface PeerRouteOptions<C> {
  /** The receiving replica: every message must be addressed to it. */
  readonly self: number;
  /** Cluster size. */
  readonly replicas: number;
  /** The cluster credential peers must present. */
  readonly secret: string;
  /** Whether a value is a well-formed command. */
  readonly isCommand: (value: unknown) => value is C;
  /** Takes every batch that passed the checks, in arrival order. */
  readonly receive: BatchHandler<C>;
}

const encoder = new TextEncoder();

/** A JSON error answer, in the shape of every other route's. */
function refuse(c: Context, status: 400 | 401 | 403 | 413, message: string): Response {
  return c.json({ error: message }, status);
}

/**
 * The peer route as a Hono sub-app, to mount at the root (`app.route("/", …)`).
 * Answers 204 to an accepted batch; 401 without the cluster credential, 413
 * to a body over {@linkcode MAX_BATCH_BYTES}, 403 to a sender that is not a
 * replica, 400 to anything else malformed. Other errors reach the parent
 * app's `onError`.
 */
export function peerRoute<C>(options: PeerRouteOptions<C>): Hono {
  const secretBytes = encoder.encode(options.secret);
  const route = new Hono();
  route.post(
    PEER_BATCH_PATH,
    // The credential before the body limit, which buffers the body: a
    // stranger's body is never read.
    async (c, next) => {
      const token = bearerToken(c.req.header("authorization"));
      if (token === undefined || !sameSecret(token, secretBytes)) {
        return refuse(c, 401, "The peer route needs the cluster credential");
      }
      await next();
      return undefined;
    },
    bodyLimit({
      maxSize: MAX_BATCH_BYTES,
      onError: (c) => refuse(c, 413, `Batch is larger than ${MAX_BATCH_BYTES} bytes`),
    }),
    async (c) => {
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      let batch;
      try {
        batch = decodeBatch<C>(bytes, {
          replicas: options.replicas,
          self: options.self,
          isCommand: options.isCommand,
        });
      } catch (error) {
        if (error instanceof BatchError) return refuse(c, error.status, error.message);
        throw error;
      }
      options.receive(batch);
      return c.body(null, 204);
    },
  );
  return route;
}
