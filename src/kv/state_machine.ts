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
import { prefixEnd } from "./commands.ts";

/** A stored value and its version. */
export interface KvEntry {
  /** The bytes. */
  readonly value: Uint8Array;
  /** Opaque version, unique per write (the HTTP ETag). */
  readonly version: string;
}

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
  };

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

  /** Creates a state machine holding `entries` (what storage had). */
  constructor(entries?: Iterable<readonly [string, KvEntry]>, options: KvStateMachineOptions = {}) {
    this.#versionTag = options.versionTag;
    if (entries !== undefined) {
      for (const [key, entry] of entries) {
        this.#entries.set(key, entry);
        this.#digest = (this.#digest + versionHash(entry.version)) >>> 0;
      }
    }
  }

  /** {@linkcode KvStateMachineOptions.versionTag}. */
  get versionTag(): string | undefined {
    return this.#versionTag;
  }

  /** Number of keys. */
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
    const end = prefixEnd(prefix);
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
    if (execution.command.length === 1) {
      // The unbatched common case, without the bookkeeping a batch needs.
      const command = execution.command[0]!;
      const result = this.#applyOne(
        command,
        versionOf(execution.owner, execution.number, 0, this.#versionTag),
        wantResults,
      );
      let mutations: readonly KvMutation[] = NO_MUTATIONS;
      if (result.ok && (command.op === "put" || command.op === "delete")) {
        const entry = this.#entries.get(command.key);
        mutations = [
          entry === undefined
            ? { kind: "delete", key: command.key }
            : { kind: "set", key: command.key, entry },
        ];
      }
      return {
        results: wantResults ? [{ request: command.request, result }] : NO_RESULTS,
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

  #applyOne(command: KvCommand, version: string, wantResults: boolean): KvResult {
    switch (command.op) {
      case "get":
        return { op: "get", ok: true, entry: this.#entries.get(command.key) };
      case "list":
        return this.list(command.prefix, command.after, command.limit);
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
        this.#set(command.key, { value: command.value, version });
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
    }
  }

  #set(key: string, entry: KvEntry): void {
    const previous = this.#entries.get(key);
    if (previous !== undefined) {
      this.#digest = (this.#digest - versionHash(previous.version)) >>> 0;
    } else {
      this.#sortedKeys = undefined;
    }
    this.#entries.set(key, entry);
    this.#digest = (this.#digest + versionHash(entry.version)) >>> 0;
  }

  #remove(key: string, previous: KvEntry): void {
    this.#entries.delete(key);
    this.#sortedKeys = undefined;
    this.#digest = (this.#digest - versionHash(previous.version)) >>> 0;
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

function lowerBound(keys: readonly string[], target: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (keys[middle]! < target) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

/**
 * {@linkcode KvStateMachine.digest} of a state holding `entries` (each key
 * once), computed without building one.
 */
export function stateDigestOf(entries: readonly (readonly [string, KvEntry])[]): string {
  let sum = 0;
  for (const [, entry] of entries) sum = (sum + versionHash(entry.version)) >>> 0;
  return formatDigest(entries.length, sum);
}

function formatDigest(size: number, sum: number): string {
  return `${size}:${sum.toString(16).padStart(8, "0")}`;
}

/** FNV-1a of a version: cheap, deterministic, good enough for a convergence check. */
function versionHash(version: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < version.length; i++) {
    hash ^= version.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
