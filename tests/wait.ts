/**
 * Waiting in tests: on a condition with a deadline, never a bare sleep.
 *
 * @module
 */

/**
 * Waits until `condition` holds, checking every `intervalMs` (5), or fails
 * after `deadlineMs` naming `what` it waited for.
 */
export async function waitFor(
  condition: () => boolean,
  deadlineMs: number,
  what: string,
  intervalMs = 5,
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${deadlineMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
