/**
 * Replacing a replica's state by what its storage holds after a write: a
 * snapshot installed from a peer, or an epoch started here (`epoch.ts`).
 * The write waits until no Ready is in flight (storage takes nothing else
 * during a commit), and the loop and the inputs wait for the write; then the
 * driver rebuilds its core and key-value state from storage, as at a
 * restart. Callbacks, not promise chains: the simulator's storage completes
 * on virtual time and does not chain.
 *
 * @module
 */

import type { Configuration } from "../core/configuration.ts";
import type { KvCommand, ReconfCommand } from "../kv/commands.ts";
import type { Clock } from "../runtime/clock.ts";
import type { LoadedState, ReplicaSnapshot, ReplicaStorage } from "../storage/types.ts";
import type { DriverMetrics } from "./metrics.ts";
import type { ReplicaDriverOptions } from "./options.ts";
import type { ReadyLoop } from "./ready_loop.ts";

/** Own proposals of an epoch that ended here, proposed again in the next one. */
export type Carried = readonly (readonly KvCommand[])[];

/** What {@linkcode StateSwitch} needs of its driver. */
export interface StateSwitchHost {
  /** This replica's id (for logs). */
  readonly id: number;
  /** The driver's settings (`log`). */
  readonly options: ReplicaDriverOptions;
  /** Durable state. */
  readonly storage: ReplicaStorage<KvCommand>;
  /** Time. */
  readonly clock: Clock;
  /** Counters (snapshots installed). */
  readonly metrics: DriverMetrics;
  /** The Ready loop: the write waits until it is idle, and it runs again after. */
  readonly loop: ReadyLoop;
  /**
   * Replaces the driver's core and state by `loaded` (no Ready is in
   * flight); `carried`: see {@linkcode StateSwitch.install}.
   */
  rebuild(loaded: LoadedState<KvCommand>, carried: Carried | undefined): void;
}

/** Replaces a driver's state through its storage, one replacement at a time. */
export class StateSwitch {
  readonly #host: StateSwitchHost;
  #installing = false;

  /** Nothing being replaced. */
  constructor(host: StateSwitchHost) {
    this.#host = host;
  }

  /** Whether the state is being replaced (the loop and the inputs wait). */
  get installing(): boolean {
    return this.#installing;
  }

  /**
   * Installs `snapshot` in storage (atomically), then rebuilds from storage.
   * `carried`: own proposals of an epoch that ended here, proposed again in
   * the new one with their waiters kept (the commands not yet proposed too);
   * without it (a snapshot from a peer), every waiter fails.
   */
  install(
    snapshot: ReplicaSnapshot<KvCommand>,
    carried: Carried | undefined,
    resolve: () => void,
    reject: (error: Error) => void,
  ): void {
    const { storage, clock, options } = this.#host;
    let installedMs = 0;
    this.#replace(
      (loaded, fail) => {
        const started = clock.now();
        storage.install(snapshot).then(() => {
          installedMs = clock.now() - started;
          storage.load().then(loaded, fail);
        }, fail);
      },
      carried,
      (elapsedMs) => {
        this.#host.metrics.snapshotsInstalled++;
        options.log?.(
          `replica ${this.#host.id}: installed a snapshot of ${snapshot.entries.length} keys ` +
            `at ${snapshot.barrier} (executed up to ${snapshot.executedPrefix.join(",")}): ` +
            `storage ${Math.round(installedMs)} ms, reload ${
              Math.round(elapsedMs - installedMs)
            } ms`,
        );
        resolve();
      },
      reject,
    );
  }

  /**
   * Starts the epoch of `reconf` in place (`ReplicaStorage.startEpoch`, which
   * this storage has): storage keeps the state it holds and takes the
   * executions' effects not yet persisted, instead of writing the whole state
   * (`snapshot`, the new epoch's first) again.
   */
  startEpochInPlace(
    reconf: ReconfCommand,
    snapshot: ReplicaSnapshot<KvCommand>,
    carried: Carried,
    failed: (error: Error) => void,
  ): void {
    const { storage, loop, options } = this.#host;
    const next: Configuration = reconf.configuration;
    this.#replace(
      (loaded, fail) =>
        storage.startEpoch!({
          configuration: next,
          effects: loop.pendingEffects(),
        }).then(() =>
          loaded({
            records: [],
            pruneFloor: snapshot.executedPrefix,
            entries: snapshot.entries,
            configuration: next,
          }), fail),
      carried,
      (elapsedMs) =>
        options.log?.(
          `replica ${this.#host.id}: started epoch ${next.epoch} in place at ${reconf.request} ` +
            `(${snapshot.entries.length} keys) in ${Math.round(elapsedMs)} ms`,
        ),
      failed,
    );
  }

  /**
   * Replaces the core and the state by what `write` leaves in storage and
   * hands to `loaded`, once no Ready is in flight; `done` gets the
   * milliseconds it took.
   */
  #replace(
    write: (
      loaded: (state: LoadedState<KvCommand>) => void,
      fail: (error: unknown) => void,
    ) => void,
    carried: Carried | undefined,
    done: (elapsedMs: number) => void,
    reject: (error: Error) => void,
  ): void {
    const { loop, clock } = this.#host;
    this.#installing = true;
    const fail = (error: unknown) => {
      this.#installing = false;
      loop.kick();
      reject(error instanceof Error ? error : new Error(String(error)));
    };
    loop.whenIdleThen(() => {
      const started = clock.now();
      write((loaded) => {
        this.#host.rebuild(loaded, carried);
        this.#installing = false;
        done(clock.now() - started);
        loop.kick();
      }, fail);
    });
  }
}
