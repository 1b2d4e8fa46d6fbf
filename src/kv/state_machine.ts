/**
 * The replicated key-value state machine: applies committed batches in
 * execution order and produces one result per command.
 *
 * Execution is deterministic: the same batches in the same order give the same
 * state and results on every replica. A write's version is derived from the
 * instance that carries it (`number.owner.index`), so versions are unique for
 * ever, and a compare-and-set can never match a different incarnation of a key
 * that was deleted and created again.
 *
 * @module
 */

import type { Execution } from "../core/types.ts";
import { NOP } from "../core/types.ts";
import type { KvCommand, VersionCondition } from "./commands.ts";
import { curlListEnd } from "./curl_keys.ts";
import { isStampBucketKey, stampSuffixOf, versionstampCounter } from "./database_keys.ts";
import { entryOf, type KvEntry } from "./entry.ts";
import { ExpiryIndex } from "./expiry_index.ts";
import { executeAtomic, executeExpire, lowerBound, readRanges } from "./txn_apply.ts";
import type { AtomicResult, ExpireResult, SnapshotRange, SnapshotResult } from "./txn_commands.ts";
import { isTokenKey, tokenKey } from "./token_keys.ts";
import {
  encodeTokenRecord,
  MAX_TOKENS,
  type TokenCommand,
  TokenIndex,
  type TokenResult,
} from "./tokens.ts";

export type { KvEntry } from "./entry.ts";

/** The result of one command. */
export type KvResult =
  | { readonly op: "put"; readonly ok: true; readonly version: string }
  | { readonly op: "get"; readonly ok: true; readonly entry: KvEntry | undefined }
  | {
    readonly op: "delete";
    readonly ok: true;
    /** Whether the key existed; absent when answered at commit, before execution. */
    readonly existed?: boolean;
  }
  | {
    readonly op: "list";
    readonly ok: true;
    readonly entries: readonly (KvEntry & { readonly key: string })[];
    /** Cursor for the next page, absent on the last page. */
    readonly next?: string;
  }
  | {
    readonly op: "backup";
    readonly ok: true;
    /** Every entry, in no particular order. */
    readonly entries: readonly (readonly [string, KvEntry])[];
    /** {@linkcode KvStateMachine.digest} of the state read. */
    readonly digest: string;
  }
  | {
    readonly op: "reconf";
    readonly ok: true;
    /** The epoch the change started. */
    readonly epoch: number;
  }
  | {
    readonly op: "put" | "delete";
    readonly ok: false;
    /** The key's current version, `null` if absent (the 412 answer). */
    readonly current: string | null;
  }
  | AtomicResult
  | SnapshotResult
  | ExpireResult
  | TokenResult;

/** One change to persist with the executed marker of its instance. */
export type KvMutation =
  | { readonly kind: "set"; readonly key: string; readonly entry: KvEntry }
  | { readonly kind: "delete"; readonly key: string };

/** The outcome of applying one committed instance. */
export interface AppliedInstance {
  /** Results in command order (empty for a Nop). */
  readonly results: readonly { readonly request: string; readonly result: KvResult }[];
  /** Net changes to persist. */
  readonly mutations: readonly KvMutation[];
}

const NO_MUTATIONS: readonly KvMutation[] = Object.freeze([]);
const NO_RESULTS: AppliedInstance["results"] = Object.freeze([]);
const NOTHING_APPLIED: AppliedInstance = Object.freeze({
  results: NO_RESULTS,
  mutations: NO_MUTATIONS,
});

/** Backup digests a state machine keeps ({@linkcode KvStateMachine.digestAtBackup}). */
export const BACKUP_DIGESTS_KEPT = 64;

/**
 * The version a write gets: unique to its instance and position in the batch,
 * and, in a cluster seeded from a backup, to that backup (`tag`, see
 * {@linkcode KvStateMachineOptions.versionTag}).
 */
export function versionOf(owner: number, number: number, index: number, tag?: string): string {
  return tag === undefined ? `${number}.${owner}.${index}` : `${number}.${owner}.${index}.${tag}`;
}

/** Settings of a {@linkcode KvStateMachine}. */
export interface KvStateMachineOptions {
  /**
   * Appended to every version this state machine gives (`number.owner.index.tag`):
   * a cluster seeded from a backup tags its versions with the backup
   * (`r` and 12 hex digits of its SHA-256), so that none can equal a version
   * the old cluster gave after the backup, which a client may still hold for
   * a compare-and-set. Every replica of the cluster has the same tag.
   */
  readonly versionTag?: string;
}

/**
 * The key-value state, held in memory (loaded from storage at start) and
 * changed only by {@linkcode KvStateMachine.apply}.
 */
export class KvStateMachine {
  readonly #entries = new Map<string, KvEntry>();
  #sortedKeys: string[] | undefined;
  #digest = 0;
  /** The digest at each recent backup command, by request id (oldest first). */
  readonly #backupDigests = new Map<string, string>();
  readonly #versionTag: string | undefined;
  readonly #expiry = new ExpiryIndex();
  readonly #tokens = new TokenIndex();
  #highestStamp = 0;

  /**
   * Creates a state machine holding `entries` (what storage had, or a
   * snapshot brought), with its expiry index, token index and highest
   * versionstamp rebuilt from them.
   */
  constructor(entries?: Iterable<readonly [string, KvEntry]>, options: KvStateMachineOptions = {}) {
    this.#versionTag = options.versionTag;
    if (entries !== undefined) {
      for (const [key, entry] of entries) {
        this.#entries.set(key, entry);
        this.#digest = (this.#digest + entryHash(key, entry)) >>> 0;
        this.#expiry.note(key, entry);
        if (key.charCodeAt(0) === 0xfffe) {
          if (isStampBucketKey(key)) this.#noteStamp(entry);
          else if (isTokenKey(key)) this.#tokens.note(key, entry);
        }
      }
    }
  }

  /** {@linkcode KvStateMachineOptions.versionTag}. */
  get versionTag(): string | undefined {
    return this.#versionTag;
  }

  /**
   * The highest versionstamp counter of any Deno KV database this state
   * executed (or holds, in its stamp buckets): the `floor` a replica proposes
   * atomic commands with, so that writes through it get increasing
   * versionstamps across keys (`database_keys.ts`).
   */
  get highestStamp(): number {
    return this.#highestStamp;
  }

  /**
   * Up to `limit` entries whose expiry is at or before `now` (ms since the
   * epoch), earliest first, with the version that expired: what a replica
   * proposes `expire` commands for. Cheap when nothing is due.
   */
  expiredEntries(now: number, limit: number): { key: string; version: string }[] {
    return this.#expiry.due(now, limit).map(({ key, version }) => ({ key, version }));
  }

  /**
   * The named client tokens of this state (`tokens.ts`): what a request's
   * credential is checked against. Always this state's: it changes with
   * every token command applied, and a new state (loaded, or a snapshot
   * installed) builds its own.
   */
  get tokens(): TokenIndex {
    return this.#tokens;
  }

  /** Number of keys (stamp buckets and tokens included). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * An order-independent digest of the state (sum of per-entry hashes of the
   * version, which names the write and so its key): equal on replicas that
   * executed the same set of writes.
   */
  get digest(): string {
    return formatDigest(this.#entries.size, this.#digest);
  }

  /** Reads `key` from local state (no consensus; `?consistency=local`). */
  read(key: string): KvEntry | undefined {
    return this.#entries.get(key);
  }

  /** Every entry, in no particular order. */
  entries(): IterableIterator<[string, KvEntry]> {
    return this.#entries.entries();
  }

  /** Lists local state (no consensus). */
  list(prefix: string, after: string | undefined, limit: number): KvResult & { op: "list" } {
    // Commands are validated (limit >= 1) before they are proposed; clamped
    // here too, so that no command can make execution throw.
    limit = Math.max(1, Math.floor(limit) || 1);
    const keys = this.#sorted();
    // Never into the databases' keys (`curl_keys.ts`).
    const end = curlListEnd(prefix);
    let index = lowerBound(keys, after === undefined || after < prefix ? prefix : after);
    if (after !== undefined && keys[index] === after) index++;
    const entries: (KvEntry & { key: string })[] = [];
    while (index < keys.length && entries.length < limit) {
      const key = keys[index++]!;
      if (key >= end) break;
      entries.push({ key, ...this.#entries.get(key)! });
    }
    const more = index < keys.length && keys[index]! < end && entries.length === limit;
    return more
      ? { op: "list", ok: true, entries, next: entries[entries.length - 1]!.key }
      : { op: "list", ok: true, entries };
  }

  /**
   * Reads every range from local state at once (no consensus): one
   * consistent snapshot, what a `snapshot` command answers.
   */
  snapshotRead(ranges: readonly SnapshotRange[]): SnapshotResult {
    return readRanges(ranges, () => this.#sorted(), (key) => this.#entries.get(key));
  }

  /**
   * The digest of the state at the backup command `request`, if it executed
   * here recently (the last {@linkcode BACKUP_DIGESTS_KEPT}): execution is
   * deterministic, so every replica computes the same one, and a backup is
   * checked against a second replica's (`src/server/backup_route.ts`).
   */
  digestAtBackup(request: string): string | undefined {
    return this.#backupDigests.get(request);
  }

  /**
   * Every entry, in no particular order, with the digest of the state: what a
   * backup command reads. The entries are the immutable objects the state
   * holds, so this copies references only, in time linear in the keys (no
   * sort: a sort of a large state inside the executor stalled it, 46-80 ms
   * per 100,000 keys).
   */
  snapshot(): KvResult & { op: "backup" } {
    return { op: "backup", ok: true, entries: Array.from(this.#entries), digest: this.digest };
  }

  /**
   * Applies one committed instance and returns its mutations and, unless
   * `wantResults` is false (no client waits here), its results.
   */
  apply(execution: Execution<KvCommand>, wantResults = true): AppliedInstance {
    if (execution.command === NOP) return NOTHING_APPLIED;
    const first = execution.command[0]!;
    if (
      execution.command.length === 1 && first.op !== "atomic" && first.op !== "expire" &&
      first.op !== "token"
    ) {
      // The unbatched common case, without the bookkeeping a batch needs.
      const result = this.#applyOne(
        first,
        versionOf(execution.owner, execution.number, 0, this.#versionTag),
        wantResults,
      );
      let mutations: readonly KvMutation[] = NO_MUTATIONS;
      if (result.ok && (first.op === "put" || first.op === "delete")) {
        const entry = this.#entries.get(first.key);
        mutations = [
          entry === undefined
            ? { kind: "delete", key: first.key }
            : { kind: "set", key: first.key, entry },
        ];
      }
      return {
        results: wantResults ? [{ request: first.request, result }] : NO_RESULTS,
        mutations,
      };
    }
    const results: { request: string; result: KvResult }[] = [];
    const changed = new Map<string, KvEntry | undefined>();
    execution.command.forEach((command, index) => {
      const result = this.#applyOne(
        command,
        versionOf(execution.owner, execution.number, index, this.#versionTag),
        wantResults,
        changed,
      );
      if (result.ok && (command.op === "put" || command.op === "delete")) {
        changed.set(command.key, this.#entries.get(command.key));
      }
      if (wantResults) results.push({ request: command.request, result });
    });
    const mutations: KvMutation[] = [];
    for (const [key, entry] of changed) {
      mutations.push(entry === undefined ? { kind: "delete", key } : { kind: "set", key, entry });
    }
    return { results: wantResults ? results : NO_RESULTS, mutations };
  }

  /**
   * Applies one command; the multi-key ones note every key they change in
   * `changed` (a put or delete is noted by the caller).
   */
  #applyOne(
    command: KvCommand,
    version: string,
    wantResults: boolean,
    changed?: Map<string, KvEntry | undefined>,
  ): KvResult {
    switch (command.op) {
      case "get":
        return { op: "get", ok: true, entry: this.#entries.get(command.key) };
      case "list":
        return this.list(command.prefix, command.after, command.limit);
      case "snapshot":
        // Only the replica a client waits at reads the entries out.
        return wantResults
          ? this.snapshotRead(command.ranges)
          : { op: "snapshot", ok: true, ranges: [] };
      case "backup": {
        this.#backupDigests.set(command.request, this.digest);
        if (this.#backupDigests.size > BACKUP_DIGESTS_KEPT) {
          this.#backupDigests.delete(this.#backupDigests.keys().next().value!);
        }
        // Only the replica a client waits at reads the entries out.
        return wantResults
          ? this.snapshot()
          : { op: "backup", ok: true, entries: [], digest: this.digest };
      }
      case "reconf":
        // Changes no key: the driver starts the next epoch with the state
        // after it (its component's end).
        return { op: "reconf", ok: true, epoch: command.configuration.epoch };
      case "put": {
        const current = this.#entries.get(command.key);
        if (!conditionHolds(command.ifVersion, current)) {
          return { op: "put", ok: false, current: current?.version ?? null };
        }
        this.#set(command.key, entryOf(command.value, version, { expiresAt: command.expiresAt }));
        return { op: "put", ok: true, version };
      }
      case "delete": {
        const current = this.#entries.get(command.key);
        if (!conditionHolds(command.ifVersion, current)) {
          return { op: "delete", ok: false, current: current?.version ?? null };
        }
        if (current !== undefined) this.#remove(command.key, current);
        return { op: "delete", ok: true, existed: current !== undefined };
      }
      case "atomic": {
        const outcome = executeAtomic(command, (key) => this.#entries.get(key), {
          version,
          stampSuffix: stampSuffixOf(this.#versionTag),
        });
        this.#applyChanges(outcome.changes, changed);
        if (outcome.stamp !== undefined && outcome.stamp > this.#highestStamp) {
          this.#highestStamp = outcome.stamp;
        }
        return outcome.result;
      }
      case "expire": {
        const outcome = executeExpire(command, (key) => this.#entries.get(key));
        this.#applyChanges(outcome.changes, changed);
        return outcome.result;
      }
      case "token":
        return this.#applyToken(command, version, changed);
    }
  }

  /**
   * Adds or removes a named token (`tokens.ts`): an add fails if the name is
   * taken or {@linkcode MAX_TOKENS} exist (token commands all conflict, so
   * every replica counts the same tokens); a removal of a missing token
   * succeeds, saying it did not exist.
   */
  #applyToken(
    command: TokenCommand,
    version: string,
    changed: Map<string, KvEntry | undefined> | undefined,
  ): TokenResult {
    const key = tokenKey(command.name);
    const existed = this.#entries.has(key);
    if (command.record === null) {
      if (existed) this.#applyChanges(new Map([[key, undefined]]), changed);
      return { op: "token", ok: true, existed };
    }
    if (existed) return { op: "token", ok: false, failure: "exists" };
    if (this.#tokens.size >= MAX_TOKENS) return { op: "token", ok: false, failure: "limit" };
    this.#applyChanges(
      new Map([[key, entryOf(encodeTokenRecord(command.record), version)]]),
      changed,
    );
    return { op: "token", ok: true, existed: false };
  }

  #applyChanges(
    changes: ReadonlyMap<string, KvEntry | undefined>,
    changed: Map<string, KvEntry | undefined> | undefined,
  ): void {
    for (const [key, entry] of changes) {
      if (entry !== undefined) {
        this.#set(key, entry);
      } else {
        const current = this.#entries.get(key);
        if (current !== undefined) this.#remove(key, current);
      }
      changed?.set(key, entry);
    }
  }

  #noteStamp(entry: KvEntry): void {
    const counter = versionstampCounter(entry.version) ?? 0;
    if (counter > this.#highestStamp) this.#highestStamp = counter;
  }

  #set(key: string, entry: KvEntry): void {
    const previous = this.#entries.get(key);
    if (previous !== undefined) {
      this.#digest = (this.#digest - entryHash(key, previous)) >>> 0;
    } else {
      this.#sortedKeys = undefined;
    }
    this.#entries.set(key, entry);
    this.#digest = (this.#digest + entryHash(key, entry)) >>> 0;
    this.#expiry.note(key, entry);
    if (key.charCodeAt(0) === 0xfffe && isTokenKey(key)) this.#tokens.note(key, entry);
  }

  #remove(key: string, previous: KvEntry): void {
    this.#entries.delete(key);
    this.#sortedKeys = undefined;
    this.#digest = (this.#digest - entryHash(key, previous)) >>> 0;
    this.#expiry.note(key, undefined);
    if (key.charCodeAt(0) === 0xfffe && isTokenKey(key)) this.#tokens.note(key, undefined);
  }

  #sorted(): string[] {
    this.#sortedKeys ??= [...this.#entries.keys()].sort();
    return this.#sortedKeys;
  }
}

/**
 * Whether a write's condition holds for the key's current entry: none; `null`
 * (absent); one version, or a list of which the current version is one (HTTP
 * `If-Match` compares strongly, RFC 9110 §13.1.1: a version equals itself
 * only). Evaluated here, at execution, so a list is checked atomically with
 * the write it guards.
 */
function conditionHolds(
  condition: VersionCondition | undefined,
  current: KvEntry | undefined,
): boolean {
  if (condition === undefined) return true;
  if (condition === null) return current === undefined;
  if (current === undefined) return false;
  return typeof condition === "string"
    ? current.version === condition
    : condition.includes(current.version);
}

/**
 * {@linkcode KvStateMachine.digest} of a state holding `entries` (each key
 * once), computed without building one.
 */
export function stateDigestOf(entries: readonly (readonly [string, KvEntry])[]): string {
  let sum = 0;
  for (const [key, entry] of entries) sum = (sum + entryHash(key, entry)) >>> 0;
  return formatDigest(entries.length, sum);
}

function formatDigest(size: number, sum: number): string {
  return `${size}:${sum.toString(16).padStart(8, "0")}`;
}

/**
 * The hash an entry adds to the digest: FNV-1a of its version, which names
 * the write and so its key; for a database's key (whose versionstamp one
 * commit gives to every key it writes) of the key and the version. Curl
 * states digest as they did before databases existed.
 */
function entryHash(key: string, entry: KvEntry): number {
  let hash = 0x811c9dc5;
  if (key.charCodeAt(0) === 0xfffe) hash = fnv(hash, key);
  return fnv(hash, entry.version) >>> 0;
}

/** FNV-1a steps over the UTF-16 code units of `text`: cheap, deterministic, good enough for a convergence check. */
function fnv(hash: number, text: string): number {
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash;
}
