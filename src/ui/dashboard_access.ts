/**
 * Who may see the dashboard (`route.ts`): the client credentials of the
 * replica (`src/server/access.ts`), as `/status` and `/metrics` take them.
 * While none is enforced (no client token, no named token) the dashboard is
 * open; otherwise a request needs the client token or a named token with the
 * operations grant (`deno task admin token add NAME --ops`), as a bearer
 * token or through the session cookie (`session.ts`).
 *
 * A session names whom it was made for, and is judged anew on every
 * request: the client token's session is `<expiry>.<mac>` under the key
 * `session.ts` derives from the client token (as before named tokens); a
 * named token's is `<sha256>.<expiry>.<mac>` under a key derived from the
 * cluster secret and that hash, so no session of one token passes for
 * another's, and a token removed (or one that lost its grant) ends its
 * sessions at once.
 *
 * @module
 */

import type { Context } from "hono";
import { getCookie } from "hono/cookie";
import { bearerToken } from "../net/bearer.ts";
import { type ClientAccess, type Principal, refusalMessage } from "../server/access.ts";
import { SESSION_COOKIE, sessionExpiry, sessionKey, signSession } from "./session.ts";

/** Whether a request may see the dashboard, and until when if by session. */
export type DashboardVerdict =
  | { readonly ok: true; readonly untilMs?: number }
  | { readonly ok: false; readonly status: 401 | 403; readonly reason: string };

/** Most session keys of named tokens kept (a bounded cache: cleared when full). */
const SESSION_KEYS_KEPT = 1024;

const HASH_SESSION = /^([0-9a-f]{64})\.(.+)$/;

/** The dashboard's judge of credentials, over the replica's client credentials. */
export class DashboardAccess {
  readonly #access: ClientAccess;
  readonly #secret: string;
  readonly #clientKey: Promise<CryptoKey> | undefined;
  readonly #tokenKeys = new Map<string, Promise<CryptoKey>>();

  /** Judges with `access`; sessions signed under keys derived from `secret` (and `clientToken`). */
  constructor(access: ClientAccess, secret: string, clientToken: string | undefined) {
    this.#access = access;
    this.#secret = secret;
    this.#clientKey = clientToken === undefined ? undefined : sessionKey(secret, clientToken);
  }

  #tokenKey(hash: string): Promise<CryptoKey> {
    let key = this.#tokenKeys.get(hash);
    if (key === undefined) {
      if (this.#tokenKeys.size >= SESSION_KEYS_KEPT) this.#tokenKeys.clear();
      key = sessionKey(this.#secret, `token ${hash}`);
      this.#tokenKeys.set(hash, key);
    }
    return key;
  }

  #locked(): DashboardVerdict {
    return {
      ok: false,
      status: 401,
      reason: this.#access.hasClientToken
        ? "This replica's dashboard needs the client token: enter it above " +
          "(it is kept in this tab only, and sent to this replica alone)"
        : "This replica's dashboard needs a token with the operations grant " +
          "(deno task admin token add NAME --ops): enter it above " +
          "(it is kept in this tab only, and sent to this replica alone)",
    };
  }

  #opsVerdict(principal: Principal, untilMs?: number): DashboardVerdict {
    const refusal = this.#access.refusal(principal, "GET", [{ kind: "ops" }]);
    if (refusal !== undefined) {
      return { ok: false, status: 403, reason: `${refusalMessage(refusal, "/ui")}.` };
    }
    return untilMs === undefined ? { ok: true } : { ok: true, untilMs };
  }

  /** The principal a bearer `token` stands for, or the verdict refusing it. */
  bearer(token: string): Principal | DashboardVerdict {
    const principal = this.#access.principalOf(token);
    return principal ?? { ok: false, status: 401, reason: "The dashboard refused this token" };
  }

  /** Whether `c`'s request may see the dashboard: by bearer token, else by session cookie. */
  async judge(c: Context): Promise<DashboardVerdict> {
    if (!this.#access.enforcing) return { ok: true };
    const presented = bearerToken(c.req.header("authorization"));
    if (presented !== undefined) {
      const found = this.bearer(presented);
      return "ok" in found ? found : this.#opsVerdict(found);
    }
    const value = getCookie(c, SESSION_COOKIE);
    if (value === undefined) return this.#locked();
    const named = HASH_SESSION.exec(value);
    if (named === null) {
      // The client token's session, as it always was.
      if (this.#clientKey === undefined) return this.#locked();
      const untilMs = await sessionExpiry(await this.#clientKey, value, Date.now());
      return untilMs === undefined ? this.#locked() : this.#opsVerdict({ kind: "client" }, untilMs);
    }
    const record = this.#access.tokenByHash(named[1]!);
    if (record === undefined) return this.#locked();
    const untilMs = await sessionExpiry(await this.#tokenKey(named[1]!), named[2]!, Date.now());
    return untilMs === undefined
      ? this.#locked()
      : this.#opsVerdict({ kind: "token", record }, untilMs);
  }

  /**
   * The session cookie's value for `principal` until `untilMs`, or why it
   * gets none (a named token without the operations grant: a 403).
   */
  async session(principal: Principal, untilMs: number): Promise<string | { refused: string }> {
    const verdict = this.#opsVerdict(principal);
    if (!verdict.ok) return { refused: verdict.reason };
    if (principal.kind === "token") {
      const hash = principal.record.hash;
      return `${hash}.${await signSession(await this.#tokenKey(hash), untilMs)}`;
    }
    // Only the client token remains: `open` needs no session.
    return await signSession(await this.#clientKey!, untilMs);
  }
}
