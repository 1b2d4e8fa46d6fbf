/**
 * Commands of the replicated key-value state machine, and which of them conflict.
 *
 * @module
 */

import type { Access, ConflictModel } from "../core/conflict.ts";
import {
  type Configuration,
  configurationProblem,
  describeConfiguration,
} from "../core/configuration.ts";
import {
  curlListEnd,
  keyProblem,
  listPrefixProblem,
  MAX_KEY_BYTES,
  MAX_LIST_LIMIT,
  MAX_VALUE_BYTES,
} from "./curl_keys.ts";
import { isExpiry } from "./entry.ts";
import {
  atomicAccesses,
  type AtomicCommand,
  atomicCommandProblem,
  describeAtomic,
  describeExpire,
  describeSnapshot,
  expireAccesses,
  type ExpireCommand,
  expireCommandProblem,
  snapshotAccesses,
  type SnapshotCommand,
  snapshotCommandProblem,
} from "./txn_commands.ts";
import { describeToken, tokenAccesses, type TokenCommand, tokenCommandProblem } from "./tokens.ts";

/** Longest version a condition may name (versions are `number.owner.index[.tag]`). */
export const MAX_CONDITION_VERSION_CHARS = 64;
/** Most versions one condition may name (an HTTP `If-Match` list). */
export const MAX_CONDITION_VERSIONS = 16;

// The curl key rules moved to their own module (`txn_commands.ts` uses them
// too); every importer of this module still finds them here.
export * from "./curl_keys.ts";
export type { AtomicCommand, ExpireCommand, SnapshotCommand } from "./txn_commands.ts";
export type { TokenCommand } from "./tokens.ts";

/**
 * A precondition on the current version of a key: a version string (HTTP
 * `If-Match: "v"`), a list of 2 to {@linkcode MAX_CONDITION_VERSIONS} distinct
 * versions of which the current one must be one (`If-Match: "a", "b"`, RFC
 * 9110 §13.1.1), or `null` for "the key must not exist" (`If-None-Match: *`).
 *
 * The list shares the field of the single version, rather than a field of its
 * own, so that every check of "is this write conditional" (`isBlindWrite` of
 * src/driver/answer.ts answers blind writes at commit) holds for it as is,
 * and a replica that does not know lists refuses such a command (its
 * validation wants a string or null) instead of applying it unconditionally.
 */
export type VersionCondition = string | null | readonly string[];

/** Writes `value` under `key`, if the condition holds. */
export interface PutCommand {
  /** Discriminant. */
  readonly op: "put";
  /** Request id, unique per client request; routes the result back. */
  readonly request: string;
  /** Key. */
  readonly key: string;
  /** Value. */
  readonly value: Uint8Array;
  /** Compare-and-set condition; absent for a blind write. */
  readonly ifVersion?: VersionCondition;
  /**
   * When the key expires, in ms since the Unix epoch (the curl API's TTL,
   * made absolute by the replica that took the request); absent: never. A
   * put with an expiry and no condition is still a blind write.
   */
  readonly expiresAt?: number;
}

/** Reads `key` linearizably. */
export interface GetCommand {
  /** Discriminant. */
  readonly op: "get";
  /** Request id. */
  readonly request: string;
  /** Key. */
  readonly key: string;
}

/** Deletes `key`, if the condition holds; deleting a missing key succeeds. */
export interface DeleteCommand {
  /** Discriminant. */
  readonly op: "delete";
  /** Request id. */
  readonly request: string;
  /** Key. */
  readonly key: string;
  /** Compare-and-delete condition; absent for an unconditional delete. */
  readonly ifVersion?: VersionCondition;
}

/** Lists keys with `prefix`, in key order, after `after`, at most `limit` of them. */
export interface ListCommand {
  /** Discriminant. */
  readonly op: "list";
  /** Request id. */
  readonly request: string;
  /** Key prefix; empty for every key. */
  readonly prefix: string;
  /** Exclusive start (the previous page's cursor); absent for the first page. */
  readonly after?: string;
  /** Page size, 1 to {@linkcode MAX_LIST_LIMIT}. */
  readonly limit: number;
}

/**
 * Reads the whole key-value state at one point of the execution order: the
 * consistent cut a backup is made of (`backup.ts`). Only the admin route
 * proposes it.
 */
export interface BackupCommand {
  /** Discriminant. */
  readonly op: "backup";
  /** Request id. */
  readonly request: string;
}

/**
 * Ends the current epoch and starts `configuration`'s (whose epoch is the next
 * one): the RECONF barrier of the membership design. It writes every key, so
 * every command, read or write, is ordered before or after it on every
 * replica, and it fences (`ConflictModel.fences`): no instance of the old
 * epoch executes after it. When it executes, each replica starts the new
 * epoch with the state after it (`ReplicaDriver`). Only the admin route
 * proposes it. A change for an epoch another change already started executes
 * as a no-op (answered `{op: "reconf", ok: true}` all the same when it ran in
 * the old epoch, 409 when the epoch ended before it ran): the admin route
 * compares the configuration it ends up in.
 */
export interface ReconfCommand {
  /** Discriminant. */
  readonly op: "reconf";
  /** Request id. */
  readonly request: string;
  /** The configuration of the next epoch. */
  readonly configuration: Configuration;
}

/** Every command of the key-value state machine. */
export type KvCommand =
  | PutCommand
  | GetCommand
  | DeleteCommand
  | ListCommand
  | BackupCommand
  | ReconfCommand
  | AtomicCommand
  | SnapshotCommand
  | ExpireCommand
  | TokenCommand;

/** A command as a client hands it in: the replica that takes it assigns its request id. */
export type KvCommandInput =
  | Omit<PutCommand, "request">
  | Omit<GetCommand, "request">
  | Omit<DeleteCommand, "request">
  | Omit<ListCommand, "request">
  | Omit<BackupCommand, "request">
  | Omit<ReconfCommand, "request">
  | Omit<AtomicCommand, "request">
  | Omit<SnapshotCommand, "request">
  | Omit<ExpireCommand, "request">
  | Omit<TokenCommand, "request">;

/** The accesses of a backup: a read of the span of every key (the databases' too). */
const EVERY_KEY_READ: readonly Access[] = Object.freeze([
  Object.freeze({ key: "", end: "\uffff", write: false }),
]);

/** The accesses of a configuration change: a write of the span of every key. */
const EVERY_KEY_WRITE: readonly Access[] = Object.freeze([
  Object.freeze({ key: "", end: "\uffff", write: true }),
]);

/**
 * Conflicts between key-value commands: writes (put, delete) write their key,
 * get reads it, list reads the span of its prefix (within the curl
 * keyspace), backup reads every key, the multi-key commands touch what
 * `txn_commands.ts` says (`atomicAccesses`, `snapshotAccesses`,
 * `expireAccesses`), a token command writes its token's key and the
 * tokens' shared key (`tokenAccesses`),
 * and a configuration change writes every key (so reads are ordered with it
 * too: a read of the old epoch executed after it could miss a write of the
 * new epoch that completed first). Reads never conflict with reads. Only a
 * configuration change fences.
 */
export const kvConflicts: ConflictModel<KvCommand> = {
  accesses(command: KvCommand): readonly Access[] {
    switch (command.op) {
      case "put":
      case "delete":
        return [{ key: command.key, write: true }];
      case "get":
        return [{ key: command.key, write: false }];
      case "list":
        return [{ key: command.prefix, end: curlListEnd(command.prefix), write: false }];
      case "backup":
        return EVERY_KEY_READ;
      case "reconf":
        return EVERY_KEY_WRITE;
      case "atomic":
        return atomicAccesses(command);
      case "snapshot":
        return snapshotAccesses(command);
      case "expire":
        return expireAccesses(command);
      case "token":
        return tokenAccesses(command);
    }
  },
  fences(command: KvCommand): boolean {
    return command.op === "reconf";
  },
};

function isConditionVersion(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 &&
    value.length <= MAX_CONDITION_VERSION_CHARS;
}

/**
 * Whether `value` is a well-formed condition: absent, `null`, one version,
 * or a list of 2 to {@linkcode MAX_CONDITION_VERSIONS} distinct versions (one
 * version is always given as a string, so each condition has one form).
 */
function isCondition(value: unknown): value is VersionCondition | undefined {
  if (value === undefined || value === null || isConditionVersion(value)) return true;
  return Array.isArray(value) && value.length >= 2 && value.length <= MAX_CONDITION_VERSIONS &&
    value.every(isConditionVersion) && new Set(value).size === value.length;
}

/**
 * Checks that a value received from a peer is a well-formed command, so that a
 * malformed batch is refused before it reaches the core.
 */
export function isKvCommand(value: unknown): value is KvCommand {
  if (typeof value !== "object" || value === null) return false;
  const command = value as Record<string, unknown>;
  if (typeof command.request !== "string" || command.request.length > 128) return false;
  switch (command.op) {
    case "put":
      return typeof command.key === "string" && keyProblem(command.key) === undefined &&
        command.value instanceof Uint8Array && command.value.length <= MAX_VALUE_BYTES &&
        isCondition(command.ifVersion) && isExpiry(command.expiresAt);
    case "get":
      return typeof command.key === "string" && keyProblem(command.key) === undefined;
    case "delete":
      return typeof command.key === "string" && keyProblem(command.key) === undefined &&
        isCondition(command.ifVersion);
    case "list":
      return typeof command.prefix === "string" &&
        listPrefixProblem(command.prefix) === undefined &&
        (command.after === undefined ||
          (typeof command.after === "string" && command.after.length <= MAX_KEY_BYTES)) &&
        Number.isInteger(command.limit) && (command.limit as number) >= 1 &&
        (command.limit as number) <= MAX_LIST_LIMIT;
    case "backup":
      return true;
    case "reconf":
      return configurationProblem(command.configuration) === undefined;
    case "atomic":
      return atomicCommandProblem(command) === undefined;
    case "snapshot":
      return snapshotCommandProblem(command) === undefined;
    case "expire":
      return expireCommandProblem(command) === undefined;
    case "token":
      return tokenCommandProblem(command) === undefined;
    default:
      return false;
  }
}

function previewValue(value: Uint8Array): string {
  if (value.length > 24) return `${value.length}B`;
  const text = new TextDecoder().decode(value);
  return /^[\x20-\x7e]*$/.test(text) ? JSON.stringify(text) : `${value.length}B`;
}

function describeCondition(condition: VersionCondition | undefined): string {
  if (condition === undefined) return "";
  if (condition === null) return " if absent";
  return ` if ${typeof condition === "string" ? condition : condition.join("|")}`;
}

/** Renders a command as one short line, for `describe*` output. */
export function describeKvCommand(command: KvCommand): string {
  switch (command.op) {
    case "put":
      return `put(${command.key}=${previewValue(command.value)}${
        describeCondition(command.ifVersion)
      }${command.expiresAt === undefined ? "" : ` exp ${command.expiresAt}`})`;
    case "get":
      return `get(${command.key})`;
    case "delete":
      return `del(${command.key}${describeCondition(command.ifVersion)})`;
    case "list":
      return `list(${command.prefix}*${
        command.after === undefined ? "" : ` after ${command.after}`
      } limit ${command.limit})`;
    case "backup":
      return "backup(*)";
    case "reconf":
      return `reconf(${describeConfiguration(command.configuration)})`;
    case "atomic":
      return describeAtomic(command);
    case "snapshot":
      return describeSnapshot(command);
    case "expire":
      return describeExpire(command);
    case "token":
      return describeToken(command);
  }
}
