/**
 * Where the named client tokens (`tokens.ts`) live in the state's string
 * keyspace: `"\ufffe\u0000t" + name`, one state key per token.
 *
 * The part of the keyspace after `CURL_SPACE_END` (U+FFFE) belongs to the
 * Deno KV databases (`database_keys.ts`), each under `"\ufffe" + name +
 * "\u0000"` with a name of 1 to 64 characters; no name is empty, so
 * `"\ufffe\u0000"` is a prefix no database has. No client can reach it:
 *
 * - a curl key, list prefix or watch cannot start with U+FFFE
 *   (`keyProblem`, `listPrefixProblem`), and a curl list of any prefix stops
 *   at U+FFFE (`curlListEnd`);
 * - a Deno KV database's reads and writes stay within its own data span
 *   (`snapshotRangeProblem`, `databaseKeyProblem`), which this prefix is not;
 * - an expire command names curl keys and database data keys only.
 *
 * Backups (which read every key) carry the tokens, and restore them: a
 * restored cluster has the credentials of the one backed up.
 *
 * Kept apart from `tokens.ts` so that `database_keys.ts` (whose
 * `stateKeyProblem` must know these keys) imports no record rules.
 *
 * @module
 */

/** The prefix of every token's state key. */
export const TOKEN_KEY_PREFIX = "\ufffe\u0000t";
/** Longest token name. */
export const MAX_TOKEN_NAME_LENGTH = 64;

const NAME_PATTERN = /^[A-Za-z0-9_.-]+$/;

/**
 * Why `name` cannot name a token, or `undefined` if it can: 1 to 64 of
 * `A-Z a-z 0-9 _ . -` (the characters a URL path segment carries as they
 * are: `DELETE /admin/tokens/{name}`), and neither `.` nor `..`.
 */
export function tokenNameProblem(name: string): string | undefined {
  if (name.length === 0) return "Token name must not be empty";
  if (name.length > MAX_TOKEN_NAME_LENGTH) {
    return `Token name is longer than ${MAX_TOKEN_NAME_LENGTH} characters`;
  }
  if (!NAME_PATTERN.test(name)) return "Token name may hold only letters, digits, '_', '.' and '-'";
  if (name === "." || name === "..") return "Token name must not be . or ..";
  return undefined;
}

/** The state key of the token named `name`. */
export function tokenKey(name: string): string {
  return TOKEN_KEY_PREFIX + name;
}

/** Whether `stateKey` is in the tokens' part of the keyspace (a token's key or not). */
export function isTokenKey(stateKey: string): boolean {
  return stateKey.startsWith(TOKEN_KEY_PREFIX);
}

/** The name of the token whose state key is `stateKey`, or `undefined` if it is none. */
export function tokenNameOf(stateKey: string): string | undefined {
  if (!isTokenKey(stateKey)) return undefined;
  const name = stateKey.slice(TOKEN_KEY_PREFIX.length);
  return tokenNameProblem(name) === undefined ? name : undefined;
}
