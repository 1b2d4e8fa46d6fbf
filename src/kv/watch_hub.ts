/**
 * Watches of keys on one replica, fed from its executed state (the driver's
 * `onApplied`): Deno KV's `watch` (KV Connect's `POST …/watch`), and any
 * other stream of a key's latest value.
 *
 * A watcher never buffers changes: it holds one "dirty" flag and, per key,
 * the version it last delivered. Whoever drains it (a stream, pulled as its
 * client reads) takes the latest state of its keys when it next pulls; a
 * watcher that falls behind skips the values in between (Deno KV's watch is
 * eventually consistent, and delivers the latest value, kv-connect.md
 * "Watch Request": "The server MAY collapse multiple changes into a single
 * notification"). The number of watchers is bounded.
 *
 * @module
 */

import type { KvEntry } from "./state_machine.ts";

/** Default most watchers on one replica. */
export const DEFAULT_MAX_WATCHERS = 1024;

/** Most keys one watcher watches (Deno KV's limit). */
export const MAX_WATCHED_KEYS = 10;

/** One watched key's state as a watcher takes it. */
export interface WatchedKey {
  /** Whether its version differs from the one last delivered (always, the first time). */
  readonly changed: boolean;
  /** Its entry now, `undefined` if absent. */
  readonly entry: KvEntry | undefined;
}

/** Settings of a {@linkcode WatchHub}. */
export interface WatchHubOptions {
  /** Reads a key's entry from the executed state now. */
  readonly read: (key: string) => KvEntry | undefined;
  /** Most watchers at once (default {@linkcode DEFAULT_MAX_WATCHERS}). */
  readonly maxWatchers?: number;
}

/** The watchers of one replica, indexed by key. */
export class WatchHub {
  readonly #read: (key: string) => KvEntry | undefined;
  readonly #maxWatchers: number;
  readonly #byKey = new Map<string, Set<Watcher>>();
  readonly #watchers = new Set<Watcher>();

  /** An empty hub. */
  constructor(options: WatchHubOptions) {
    this.#read = options.read;
    this.#maxWatchers = options.maxWatchers ?? DEFAULT_MAX_WATCHERS;
  }

  /** Watchers open now. */
  get size(): number {
    return this.#watchers.size;
  }

  /** The bound on watchers. */
  get maxWatchers(): number {
    return this.#maxWatchers;
  }

  /**
   * Opens a watcher of `keys` (1 to {@linkcode MAX_WATCHED_KEYS}; a key
   * may repeat), dirty at once so that its first take reports every key;
   * `undefined` if {@linkcode WatchHub.maxWatchers} are open already.
   *
   * @throws {RangeError} for no keys or too many (callers validate first).
   */
  watch(keys: readonly string[]): Watcher | undefined {
    if (keys.length === 0 || keys.length > MAX_WATCHED_KEYS) {
      throw new RangeError(`A watch has 1 to ${MAX_WATCHED_KEYS} keys, not ${keys.length}`);
    }
    if (this.#watchers.size >= this.#maxWatchers) return undefined;
    const watcher = new Watcher(keys, this.#read, () => this.#remove(watcher));
    this.#watchers.add(watcher);
    for (const key of new Set(keys)) {
      let watchers = this.#byKey.get(key);
      if (watchers === undefined) this.#byKey.set(key, watchers = new Set());
      watchers.add(watcher);
    }
    return watcher;
  }

  /** `key` was written or deleted: its watchers become dirty. */
  changed(key: string): void {
    const watchers = this.#byKey.get(key);
    if (watchers === undefined) return;
    for (const watcher of watchers) watcher.markDirty();
  }

  /** The whole state was replaced (a snapshot installed): every watcher becomes dirty. */
  changedAll(): void {
    for (const watcher of this.#watchers) watcher.markDirty();
  }

  #remove(watcher: Watcher): void {
    if (!this.#watchers.delete(watcher)) return;
    for (const key of watcher.keys) {
      const watchers = this.#byKey.get(key);
      if (watchers === undefined) continue;
      watchers.delete(watcher);
      if (watchers.size === 0) this.#byKey.delete(key);
    }
  }
}

/** One watch: its keys, a dirty flag, and the versions it last delivered. */
export class Watcher {
  /** The watched keys, in the order asked. */
  readonly keys: readonly string[];
  readonly #read: (key: string) => KvEntry | undefined;
  readonly #onClose: () => void;
  /** Per key, the version last delivered (`null`: absent), `undefined` before the first take. */
  readonly #delivered: (string | null | undefined)[];
  #dirty = true;
  #closed = false;
  #wake: (() => void) | undefined;

  /** Use {@linkcode WatchHub.watch}. */
  constructor(
    keys: readonly string[],
    read: (key: string) => KvEntry | undefined,
    onClose: () => void,
  ) {
    this.keys = keys;
    this.#read = read;
    this.#onClose = onClose;
    this.#delivered = keys.map(() => undefined);
  }

  /** Whether a watched key may have changed since the last take. */
  get dirty(): boolean {
    return this.#dirty;
  }

  /** Whether it was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** A watched key may have changed. */
  markDirty(): void {
    this.#dirty = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /**
   * Resolves once it is dirty or closed (at once if it is already). One
   * waiter at a time: a second call replaces the first's wake-up.
   */
  next(): Promise<void> {
    if (this.#dirty || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#wake = resolve);
  }

  /**
   * The latest state of its keys, each marked changed when its version
   * differs from the one last delivered, which it becomes; `undefined` when
   * none changed. Clears the dirty flag.
   */
  take(): WatchedKey[] | undefined {
    this.#dirty = false;
    let any = false;
    const keys = this.keys.map((key, index): WatchedKey => {
      const entry = this.#read(key);
      const version = entry?.version ?? null;
      const changed = this.#delivered[index] !== version;
      this.#delivered[index] = version;
      any ||= changed;
      return { changed, entry };
    });
    return any ? keys : undefined;
  }

  /** Stops watching (idempotent): the hub forgets it and a pending {@linkcode Watcher.next} resolves. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
    this.markDirty();
  }
}
