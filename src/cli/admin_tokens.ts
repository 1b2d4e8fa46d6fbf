/**
 * `deno task admin token …`: the named client tokens of a cluster, through a
 * replica's admin route (`src/server/token_route.ts`), with the cluster
 * secret.
 *
 * ```
 * deno task admin --server URL token add NAME --prefix PREFIX [--prefix PREFIX…]
 *     [--database NAME…] [--ops] [--read-only]
 * deno task admin --server URL token list
 * deno task admin --server URL token remove NAME
 * ```
 *
 * `add` prints the new token's JSON with `token`, the only time it is shown
 * (the cluster keeps its SHA-256); `--prefix` and `--database` repeat, each
 * a grant of read-write (or read, with `--read-only`, which applies to every
 * grant); `--ops` grants the operations pages (`/status`, `/metrics`,
 * `/ui`): `token add prometheus --ops` is a scrape token. `list` prints
 * names, grants and creation times, never tokens or hashes.
 *
 * @module
 */

import { adminRequest } from "./admin_request.ts";
import { type ParsedArgs, UsageError } from "./args.ts";

/** The options and flags only `token add` takes. */
export const TOKEN_OPTIONS = ["prefix", "database"] as const;
/** The flags only `token add` takes. */
export const TOKEN_FLAGS = ["read-only", "ops"] as const;

/** The usage lines of `token`, for the admin usage text. */
export const TOKEN_USAGE =
  `  token add NAME [--prefix PREFIX]... [--database NAME]... [--ops] [--read-only]
                   Add a named client token: read-write (read with --read-only) on
                   every curl key under each PREFIX ("" for every key) and on each
                   Deno KV database NAME; --ops: the operations pages (/status,
                   /metrics, /ui), a scrape token. Prints {"name", "prefixes",
                   "databases", "ops", "created", "token"}: the token is shown only
                   here (the cluster keeps its SHA-256). The first token turns
                   credentials on for every client route (see README, Tokens)
  token list       Print {"tokens": [{"name", "prefixes", "databases", "ops", "created"}]}
  token remove NAME
                   Remove a token; every replica refuses it once it executed the removal`;

/** What a `token` command asks a replica. */
export type TokenAction =
  | {
    readonly kind: "add";
    readonly body: {
      readonly name: string;
      readonly prefixes: readonly { readonly prefix: string; readonly access: string }[];
      readonly databases: readonly { readonly database: string; readonly access: string }[];
      readonly ops: boolean;
    };
  }
  | { readonly kind: "list" }
  | { readonly kind: "remove"; readonly name: string };

/**
 * The action of `token` with arguments `rest` (after `token`) and the parsed
 * options `args`.
 *
 * @throws {UsageError} for anything else.
 */
export function tokenActionOf(rest: readonly string[], args: ParsedArgs): TokenAction {
  const [verb, ...names] = rest;
  const prefixes = args.options.get("prefix") ?? [];
  const databases = args.options.get("database") ?? [];
  const addOnly = prefixes.length > 0 || databases.length > 0 ||
    TOKEN_FLAGS.some((flag) => args.flags.has(flag));
  if (verb !== "add" && addOnly) {
    throw new UsageError("--prefix, --database, --ops and --read-only are for token add");
  }
  switch (verb) {
    case "add": {
      if (names.length !== 1) throw new UsageError("token add takes one NAME");
      if (prefixes.length === 0 && databases.length === 0 && !args.flags.has("ops")) {
        throw new UsageError("token add needs a grant: --prefix, --database or --ops");
      }
      const access = args.flags.has("read-only") ? "read" : "read-write";
      return {
        kind: "add",
        body: {
          name: names[0]!,
          prefixes: prefixes.map((prefix) => ({ prefix, access })),
          databases: databases.map((database) => ({ database, access })),
          ops: args.flags.has("ops"),
        },
      };
    }
    case "list":
      if (names.length > 0) throw new UsageError(`token list takes no arguments, got ${names[0]}`);
      return { kind: "list" };
    case "remove":
      if (names.length !== 1) throw new UsageError("token remove takes one NAME");
      return { kind: "remove", name: names[0]! };
    default:
      throw new UsageError(
        verb === undefined ? "token needs add, list or remove" : `Unknown token command ${verb}`,
      );
  }
}

/**
 * Does `action` through `server`'s admin route and resolves with the JSON
 * it answered.
 *
 * @throws {KvError} (from `adminRequest`) with the replica's status and
 *   message if it refused, `AdminUnreachableError` if it could not be reached.
 */
export async function runTokenAction(
  server: string,
  action: TokenAction,
  options: { readonly secret: string; readonly timeoutMs: number },
): Promise<unknown> {
  const response = action.kind === "add"
    ? await adminRequest(server, "/tokens", { ...options, json: action.body })
    : action.kind === "list"
    ? await adminRequest(server, "/tokens", options)
    : await adminRequest(server, `/tokens/${encodeURIComponent(action.name)}`, {
      ...options,
      method: "DELETE",
    });
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${server} answered something that is not JSON`);
  }
}
