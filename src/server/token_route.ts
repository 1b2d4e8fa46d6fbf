/**
 * Named client tokens through a replica's admin route (`admin_route.ts`
 * mounts these on its sub-app, behind the cluster secret), which `deno task
 * admin token …` (`src/cli/admin_tokens.ts`) calls:
 *
 * - `POST /admin/tokens` with `{"name", "prefixes": [{"prefix", "access"}],
 *   "databases": [{"database", "access"}], "ops": bool}` (`access`: `read`
 *   or `read-write`; absent lists are empty, absent `ops` false): draws a
 *   new token (32 random bytes), proposes a `token` command holding its
 *   SHA-256 and grants (`src/kv/tokens.ts`) and answers, once it executed
 *   here, 201 `{"name", "token", "prefixes", "databases", "ops",
 *   "created"}`. The token is in this answer only: the cluster keeps its
 *   hash. 409 if the name is taken or the cluster holds `MAX_TOKENS`.
 * - `GET /admin/tokens`: `{"tokens": [{"name", "prefixes", "databases",
 *   "ops", "created"}]}`, by name, from this replica's executed state (a
 *   token added through another replica shows once this one executed it);
 *   never a token or a hash.
 * - `DELETE /admin/tokens/{name}`: proposes the removal and answers, once
 *   it executed here, `{"name", "removed": true}`, or 404 if there was no
 *   such token.
 *
 * @module
 */

import type { Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ReplicaDriver } from "../driver/driver.ts";
import { KvError, OutcomeUnknownError } from "../errors.ts";
import { tokenNameProblem } from "../kv/token_keys.ts";
import {
  type DatabaseGrant,
  MAX_TOKENS,
  type PrefixGrant,
  summarizeToken,
  tokenHash,
  type TokenRecord,
  tokenRecordProblem,
} from "../kv/tokens.ts";
import type { KvResult } from "../kv/state_machine.ts";
import { jsonBody } from "./json_body.ts";

/** Largest body of `POST /admin/tokens`: 32 + 32 grants of the longest prefixes fit. */
export const MAX_TOKEN_BODY_BYTES = 64 * 1024;
/** Random bytes of a new token. */
export const TOKEN_BYTES = 32;
/** What every token starts with, so that secret scanners and people can tell one. */
export const TOKEN_PREFIX = "ekv_";

/** A new token: {@linkcode TOKEN_PREFIX} and {@linkcode TOKEN_BYTES} random bytes in base64url. */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(TOKEN_BYTES));
  return TOKEN_PREFIX + bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** What `POST /admin/tokens` asks for, checked. */
export interface TokenRequest {
  /** The token's name. */
  readonly name: string;
  /** Its prefix grants. */
  readonly prefixes: readonly PrefixGrant[];
  /** Its database grants. */
  readonly databases: readonly DatabaseGrant[];
  /** Whether it may read the operations pages. */
  readonly ops: boolean;
}

/**
 * The token request `value` (a parsed body) asks for, or why it is none:
 * a name, optional lists of grants, an optional `ops`, no other field, and
 * together a valid record (`tokenRecordProblem`: at least one grant).
 */
export function tokenRequestOf(value: unknown): TokenRequest | { readonly problem: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { problem: "The body must be a JSON object" };
  }
  const body = value as Record<string, unknown>;
  const unknown = Object.keys(body).find((field) =>
    !["name", "prefixes", "databases", "ops"].includes(field)
  );
  if (unknown !== undefined) return { problem: `Unknown field ${JSON.stringify(unknown)}` };
  const request = {
    name: body.name,
    prefixes: body.prefixes ?? [],
    databases: body.databases ?? [],
    ops: body.ops ?? false,
  };
  // Checked as the record it becomes, with a stand-in hash and time.
  const problem = tokenRecordProblem({ ...request, hash: "0".repeat(64), created: 0 });
  return problem === undefined ? request as TokenRequest : { problem };
}

function refusal(c: Context, error: unknown, what: string): Response {
  if (error instanceof OutcomeUnknownError) {
    return c.json({
      error: `The ${what}'s outcome is not known: ${error.message}; list the tokens to see`,
    }, 504);
  }
  if (error instanceof KvError) {
    return c.json(
      { error: `The ${what} was not made: ${error.message}` },
      error.status as ContentfulStatusCode,
    );
  }
  throw error;
}

/** Adds the token routes to the admin sub-app `route` (already guarded by the cluster secret). */
export function tokenRoutes(route: Hono, options: { readonly node: ReplicaDriver }): void {
  const { node } = options;

  route.get("/tokens", (c) => c.json({ tokens: node.state.tokens.records().map(summarizeToken) }));

  route.post("/tokens", async (c) => {
    const read = await jsonBody(c, MAX_TOKEN_BODY_BYTES, "The body");
    if ("refused" in read) return read.refused;
    const request = tokenRequestOf(read.value);
    if ("problem" in request) return c.json({ error: request.problem }, 400);
    const token = newToken();
    const record: TokenRecord = {
      ...request,
      hash: tokenHash(token),
      created: Math.round(node.wallClockMs()),
    };
    let result: KvResult;
    try {
      result = await node.submit({ op: "token", name: request.name, record });
    } catch (error) {
      return refusal(c, error, "token");
    }
    if (result.op !== "token") return c.json({ error: "Unexpected result" }, 500);
    if (!result.ok) {
      return c.json({
        error: result.failure === "exists"
          ? `A token named ${request.name} exists: remove it first to replace it`
          : `The cluster holds ${MAX_TOKENS} tokens already: remove one first`,
      }, 409);
    }
    // Shown here once: the cluster holds only its hash.
    return c.json({ ...summarizeToken(record), token }, 201);
  });

  route.delete("/tokens/:name", async (c) => {
    const name = c.req.param("name");
    const problem = tokenNameProblem(name);
    if (problem !== undefined) return c.json({ error: problem }, 400);
    let result: KvResult;
    try {
      result = await node.submit({ op: "token", name, record: null });
    } catch (error) {
      return refusal(c, error, "removal");
    }
    if (result.op !== "token" || !result.ok) return c.json({ error: "Unexpected result" }, 500);
    if (!result.existed) return c.json({ error: `No token named ${name}` }, 404);
    return c.json({ name, removed: true });
  });
}
