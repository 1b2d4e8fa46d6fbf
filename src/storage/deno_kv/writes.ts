/**
 * Writes and atomic commits: what one write costs against Deno KV's limits on
 * an atomic commit, and the writer that makes the commits (with the failpoint
 * the crash tests use).
 *
 * ## Limits
 *
 * Deno KV allows 1000 mutations, 800 KiB of keys and values and 80 KiB of keys
 * per atomic commit (`ext/kv/config.rs` and `op_kv_atomic_write` in
 * denoland/deno, checked against Deno 2.9.6 by `tests/storage/storage_test.ts`).
 * Every value written is a `Uint8Array`, so that its size is its length and
 * packing can respect these limits exactly. A single write always fits in one
 * commit: keys are short (see `keys.ts`), and every value is a chunk or page of
 * at most 65536 bytes; so one set costs far less than the 819200 bytes allowed.
 *
 * ## Durability
 *
 * Deno opens the SQLite file in WAL mode and leaves `synchronous` at SQLite's
 * default, FULL (`ext/kv/sqlite.rs` in denoland/deno; the newer
 * `ext/kv/impl/sqlite_backend.ts` does the same), under which SQLite syncs the
 * WAL file at every transaction commit (sqlite.org/pragma.html#pragma_synchronous).
 * So an atomic commit is on disk when its promise resolves, and `commit`
 * resolves after its last atomic commit. Deno documents the same guarantee
 * ("Data is instantly durable once a transaction is committed", deno.com/kv),
 * and `strace` of Deno 2.9.6 shows one `fsync` of the WAL per atomic commit.
 *
 * @module
 */

import { encodedKeyLength } from "../codec.ts";

/** Deno KV's limits on one atomic commit (denoland/deno `ext/kv/config.rs`). */
export const DENO_KV_LIMITS = {
  /** Mutations per atomic commit. */
  mutations: 1000,
  /** Bytes of keys and values per commit: each key counts once, a set's key once more, plus its value. */
  totalBytes: 800 * 1024,
  /** Bytes of the keys of set mutations per commit. */
  keyBytes: 80 * 1024,
  /** Bytes of one encoded key. */
  key: 2048,
  /** Bytes of one value. */
  value: 65536,
} as const;

/** One write of a unit: a set (with `value`) or a delete. */
export interface Write {
  /** The key set or deleted. */
  readonly key: Deno.KvKey;
  /** The value set, or null for a delete. */
  readonly value: Uint8Array | null;
  /** `encodedKeyLength(key)`. */
  readonly keyBytes: number;
}

/** What a group of writes costs against {@linkcode DENO_KV_LIMITS}. */
export interface Cost {
  /** Mutations. */
  mutations: number;
  /** Bytes of keys and values, as Deno counts them. */
  totalBytes: number;
  /** Bytes of the keys of sets. */
  keyBytes: number;
}

/** Thrown by the `crashAfterCommits` failpoint of {@linkcode AtomicWriter}. */
export class FailpointCrash extends Error {
  /** Creates the error. */
  constructor(commits: number) {
    super(`Failpoint crashed the commit after ${commits} atomic commits`);
    this.name = "FailpointCrash";
  }
}

/** A set of `key` to `value`. */
export function write(key: Deno.KvKey, value: Uint8Array): Write {
  return { key, value, keyBytes: encodedKeyLength(key) };
}

/** A delete of `key`. */
export function deleteWrite(key: Deno.KvKey): Write {
  return { key, value: null, keyBytes: encodedKeyLength(key) };
}

/** No writes: a cost to accumulate into. */
export function zeroCost(): Cost {
  return { mutations: 0, totalBytes: 0, keyBytes: 0 };
}

/** What `writes` cost in one atomic commit. */
export function costOf(writes: readonly Write[]): Cost {
  const cost: Cost = { mutations: writes.length, totalBytes: 0, keyBytes: 0 };
  for (const w of writes) {
    // Deno counts every mutation's key, and a set's key again with its value.
    cost.totalBytes += w.keyBytes;
    if (w.value !== null) {
      cost.totalBytes += w.keyBytes + w.value.length;
      cost.keyBytes += w.keyBytes;
    }
  }
  return cost;
}

/** `a` and `b` together. */
export function sum(a: Cost, b: Cost): Cost {
  return {
    mutations: a.mutations + b.mutations,
    totalBytes: a.totalBytes + b.totalBytes,
    keyBytes: a.keyBytes + b.keyBytes,
  };
}

/** Adds `extra` to `total`. */
export function accumulate(total: Cost, extra: Cost): void {
  total.mutations += extra.mutations;
  total.totalBytes += extra.totalBytes;
  total.keyBytes += extra.keyBytes;
}

/** Sets `cost` back to nothing. */
export function resetCost(cost: Cost): void {
  cost.mutations = 0;
  cost.totalBytes = 0;
  cost.keyBytes = 0;
}

/** Whether `cost` is within {@linkcode DENO_KV_LIMITS}. */
export function fits(cost: Cost): boolean {
  return cost.mutations <= DENO_KV_LIMITS.mutations &&
    cost.totalBytes <= DENO_KV_LIMITS.totalBytes && cost.keyBytes <= DENO_KV_LIMITS.keyBytes;
}

/**
 * Makes the atomic commits of a `Deno.Kv`, counting them; with
 * `crashAfterCommits`, a batch throws {@linkcode FailpointCrash} after that
 * many of its commits, as if the process crashed there.
 */
export class AtomicWriter {
  readonly #kv: Deno.Kv;
  readonly #crashAfterCommits: number | undefined;
  #commits = 0;
  /** Atomic commits of the batch being committed, for the failpoint; undefined outside a batch. */
  #batchCommits: number | undefined;

  /** Writes to `kv`; the failpoint is off unless `crashAfterCommits` is given. */
  constructor(kv: Deno.Kv, crashAfterCommits: number | undefined) {
    this.#kv = kv;
    this.#crashAfterCommits = crashAfterCommits;
  }

  /** Atomic commits made so far, in batches or not. */
  get commits(): number {
    return this.#commits;
  }

  /** Starts counting a batch's commits for the failpoint. */
  beginBatch(): void {
    this.#batchCommits = 0;
  }

  /** Ends the batch {@linkcode beginBatch} started. */
  endBatch(): void {
    this.#batchCommits = undefined;
  }

  /** Commits `writes` in one atomic commit; they must fit in it. */
  async commit(writes: readonly Write[]): Promise<void> {
    const crashAfter = this.#crashAfterCommits;
    if (
      crashAfter !== undefined && this.#batchCommits !== undefined &&
      this.#batchCommits >= crashAfter
    ) {
      throw new FailpointCrash(this.#batchCommits);
    }
    const operation = this.#kv.atomic();
    for (const w of writes) {
      if (w.value === null) operation.delete(w.key);
      else operation.set(w.key, w.value);
    }
    const result = await operation.commit();
    // No checks, so a commit either succeeds or throws.
    if (!result.ok) throw new Error("Atomic commit failed without checks");
    if (this.#batchCommits !== undefined) this.#batchCommits++;
    this.#commits++;
  }

  /** Commits `writes` in order, as many per atomic commit as fit (writes are their own units). */
  async commitInOrder(writes: readonly Write[]): Promise<void> {
    let pending: Write[] = [];
    const cost = zeroCost();
    for (const w of writes) {
      const one = costOf([w]);
      if (!fits(sum(cost, one))) {
        await this.commit(pending);
        pending = [];
        resetCost(cost);
      }
      accumulate(cost, one);
      pending.push(w);
    }
    if (pending.length > 0) await this.commit(pending);
  }
}
