/**
 * The client load the cluster benchmarks share (`bench:backup`,
 * `bench:snapshot`): blind writes of one value over HTTP, closed-loop writers
 * that count acknowledged writes, and a preload of `bench-0` to
 * `bench-{keys - 1}`.
 *
 * @module
 */

/** Puts `value` at `key` through the replica at `url`; whether it was acknowledged. */
export async function put(url: string, key: string, value: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/kv/${key}`, {
      method: "PUT",
      body: value,
      signal: AbortSignal.timeout(10_000),
    });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/** Settings of {@linkcode writers} and {@linkcode preload}. */
export interface LoadOptions {
  /** Writers (connections) at once. */
  readonly connections: number;
  /** Keys written: `bench-0` to `bench-{keys - 1}`. */
  readonly keys: number;
  /** The value written. */
  readonly value: string;
  /** Called with `performance.now()` at each acknowledged write (gap measurements). */
  readonly onAcknowledged?: (nowMs: number) => void;
}

/** Closed-loop writers on `urls` (round robin) until `stop()`; counts acknowledged writes. */
export function writers(urls: readonly string[], options: LoadOptions) {
  let stopped = false;
  let acknowledged = 0;
  const loops = Array.from({ length: options.connections }, async (_, client) => {
    const url = urls[client % urls.length]!;
    while (!stopped) {
      const key = `bench-${Math.floor(Math.random() * options.keys)}`;
      if (await put(url, key, options.value)) {
        acknowledged++;
        options.onAcknowledged?.(performance.now());
      }
    }
  });
  return {
    /** Writes acknowledged so far. */
    get acknowledged() {
      return acknowledged;
    },
    /** Stops the writers once their writes in flight are answered. */
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** Writes every key once, 128 at a time, retrying a refused write up to 5 times. */
export async function preload(
  urls: readonly string[],
  options: Omit<LoadOptions, "connections">,
): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: 128 }, async (_, client) => {
    while (next < options.keys) {
      const key = `bench-${next++}`;
      for (
        let attempt = 0;
        !(await put(urls[client % urls.length]!, key, options.value));
        attempt++
      ) {
        if (attempt >= 5) throw new Error(`Preloading ${key} failed`);
      }
    }
  }));
}
