/**
 * The dashboard's live stream (`GET /ui/events`): server-sent events (the
 * WHATWG HTML "Server-sent events" format), one `event: view` at most every
 * {@linkcode UI_EVENT_INTERVAL_MS}, each rendered afresh when the client is
 * ready to read it. The body is pulled (`highWaterMark: 0`): a client that
 * reads slowly gets fewer events, never a queue of them, so a stream holds
 * nothing but its timer. A stream ends after its lifetime (the browser's
 * `EventSource` reconnects, and is let in again only with a valid session);
 * the route caps how many run at once.
 *
 * @module
 */

import { sseEvent } from "../server/watch_route.ts";

/** Least time between two events of one stream, ms. */
export const UI_EVENT_INTERVAL_MS = 1000;
/** Longest a stream runs before it ends (the client reconnects), ms. */
export const UI_STREAM_LIFETIME_MS = 5 * 60_000;
/** How long the browser waits before it reconnects a stream that ended, ms (the `retry:` field). */
export const UI_RECONNECT_MS = 1000;

const encoder = new TextEncoder();

/** Settings of {@linkcode uiEventStream}. */
export interface UiEventStreamOptions {
  /** The data of the next event (rendered when it is due), as one JSON value. */
  readonly render: () => unknown;
  /** Least time between events, ms (default {@linkcode UI_EVENT_INTERVAL_MS}). */
  readonly intervalMs?: number;
  /** Longest the stream runs, ms (default {@linkcode UI_STREAM_LIFETIME_MS}). */
  readonly lifetimeMs?: number;
  /** Called once when the stream ends, however it ends (its slot is given back). */
  readonly onEnd: () => void;
}

/**
 * The byte stream of `view` events: the first at once (with the `retry:`
 * field), then each when the client reads and the interval has passed; it
 * closes after its lifetime, and `onEnd` runs when it closes or the client
 * goes away.
 */
export function uiEventStream(options: UiEventStreamOptions): ReadableStream<Uint8Array> {
  const intervalMs = options.intervalMs ?? UI_EVENT_INTERVAL_MS;
  const lifetimeMs = options.lifetimeMs ?? UI_STREAM_LIFETIME_MS;
  const startedMs = Date.now();
  let lastSentMs = 0;
  let ended = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let wake: (() => void) | undefined;
  const end = () => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    wake?.();
    options.onEnd();
  };
  return new ReadableStream<Uint8Array>({
    start(controller) {
      lastSentMs = Date.now();
      controller.enqueue(
        encoder.encode(`retry: ${UI_RECONNECT_MS}\n${sseEvent("view", options.render())}`),
      );
    },
    async pull(controller) {
      const dueMs = Math.min(lastSentMs + intervalMs, startedMs + lifetimeMs);
      const waitMs = dueMs - Date.now();
      if (waitMs > 0) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, waitMs);
        });
        wake = undefined;
      }
      if (ended) return;
      if (Date.now() - startedMs >= lifetimeMs) {
        end();
        controller.close();
        return;
      }
      lastSentMs = Date.now();
      controller.enqueue(encoder.encode(sseEvent("view", options.render())));
    },
    cancel() {
      end();
    },
  }, { highWaterMark: 0 });
}
