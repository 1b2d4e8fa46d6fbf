/**
 * The receiving side of the HTTP peer transport (`http.ts` sends): the route
 * that takes `POST /peer/v1/batch`. It checks the cluster credential before
 * reading the body, bounds the body, decodes and validates the whole batch
 * (`codec.ts`), and only then hands it to the replica; a refused batch changes
 * nothing. A replica's app mounts it (`src/server/app.ts`).
 *
 * A refused credential is logged once per claimed sender (the id in the
 * `epaxos-sender` header, or none), with the address it came from; once that
 * sender's batch is accepted, a later refusal is logged anew.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { bearerToken, sameSecret } from "../net/bearer.ts";
import { formatHostPort } from "../net/endpoint.ts";
import { BatchError, decodeBatch, MAX_BATCH_BYTES } from "./codec.ts";
import { PEER_BATCH_PATH, PEER_EPOCH_HEADER, PEER_SENDER_HEADER } from "./http.ts";
import { peerProtocolGate, type ProtocolRange, type ProtocolRefusals } from "./peer_protocol.ts";
import type { BatchHandler } from "./types.ts";

/** Settings of {@linkcode peerRoute}. */
export interface PeerRouteOptions<C> {
  /** The receiving replica: every message must be addressed to it. */
  readonly self: number;
  /** Cluster size (epoch 1's, when `current` is absent). */
  readonly replicas: number;
  /**
   * The receiver's epoch and its positions, read for each batch (they change
   * with configuration changes); absent: epoch 1 and `replicas`.
   */
  readonly current?: () => { readonly epoch: number; readonly replicas: number };
  /** The cluster credential peers must present. */
  readonly secret: string;
  /** Whether a value is a well-formed command. */
  readonly isCommand: (value: unknown) => value is C;
  /**
   * Why the receiver takes no batches now (it is joining and has no state to
   * vote with yet, or it left the cluster), or `undefined`: such a batch is
   * answered 503, so that senders count it as not reachable instead of
   * waiting for replies that will not come.
   */
  readonly refusing?: () => string | undefined;
  /**
   * Takes every batch that passed the checks, in arrival order. A refusal it
   * returns (the batch is of an earlier epoch) is answered 409 with the
   * receiver's epoch in {@linkcode PEER_EPOCH_HEADER}.
   */
  readonly receive: BatchHandler<C>;
  /** Receives one line per notable event: a sender whose credential or version is refused. */
  readonly log?: (line: string) => void;
  /** Where peer protocol refusals are kept for `/status` (`peer_protocol.ts`). */
  readonly protocolRefusals?: ProtocolRefusals;
  /** Peer protocol versions taken (default this build's; tests change it). */
  readonly protocols?: ProtocolRange;
}

const encoder = new TextEncoder();

/** Where a request came from (`host:port`), when the server says (`Deno.serve` does). */
function remoteAddress(c: Context): string {
  const address = (c.env as { remoteAddr?: Deno.Addr } | undefined)?.remoteAddr;
  if (address === undefined || !("hostname" in address)) return "an unknown address";
  return formatHostPort(address);
}

/** A JSON error answer, in the shape of every other route's. */
function refuse(c: Context, status: 400 | 401 | 403 | 413, message: string): Response {
  return c.json({ error: message }, status);
}

/**
 * The peer route as a Hono sub-app, to mount at the root (`app.route("/", …)`).
 * Answers 204 to an accepted batch; 409 with the receiver's epoch to a batch
 * of an earlier epoch (`BatchRefusal`); 401 without the cluster credential,
 * 400 with the versions taken to a peer protocol version outside them
 * (`peer_protocol.ts`), 413 to a body over {@linkcode MAX_BATCH_BYTES}, 403
 * to a sender that is not a replica, 400 to anything else malformed. Other errors reach the
 * parent app's `onError`.
 */
export function peerRoute<C>(options: PeerRouteOptions<C>): Hono {
  const secretBytes = encoder.encode(options.secret);
  // Claimed senders whose refusal was logged: replica ids, and -1 for a
  // request that claims none (so at most `replicas + 1` entries).
  const refusedSenders = new Set<number>();
  /** The replica id the request claims in its sender header, or -1. */
  const claimedSender = (c: Context) => {
    const claimed = c.req.header(PEER_SENDER_HEADER);
    return claimed !== undefined && /^\d{1,3}$/.test(claimed) &&
        Number(claimed) < options.replicas
      ? Number(claimed)
      : -1;
  };
  const noteRefused = (c: Context, presented: boolean) => {
    if (options.log === undefined) return;
    const id = claimedSender(c);
    if (refusedSenders.has(id)) return;
    refusedSenders.add(id);
    const how = presented ? "with a wrong cluster secret" : "without a credential";
    const who = id < 0 ? "naming no replica as sender" : `claiming to be replica ${id}`;
    options.log(
      `refused a peer request ${how} from ${remoteAddress(c)}, ${who} ` +
        "(logged once until that sender is accepted)",
    );
  };
  const route = new Hono();
  route.post(
    PEER_BATCH_PATH,
    // The credential before the body limit, which buffers the body: a
    // stranger's body is never read.
    async (c, next) => {
      const token = bearerToken(c.req.header("authorization"));
      if (token === undefined || !sameSecret(token, secretBytes)) {
        noteRefused(c, token !== undefined);
        return refuse(c, 401, "The peer route needs the cluster credential");
      }
      await next();
      return undefined;
    },
    // The version before the body too: a batch of another version is not read.
    peerProtocolGate({
      ...(options.protocols === undefined ? {} : { range: options.protocols }),
      sender: (c) => {
        const id = claimedSender(c);
        return id < 0 ? undefined : id;
      },
      ...(options.log === undefined ? {} : { log: options.log }),
      ...(options.protocolRefusals === undefined ? {} : { refusals: options.protocolRefusals }),
    }),
    bodyLimit({
      maxSize: MAX_BATCH_BYTES,
      onError: (c) => refuse(c, 413, `Batch is larger than ${MAX_BATCH_BYTES} bytes`),
    }),
    async (c) => {
      const refusal = options.refusing?.();
      if (refusal !== undefined) {
        await c.req.arrayBuffer();
        return c.json({ error: refusal }, 503);
      }
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      let batch;
      try {
        const current = options.current?.() ?? { epoch: 1, replicas: options.replicas };
        batch = decodeBatch<C>(bytes, {
          replicas: current.replicas,
          epoch: current.epoch,
          self: options.self,
          isCommand: options.isCommand,
        });
      } catch (error) {
        if (error instanceof BatchError) return refuse(c, error.status, error.message);
        throw error;
      }
      if (refusedSenders.size > 0) refusedSenders.delete(batch.from);
      const later = options.receive(batch);
      if (later !== undefined) {
        c.header(PEER_EPOCH_HEADER, String(later.epoch));
        return c.json({
          error: `This replica is in epoch ${later.epoch}, past the batch's ${batch.epoch ?? 1}`,
          epoch: later.epoch,
        }, 409);
      }
      return c.body(null, 204);
    },
  );
  return route;
}
