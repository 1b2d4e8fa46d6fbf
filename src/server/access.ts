/**
 * Client credentials on the HTTP side: who a request is (its principal, from
 * `Authorization: Bearer <token>`) and whether it may do what it asks (the
 * permission decider, `src/kv/permissions.ts`), for the curl API, KV Connect
 * and the operations pages.
 *
 * ## When credentials are enforced
 *
 * A replica enforces client credentials when the cluster file names a
 * `clientToken` or the executed state holds at least one named token
 * (`src/kv/tokens.ts`). Otherwise the cluster is open, as it always was:
 * every client request is let through whatever it carries. So the first
 * named token added turns enforcement on (on each replica once it has
 * executed the command), and removing the last one turns it off again when
 * no client token is configured.
 *
 * When enforced:
 *
 * - no bearer token, or one that is neither the client token nor a named
 *   token's: 401 with `WWW-Authenticate: Bearer realm="epaxos-kv"`, as the
 *   client token always answered;
 * - the client token: everything (it is the all-powerful token it was);
 * - a named token: what its grants allow, else 403 with a JSON body naming
 *   the token, the method, the key (or prefix, database, path) and the
 *   permission needed.
 *
 * `/status` and `/metrics` follow the same credentials through
 * {@linkcode requireOps}, and `/ui` through `src/ui/dashboard_access.ts`
 * (which adds its session cookie); `/livez` and `/readyz` are never guarded (probes
 * carry no credentials), nor are the peer and admin routes, which take the
 * cluster secret.
 *
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";
import { type AccessRequest, decideEvery, type Needed } from "../kv/permissions.ts";
import { tokenHash, type TokenIndex, type TokenRecord } from "../kv/tokens.ts";
import { bearerToken, sameSecret } from "../net/bearer.ts";

/** Who a request is. */
export type Principal =
  /** No credentials are configured: the cluster is open. */
  | { readonly kind: "open" }
  /** The configured client token: may do everything. */
  | { readonly kind: "client" }
  /** A named token: may do what its grants allow. */
  | { readonly kind: "token"; readonly record: TokenRecord };

/** Settings of a {@linkcode ClientAccess}. */
export interface ClientAccessOptions {
  /**
   * The tokens of the replica's executed state now (`KvStateMachine.tokens`
   * of `ReplicaDriver.state`, which a snapshot install replaces, hence a
   * function).
   */
  readonly tokens: () => TokenIndex;
  /** The cluster file's client token, if any: all-powerful. */
  readonly clientToken?: string;
}

/** The realm of every client credential challenge. */
export const CLIENT_REALM = "epaxos-kv";

const OPEN: Principal = Object.freeze({ kind: "open" });
const CLIENT: Principal = Object.freeze({ kind: "client" });
const encoder = new TextEncoder();

/** A refusal of the decider, made into what the 403 says. */
export interface Refusal {
  /** The token's name. */
  readonly token: string;
  /** The request's method. */
  readonly method: string;
  /** What was refused. */
  readonly request: AccessRequest;
  /** What it needed. */
  readonly needed: Needed;
  /** Why the token does not have it. */
  readonly reason: string;
}

/** What `request` touches, in words: `key "a"`, `the keys under "p"`, `database "d"`. */
function subjectOf(request: AccessRequest, path: string): string {
  switch (request.kind) {
    case "key":
      return `key ${JSON.stringify(request.key)}`;
    case "prefix":
      return `the keys under ${JSON.stringify(request.prefix)}`;
    case "database":
      return `database ${JSON.stringify(request.database)}`;
    case "ops":
      return path;
  }
}

/** The one-line message of a refusal: `Token "ci" may not PUT key "x": it needs read-write; …`. */
export function refusalMessage(refusal: Refusal, path: string): string {
  return `Token ${JSON.stringify(refusal.token)} may not ${refusal.method} ${
    subjectOf(refusal.request, path)
  }: it needs ${refusal.needed}, and ${refusal.reason}`;
}

/**
 * The JSON body of a 403: the message, the token's name, the method, what
 * was refused (`key`, `prefix`, `database` or `path`) and the permission
 * needed (`read`, `read-write` or `ops`).
 */
export function refusalBody(refusal: Refusal, path: string): Record<string, unknown> {
  const request = refusal.request;
  const subject = request.kind === "key"
    ? { key: request.key }
    : request.kind === "prefix"
    ? { prefix: request.prefix }
    : request.kind === "database"
    ? { database: request.database }
    : { path };
  return {
    error: refusalMessage(refusal, path),
    token: refusal.token,
    method: refusal.method,
    ...subject,
    needed: refusal.needed,
  };
}

/**
 * One replica's client credentials: the configured client token and the
 * named tokens of its executed state. Every check is synchronous: one SHA-256
 * of the presented token and a map lookup.
 */
export class ClientAccess {
  readonly #tokens: () => TokenIndex;
  readonly #clientToken: Uint8Array | undefined;
  /** The principal found for each request that was authenticated (dropped with the request). */
  readonly #principals = new WeakMap<Request, Principal>();

  /** Credentials from `options`. */
  constructor(options: ClientAccessOptions) {
    this.#tokens = options.tokens;
    this.#clientToken = options.clientToken === undefined
      ? undefined
      : encoder.encode(options.clientToken);
  }

  /** Whether a client token is configured. */
  get hasClientToken(): boolean {
    return this.#clientToken !== undefined;
  }

  /** Whether credentials are enforced now: a client token is configured or a named token exists. */
  get enforcing(): boolean {
    return this.#clientToken !== undefined || this.#tokens().size > 0;
  }

  /** The named token whose SHA-256 is `hash`, now. */
  tokenByHash(hash: string): TokenRecord | undefined {
    return this.#tokens().byHash(hash);
  }

  /**
   * The principal of a request presenting bearer token `token` (`undefined`:
   * none): open when nothing is enforced, else the client token's or a named
   * token's, else `undefined` (a 401).
   */
  principalOf(token: string | undefined): Principal | undefined {
    if (!this.enforcing) return OPEN;
    if (token === undefined) return undefined;
    if (this.#clientToken !== undefined && sameSecret(token, this.#clientToken)) return CLIENT;
    const record = this.#tokens().byHash(tokenHash(token));
    return record === undefined ? undefined : { kind: "token", record };
  }

  /** The principal of `c`'s request, found once per request. */
  principal(c: Context): Principal | undefined {
    const known = this.#principals.get(c.req.raw);
    if (known !== undefined) return known;
    const principal = this.principalOf(bearerToken(c.req.header("authorization")));
    if (principal !== undefined) this.#principals.set(c.req.raw, principal);
    return principal;
  }

  /**
   * Middleware that answers 401 to a request without valid credentials
   * (when they are enforced), before anything else is done or read.
   */
  authenticate(): MiddlewareHandler {
    return async (c, next) => {
      if (this.principal(c) === undefined) return this.unauthorized(c);
      await next();
      return undefined;
    };
  }

  /**
   * The refusal of `principal` doing every one of `requests` with `method`,
   * or `undefined` if it may.
   */
  refusal(
    principal: Principal,
    method: string,
    requests: readonly AccessRequest[],
  ): Refusal | undefined {
    if (principal.kind !== "token") return undefined;
    const decision = decideEvery(principal.record, requests);
    if (decision.allowed) return undefined;
    return {
      token: principal.record.name,
      method,
      request: decision.request,
      needed: decision.needed,
      reason: decision.reason,
    };
  }

  /**
   * The answer refusing `c`'s request, or `undefined` if it may do every one
   * of `requests`: a 401 without valid credentials, a 403 (JSON,
   * {@linkcode refusalBody}) when a request is beyond its token's grants.
   */
  authorize(c: Context, ...requests: AccessRequest[]): Response | undefined {
    const principal = this.principal(c);
    if (principal === undefined) return this.unauthorized(c);
    const refusal = this.refusal(principal, c.req.method, requests);
    return refusal === undefined ? undefined : c.json(refusalBody(refusal, c.req.path), 403);
  }

  /**
   * The 401 of a request without valid client credentials (the client
   * token's wording as it always was, when one is configured).
   */
  unauthorized(c: Context): Response {
    const presented = bearerToken(c.req.header("authorization")) !== undefined;
    c.header("WWW-Authenticate", `Bearer realm="${CLIENT_REALM}"`);
    return c.json({
      error: presented
        ? "This route refused the token: it is neither the client token nor a named token's"
        : this.hasClientToken
        ? "This route needs the client token"
        : "This route needs a named token (Authorization: Bearer <token>)",
    }, 401);
  }
}

/**
 * Middleware for the operations pages (`/status`, `/metrics`, `/ui`): when
 * credentials are enforced, 401 without valid ones and 403 for a named token
 * without the `ops` grant (a scrape token for Prometheus has only that).
 */
export function requireOps(access: ClientAccess): MiddlewareHandler {
  return async (c, next) => {
    const refused = access.authorize(c, { kind: "ops" });
    if (refused !== undefined) return refused;
    await next();
    return undefined;
  };
}
