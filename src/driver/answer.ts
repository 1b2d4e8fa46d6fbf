/**
 * The answer rule: when a client's command may be answered.
 *
 * - A blind write (a PUT without a condition, a DELETE without one) is
 *   answered at commit: once the Ready that reports its instance decided has
 *   been persisted, the decision is recoverable from what a quorum persisted
 *   (EPaxos* recovery, Figure 5; the coordinator's own commit record is in
 *   that Ready where recovery needs it), so the write will execute on every
 *   replica, with the version its instance and position give it. This is
 *   EPaxos's own reply rule (SOSP'13 §4.3: the reference implementation
 *   replies at commit unless asked to delay). It is linearizable: any later
 *   command that conflicts with the write depends on its instance and so
 *   executes after it, everywhere.
 * - Everything else (reads, lists, conditional writes) has a result only the
 *   execution computes, so it is answered after execution.
 *
 * @module
 */

import { NOP, type Payload } from "../core/types.ts";
import type { KvCommand } from "../kv/commands.ts";
import { type KvResult, versionOf } from "../kv/state_machine.ts";

/** Whether `command` is a blind write: its result is known once its instance is decided. */
export function isBlindWrite(command: KvCommand): boolean {
  return (command.op === "put" || command.op === "delete") && command.ifVersion === undefined;
}

/** A command of a decided batch whose client may be answered now, with its result. */
export interface CommitAnswer {
  /** The command's request id. */
  readonly request: string;
  /** Its result, as execution will compute it. */
  readonly result: KvResult;
}

/**
 * The answers a decided instance of row `owner` allows before execution: one
 * per blind write of the payload, none for a Nop (recovery replaced the batch;
 * its commands are proposed again or abandoned, never answered from here).
 */
export function answersAtCommit(
  owner: number,
  number: number,
  payload: Payload<KvCommand>,
): CommitAnswer[] {
  if (payload === NOP) return [];
  const answers: CommitAnswer[] = [];
  for (let index = 0; index < payload.length; index++) {
    const command = payload[index]!;
    if (!isBlindWrite(command)) continue;
    answers.push({
      request: command.request,
      result: command.op === "put"
        ? { op: "put", ok: true, version: versionOf(owner, number, index) }
        : { op: "delete", ok: true },
    });
  }
  return answers;
}
