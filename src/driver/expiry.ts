/**
 * Replicated expiry (issue 17 item 3): a replica proposes `expire` commands
 * for the keys whose `expiresAt` passed (`ExpireCommand` of
 * src/kv/txn_commands.ts), so that a key disappears by a replicated delete,
 * identically on every replica. The command names each key with the version
 * that expired and deletes it only if the key still has that version, so a
 * key rewritten after its expiry was found is kept: expiry is deterministic
 * whatever the proposer's clock said.
 *
 * Bounds: at most {@linkcode MAX_EXPIRE_KEYS} keys per command, at most one
 * command in flight per replica, a scan at most every
 * {@linkcode EXPIRY_SCAN_INTERVAL_MS}; a scan reads the state's expiry index
 * (`KvStateMachine.expiredEntries`), which answers at once when nothing is
 * due.
 *
 * Not done N times over: each key has a rank order over the voters, starting
 * at position `hash(key) mod voters` ({@linkcode expiryRank}). The voter of
 * rank 0 proposes at expiry; the voter of rank `r` only once the key is
 * still there `r` graces ({@linkcode EXPIRY_GRACE_MS}) after its expiry, so
 * the keys of a replica that is down still expire, one grace later.
 *
 * The bound this gives: with the key's first-ranked voter up, an expired key
 * is gone within one scan interval plus the commit and execution latency of
 * one command (1 s + a round trip or two: about 1.1 s on a LAN); with it
 * down, one grace more (about 4.1 s); each further voter down in the key's
 * rank order adds another grace. Expiry is by the proposer's wall clock: a
 * replica whose clock runs ahead deletes early by as much.
 *
 * Time comes from the driver's clock (its `wallClockMs`, the clock's reading
 * plus its Unix origin) and scans run on the driver's tick, so this runs in
 * the simulator and on a manual clock as in the process.
 *
 * @module
 */

import type { ExpireCommand } from "../kv/txn_commands.ts";
import { expireCommandProblem, MAX_EXPIRE_KEYS } from "../kv/txn_commands.ts";
import type { KvEntry, KvResult } from "../kv/state_machine.ts";
import type { Answer } from "./waiters.ts";

/** Least time between two scans for expired keys, in ms of the driver's clock. */
export const EXPIRY_SCAN_INTERVAL_MS = 1000;
/** How long after a key's expiry each further voter in its rank order waits before it proposes the delete, ms. */
export const EXPIRY_GRACE_MS = 3000;
/**
 * Most due entries one scan looks at: several commands' worth, so that the
 * keys of other voters (which delete their own) do not hide this voter's.
 */
export const MAX_EXPIRY_CANDIDATES = 4 * MAX_EXPIRE_KEYS;

/** A due entry as the expiry index reports it. */
export interface DueEntry {
  /** State key. */
  readonly key: string;
  /** The version that expired. */
  readonly version: string;
  /** When it expired, ms since the Unix epoch. */
  readonly expiresAt: number;
}

/** Counters of one replica's expiry, for `/metrics` and `/status`. */
export interface ExpiryMetrics {
  /** Expire commands this replica proposed. */
  commandsProposed: number;
  /** Keys those commands named. */
  keysProposed: number;
  /** Keys they deleted (the others had been rewritten, or deleted by another voter's command). */
  keysDeleted: number;
  /** Expire commands refused before proposing or whose outcome stayed unknown (tried again at a later scan). */
  commandsFailed: number;
}

/**
 * FNV-1a over the UTF-16 code units of `key`: cheap and the same on every
 * replica (a rank needs no more than that).
 */
export function keyHash(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/**
 * The rank of voter `self` for `key` among `voters` (ascending ids): 0 for
 * the voter at position `hash(key) mod voters`, 1 for the next one, and so
 * on around; `undefined` if `self` is no voter.
 */
export function expiryRank(
  key: string,
  voters: readonly number[],
  self: number,
): number | undefined {
  const position = voters.indexOf(self);
  if (position < 0) return undefined;
  const first = keyHash(key) % voters.length;
  return (position - first + voters.length) % voters.length;
}

/** What {@linkcode expiryChoice} decides with. */
export interface ExpiryChoiceInput {
  /** Wall-clock time now, ms since the Unix epoch. */
  readonly nowMs: number;
  /** The voters of the epoch, ascending. */
  readonly voters: readonly number[];
  /** This replica's id. */
  readonly self: number;
  /** {@linkcode EXPIRY_GRACE_MS} unless a test says otherwise. */
  readonly graceMs: number;
  /** Most keys to choose ({@linkcode MAX_EXPIRE_KEYS}). */
  readonly limit: number;
}

/**
 * The due entries this voter proposes the delete of now, in the order given:
 * those whose expiry plus `rank × grace` has passed, at most `limit`.
 */
export function expiryChoice(
  due: readonly DueEntry[],
  input: ExpiryChoiceInput,
): { key: string; version: string }[] {
  const chosen: { key: string; version: string }[] = [];
  for (const { key, version, expiresAt } of due) {
    if (chosen.length >= input.limit) break;
    const rank = expiryRank(key, input.voters, input.self);
    if (rank === undefined) return [];
    if (expiresAt + rank * input.graceMs > input.nowMs) continue;
    // A key the command's validation refuses would make the whole command
    // refused at every scan: left out (the index holds curl keys and
    // databases' data keys only, so this is a guard, not a path).
    if (expireCommandProblem({ op: "expire", keys: [{ key, version }] }) !== undefined) continue;
    chosen.push({ key, version });
  }
  return chosen;
}

/** What the proposer needs of its driver. */
export interface ExpiryHost {
  /** This replica's id. */
  readonly id: number;
  /** Wall-clock time now, ms since the Unix epoch, by the driver's clock. */
  wallClockMs(): number;
  /**
   * Whether this replica may propose now: a voter that serves (not joining,
   * installing, retired, leaving or stopped).
   */
  active(): boolean;
  /** The voters of the epoch, ascending. */
  voters(): readonly number[];
  /** The executed state's expired entries (`KvStateMachine.expiredEntries`). */
  expiredEntries(nowMs: number, limit: number): readonly { key: string; version: string }[];
  /** Reads one key of the executed state. */
  read(key: string): KvEntry | undefined;
  /** Submits a command as a client would (admission, batching, the answer at execution). */
  submit(command: Omit<ExpireCommand, "request">, answer: Answer): void;
}

/** Settings of an {@linkcode ExpiryProposer}. */
export interface ExpiryProposerOptions {
  /** Least ms between scans (default {@linkcode EXPIRY_SCAN_INTERVAL_MS}). */
  readonly scanIntervalMs?: number;
  /** Grace per rank, ms (default {@linkcode EXPIRY_GRACE_MS}). */
  readonly graceMs?: number;
}

/** Proposes the deletes of expired keys, one command at a time. */
export class ExpiryProposer {
  /** Counters for `/metrics` and `/status`. */
  readonly metrics: ExpiryMetrics = {
    commandsProposed: 0,
    keysProposed: 0,
    keysDeleted: 0,
    commandsFailed: 0,
  };
  readonly #host: ExpiryHost;
  readonly #scanIntervalMs: number;
  readonly #graceMs: number;
  #inFlight = false;
  /** The command being submitted was refused at once (admission): it was not proposed. */
  #refused = false;
  /** The driver clock's reading before which no scan runs. */
  #nextScanMs = Number.NEGATIVE_INFINITY;

  /** A proposer with nothing in flight; its first scan runs at the first tick. */
  constructor(host: ExpiryHost, options: ExpiryProposerOptions = {}) {
    this.#host = host;
    this.#scanIntervalMs = options.scanIntervalMs ?? EXPIRY_SCAN_INTERVAL_MS;
    this.#graceMs = options.graceMs ?? EXPIRY_GRACE_MS;
  }

  /** Whether an expire command of this replica's waits for its outcome. */
  get inFlight(): boolean {
    return this.#inFlight;
  }

  /**
   * Called on every driver tick with the driver clock's reading: scans when
   * the interval passed and nothing is in flight, and proposes one command
   * for what it finds.
   */
  tick(clockMs: number): void {
    if (this.#inFlight || clockMs < this.#nextScanMs) return;
    this.#nextScanMs = clockMs + this.#scanIntervalMs;
    const host = this.#host;
    if (!host.active()) return;
    const nowMs = host.wallClockMs();
    const found = host.expiredEntries(nowMs, MAX_EXPIRY_CANDIDATES);
    if (found.length === 0) return;
    const due: DueEntry[] = [];
    for (const { key, version } of found) {
      const expiresAt = host.read(key)?.expiresAt;
      if (expiresAt !== undefined) due.push({ key, version, expiresAt });
    }
    const keys = expiryChoice(due, {
      nowMs,
      voters: host.voters(),
      self: host.id,
      graceMs: this.#graceMs,
      limit: MAX_EXPIRE_KEYS,
    });
    if (keys.length === 0) return;
    this.#inFlight = true;
    let submitting = true;
    host.submit({ op: "expire", keys }, {
      resolve: (result: KvResult) => {
        this.#inFlight = false;
        if (result.op === "expire") this.metrics.keysDeleted += result.deleted;
      },
      reject: () => {
        // Refused (no quorum, too much pending: at once, nothing proposed)
        // or outcome unknown: the keys are found again at a later scan if
        // they are still there.
        this.#inFlight = false;
        this.metrics.commandsFailed++;
        if (submitting) this.#refused = true;
      },
    });
    submitting = false;
    if (this.#refused) {
      this.#refused = false;
      return;
    }
    this.metrics.commandsProposed++;
    this.metrics.keysProposed += keys.length;
  }
}
