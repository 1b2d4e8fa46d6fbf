/**
 * The answer rule: when a client's command may be answered.
 *
 * Every command, blind writes included, is answered after it has executed on
 * the replica that proposed it. Answering a blind write at commit (EPaxos's
 * own rule in SOSP'13, once the decision is durable) is linearizable only
 * when commands of one strongly connected component of the dependency graph
 * execute in an order that puts a command committed earlier before one
 * proposed later: the original protocol's agreed `seq` did that. EPaxos*
 * drops `seq` and orders a component by instance id, and then a later read
 * can join the write's component through a third, slower command and execute
 * before it. The simulator finds such a history in a few dozen seeds (seed 4,
 * n = 3, message loss only: put 1.21 committed and answered; get 2.17,
 * proposed after the answer, depends on it, but 1.20, uncommitted when 1.21
 * was decided, then committed depending on 2.17, and the component runs
 * 2.17, 1.20, 1.21). {@linkcode answersAtCommit} computes the answers that
 * broken rule would give, for the simulator's negative test.
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
 * The answers answering at commit would give for a decided instance of row
 * `owner`: one per blind write of the payload, none for a Nop (recovery
 * replaced the batch; its commands are proposed again or abandoned). Used only
 * by the unsafe rule the simulator must catch; see the module comment.
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
