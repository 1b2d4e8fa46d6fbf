/**
 * The body of a KV Connect watch: a never-ending stream of frames, pulled as
 * the client reads (`highWaterMark` 0, so nothing is produced ahead of the
 * reader: a slow client holds its watcher's dirty flag, not a queue of
 * frames). Each pull waits until a watched key changed, then sends the
 * latest state of the keys; after `keepAliveMs` without a change, a
 * zero-length keep-alive frame (denokv's server sends one every 5 s), which
 * also finds a client that left. Cancelling the stream (the client went
 * away) closes the watcher.
 *
 * @module
 */

import type { WatchedKey, Watcher } from "../kv/watch_hub.ts";
import { keepAliveFrame } from "./codec.ts";

/** Default time between keep-alive frames without a change. */
export const DEFAULT_KEEP_ALIVE_MS = 5000;

/** Settings of {@linkcode watchStream}. */
export interface WatchStreamOptions {
  /** Milliseconds without a change before a keep-alive frame. */
  readonly keepAliveMs?: number;
}

/**
 * The frames of `watcher`, each made by `frame` from the state of its keys
 * (the first with every key changed).
 */
export function watchStream(
  watcher: Watcher,
  frame: (keys: readonly WatchedKey[]) => Uint8Array,
  options: WatchStreamOptions = {},
): ReadableStream<Uint8Array> {
  const keepAliveMs = options.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const deadline = Date.now() + keepAliveMs;
      for (;;) {
        const remaining = deadline - Date.now();
        const woke = remaining > 0 &&
          await Promise.race([
            watcher.next().then(() => true),
            new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), remaining)),
          ]);
        clearTimeout(timer);
        if (watcher.closed) {
          // Closed by a cancel while this pull waited: the stream is done.
          try {
            controller.close();
          } catch { /* already cancelled */ }
          return;
        }
        if (!woke) {
          controller.enqueue(keepAliveFrame());
          return;
        }
        const keys = watcher.take();
        if (keys !== undefined) {
          controller.enqueue(frame(keys));
          return;
        }
        // Dirty, but every key holds the version last sent: wait on.
      }
    },
    cancel() {
      clearTimeout(timer);
      watcher.close();
    },
  }, { highWaterMark: 0 });
}
