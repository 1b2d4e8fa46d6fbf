/**
 * A discrete-event queue ordered by time, then by insertion: the simulator's
 * only source of ordering, so a seed always replays the same run.
 *
 * @module
 */

interface Entry {
  readonly time: number;
  readonly sequence: number;
  readonly run: () => void;
}

/** A binary min-heap of timed callbacks. */
export class EventQueue {
  readonly #heap: Entry[] = [];
  #sequence = 0;

  /** Number of pending events. */
  get size(): number {
    return this.#heap.length;
  }

  /** Time of the earliest event, or `Infinity` when empty. */
  get nextTime(): number {
    return this.#heap[0]?.time ?? Number.POSITIVE_INFINITY;
  }

  /** Schedules `run` at `time`; events at the same time run in scheduling order. */
  schedule(time: number, run: () => void): void {
    const heap = this.#heap;
    heap.push({ time, sequence: this.#sequence++, run });
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!before(heap[index]!, heap[parent]!)) break;
      [heap[index], heap[parent]] = [heap[parent]!, heap[index]!];
      index = parent;
    }
  }

  /** Removes and returns the earliest event's callback, or `undefined`. */
  pop(): (() => void) | undefined {
    const heap = this.#heap;
    if (heap.length === 0) return undefined;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let index = 0;
      for (;;) {
        const left = index * 2 + 1;
        const right = left + 1;
        let smallest = index;
        if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === index) break;
        [heap[index], heap[smallest]] = [heap[smallest]!, heap[index]!];
        index = smallest;
      }
    }
    return top.run;
  }
}

function before(a: Entry, b: Entry): boolean {
  return a.time < b.time || (a.time === b.time && a.sequence < b.sequence);
}
