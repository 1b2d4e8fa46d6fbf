/**
 * The permission decider of named tokens (`tokens.ts`): a pure function of a
 * token's grants and what a request touches, answering allowed or a refusal
 * that says what was needed and why it is missing. The HTTP side
 * (`src/server/access.ts`) turns a refusal into a 403 naming the token, the
 * method and what was refused.
 *
 * The rules, after etcd's key-range permissions and Consul's key prefix
 * rules:
 *
 * - a key is read with a `read` or `read-write` grant on a prefix of it, and
 *   written only with a `read-write` one (a write may reveal a version, and
 *   a conditional write what the key holds, so write implies read);
 * - the keys under a prefix (a list, a watch of a prefix) are read only
 *   inside a granted prefix: the granted prefix must be a prefix of the
 *   listed one, so that no key outside a grant is ever listed;
 * - a Deno KV database is read (snapshot reads, watches, the metadata
 *   exchange) with a grant on it of either access, and written (atomic
 *   writes, whose checks read) with `read-write`;
 * - the operations pages (`/status`, `/metrics`, `/ui`) need `ops`.
 *
 * @module
 */

import type { Permission, TokenGrants } from "./tokens.ts";

/** What one request touches. */
export type AccessRequest =
  /** One curl key, read or written. */
  | { readonly kind: "key"; readonly key: string; readonly write: boolean }
  /** Every curl key under a prefix, read (a list, a watch of a prefix). */
  | { readonly kind: "prefix"; readonly prefix: string }
  /** A Deno KV database, read or written. */
  | { readonly kind: "database"; readonly database: string; readonly write: boolean }
  /** The operations pages. */
  | { readonly kind: "ops" };

/** What a refused request needed: a permission, or the operations pages. */
export type Needed = Permission | "ops";

/** The decider's answer. */
export type AccessDecision =
  | { readonly allowed: true }
  | {
    readonly allowed: false;
    /** What the request needed. */
    readonly needed: Needed;
    /** Why the token does not have it, as a clause: "it holds read only on \"app/\"". */
    readonly reason: string;
  };

const ALLOWED: AccessDecision = Object.freeze({ allowed: true });

function refused(needed: Needed, reason: string): AccessDecision {
  return { allowed: false, needed, reason };
}

function quoted(text: string): string {
  return JSON.stringify(text);
}

/** Decides whether a token with `grants` may do `request`. */
export function decideAccess(grants: TokenGrants, request: AccessRequest): AccessDecision {
  switch (request.kind) {
    case "key": {
      const needed: Permission = request.write ? "read-write" : "read";
      const covering = grants.prefixes.filter((grant) => request.key.startsWith(grant.prefix));
      if (covering.some((grant) => !request.write || grant.access === "read-write")) {
        return ALLOWED;
      }
      if (covering.length > 0) {
        return refused(
          needed,
          `it may only read under ${covering.map((grant) => quoted(grant.prefix)).join(", ")}`,
        );
      }
      return refused(needed, `none of its prefixes covers key ${quoted(request.key)}`);
    }
    case "prefix":
      if (grants.prefixes.some((grant) => request.prefix.startsWith(grant.prefix))) return ALLOWED;
      return refused(
        "read",
        `the prefix ${quoted(request.prefix)} is not inside one of its prefixes` +
          (grants.prefixes.length === 0
            ? " (it has none)"
            : ` (${grants.prefixes.map((grant) => quoted(grant.prefix)).join(", ")})`),
      );
    case "database": {
      const needed: Permission = request.write ? "read-write" : "read";
      const grant = grants.databases.find((grant) => grant.database === request.database);
      if (grant !== undefined && (!request.write || grant.access === "read-write")) return ALLOWED;
      return refused(
        needed,
        grant === undefined
          ? `it holds no grant on database ${quoted(request.database)}`
          : `it may only read database ${quoted(request.database)}`,
      );
    }
    case "ops":
      return grants.ops ? ALLOWED : refused("ops", "it holds no grant on the operations pages");
  }
}

/**
 * Decides every request in order and answers the first refusal, with the
 * request it refused, or allowed: a transaction touches many keys, and
 * each must be allowed.
 */
export function decideEvery(
  grants: TokenGrants,
  requests: readonly AccessRequest[],
): { readonly allowed: true } | {
  readonly allowed: false;
  readonly request: AccessRequest;
  readonly needed: Needed;
  readonly reason: string;
} {
  for (const request of requests) {
    const decision = decideAccess(grants, request);
    if (!decision.allowed) return { ...decision, request };
  }
  return ALLOWED as { readonly allowed: true };
}
