/**
 * Retention deciders: which peers a replica prunes past when holding
 * everything for them would exceed its retention bound, and whether a
 * replica was pruned past and must install a snapshot.
 *
 * An executed instance is normally kept until every replica has executed it
 * (`progress.ts`), so that a replica that was down can be sent what it
 * missed. A replica away for long would then make every other replica hold
 * every command proposed meanwhile, without bound. Past the bound, peers prune
 * past it instead (etcd compacts its log past a slow follower the same way);
 * when it returns, it finds its peers' prune floors above its own executed
 * prefix (frontier gossip carries both) and installs a snapshot from one of
 * them instead of replaying (membership design card, "Retention").
 *
 * Pruning past a replica is safe for agreement: only committed instances that
 * executed here and at every replica not left behind are pruned, and new
 * dependencies always include the prune floor (`replica.ts`, D0), so no
 * pruned instance is ever missing from the dependencies of a later one. The
 * replica left behind only loses the ability to catch up instance by instance.
 *
 * @module
 */

import type { Deps } from "./deps.ts";

/** What else {@linkcode peersToPrunePast} weighs. */
export interface PrunePastOptions {
  /**
   * Peers whose frontier gossip has not arrived since this replica started:
   * their frontier reads as zero here, which says nothing, so they are not
   * pruned past until `graceOver` (then they are taken as down).
   */
  readonly unheard?: readonly number[];
  /** Whether the grace after this replica's start is over (see `unheard`). */
  readonly graceOver?: boolean;
  /**
   * The positions that are members, voters and learners alike, this replica
   * included (default every position of `lags`): a removed member is never
   * pruned past, and does not count towards `f`.
   */
  readonly members?: readonly number[];
}

/**
 * The peers to prune past: none while the commands held are within
 * `retentionCommands`; beyond it, every peer that alone accounts for at least
 * half of the instances held (it has not executed that many of the instances
 * this replica executed), at most `f` of them (`(n - 1) / 2`, `n` the
 * members: learners count like voters), the furthest
 * behind first. A peer a little behind is not left behind for one far
 * behind, and one that is down is among them unless `f` others are further.
 * A peer not heard from since this replica started is not pruned past until
 * a grace period is over: right after a restart (or a snapshot install)
 * every peer's frontier reads as zero, and pruning past an up-to-date peer
 * would cost it a needless snapshot.
 *
 * @param lags per replica, instances executed here that it has not reported
 *   executing (0 for this replica: `ProgressTracker.executionLag`)
 */
export function peersToPrunePast(
  lags: readonly number[],
  held: { readonly commands: number; readonly instances: number },
  retentionCommands: number,
  options: PrunePastOptions = {},
): number[] {
  if (held.commands < retentionCommands || held.instances === 0) return [];
  const members = options.members ?? lags.map((_, replica) => replica);
  const candidates: number[] = [];
  for (const replica of members) {
    const lag = lags[replica] ?? 0;
    if (options.unheard?.includes(replica) && !options.graceOver) continue;
    if (lag > 0 && 2 * lag >= held.instances) candidates.push(replica);
  }
  // At most f peers, the furthest behind first: what is pruned has then
  // executed at a majority of the members at least. A replica cut off from the others sees
  // every peer's frontier stale, and must not prune past them all.
  const most = Math.floor((members.length - 1) / 2);
  candidates.sort((a, b) => lags[b]! - lags[a]! || a - b);
  return candidates.slice(0, most).sort((a, b) => a - b);
}

/**
 * The peers to ask for a snapshot, if this replica can no longer catch up
 * instance by instance: in some row, some peer it hears from (`heard`)
 * executed past this replica's durably executed prefix, and every such peer
 * reported a prune floor above that prefix, so none of them holds what it
 * misses there (peers behind it there cannot help either). Then every peer
 * whose floor exceeds that prefix somewhere, by the most instances in total
 * first (ties: lowest id); empty otherwise. While one peer ahead still holds
 * what it misses (it kept it for a snapshot it sent, or it did not prune
 * past), the replica asks for commits instead.
 *
 * A peer prunes past a replica only when the retention bound makes it
 * (its floor stays at or below every executed prefix it counts), so this
 * happens to a replica left behind, or one that lost its state. The first
 * source may be unable to give a snapshot (it may itself wait for one,
 * pruned past by another peer): the caller tries the next.
 *
 * @param executed per row, this replica's durably executed prefix
 * @param peers per replica, the executed prefix and the prune floor it
 *   reported (this replica's own entries are ignored)
 * @param heard per replica, whether it was heard from lately (a peer down
 *   since long reports a stale floor, which says nothing)
 */
export function snapshotSources(
  self: number,
  executed: Deps,
  peers: { readonly executed: readonly Deps[]; readonly pruned: readonly Deps[] },
  heard: readonly boolean[] = peers.pruned.map(() => true),
): number[] {
  const peerPruned = peers.pruned;
  let cutOff = false;
  for (let row = 0; row < executed.length && !cutOff; row++) {
    let ahead = 0;
    let past = 0;
    for (let peer = 0; peer < peerPruned.length; peer++) {
      if (peer === self || !heard[peer]) continue;
      // A peer ahead in this row that did not prune past it can send it.
      const pruned = peerPruned[peer]![row]!;
      if (peers.executed[peer]![row]! <= executed[row]! && pruned <= executed[row]!) continue;
      ahead++;
      if (pruned > executed[row]!) past++;
    }
    cutOff = ahead > 0 && past === ahead;
  }
  if (!cutOff) return [];
  const surplus = new Map<number, number>();
  for (let peer = 0; peer < peerPruned.length; peer++) {
    if (peer === self) continue;
    const pruned = peerPruned[peer]!;
    let total = 0;
    for (let row = 0; row < executed.length; row++) {
      total += Math.max(0, pruned[row]! - executed[row]!);
    }
    if (total > 0) surplus.set(peer, total);
  }
  return [...surplus.keys()].sort((a, b) => surplus.get(b)! - surplus.get(a)! || a - b);
}
