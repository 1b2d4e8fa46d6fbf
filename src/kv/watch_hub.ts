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
 * A range watcher (the curl API's watch of a prefix, `GET /watch`) holds the
 * set of keys of its range that changed since its last take, each once
 * (coalesced), up to a bound; past it, or when the whole state was replaced,
 * it holds a "reset" flag instead, and its reader sends the range's current
 * state anew. Both kinds count toward one bound on watchers.
 *
 * @module
 */

import type { KvEntry } from "./state_machine.ts";

/** Default most watchers on one replica. */
export const DEFAULT_MAX_WATCHERS = 1024;

/** Most keys one watcher watches (Deno KV's limit). */
export const MAX_WATCHED_KEYS = 10;

/** Default most changed keys a range watcher holds before it is reset. */
export const DEFAULT_MAX_PENDING_KEYS = 1000;

/**
 * One change of the executed state, as the driver's `onApplied` reports it
 * (`AppliedChange`): the keys an instance wrote or deleted, or the whole
 * state replaced.
 */
export type StateChange =
  | {
    readonly kind: "instance";
    readonly applied: { readonly mutations: readonly { readonly key: string }[] };
  }
  | { readonly kind: "replaced" };

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
  /** Range watchers, grouped by their range (`[start, end)` as JSON). */
  readonly #ranges = new Map<
    string,
    { readonly start: string; readonly end: string; readonly watchers: Set<RangeWatcher> }
  >();
  #rangeWatchers = 0;

  /** An empty hub. */
  constructor(options: WatchHubOptions) {
    this.#read = options.read;
    this.#maxWatchers = options.maxWatchers ?? DEFAULT_MAX_WATCHERS;
  }

  /** Watchers open now, of both kinds. */
  get size(): number {
    return this.#watchers.size + this.#rangeWatchers;
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
    if (this.size >= this.#maxWatchers) return undefined;
    const watcher = new Watcher(keys, this.#read, () => this.#remove(watcher));
    this.#watchers.add(watcher);
    for (const key of new Set(keys)) {
      let watchers = this.#byKey.get(key);
      if (watchers === undefined) this.#byKey.set(key, watchers = new Set());
      watchers.add(watcher);
    }
    return watcher;
  }

  /**
   * Opens a watcher of the keys in `[start, end)` that holds up to
   * `maxPending` changed keys ({@linkcode DEFAULT_MAX_PENDING_KEYS}) before
   * it is reset; `undefined` if {@linkcode WatchHub.maxWatchers} are open
   * already. It starts with nothing pending: its reader reads the range's
   * state when it opens it, in the same turn.
   */
  watchRange(start: string, end: string, maxPending?: number): RangeWatcher | undefined {
    if (this.size >= this.#maxWatchers) return undefined;
    const id = JSON.stringify([start, end]);
    let group = this.#ranges.get(id);
    if (group === undefined) this.#ranges.set(id, group = { start, end, watchers: new Set() });
    const watchers = group.watchers;
    const watcher = new RangeWatcher(start, end, {
      maxPending: maxPending ?? DEFAULT_MAX_PENDING_KEYS,
      onClose: () => {
        if (!watchers.delete(watcher)) return;
        this.#rangeWatchers--;
        if (watchers.size === 0) this.#ranges.delete(id);
      },
    });
    watchers.add(watcher);
    this.#rangeWatchers++;
    return watcher;
  }

  /**
   * `key` was written or deleted: its watchers become dirty, and the range
   * watchers whose range holds it note it (a check per distinct range open,
   * of which there are at most {@linkcode WatchHub.maxWatchers}).
   */
  changed(key: string): void {
    const watchers = this.#byKey.get(key);
    if (watchers !== undefined) {
      for (const watcher of watchers) watcher.markDirty();
    }
    if (this.#rangeWatchers === 0) return;
    for (const group of this.#ranges.values()) {
      if (key < group.start || key >= group.end) continue;
      for (const watcher of group.watchers) watcher.noteChanged(key);
    }
  }

  /** The whole state was replaced (a snapshot installed): every watcher becomes dirty, every range watcher reset. */
  changedAll(): void {
    for (const watcher of this.#watchers) watcher.markDirty();
    for (const group of this.#ranges.values()) {
      for (const watcher of group.watchers) watcher.markReset();
    }
  }

  /** Notes one change of the executed state (what the driver's `onApplied` reports). */
  noteApplied(change: StateChange): void {
    if (this.size === 0) return;
    if (change.kind === "replaced") return this.changedAll();
    for (const mutation of change.applied.mutations) this.changed(mutation.key);
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

/**
 * Resolves `true` once `watcher` is dirty or closed (its `next()`), or
 * `false` when `ms` passed first (at once for `ms <= 0`); the timer is
 * cleared either way. What a stream waits on between keep-alives, and a
 * blocking read until its deadline.
 */
export async function changedWithin(
  watcher: { next(): Promise<void> },
  ms: number,
): Promise<boolean> {
  if (ms <= 0) return false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      watcher.next().then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a range watcher's take gives: the range anew, or the keys that changed. */
export type RangeChanges =
  | { readonly reset: true }
  | { readonly reset: false; readonly keys: readonly string[] };

/**
 * A watch of the keys in `[start, end)`: the keys that changed since the
 * last take, each once, at most `maxPending` of them; past that (or when
 * the whole state was replaced) a reset flag instead, so it never holds
 * more than `maxPending` keys however far its reader falls behind.
 */
export class RangeWatcher {
  /** Inclusive start of the range. */
  readonly start: string;
  /** Exclusive end of the range. */
  readonly end: string;
  readonly #maxPending: number;
  readonly #onClose: () => void;
  #pending = new Set<string>();
  #reset = false;
  #closed = false;
  #wake: (() => void) | undefined;

  /** Use {@linkcode WatchHub.watchRange}. */
  constructor(
    start: string,
    end: string,
    options: { readonly maxPending: number; readonly onClose: () => void },
  ) {
    this.start = start;
    this.end = end;
    this.#maxPending = options.maxPending;
    this.#onClose = options.onClose;
  }

  /** Whether something changed since the last take. */
  get dirty(): boolean {
    return this.#reset || this.#pending.size > 0;
  }

  /** Whether it was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Keys held, changed and not yet taken (at most the bound). */
  get pending(): number {
    return this.#pending.size;
  }

  /** `key`, in the range, was written or deleted. */
  noteChanged(key: string): void {
    if (!this.#reset) {
      if (this.#pending.size < this.#maxPending || this.#pending.has(key)) {
        this.#pending.add(key);
      } else {
        this.markReset();
        return;
      }
    }
    this.#wakeUp();
  }

  /** Too much changed to tell key by key: the reader sends the range anew. */
  markReset(): void {
    this.#reset = true;
    this.#pending.clear();
    this.#wakeUp();
  }

  /** Resolves once it is dirty or closed (at once if it is already); one waiter at a time. */
  next(): Promise<void> {
    if (this.dirty || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#wake = resolve);
  }

  /**
   * Takes what changed: a reset (which clears everything held), or up to
   * `limit` changed keys in the order they first changed (the rest stay
   * held for the next take).
   */
  take(limit: number): RangeChanges {
    if (this.#reset) {
      this.#reset = false;
      this.#pending.clear();
      return { reset: true };
    }
    const keys: string[] = [];
    for (const key of this.#pending) {
      if (keys.length >= limit) break;
      keys.push(key);
    }
    if (keys.length === this.#pending.size) {
      this.#pending = new Set();
    } else {
      for (const key of keys) this.#pending.delete(key);
    }
    return { reset: false, keys };
  }

  /** Stops watching (idempotent): the hub forgets it and a pending {@linkcode RangeWatcher.next} resolves. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose();
    this.#wakeUp();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
