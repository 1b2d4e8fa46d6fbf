/**
 * The version of the peer protocol, so that a rolling upgrade is safe: every
 * request one replica makes of another (batches, snapshot transfers, the
 * admin calls replicas make of each other) carries the version its build
 * speaks in {@linkcode PEER_PROTOCOL_HEADER}, and a replica takes only the
 * versions of its range ({@linkcode MIN_PEER_PROTOCOL_VERSION} to
 * {@linkcode MAX_PEER_PROTOCOL_VERSION}). Anything else is refused before it
 * is read: 400 with `{"error", "protocol": {"request", "min", "max"}}`, a
 * message naming both versions, and the receiver's range in
 * {@linkcode PEER_PROTOCOL_RANGE_HEADER}, by which the sender tells this
 * refusal from a malformed batch. Both sides log it once per peer and show it
 * in `/status` for that peer (`protocolRefusal`).
 *
 * A request without the header is version 1: builds from before the header
 * spoke version 1 and sent none, so a cluster upgrades from them one replica
 * at a time like from any other build.
 *
 * What changes the version: anything a replica of the previous build would
 * misread (the batch format `codec.ts`, the core's messages
 * `src/core/types.ts`, the snapshot stream `src/kv/snapshot_file.ts`, the
 * admin routes replicas call). A build that can still speak the previous
 * version keeps it as its minimum, so that the upgrade can go one replica at
 * a time; one that cannot raises the minimum, and then needs a cluster
 * upgraded to a build whose range holds both first.
 *
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";
import { MAX_MEMBER_ID } from "../core/configuration.ts";

/** The peer protocol version this build sends. */
export const PEER_PROTOCOL_VERSION = 1;
/** The lowest version this build takes. */
export const MIN_PEER_PROTOCOL_VERSION = 1;
/** The highest version this build takes. */
export const MAX_PEER_PROTOCOL_VERSION = 1;
/** The version of a request without {@linkcode PEER_PROTOCOL_HEADER} (builds before it). */
export const UNVERSIONED_PEER_PROTOCOL = 1;
/** The request header naming the sender's peer protocol version. */
export const PEER_PROTOCOL_HEADER = "epaxos-protocol";
/** The refusal's header naming the versions the receiver takes, as `MIN-MAX`. */
export const PEER_PROTOCOL_RANGE_HEADER = "epaxos-protocol-range";
/** The header every peer request carries: this build's version. */
export const PEER_PROTOCOL_HEADERS: Readonly<Record<string, string>> = {
  [PEER_PROTOCOL_HEADER]: String(PEER_PROTOCOL_VERSION),
};

/** Versions of the peer protocol a replica takes, `min` to `max`. */
export interface ProtocolRange {
  /** The lowest. */
  readonly min: number;
  /** The highest. */
  readonly max: number;
}

/** The versions this build takes. */
export const SPOKEN_PEER_PROTOCOLS: ProtocolRange = {
  min: MIN_PEER_PROTOCOL_VERSION,
  max: MAX_PEER_PROTOCOL_VERSION,
};

/** Highest version number a header may carry (longer text is malformed, not a version). */
const MAX_VERSION = 999_999;

/** `range` in words: `1`, or `1 to 2`. */
export function describeProtocolRange(range: ProtocolRange): string {
  return range.min === range.max ? `${range.min}` : `${range.min} to ${range.max}`;
}

/** `range` as {@linkcode PEER_PROTOCOL_RANGE_HEADER} carries it: `MIN-MAX`. */
export function formatProtocolRange(range: ProtocolRange): string {
  return `${range.min}-${range.max}`;
}

/** Parses {@linkcode PEER_PROTOCOL_RANGE_HEADER}'s `MIN-MAX`; `undefined` if malformed. */
export function parseProtocolRange(text: string): ProtocolRange | undefined {
  const match = /^([1-9]\d{0,5})-([1-9]\d{0,5})$/.exec(text.trim());
  if (match === null) return undefined;
  const range = { min: Number(match[1]), max: Number(match[2]) };
  return range.min <= range.max ? range : undefined;
}

/** What a receiver does with a request's version: take it, or refuse it saying why. */
export type ProtocolVerdict =
  | { readonly ok: true; readonly version: number }
  | {
    readonly ok: false;
    /** The request's version, if the header held a number. */
    readonly version: number | undefined;
    /** Why, naming both versions. */
    readonly message: string;
  };

/**
 * The verdict on a request whose {@linkcode PEER_PROTOCOL_HEADER} is `header`
 * (`undefined` when absent: {@linkcode UNVERSIONED_PEER_PROTOCOL}), for a
 * receiver that takes `range`.
 */
export function peerProtocolVerdict(
  header: string | undefined,
  range: ProtocolRange = SPOKEN_PEER_PROTOCOLS,
): ProtocolVerdict {
  const spoken = describeProtocolRange(range);
  if (header === undefined) {
    const version = UNVERSIONED_PEER_PROTOCOL;
    if (version >= range.min && version <= range.max) return { ok: true, version };
    return {
      ok: false,
      version,
      message: `The request names no peer protocol version (a build before versions, ` +
        `version ${version}); this replica speaks peer protocol ${spoken}: upgrade the sender`,
    };
  }
  const text = header.trim();
  if (!/^[1-9]\d{0,5}$/.test(text) || Number(text) > MAX_VERSION) {
    return {
      ok: false,
      version: undefined,
      message: `The request's peer protocol version ${JSON.stringify(text.slice(0, 32))} ` +
        `is not a version number; this replica speaks peer protocol ${spoken}`,
    };
  }
  const version = Number(text);
  if (version >= range.min && version <= range.max) return { ok: true, version };
  const upgrade = version > range.max ? "upgrade this replica" : "upgrade the sender";
  return {
    ok: false,
    version,
    message:
      `The request speaks peer protocol ${version}; this replica speaks ${spoken}: ${upgrade}`,
  };
}

/**
 * What a sender says when `peer` refuses its version `ours`, the peer taking
 * `theirs`: the line it logs and shows in `/status`.
 */
export function peerRefusalMessage(peer: string, ours: number, theirs: ProtocolRange): string {
  const upgrade = ours > theirs.max ? "upgrade it" : "upgrade this replica";
  return `${peer} refused our peer protocol ${ours}: it speaks ${
    describeProtocolRange(theirs)
  }; ${upgrade}`;
}

/**
 * The latest version refusal per peer, either way (a peer refusing this
 * replica, or this replica refusing a peer), for `/status`. Bounded: one
 * entry per member id, and ids are at most `MAX_MEMBER_ID`.
 */
export class ProtocolRefusals {
  readonly #byPeer = new Map<number, string>();

  /** Notes `message` for `peer`; an id that is no member id is ignored. */
  note(peer: number, message: string): void {
    if (Number.isInteger(peer) && peer >= 0 && peer <= MAX_MEMBER_ID) {
      this.#byPeer.set(peer, message);
    }
  }

  /** Forgets `peer`'s refusal (it spoke a version taken since). */
  clear(peer: number): void {
    this.#byPeer.delete(peer);
  }

  /** `peer`'s latest refusal, if any. */
  of(peer: number): string | undefined {
    return this.#byPeer.get(peer);
  }
}

/** Settings of {@linkcode peerProtocolGate}. */
export interface PeerProtocolGateOptions {
  /** The versions taken (default {@linkcode SPOKEN_PEER_PROTOCOLS}; tests change it). */
  readonly range?: ProtocolRange;
  /** The member id the request claims to come from, if it says. */
  readonly sender?: (c: Context) => number | undefined;
  /** Receives the refusal's line, once per claimed sender and version. */
  readonly log?: (line: string) => void;
  /** Where refusals are kept for `/status`, by claimed sender. */
  readonly refusals?: ProtocolRefusals;
}

/** Most (sender, version) pairs whose refusal was logged before the memory starts over. */
const MAX_LOGGED_REFUSALS = 64;

/**
 * Middleware that lets a request through only if it speaks a version of the
 * range (see the module's documentation); a refusal reads nothing of the
 * body and changes nothing. A request it lets through clears its claimed
 * sender's refusal.
 */
export function peerProtocolGate(options: PeerProtocolGateOptions = {}): MiddlewareHandler {
  const range = options.range ?? SPOKEN_PEER_PROTOCOLS;
  const logged = new Set<string>();
  return async (c, next) => {
    const verdict = peerProtocolVerdict(c.req.header(PEER_PROTOCOL_HEADER), range);
    const sender = options.sender?.(c);
    if (verdict.ok) {
      if (sender !== undefined) options.refusals?.clear(sender);
      await next();
      return undefined;
    }
    const who = sender === undefined ? "a peer" : `replica ${sender}`;
    if (sender !== undefined) {
      options.refusals?.note(sender, `refused ${who}: ${verdict.message}`);
    }
    const key = `${sender ?? "-"}:${verdict.version ?? "?"}`;
    if (!logged.has(key)) {
      if (logged.size >= MAX_LOGGED_REFUSALS) logged.clear();
      logged.add(key);
      options.log?.(
        `refused ${c.req.method} ${c.req.path} from ${who}: ${verdict.message} ` +
          "(logged once per sender and version)",
      );
    }
    c.header(PEER_PROTOCOL_RANGE_HEADER, formatProtocolRange(range));
    return c.json({
      error: verdict.message,
      protocol: { request: verdict.version ?? null, min: range.min, max: range.max },
    }, 400);
  };
}
