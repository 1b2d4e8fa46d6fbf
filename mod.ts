/**
 * epaxos-kv: a leaderless, strongly consistent key-value store replicated with
 * Egalitarian Paxos (EPaxos*, the proved variant of Ryabinin, Gotsman and
 * Sutra, OPODIS 2025).
 *
 * The core ({@linkcode Replica}) is a pure state machine in the manner of
 * etcd's raft library: it takes proposals, messages and ticks and returns a
 * {@linkcode Ready} of records to persist, messages to send and commands to
 * execute. The key-value state machine ({@linkcode KvStateMachine}) supplies
 * which commands conflict ({@linkcode kvConflicts}).
 *
 * @example Drive three replicas by hand
 * ```ts
 * import { kvConflicts, type KvCommand, Replica } from "./mod.ts";
 *
 * const replicas = [0, 1, 2].map((id) =>
 *   new Replica<KvCommand>({ id, replicas: 3, conflicts: kvConflicts })
 * );
 * replicas[0].propose([{ op: "put", request: "r1", key: "a", value: new Uint8Array([1]) }]);
 * // Loop: for each replica with hasReady(), persist ready.records, send
 * // ready.messages with step(), apply ready.executions, then advance().
 * ```
 *
 * @module
 */

export {
  DEFAULT_TIMING,
  type RecoveryOutcomes,
  Replica,
  type ReplicaOptions,
  type ReplicaStats,
  type RestoredState,
  type TimingOptions,
} from "./src/core/replica.ts";
export {
  type Abandoned,
  type Execution,
  type InstanceRecord,
  type Message,
  MESSAGE_TYPES,
  NOP,
  type Payload,
  Phase,
  type Ready,
  type StorageRecord,
} from "./src/core/types.ts";
export { type Access, accessesConflict, type ConflictModel } from "./src/core/conflict.ts";
export { type Deps, depsContain, depsEqual, depsUnion } from "./src/core/deps.ts";
export { ballotOwner, nextBallot, type QuorumSizes, quorumSizes } from "./src/core/quorum.ts";
export {
  type CommandDescriber,
  describeExecution,
  describeMessage,
  describePayload,
  describePhase,
  describeReady,
  describeRecord,
  describeStorageRecord,
} from "./src/core/describe.ts";
export {
  type DeleteCommand,
  describeKvCommand,
  type GetCommand,
  isKvCommand,
  keyProblem,
  type KvCommand,
  kvConflicts,
  type ListCommand,
  MAX_KEY_BYTES,
  MAX_LIST_LIMIT,
  MAX_VALUE_BYTES,
  type PutCommand,
  type VersionCondition,
} from "./src/kv/commands.ts";
export {
  type AppliedInstance,
  type KvEntry,
  type KvMutation,
  type KvResult,
  KvStateMachine,
  versionOf,
} from "./src/kv/state_machine.ts";
export type { LoadedState, PersistBatch, ReplicaStorage } from "./src/storage/types.ts";
export { MemoryStorage } from "./src/storage/memory.ts";
export { type Clock, ManualClock, SystemClock } from "./src/runtime/clock.ts";
export { type Random, SeededRandom, SystemRandom } from "./src/runtime/random.ts";
export { deriveConfig, type SimConfig, type SimRequest } from "./src/sim/config.ts";
export { type SimResult, simulate } from "./src/sim/simulation.ts";
export { checkHistoryText, checkKvEvents, HistoryRecorder, type KvEvent } from "./src/check/mod.ts";
export * from "./src/client/mod.ts";
export {
  DenoKvStorage,
  type DenoKvStorageOptions,
  openDenoKvStorage,
} from "./src/storage/deno_kv/mod.ts";
export { type AppOptions, createApp } from "./src/server/app.ts";
export { ReplicaDriver, type ReplicaDriverOptions } from "./src/driver/driver.ts";
export { HttpTransport, type HttpTransportOptions } from "./src/transport/http.ts";
export { MemoryNetwork } from "./src/transport/memory.ts";
export type { PeerStats, PeerTransport } from "./src/transport/types.ts";
export { type ClusterConfig, parseClusterConfig } from "./src/server/config.ts";
