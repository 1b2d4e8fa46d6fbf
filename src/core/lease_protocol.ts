/**
 * The lease handlers of a replica (`lease.ts` has the argument): grants and
 * renewals, notices to holders outside a write's quorum, the gate before a
 * write is decided, and the verdict on a local read. Functions over the
 * replica's state, called by `Replica`.
 *
 * @module
 */

import { type Access, accessesConflict, batchAccesses } from "./conflict.ts";
import { emptyInstanceDeps } from "./deps.ts";
import { instanceKey, keyNumber, keyOwner } from "./instance.ts";
import type { Lead } from "./lead.ts";
import { leasedTo, releaseAt } from "./lease.ts";
import type { LeaseReadVerdict } from "./lease_state.ts";
import type { ReplicaState } from "./replica_state.ts";
import { type Message, NOP, Phase } from "./types.ts";

/**
 * Most instances of a row a local read looks at above what is applied here;
 * a holder further behind holds the read (its grants' frontiers keep it
 * closer than this while its lease is valid).
 */
const MAX_READ_WALK = 4096;

/** How long a lead waits on a holder before it sends the notice again (ms). */
const NOTICE_RETRY_MS = 200;

/** A grantor handles a holder's request: promise, and answer with its frontier. */
export function onLeaseRequest<C>(
  s: ReplicaState<C>,
  message: Message<C> & { type: "leaserequest" },
): void {
  if (!s.isVoter) return;
  const { from, seq } = message;
  const granted = s.leases.grant(from, s.progress.pruneFloor, message.heard === true);
  if (granted === undefined) return;
  const { frontier, empty } = granted;
  // Lease traffic needs nothing durable (promises and grants live in
  // memory; a restart forgets them by the restart rule), so it leaves
  // before this Ready's records are written, not after an fsync.
  s.out.sendEarly({
    type: "leasegrant",
    from: s.id,
    to: from,
    seq,
    frontier,
    ...(empty ? { empty: true } : {}),
  });
}

/** A holder takes a grant. */
export function onLeaseGrant<C>(
  s: ReplicaState<C>,
  message: Message<C> & { type: "leasegrant" },
): void {
  s.leases.onGrant(message.from, message.seq, message.frontier, {
    executed: s.progress.executed,
    ...(message.empty === true ? { empty: true } : {}),
  });
  if (message.empty === true) return;
  // The frontier names instances this replica may not know of: catching up
  // on them (asking for their commits) is what lets the grant count.
  for (let row = 0; row < s.n; row++) s.housekeeping.noteExists(row, message.frontier[row]!);
}

/**
 * A holder told of a write outside its quorum: it holds reads of the write's
 * keys until the write executes here, and acknowledges, so the coordinator
 * may decide it. A write already applied here is acknowledged at once.
 */
export function onLeaseNotice<C>(
  s: ReplicaState<C>,
  message: Message<C> & { type: "leasenotice" },
): void {
  if (message.command === NOP) return;
  const key = instanceKey(message.owner, message.number);
  const instance = s.instances.get(key);
  if (instance?.applied !== true) {
    const accesses = instance?.accesses ?? batchAccesses(s.conflicts, message.command);
    if (!s.leases.notice(key, accesses)) return;
  }
  // Early: the acknowledgement promises only what this process holds in
  // memory (reads of the keys wait); a restart drops its grants with it.
  s.out.sendEarly({
    type: "leaseack",
    from: s.id,
    to: message.from,
    owner: message.owner,
    number: message.number,
  });
}

/** Notes what a reply (PreAcceptOK or AcceptOK) from `from` says about holders. */
export function noteLeaseReply<C>(
  s: ReplicaState<C>,
  lead: Lead<C>,
  from: number,
  naming: { readonly holders?: number; readonly leaseMs?: number },
): void {
  // A replier holds the write now (it recorded it before replying): reads
  // of its keys there wait for it. And it hears this replica: grant it again.
  lead.leaseKnown |= 1 << from;
  s.leases.heardFrom(from);
  if (naming.holders === undefined || naming.holders === 0) return;
  lead.leaseNamed |= naming.holders;
  const until = releaseAt(s.leases.now, naming.leaseMs ?? 0, s.leases.configuration);
  if (until > lead.leaseReleaseAt) lead.leaseReleaseAt = until;
}

/**
 * Sends the write `lead` coordinates to the holders of its keys outside
 * `targets` (those sent a PreAccept or Accept know of it anyway), in
 * parallel with the first round, so that their acknowledgements do not add
 * a round trip.
 */
export function sendLeaseNotices<C>(s: ReplicaState<C>, lead: Lead<C>, targets: number): void {
  if (!s.leases.enabled) return;
  const instance = lead.instance;
  if (instance.command === undefined || instance.command === NOP) return;
  if (instance.accesses === undefined) return;
  const holders = s.leases.holdersOf(instance.accesses) & s.memberPeers & ~targets &
    ~lead.leaseNoticed;
  if (holders === 0) return;
  noticeTo(s, lead, holders);
}

function noticeTo<C>(s: ReplicaState<C>, lead: Lead<C>, holders: number): void {
  const instance = lead.instance;
  lead.leaseNoticed |= holders;
  lead.leaseNoticedAt = s.leases.now;
  // Early, with the PreAccepts: a notice of a write whose record is then
  // lost in a crash only holds reads until recovery decides it (a Nop).
  s.sendTo(holders, (to) => ({
    type: "leasenotice",
    from: s.id,
    to,
    owner: instance.owner,
    number: instance.number,
    command: instance.command!,
  }), { early: true });
}

/**
 * The gate before `lead`'s write is decided (fast path, or an Accept
 * quorum): every holder named by a grantor of the deciding quorum,
 * this coordinator included, knows of it, or the promises that named it have
 * run out. Otherwise notices go to the silent holders, the lead waits
 * (`leaseWaiting`), and false is returned.
 */
export function leaseGateOpen<C>(s: ReplicaState<C>, lead: Lead<C>, timedOut: boolean): boolean {
  const leases = s.leases;
  if (!leases.enabled) return true;
  const instance = lead.instance;
  if (instance.command === undefined || instance.command === NOP) return true;
  if (instance.accesses === undefined) return true;
  const own = leases.named(instance.accesses);
  const self = 1 << s.id;
  const missing = (lead.leaseNamed | own.holders) & ~lead.leaseKnown & ~self;
  if (missing === 0) {
    s.leaseWaiting.delete(lead);
    noteHoldEnded(s, lead);
    return true;
  }
  const until = Math.max(
    lead.leaseReleaseAt,
    leases.now + leases.promiseRemaining(missing & own.holders),
  );
  if (leases.now >= until) {
    // Every promise that named a silent holder has run out: a grant it
    // gets from now on carries a frontier past this write (`lease.ts`).
    leases.stats.writesReleased++;
    s.leaseWaiting.delete(lead);
    noteHoldEnded(s, lead);
    return true;
  }
  s.leaseWaiting.add(lead);
  if (!lead.leaseHeld) {
    leases.stats.writesHeldForHolders++;
    lead.leaseHeldSince = leases.now;
  }
  lead.leaseHeld = true;
  lead.leaseTimedOut ||= timedOut;
  const fresh = missing & ~lead.leaseNoticed;
  if (fresh !== 0) {
    noticeTo(s, lead, fresh);
  } else if (leases.now - lead.leaseNoticedAt >= NOTICE_RETRY_MS) {
    // Noticed and still silent: renewing their promises would only keep
    // this write waiting (a holder that is heard but hears nothing goes on
    // asking), so they get none until they show they hear this replica
    // (`LeaseState.heardFrom`).
    leases.withholdFrom(missing);
    noticeTo(s, lead, missing);
  }
  return false;
}

/** A decision the gate held is free: counts the time it waited on holders. */
function noteHoldEnded<C>(s: ReplicaState<C>, lead: Lead<C>): void {
  if (!lead.leaseHeld || lead.leaseHeldSince < 0) return;
  s.leases.stats.writeHoldMs += s.leases.now - lead.leaseHeldSince;
  lead.leaseHeldSince = -1;
}

/**
 * Whether this replica may read `accesses` locally now, and if not why.
 * The caller reads the state, then reads the clock and checks
 * {@linkcode leaseStillValid} (the clock read after the state: riak_ensemble #41).
 */
export function readVerdict<C>(
  s: ReplicaState<C>,
  accesses: readonly Access[],
  now: number,
): LeaseReadVerdict {
  const leases = s.leases;
  if (!leases.enabled) return { verdict: "refuse", reason: "disabled" };
  if (!leasedTo(accesses, leases.configuration.rules, s.id, s.memberMask)) {
    return { verdict: "refuse", reason: "not-leased" };
  }
  leases.observe(now);
  if (!leases.leaseValid(now, s.progress.executed)) {
    return { verdict: "refuse", reason: "no-lease" };
  }
  const pending: [number, number][] = [];
  for (const key of leases.conflictingNotices(accesses)) {
    const instance = s.instances.get(key);
    if (instance?.applied === true) {
      leases.forgetNotice(key);
      continue;
    }
    pending.push([keyOwner(key), keyNumber(key)]);
  }
  // Every write to the keys this replica knows of and has not applied (the
  // lease makes it know every decided one). Not only the latest of each
  // row: a later write may have been replaced by a Nop, which orders
  // nothing, and been applied before an earlier one (the executor skips
  // Nops for the same reason; tests/core/lease_read_nop_test.ts).
  // Only rows above the executed frontier matter here, so the small map of
  // recent keys answers (`ConflictIndex.collectRecent`, swept each tick).
  const latest = emptyInstanceDeps(s.n);
  s.index.collectRecent(accesses, latest);
  const executed = s.progress.executed;
  for (let row = 0; row < s.n; row++) {
    const lowest = Math.max(executed[row]!, latest[row]! - MAX_READ_WALK);
    if (lowest > executed[row]!) pending.push([row, lowest]); // too far behind: hold
    for (let number = latest[row]!; number > lowest; number--) {
      const instance = s.instances.get(instanceKey(row, number));
      if (instance === undefined || instance.applied || instance.accesses === undefined) continue;
      if (instance.phase === Phase.Committed && instance.command === NOP) continue;
      if (accessesConflict(instance.accesses, accesses)) pending.push([row, number]);
    }
  }
  return pending.length === 0 ? { verdict: "serve" } : { verdict: "hold", pending };
}

/** Whether the lease still holds at `now`, read after the state was. */
export function leaseStillValid<C>(s: ReplicaState<C>, now: number): boolean {
  s.leases.observe(now);
  return s.leases.leaseValid(now, s.progress.executed);
}
