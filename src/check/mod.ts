/**
 * The project's linearizability checker: Wing & Gong's search with Lowe's
 * state cache, run per key, with models for a register, porcupine's
 * get / put / append store and this project's get / put / delete / cas store,
 * and parsers for jepsen-etcd logs, porcupine's EDN kv histories and this
 * project's JSON-lines histories (documented in `README.md` beside this file).
 *
 * @example Check a recorded history in memory
 * ```ts
 * import { HistoryRecorder } from "./mod.ts";
 *
 * const recorder = new HistoryRecorder();
 * recorder.invoke(0, { f: "put", key: "a", value: "v1" });
 * recorder.ok(0);
 * recorder.invoke(1, { f: "get", key: "a" });
 * recorder.ok(1, { value: "v1" });
 * recorder.check().verdict; // "linearizable"
 * ```
 *
 * @module
 */

export { HistoryParseError } from "./assemble.ts";
export { Bitset } from "./bitset.ts";
export {
  checkOperations,
  type CheckOptions,
  type CheckResult,
  DEFAULT_MAX_STEPS_PER_KEY,
  describeCheckResult,
  type KeyCheckResult,
  type Verdict,
} from "./checker.ts";
export { describeOrigin, type History, type Operation, partitionByKey } from "./history.ts";
export {
  type AssembledKvHistory,
  checkKvEvents,
  formatKvJsonLines,
  HistoryRecorder,
  type HistoryRecorderOptions,
  type KvCall,
  type KvEvent,
  type KvEventType,
  type KvFunction,
  kvHistoryFromEvents,
  type KvOperation,
  parseKvJsonLines,
  type SourceOptions,
} from "./kv_history.ts";
export { hashString, type Model, REJECTED, type StepResult } from "./model.ts";
export {
  type KvAppendInput,
  kvAppendModel,
  type KvAppendOutput,
  type KvAppendState,
  kvAppendState,
  type KvInput,
  kvModel,
  type KvOutput,
  type OptionalValue,
  type RegisterInput,
  registerModel,
  type RegisterOutput,
} from "./models.ts";
export {
  detectHistoryFormat,
  type HistoryFormat,
  type ParsedHistory,
  parseHistory,
  parseJepsenLog,
  parsePorcupineKv,
  REGISTER_KEY,
} from "./parse.ts";
export {
  checkHistoryFile,
  checkHistoryText,
  describeKeyFailure,
  type DescribeKeyFailureOptions,
  formatVerdictLine,
  type HistoryReport,
} from "./report.ts";
