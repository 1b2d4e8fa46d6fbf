/**
 * A fault layer on the peer transport, for tests only: per directed link (this
 * replica to one peer), drop, duplicate, delay, reorder, or block batches. It
 * sits between encoding and the HTTP request (`HttpTransport`'s `interpose`),
 * and a replica mounts its control route only when started with the explicit
 * `--enable-fault-injection` flag; a normal start never has it.
 *
 * Semantics, per batch sent to the peer:
 * - `blocked`: nothing is delivered and the request fails after a short wait,
 *   as with an unreachable host (the transport backs off and retries). One-way
 *   blocks make asymmetric partitions.
 * - `drop`: the batch is lost after "sending": the sender believes it left.
 * - `delayMs` (plus up to `jitterMs`): one-way delay before delivery, and the
 *   same again before the answer returns, so measured round trips include it.
 * - `reorder`: with this probability, up to `reorderMs` more delay, so later
 *   batches overtake it (several requests are in flight per peer).
 * - `duplicate`: the batch is delivered a second time.
 *
 * @module
 */

import type { Random } from "../runtime/random.ts";

/** Faults on one directed link. Rates are probabilities per batch. */
export interface LinkFaults {
  /** Probability that a batch is lost. */
  readonly drop?: number;
  /** Probability that a batch is delivered twice. */
  readonly duplicate?: number;
  /** One-way delay in milliseconds (applied out and back). */
  readonly delayMs?: number;
  /** Up to this much extra random delay per batch. */
  readonly jitterMs?: number;
  /** Probability of an extra delay of up to `reorderMs`. */
  readonly reorder?: number;
  /** The extra delay of a reordered batch (default 50 ms). */
  readonly reorderMs?: number;
  /** Whether nothing gets through. */
  readonly blocked?: boolean;
}

/** The whole fault configuration of one replica's outgoing links. */
export interface FaultConfig {
  /** Faults for every link without its own entry. */
  readonly default?: LinkFaults;
  /** Faults per peer id. */
  readonly links?: Readonly<Record<string, LinkFaults>>;
}

const RATE_FIELDS = ["drop", "duplicate", "reorder"] as const;
const DURATION_FIELDS = ["delayMs", "jitterMs", "reorderMs"] as const;

/** Checks a fault configuration received over HTTP; returns it or a reason. */
export function parseFaultConfig(
  value: unknown,
  replicas: number,
): { ok: true; config: FaultConfig } | { ok: false; reason: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, reason: "Fault configuration must be an object" };
  }
  const record = value as Record<string, unknown>;
  const checkLink = (link: unknown, where: string): string | undefined => {
    if (typeof link !== "object" || link === null || Array.isArray(link)) {
      return `${where} must be an object`;
    }
    const faults = link as Record<string, unknown>;
    for (const key of Object.keys(faults)) {
      if (![...RATE_FIELDS, ...DURATION_FIELDS, "blocked"].includes(key)) {
        return `${where}.${key} is unknown`;
      }
    }
    for (const field of RATE_FIELDS) {
      const rate = faults[field];
      if (rate !== undefined && (typeof rate !== "number" || !(rate >= 0 && rate <= 1))) {
        return `${where}.${field} must be a probability from 0 to 1`;
      }
    }
    for (const field of DURATION_FIELDS) {
      const duration = faults[field];
      if (
        duration !== undefined &&
        (typeof duration !== "number" || !(duration >= 0 && duration <= 60_000))
      ) {
        return `${where}.${field} must be from 0 to 60000 ms`;
      }
    }
    if (faults.blocked !== undefined && typeof faults.blocked !== "boolean") {
      return `${where}.blocked must be a boolean`;
    }
    return undefined;
  };
  for (const key of Object.keys(record)) {
    if (key !== "default" && key !== "links") return { ok: false, reason: `Unknown field ${key}` };
  }
  if (record.default !== undefined) {
    const problem = checkLink(record.default, "default");
    if (problem !== undefined) return { ok: false, reason: problem };
  }
  if (record.links !== undefined) {
    if (typeof record.links !== "object" || record.links === null) {
      return { ok: false, reason: "links must be an object keyed by peer id" };
    }
    for (const [peer, link] of Object.entries(record.links)) {
      const id = Number(peer);
      if (!Number.isInteger(id) || id < 0 || id >= replicas) {
        return { ok: false, reason: `links.${peer} is not a peer` };
      }
      const problem = checkLink(link, `links.${peer}`);
      if (problem !== undefined) return { ok: false, reason: problem };
    }
  }
  return { ok: true, config: record as FaultConfig };
}

/** Applies a fault configuration to outgoing batches. */
export class FaultInjector {
  #config: FaultConfig = {};
  readonly #random: Random;
  readonly #sleep: (ms: number) => Promise<void>;
  /** Batches affected, by kind, for the control route. */
  readonly counts = { dropped: 0, duplicated: 0, delayed: 0, blocked: 0 };

  /** Running estimate of how late timers fire, in milliseconds. */
  #lateness = 1;

  /** Creates an injector with no faults; `sleep` replaces real timers in tests. */
  constructor(random: Random, sleep?: (ms: number) => Promise<void>) {
    this.#random = random;
    this.#sleep = sleep ?? ((ms) => this.#calibratedSleep(ms));
  }

  /**
   * Sleeps `ms` on average: timers fire late (about a millisecond, more under
   * load), which would make every emulated link slower than its matrix says,
   * so each wait is shortened by the lateness measured so far.
   */
  async #calibratedSleep(ms: number): Promise<void> {
    const wait = Math.max(0, ms - this.#lateness);
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, wait));
    const observed = performance.now() - started - wait;
    this.#lateness += (Math.min(Math.max(observed, 0), 20) - this.#lateness) / 16;
  }

  /** The current configuration. */
  get config(): FaultConfig {
    return this.#config;
  }

  /** Replaces the configuration. */
  set(config: FaultConfig): void {
    this.#config = config;
  }

  /** Removes every fault. */
  clear(): void {
    this.#config = {};
  }

  /** The faults on the link to `peer`. */
  faultsFor(peer: number): LinkFaults | undefined {
    return this.#config.links?.[String(peer)] ?? this.#config.default;
  }

  /** The `interpose` hook of `HttpTransport`. */
  async interpose(peer: number, deliver: () => Promise<boolean>): Promise<boolean> {
    const faults = this.faultsFor(peer);
    if (faults === undefined) return await deliver();
    const random = this.#random;
    if (faults.blocked) {
      this.counts.blocked++;
      await this.#sleep(200);
      return false;
    }
    if ((faults.drop ?? 0) > 0 && random.next() < faults.drop!) {
      this.counts.dropped++;
      return true;
    }
    let delay = (faults.delayMs ?? 0) + random.next() * (faults.jitterMs ?? 0);
    if ((faults.reorder ?? 0) > 0 && random.next() < faults.reorder!) {
      delay += random.next() * (faults.reorderMs ?? 50);
    }
    if (delay > 0) {
      this.counts.delayed++;
      await this.#sleep(delay);
    }
    const delivered = await deliver();
    if ((faults.duplicate ?? 0) > 0 && random.next() < faults.duplicate!) {
      this.counts.duplicated++;
      deliver().catch(() => {});
    }
    if ((faults.delayMs ?? 0) > 0) await this.#sleep(faults.delayMs!);
    return delivered;
  }
}
