/**
 * Fault patterns more than one scenario applies (`scenarios.ts`,
 * `kv_scenarios.ts`), in a module of their own so that neither imports the
 * other's values.
 *
 * @module
 */

import type { NemesisContext } from "./scenarios.ts";

/**
 * Blocks the directed links `from -> to` for which `blocked(from, to)` holds,
 * and clears every other link's faults.
 */
export async function blockLinks(
  context: NemesisContext,
  blocked: (from: number, to: number) => boolean,
): Promise<void> {
  for (let from = 0; from < context.replicas; from++) {
    const links: Record<string, { blocked: boolean }> = {};
    for (let to = 0; to < context.replicas; to++) {
      if (from !== to && blocked(from, to)) links[String(to)] = { blocked: true };
    }
    await context.setFaults(from, { links });
  }
}

/**
 * SIGKILL a random replica, wait a quarter of the fault phase, restart it,
 * wait another quarter; `rounds` times.
 */
export async function killRandomReplicas(context: NemesisContext, rounds: number): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const victim = context.random.int(context.replicas);
    context.note(`SIGKILL replica ${victim}`);
    await context.cluster.kill(victim, "SIGKILL");
    await context.sleep(context.faultMs / 4);
    context.note(`restart replica ${victim}`);
    await context.cluster.start(victim);
    await context.sleep(context.faultMs / 4);
  }
}
