/**
 * A test harness for the pure core: replicas of single-key commands that
 * deliver every message at once, in order, through each replica's Ready loop
 * (persist, send, execute, advance), with a filter that drops messages.
 *
 * @module
 */

import type { ConflictModel } from "../../src/core/conflict.ts";
import type { Replica } from "../../src/core/replica.ts";
import type { Message, Ready } from "../../src/core/types.ts";

/** A command that reads or writes one key. */
export interface KeyCommand {
  /** The key. */
  readonly key: string;
  /** Whether it writes the key. */
  readonly write: boolean;
}

/** Conflicts of {@linkcode KeyCommand}s: the key, written or read. */
export const keyCommandConflicts: ConflictModel<KeyCommand> = {
  accesses: (command) => [{ key: command.key, write: command.write }],
};

/** Decides whether a message is lost. */
export type Drop = (message: Message<KeyCommand>) => boolean;

/** Replicas that exchange messages at once, recording what each executed and what was sent. */
export class CoreCluster {
  /** The replicas, by id. */
  readonly replicas: Replica<KeyCommand>[];
  /** Per replica, the instances it executed, as `owner.number`, in order. */
  readonly executed: string[][];
  /** Every message sent, dropped ones included. */
  readonly sent: Message<KeyCommand>[] = [];
  /** Called before a message is stepped at its receiver (a clock to observe, say). */
  readonly #beforeStep: (replica: Replica<KeyCommand>) => void;

  /** A cluster of `replicas` (their ids are their indexes). */
  constructor(
    replicas: Replica<KeyCommand>[],
    options: { readonly beforeStep?: (replica: Replica<KeyCommand>) => void } = {},
  ) {
    this.replicas = replicas;
    this.executed = replicas.map(() => []);
    this.#beforeStep = options.beforeStep ?? (() => {});
  }

  /** Runs every replica's Ready loop until nothing moves, delivering messages unless `drop` says not. */
  settle(drop: Drop = () => false): void {
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      for (const replica of this.replicas) {
        while (replica.hasReady()) {
          moved = true;
          const ready: Ready<KeyCommand> = replica.ready();
          for (const execution of ready.executions) {
            this.executed[replica.id]!.push(`${execution.owner}.${execution.number}`);
          }
          replica.advance();
          for (const message of [...ready.earlyMessages, ...ready.messages]) {
            this.sent.push(message);
            if (drop(message)) continue;
            const to = this.replicas[message.to]!;
            this.#beforeStep(to);
            to.step(message);
          }
        }
      }
      if (!moved) return;
    }
    throw new Error("The cluster did not settle in 1000 rounds");
  }
}
