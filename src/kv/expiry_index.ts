/**
 * The index of the state's expiring keys: which entries' `expiresAt` has
 * passed, found in time independent of the state's size when none has.
 *
 * A min-heap by expiry time with lazy removal: an entry overwritten or
 * deleted stays in the heap until it reaches the top (it is recognised as
 * stale because the state no longer holds that very entry object), and the
 * heap is rebuilt from the live entries when stale ones outnumber them, so
 * it holds at most twice the live expiring entries plus a constant.
 *
 * Expiry itself is a replicated delete (`ExpireCommand`): this index only
 * tells the replica which keys to propose it for. It is local state, rebuilt
 * whenever a state machine is built (at load and at a snapshot install).
 *
 * @module
 */

import type { KvEntry } from "./entry.ts";

interface ExpiringNode {
  readonly at: number;
  readonly key: string;
  readonly entry: KvEntry;
}

/** Stale heap nodes tolerated beyond the live ones before a rebuild. */
const SLACK_NODES = 64;

/** Expiring entries of a key-value state, by expiry time. */
export class ExpiryIndex {
  #heap: ExpiringNode[] = [];
  /** The live expiring entry of each key. */
  readonly #live = new Map<string, KvEntry>();

  /** Number of live expiring entries. */
  get size(): number {
    return this.#live.size;
  }

  /** Heap nodes, stale ones included: at most twice {@linkcode size} plus a constant. */
  get nodes(): number {
    return this.#heap.length;
  }

  /** Notes that `key` now holds `entry` (`undefined`: deleted). */
  note(key: string, entry: KvEntry | undefined): void {
    if (entry?.expiresAt === undefined) {
      if (this.#live.size > 0) this.#live.delete(key);
      return;
    }
    this.#live.set(key, entry);
    this.#push({ at: entry.expiresAt, key, entry });
    if (this.#heap.length > 2 * this.#live.size + SLACK_NODES) this.#rebuild();
  }

  /**
   * Up to `limit` live entries whose expiry is at or before `now`, earliest
   * first. Entries are reported until they are deleted or overwritten (the
   * proposer of their expire commands keeps track of those in flight). Cheap
   * when nothing is due: the stale nodes on top are dropped and the top is
   * compared with `now`.
   */
  due(now: number, limit: number): { key: string; version: string; expiresAt: number }[] {
    const heap = this.#heap;
    while (heap.length > 0 && this.#stale(heap[0]!)) this.#pop();
    const found: ExpiringNode[] = [];
    if (limit < 1 || heap.length === 0 || heap[0]!.at > now) return [];
    // The due nodes form a subtree at the root (the heap property): walk it,
    // skipping stale nodes, with a bound on the nodes visited.
    const stack = [0];
    let visits = 8 * limit + 1024;
    while (stack.length > 0 && found.length < limit && visits-- > 0) {
      const index = stack.pop()!;
      const node = heap[index];
      if (node === undefined || node.at > now) continue;
      if (!this.#stale(node)) found.push(node);
      stack.push(2 * index + 2, 2 * index + 1);
    }
    found.sort((a, b) => a.at - b.at || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return found.map(({ key, entry, at }) => ({ key, version: entry.version, expiresAt: at }));
  }

  #stale(node: ExpiringNode): boolean {
    return this.#live.get(node.key) !== node.entry;
  }

  #rebuild(): void {
    this.#heap = [...this.#live].map(([key, entry]) => ({ at: entry.expiresAt!, key, entry }));
    for (let i = (this.#heap.length >>> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #push(node: ExpiringNode): void {
    const heap = this.#heap;
    heap.push(node);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >>> 1;
      if (heap[parent]!.at <= node.at) break;
      heap[index] = heap[parent]!;
      index = parent;
    }
    heap[index] = node;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    this.#down(0);
  }

  #down(index: number): void {
    const heap = this.#heap;
    const node = heap[index]!;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.at < heap[left]!.at ? right : left;
      if (heap[child]!.at >= node.at) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = node;
  }
}
