/**
 * Named client tokens (issue 18 item 2), in the manner of etcd's roles and
 * Consul's ACL policies: each token has a name, the SHA-256 of its secret,
 * and grants: read or read-write on curl key prefixes, read or read-write on
 * Deno KV databases, and the operations pages (`/status`, `/metrics`,
 * `/ui`).
 *
 * ## Replicated
 *
 * Tokens change through the protocol, so every replica agrees on them: a
 * `token` command of the key-value state machine sets or removes one record
 * under the token's state key (`token_keys.ts`, a part of the keyspace no
 * client can reach). The admin route proposes it (cluster secret required,
 * `src/server/token_route.ts`). Each replica keeps the records it executed
 * in memory ({@linkcode TokenIndex}, held by `KvStateMachine`, updated as
 * records are set and removed and rebuilt with the state when it is loaded
 * or a snapshot is installed), so the check of a request is one hash and one
 * map lookup (`src/server/access.ts`). A token added through one replica is
 * enforced on another once that one has executed the command.
 *
 * ## Stored hashed
 *
 * A record holds the SHA-256 of the token, never the token: the admin route
 * draws 32 random bytes for it and shows it once. A fast hash is right for
 * such a secret: finding a preimage of SHA-256 of a 256-bit random value is
 * out of reach however fast the hash, so a slow password hash (bcrypt,
 * scrypt, Argon2) would add nothing but cost; they exist to slow the guessing
 * of low-entropy passwords. And every client request is checked, so the hash
 * must be cheap (a slow hash of ~100 ms per request would also hand anyone
 * who can send requests a way to burn the replica's CPU). The hash is the
 * lookup key, so no comparison of secrets takes place that timing could
 * leak.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Access } from "../core/conflict.ts";
import { listPrefixProblem } from "./curl_keys.ts";
import { databaseNameProblem } from "./database_keys.ts";
import type { KvEntry } from "./entry.ts";
import { TOKEN_KEY_PREFIX, tokenKey, tokenNameOf, tokenNameProblem } from "./token_keys.ts";

/** Most tokens a cluster holds: an add past it fails, changing nothing. */
export const MAX_TOKENS = 1000;
/** Most prefix grants, and most database grants, of one token. */
export const MAX_TOKEN_GRANTS = 32;

/** A permission on a prefix or a database: read, or read and write. */
export type Permission = "read" | "read-write";

/** Read or read-write on every curl key starting with `prefix` (empty: every curl key). */
export interface PrefixGrant {
  /** The key prefix. */
  readonly prefix: string;
  /** What it allows. */
  readonly access: Permission;
}

/** Read or read-write on one Deno KV database (`/databases/{database}/connect`). */
export interface DatabaseGrant {
  /** The database's name. */
  readonly database: string;
  /** What it allows. */
  readonly access: Permission;
}

/** What a token may do: the part of a record the permission decider reads. */
export interface TokenGrants {
  /** Its name, for refusals. */
  readonly name: string;
  /** Grants on curl key prefixes. */
  readonly prefixes: readonly PrefixGrant[];
  /** Grants on Deno KV databases. */
  readonly databases: readonly DatabaseGrant[];
  /** Whether it may read the operations pages (`/status`, `/metrics`, `/ui`). */
  readonly ops: boolean;
}

/** One named token, as the state holds it. */
export interface TokenRecord extends TokenGrants {
  /** The SHA-256 of the token, 64 lowercase hex digits ({@linkcode tokenHash}). */
  readonly hash: string;
  /** When it was added, in ms since the Unix epoch (by the clock of the replica that proposed it). */
  readonly created: number;
}

/**
 * Adds (`record`) or removes (`record: null`) the token `name`. An add of a
 * name that exists fails (`exists`): a token is replaced by removing it and
 * adding it anew, which gives it a new secret.
 */
export interface TokenCommand {
  /** Discriminant. */
  readonly op: "token";
  /** Request id. */
  readonly request: string;
  /** The token's name. */
  readonly name: string;
  /** The record to add (its `name` is `name`), or `null` to remove the token. */
  readonly record: TokenRecord | null;
}

/** The result of a token command. */
export type TokenResult =
  | {
    readonly op: "token";
    readonly ok: true;
    /** Whether a token of that name existed before (for a removal: whether one was removed). */
    readonly existed: boolean;
  }
  | {
    readonly op: "token";
    readonly ok: false;
    /** `exists`: an add of a name that is taken; `limit`: {@linkcode MAX_TOKENS} tokens exist. */
    readonly failure: "exists" | "limit";
  };

const HASH_PATTERN = /^[0-9a-f]{64}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPermission(value: unknown): value is Permission {
  return value === "read" || value === "read-write";
}

/** The SHA-256 of `token`, in hex: what a record holds and a request is looked up by. */
export function tokenHash(token: string): string {
  // node:crypto's hash is synchronous: no await on every request's check.
  return createHash("sha256").update(token).digest("hex");
}

function grantsProblem(
  value: unknown,
  what: string,
  field: "prefix" | "database",
  problemOf: (subject: string) => string | undefined,
): string | undefined {
  if (!Array.isArray(value)) return `${what} grants are not a list`;
  if (value.length > MAX_TOKEN_GRANTS) return `Too many ${what} grants (max ${MAX_TOKEN_GRANTS})`;
  const seen = new Set<string>();
  for (const grant of value) {
    if (!isRecord(grant) || Object.keys(grant).length !== 2) {
      return `A ${what} grant is not {${field}, access}`;
    }
    const subject = grant[field];
    if (typeof subject !== "string") return `A ${what} grant's ${field} is not a string`;
    const issue = problemOf(subject);
    if (issue !== undefined) return issue;
    if (!isPermission(grant.access)) {
      return `A ${what} grant's access must be "read" or "read-write"`;
    }
    if (seen.has(subject)) return `${JSON.stringify(subject)} is granted twice`;
    seen.add(subject);
  }
  return undefined;
}

/**
 * Why `value` is not a well-formed token record, or `undefined`: a valid
 * name, a SHA-256 in hex, at most {@linkcode MAX_TOKEN_GRANTS} prefix grants
 * (each a valid curl list prefix, once) and as many database grants (each a
 * valid database name, once), `ops` a boolean, at least one grant in all,
 * and a creation time; no other field.
 */
export function tokenRecordProblem(value: unknown): string | undefined {
  if (!isRecord(value)) return "Token record is not an object";
  const { name, hash, prefixes, databases, ops, created } = value;
  if (Object.keys(value).length !== 6) return "Token record has fields other than its six";
  if (typeof name !== "string") return "Token name is not a string";
  const nameIssue = tokenNameProblem(name);
  if (nameIssue !== undefined) return nameIssue;
  if (typeof hash !== "string" || !HASH_PATTERN.test(hash)) {
    return "Token hash is not a SHA-256 in lowercase hex";
  }
  const prefixIssue = grantsProblem(prefixes, "prefix", "prefix", (prefix) => {
    const issue = listPrefixProblem(prefix);
    return issue === undefined ? undefined : `Invalid prefix: ${issue}`;
  });
  if (prefixIssue !== undefined) return prefixIssue;
  const databaseIssue = grantsProblem(databases, "database", "database", databaseNameProblem);
  if (databaseIssue !== undefined) return databaseIssue;
  if (typeof ops !== "boolean") return "Token ops is not a boolean";
  if ((prefixes as unknown[]).length === 0 && (databases as unknown[]).length === 0 && !ops) {
    return "A token needs at least one grant: a prefix, a database or the operations pages";
  }
  if (!Number.isSafeInteger(created) || (created as number) < 0) {
    return "Token creation time is not a time in ms since the epoch";
  }
  return undefined;
}

/**
 * Why `command` is not a well-formed token command (its `request` aside), or
 * `undefined`: a valid name and either `null` or a valid record of that name.
 */
export function tokenCommandProblem(command: unknown): string | undefined {
  if (!isRecord(command) || command.op !== "token") return "Not a token command";
  if (typeof command.name !== "string") return "Token name is not a string";
  const nameIssue = tokenNameProblem(command.name);
  if (nameIssue !== undefined) return nameIssue;
  if (command.record === null) return undefined;
  const recordIssue = tokenRecordProblem(command.record);
  if (recordIssue !== undefined) return recordIssue;
  if ((command.record as TokenRecord).name !== command.name) {
    return "The record's name is not the command's";
  }
  return undefined;
}

/**
 * The accesses of a token command: a write of the token's key and of the
 * tokens' shared key (the prefix itself, which no token has). An add fails
 * past {@linkcode MAX_TOKENS}, which depends on every token, so two token
 * commands must execute in the same order everywhere even when their names
 * differ; the shared key orders them with each other and with nothing else
 * (backups and configuration changes touch every key anyway).
 */
export function tokenAccesses(command: TokenCommand): Access[] {
  return [
    { key: tokenKey(command.name), write: true },
    { key: TOKEN_KEY_PREFIX, write: true },
  ];
}

/**
 * A record with exactly its fields, in one order: what is stored, so that
 * every replica stores the same bytes whatever order a command's fields came
 * in.
 */
function canonicalRecord(record: TokenRecord): TokenRecord {
  return {
    name: record.name,
    hash: record.hash,
    prefixes: record.prefixes.map(({ prefix, access }) => ({ prefix, access })),
    databases: record.databases.map(({ database, access }) => ({ database, access })),
    ops: record.ops,
    created: record.created,
  };
}

/** The value a token's state entry holds: its record as UTF-8 JSON. */
export function encodeTokenRecord(record: TokenRecord): Uint8Array {
  return encoder.encode(JSON.stringify(canonicalRecord(record)));
}

/**
 * The record of the token entry `key` holds, or `undefined` if it holds none
 * (the value is not a valid record, or not of the key's name).
 */
export function tokenRecordOf(key: string, entry: KvEntry): TokenRecord | undefined {
  const name = tokenNameOf(key);
  if (name === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(entry.value));
  } catch {
    return undefined;
  }
  if (tokenRecordProblem(value) !== undefined) return undefined;
  const record = value as TokenRecord;
  return record.name === name ? record : undefined;
}

/**
 * Why the entry of state key `key` (a token key) is not a token record a
 * backup or snapshot may bring, or `undefined`.
 */
export function tokenEntryProblem(key: string, entry: KvEntry): string | undefined {
  if (tokenNameOf(key) === undefined) return "Key is in the tokens' space but names no token";
  if (entry.encoding !== undefined || entry.expiresAt !== undefined) {
    return "A token record has no encoding and no expiry";
  }
  return tokenRecordOf(key, entry) === undefined ? "Entry is not a token record" : undefined;
}

/** One token as `token list` shows it: never its secret, never its hash. */
export interface TokenSummary {
  /** Its name. */
  readonly name: string;
  /** Its prefix grants. */
  readonly prefixes: readonly PrefixGrant[];
  /** Its database grants. */
  readonly databases: readonly DatabaseGrant[];
  /** Whether it may read the operations pages. */
  readonly ops: boolean;
  /** When it was added, ISO 8601. */
  readonly created: string;
}

/** What may be shown of `record`. */
export function summarizeToken(record: TokenRecord): TokenSummary {
  return {
    name: record.name,
    prefixes: record.prefixes,
    databases: record.databases,
    ops: record.ops,
    created: new Date(record.created).toISOString(),
  };
}

/**
 * The tokens of one replica's executed state, by hash and by name: what every
 * request is checked against. Held by `KvStateMachine`, which notes every
 * change of a token key (and every token key it is built with), so it always
 * agrees with the state. Bounded by the state's tokens (at most
 * {@linkcode MAX_TOKENS} through commands).
 */
export class TokenIndex {
  readonly #byHash = new Map<string, TokenRecord>();
  readonly #byName = new Map<string, TokenRecord>();

  /** Number of tokens. */
  get size(): number {
    return this.#byName.size;
  }

  /** Notes that token key `key` now holds `entry` (`undefined`: removed). */
  note(key: string, entry: KvEntry | undefined): void {
    const name = tokenNameOf(key);
    if (name === undefined) return;
    const previous = this.#byName.get(name);
    if (previous !== undefined) {
      this.#byName.delete(name);
      // Only if the hash still names this record (two records of one hash
      // cannot both come from random tokens, but a restored file could hold them).
      if (this.#byHash.get(previous.hash) === previous) this.#byHash.delete(previous.hash);
    }
    const record = entry === undefined ? undefined : tokenRecordOf(key, entry);
    if (record === undefined) return;
    this.#byName.set(name, record);
    this.#byHash.set(record.hash, record);
  }

  /** The token whose SHA-256 is `hash`, if any. */
  byHash(hash: string): TokenRecord | undefined {
    return this.#byHash.get(hash);
  }

  /** The token named `name`, if any. */
  byName(name: string): TokenRecord | undefined {
    return this.#byName.get(name);
  }

  /** Every token, by name. */
  records(): TokenRecord[] {
    return [...this.#byName.values()].sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0
    );
  }
}

/** Renders a token's grants in a few characters: `r:app/ rw:cfg/ db-rw:main ops`. */
export function describeGrants(grants: TokenGrants): string {
  const short = (access: Permission) => access === "read" ? "r" : "rw";
  return [
    ...grants.prefixes.map((grant) => `${short(grant.access)}:${grant.prefix || "*"}`),
    ...grants.databases.map((grant) => `db-${short(grant.access)}:${grant.database}`),
    ...(grants.ops ? ["ops"] : []),
  ].join(" ");
}

/** Renders a token command as one short line: `token(+ci r:app/)` or `token(-ci)`. */
export function describeToken(command: TokenCommand): string {
  return command.record === null
    ? `token(-${command.name})`
    : `token(+${command.name} ${describeGrants(command.record)})`;
}
