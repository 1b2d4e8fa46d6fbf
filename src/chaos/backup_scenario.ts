/**
 * The `backup-restore` chaos scenario: backups taken from live replicas under
 * the workload while a replica is killed and restarted, each folded into the
 * history as a read of every key at the backup's point (so the checker proves
 * the backup linearizable), and the last one restored into a new cluster,
 * whose every replica must then hold exactly the backed-up state.
 *
 * @module
 */

import { fetchBackup } from "../cli/admin_backup.ts";
import { readBackup } from "../kv/backup.ts";
import { answers, startProcessCluster, waitUntil } from "./process_cluster.ts";
import type { NemesisContext, Scenario } from "./scenarios.ts";

/** Milliseconds between backups during the fault phase. */
const BACKUP_EVERY_MS = 2000;

/** Takes one backup from replica `id`, recording it as a read of every workload key. */
async function backupAsReads(
  context: NemesisContext,
  id: number,
  file: string,
  serial: number,
): Promise<boolean> {
  const keys = Array.from({ length: context.keys }, (_, key) => `chaos-${key}`);
  const processes = keys.map((key) => `backup-${serial}-${key}`);
  keys.forEach((key, i) => context.history.invoke(processes[i]!, { f: "get", key }));
  try {
    await fetchBackup(context.cluster.urls[id]!, file, {
      secret: context.cluster.secret,
      timeoutMs: 15_000,
    });
  } catch (error) {
    // A read that failed has no effect: it leaves the history.
    for (const process of processes) context.history.cancel(process);
    context.note(`backup ${serial} from replica ${id} failed: ${(error as Error).message}`);
    return false;
  }
  const backup = await readBackup((await Deno.open(file)).readable);
  const values = new Map(backup.entries.map(([key, entry]) => [key, entry.value]));
  const decoder = new TextDecoder();
  keys.forEach((key, i) => {
    const value = values.get(key);
    context.history.ok(processes[i]!, {
      value: value === undefined ? null : decoder.decode(value),
    });
  });
  context.note(`backup ${serial} from replica ${id}: ${backup.header.keys} keys`);
  return true;
}

/** Starts a new cluster from `file` and requires every replica to hold its state. */
async function restoreAndCompare(context: NemesisContext, file: string): Promise<void> {
  const backup = await readBackup((await Deno.open(file)).readable);
  const restored = await startProcessCluster(3, {
    extraArgs: ["--restore", file],
    readFiles: [file],
  });
  try {
    await waitUntil(async () => {
      const digests = await Promise.all(restored.urls.map(async (url) => {
        const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(3000) });
        return (await response.json()).stateDigest as string;
      }));
      return digests.every((digest) => digest === backup.header.stateDigest);
    }, { deadlineMs: 30_000, what: "the restored cluster to hold the backup's state" });
    // Values too, not only versions (which the digest hashes): a backup of
    // the restored cluster holds exactly the backed-up entries.
    const again = await fetchBackup(restored.urls[0]!, `${file}.restored`, {
      secret: restored.secret,
      timeoutMs: 15_000,
    });
    const copy = await readBackup((await Deno.open(`${file}.restored`)).readable);
    const byKey = (entries: typeof backup.entries) =>
      new Map(entries.map(([key, entry]) => [key, `${entry.version}=${entry.value.toBase64()}`]));
    const restoredEntries = byKey(copy.entries);
    const expected = byKey(backup.entries);
    if (
      restoredEntries.size !== expected.size ||
      [...expected].some(([key, entry]) => restoredEntries.get(key) !== entry)
    ) {
      throw new Error(
        `the restored cluster's entries differ from the backup's (${again.keys} keys)`,
      );
    }
    context.note(
      `restored into a new cluster: state digest ${backup.header.stateDigest} on all, ` +
        `the same ${again.keys} entries`,
    );
  } finally {
    await restored.stop();
  }
}

/** Backups under load and a replica crash, then a restore into a new cluster. */
export const BACKUP_RESTORE: Scenario = {
  name: "backup-restore",
  description: "backups from live replicas under load while one is killed and restarted; " +
    "each checked as a read of every key; the last restored into a new cluster",
  availableDuringFault: true,
  async inject(context) {
    const victim = context.random.int(context.replicas);
    const file = `${context.cluster.root}/backup.jsonl`;
    const start = performance.now();
    let serial = 0;
    let taken = 0;
    let killed = false;
    while (performance.now() - start < context.faultMs) {
      const elapsed = performance.now() - start;
      if (!killed && elapsed > context.faultMs / 3) {
        context.note(`kill replica ${victim}`);
        await context.cluster.kill(victim, "SIGKILL");
        killed = true;
      } else if (
        killed && !context.cluster.running(victim) && elapsed > (context.faultMs * 2) / 3
      ) {
        context.note(`restart replica ${victim}`);
        await context.cluster.start(victim);
        await waitUntil(() => answers(`${context.cluster.urls[victim]}/readyz`), {
          deadlineMs: 20_000,
          what: `replica ${victim} to answer after its restart`,
        });
      }
      // Any running replica, the restarted one included once it is back.
      let source = serial % context.replicas;
      if (!context.cluster.running(source)) source = (source + 1) % context.replicas;
      if (await backupAsReads(context, source, `${file}.${serial}`, serial)) {
        await Deno.rename(`${file}.${serial}`, file);
        taken++;
      }
      serial++;
      await context.sleep(BACKUP_EVERY_MS);
    }
    if (taken === 0) throw new Error("no backup succeeded during the fault phase");
    await restoreAndCompare(context, file);
  },
};
