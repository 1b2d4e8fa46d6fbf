/**
 * One-line renderings of messages, records and Readies, in the manner of etcd
 * raft's `DescribeMessage`: deterministic text for logs, golden scenario
 * transcripts and the simulator's failure reports.
 *
 * @module
 */

import type { Access } from "./conflict.ts";
import { describeDeps, describeInstanceDeps } from "./deps.ts";
import { describeId } from "./instance.ts";
import {
  type Execution,
  type InstanceRecord,
  type Message,
  NOP,
  type Payload,
  type Ready,
  type StorageRecord,
} from "./types.ts";

/** Renders a command for `describe*` output; the default shows only the batch size. */
export type CommandDescriber<C> = (command: C) => string;

const PHASE_NAMES = ["initial", "preaccepted", "accepted", "committed"] as const;

/** The name of a phase. */
export function describePhase(phase: number): string {
  return PHASE_NAMES[phase] ?? `phase${phase}`;
}

/** Renders a payload: `nop`, or the commands (or their count). */
export function describePayload<C>(
  payload: Payload<C> | undefined,
  describeCommand?: CommandDescriber<C>,
): string {
  if (payload === undefined) return "-";
  if (payload === NOP) return "nop";
  if (describeCommand === undefined) return `${payload.length}cmd`;
  return `{${payload.map(describeCommand).join(", ")}}`;
}

/** Renders an access: `r(k)` for a read of key `k`, `w[a,b)` for a write of a span. */
export function describeAccess(access: Access): string {
  const kind = access.write ? "w" : "r";
  return access.end === undefined
    ? `${kind}(${access.key})`
    : `${kind}[${access.key},${access.end.replaceAll("\uffff", "~")})`;
}

/** Renders one message as a line, e.g. `0->1 preaccept 0.3 {put(a=1B)} deps=[0 2 0]`. */
export function describeMessage<C>(
  message: Message<C>,
  describeCommand?: CommandDescriber<C>,
): string {
  const head = `${message.from}->${message.to} ${message.type}`;
  if (message.type === "frontier") {
    return `${head} executed=${describeDeps(message.executed)} pruned=${
      describeDeps(message.pruned)
    } highest=${message.highest}`;
  }
  if (message.type === "leaserequest") {
    return `${head} seq=${message.seq}${message.heard === true ? " heard" : ""}`;
  }
  if (message.type === "leasegrant") {
    return `${head} seq=${message.seq} frontier=${describeDeps(message.frontier)}${
      message.empty === true ? " empty" : ""
    }`;
  }
  if (message.type === "readdeps") {
    return `${head} seq=${message.seq} ${message.accesses.map(describeAccess).join(" ")}`;
  }
  if (message.type === "readdepsok") {
    return `${head} seq=${message.seq} deps=${describeDeps(message.deps)}`;
  }
  const id = describeId(message.owner, message.number);
  const named = (holders: number | undefined, leaseMs: number | undefined) =>
    holders === undefined || holders === 0
      ? ""
      : ` holders=${holders.toString(2)} lease=${leaseMs}ms`;
  const payload = (command: Payload<C>) => describePayload(command, describeCommand);
  switch (message.type) {
    case "preaccept":
      return `${head} ${id} ${payload(message.command)} deps=${describeInstanceDeps(message.deps)}`;
    case "preacceptok":
      return `${head} ${id} deps=${describeInstanceDeps(message.deps)}${
        named(message.holders, message.leaseMs)
      }`;
    case "accept":
    case "commit":
    case "validate":
      return `${head} ${id} b=${message.ballot} ${payload(message.command)} deps=${
        describeInstanceDeps(message.deps)
      }`;
    case "acceptok":
      return `${head} ${id} b=${message.ballot}${named(message.holders, message.leaseMs)}`;
    case "recover":
    case "nack":
      return `${head} ${id} b=${message.ballot}`;
    case "leasenotice":
      return `${head} ${id} ${payload(message.command)}`;
    case "leaseack":
      return `${head} ${id}`;
    case "recoverok":
      return `${head} ${id} b=${message.ballot} abal=${message.acceptedBallot} ${
        describePhase(message.phase)
      } ${describePayload(message.command, describeCommand)} deps=${
        describeInstanceDeps(message.deps)
      } init=${describeInstanceDeps(message.initialDeps)}`;
    case "validateok": {
      const invalidators: string[] = [];
      for (let i = 0; i + 2 < message.invalidators.length; i += 3) {
        invalidators.push(
          `${describeId(message.invalidators[i]!, message.invalidators[i + 1]!)}:${
            describePhase(message.invalidators[i + 2]!)
          }`,
        );
      }
      return `${head} ${id} b=${message.ballot} I={${invalidators.join(" ")}}`;
    }
    case "waiting":
      return `${head} ${id} k=${message.rmaxSize}`;
    case "commitrequest":
      return `${head} ${id} count=${message.count}`;
  }
}

/** Renders an instance record as a line, e.g. `0.3 committed b=0 abal=0 {..} deps=[..]`. */
export function describeRecord<C>(
  record: InstanceRecord<C>,
  describeCommand?: CommandDescriber<C>,
): string {
  const initial = record.initialDeps === undefined
    ? ""
    : ` init=${describeInstanceDeps(record.initialDeps)}`;
  return `${describeId(record.owner, record.number)} ${
    describePhase(record.phase)
  } b=${record.ballot} abal=${record.acceptedBallot} ${
    describePayload(record.command, describeCommand)
  } deps=${describeInstanceDeps(record.deps)}${initial}${record.executed ? " executed" : ""}`;
}

/** Renders a storage record as a line. */
export function describeStorageRecord<C>(
  record: StorageRecord<C>,
  describeCommand?: CommandDescriber<C>,
): string {
  switch (record.kind) {
    case "instance":
      return `persist ${describeRecord(record, describeCommand)}`;
    case "delete":
      return record.from === record.to
        ? `delete ${describeId(record.owner, record.from)}`
        : `delete ${describeId(record.owner, record.from)}..${record.to}`;
    case "floor":
      return `floor ${describeDeps(record.pruneFloor)}`;
  }
}

/** Renders an execution as a line. */
export function describeExecution<C>(
  execution: Execution<C>,
  describeCommand?: CommandDescriber<C>,
): string {
  return `execute ${describeId(execution.owner, execution.number)} ${
    describePayload(execution.command, describeCommand)
  }${execution.local ? " local" : ""}`;
}

/** Renders a Ready as lines: early messages, records, then messages, then executions. */
export function describeReady<C>(ready: Ready<C>, describeCommand?: CommandDescriber<C>): string[] {
  const lines: string[] = [];
  for (const message of ready.earlyMessages) {
    lines.push(`send early ${describeMessage(message, describeCommand)}`);
  }
  for (const record of ready.records) lines.push(describeStorageRecord(record, describeCommand));
  for (const message of ready.messages) {
    lines.push(`send ${describeMessage(message, describeCommand)}`);
  }
  for (const execution of ready.executions) {
    lines.push(describeExecution(execution, describeCommand));
  }
  for (const abandoned of ready.abandoned) {
    lines.push(`abandon ${abandoned.commands.length}cmd: ${abandoned.reason}`);
  }
  return lines;
}
