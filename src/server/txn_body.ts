/**
 * The JSON of `POST /txn` (issue 17 item 6), in the manner of etcd's `Txn`
 * (compare, then operations) and Consul's `/v1/txn` (a list of operations,
 * all or nothing), read into the state machine's atomic command
 * (`AtomicCommand` of src/kv/txn_commands.ts, without a database: curl keys,
 * every written key getting the instance's version, as a put's):
 *
 * ```json
 * {"checks": [{"key": "a", "version": "3.1.0"}, {"key": "b", "absent": true}],
 *  "ops": [{"op": "put", "key": "a", "value": "text"},
 *          {"op": "put", "key": "c", "valueBase64": "AAE=", "ttl": "30s"},
 *          {"op": "delete", "key": "b"}]}
 * ```
 *
 * Every check holds (the key has that version, or is absent), then every op
 * applies in order; or nothing does. Unknown fields are refused, so that a
 * misspelt `"check"` is a 400, not a transaction without conditions.
 *
 * @module
 */

import { keyProblem, MAX_VALUE_BYTES } from "../kv/curl_keys.ts";
import {
  type AtomicCheck,
  type AtomicCommand,
  atomicCommandProblem,
  type AtomicMutation,
  MAX_ATOMIC_CHECKS,
  MAX_ATOMIC_MUTATIONS,
} from "../kv/txn_commands.ts";
import { expiresAtOf, parseTtl } from "./ttl.ts";

/**
 * Largest `POST /txn` body, bytes: the atomic command's 800 KiB of keys and
 * values, in base64 and JSON, with room to spare (413 beyond).
 */
export const MAX_TXN_BODY_BYTES = 2 * 1024 * 1024;

const TOP_FIELDS = new Set(["checks", "ops"]);
const CHECK_FIELDS = new Set(["key", "version", "absent"]);
const PUT_FIELDS = new Set(["op", "key", "value", "valueBase64", "ttl"]);
const DELETE_FIELDS = new Set(["op", "key"]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function unknownField(
  value: Record<string, unknown>,
  known: ReadonlySet<string>,
): string | undefined {
  return Object.keys(value).find((field) => !known.has(field));
}

function keyOf(where: string, key: unknown): { key: string } | { problem: string } {
  if (typeof key !== "string") return { problem: `${where}: key must be a string` };
  const issue = keyProblem(key);
  return issue === undefined ? { key } : { problem: `${where}: ${issue}` };
}

function checkOf(check: unknown, index: number): AtomicCheck | { problem: string } {
  const where = `checks[${index}]`;
  if (!isRecord(check)) return { problem: `${where} must be an object` };
  const extra = unknownField(check, CHECK_FIELDS);
  if (extra !== undefined) {
    return { problem: `${where}: unknown field ${JSON.stringify(extra)} (key, version, absent)` };
  }
  const key = keyOf(where, check.key);
  if ("problem" in key) return key;
  if (check.absent !== undefined) {
    if (check.absent !== true || check.version !== undefined) {
      return { problem: `${where}: give either "version" or "absent": true` };
    }
    return { key: key.key, version: null };
  }
  if (typeof check.version !== "string" || check.version.length === 0) {
    return {
      problem: `${where}: "version" must be a version as returned in ETag, or use "absent": true`,
    };
  }
  return { key: key.key, version: check.version };
}

function valueOf(where: string, op: Record<string, unknown>): Uint8Array | { problem: string } {
  const { value, valueBase64 } = op;
  if ((value === undefined) === (valueBase64 === undefined)) {
    return { problem: `${where}: a put needs exactly one of "value" (text) or "valueBase64"` };
  }
  let bytes: Uint8Array;
  if (value !== undefined) {
    if (typeof value !== "string") return { problem: `${where}: "value" must be a string` };
    bytes = new TextEncoder().encode(value);
  } else {
    if (typeof valueBase64 !== "string") {
      return { problem: `${where}: "valueBase64" must be a string` };
    }
    // A base64 text longer than the largest value could be need not be decoded.
    if (valueBase64.length > Math.ceil(MAX_VALUE_BYTES / 3) * 4 + 4) {
      return { problem: `${where}: value is larger than ${MAX_VALUE_BYTES} bytes` };
    }
    try {
      bytes = Uint8Array.from(atob(valueBase64), (char) => char.charCodeAt(0));
    } catch {
      return { problem: `${where}: "valueBase64" is not base64` };
    }
  }
  if (bytes.length > MAX_VALUE_BYTES) {
    return { problem: `${where}: value is larger than ${MAX_VALUE_BYTES} bytes` };
  }
  return bytes;
}

function mutationOf(
  op: unknown,
  index: number,
  nowMs: number,
): AtomicMutation | { problem: string } {
  const where = `ops[${index}]`;
  if (!isRecord(op)) return { problem: `${where} must be an object` };
  if (op.op !== "put" && op.op !== "delete") {
    return { problem: `${where}: "op" must be "put" or "delete"` };
  }
  const extra = unknownField(op, op.op === "put" ? PUT_FIELDS : DELETE_FIELDS);
  if (extra !== undefined) {
    return {
      problem: `${where}: unknown field ${JSON.stringify(extra)} for a ${op.op} (${
        [...(op.op === "put" ? PUT_FIELDS : DELETE_FIELDS)].join(", ")
      })`,
    };
  }
  const key = keyOf(where, op.key);
  if ("problem" in key) return key;
  if (op.op === "delete") return { kind: "delete", key: key.key };
  const value = valueOf(where, op);
  if ("problem" in value) return value;
  if (op.ttl === undefined) return { kind: "set", key: key.key, value };
  if (typeof op.ttl !== "string" && typeof op.ttl !== "number") {
    return { problem: `${where}: "ttl" must be text such as "30s"` };
  }
  const ttl = parseTtl(String(op.ttl));
  if ("problem" in ttl) return { problem: `${where}: ${ttl.problem}` };
  return { kind: "set", key: key.key, value, expiresAt: expiresAtOf(nowMs, ttl.ms) };
}

/**
 * The atomic command a `POST /txn` body asks for, its TTLs made absolute at
 * `nowMs` (the replica's wall clock); or a problem to answer 400 with. At
 * most {@linkcode MAX_ATOMIC_CHECKS} checks and 1 to
 * {@linkcode MAX_ATOMIC_MUTATIONS} ops, and the command passes
 * `atomicCommandProblem` (so no peer can refuse it).
 */
export function txnCommandOf(
  body: unknown,
  nowMs: number,
): { readonly command: Omit<AtomicCommand, "request"> } | { readonly problem: string } {
  if (!isRecord(body)) {
    return { problem: 'The body must be a JSON object {"checks": [...], "ops": [...]}' };
  }
  const extra = unknownField(body, TOP_FIELDS);
  if (extra !== undefined) {
    return { problem: `Unknown field ${JSON.stringify(extra)} (checks, ops)` };
  }
  const checksIn = body.checks ?? [];
  const opsIn = body.ops;
  if (!Array.isArray(checksIn)) return { problem: '"checks" must be a list' };
  if (!Array.isArray(opsIn) || opsIn.length === 0) {
    return { problem: '"ops" must be a list of at least one operation' };
  }
  if (checksIn.length > MAX_ATOMIC_CHECKS) {
    return { problem: `Too many checks: ${checksIn.length} (max ${MAX_ATOMIC_CHECKS})` };
  }
  if (opsIn.length > MAX_ATOMIC_MUTATIONS) {
    return { problem: `Too many ops: ${opsIn.length} (max ${MAX_ATOMIC_MUTATIONS})` };
  }
  const checks: AtomicCheck[] = [];
  for (const [index, check] of checksIn.entries()) {
    const parsed = checkOf(check, index);
    if ("problem" in parsed) return parsed;
    checks.push(parsed);
  }
  const mutations: AtomicMutation[] = [];
  for (const [index, op] of opsIn.entries()) {
    const parsed = mutationOf(op, index, nowMs);
    if ("problem" in parsed) return parsed;
    mutations.push(parsed);
  }
  const command: Omit<AtomicCommand, "request"> = { op: "atomic", checks, mutations };
  // The state machine's own rules (sizes, totals), as every peer checks them.
  const issue = atomicCommandProblem(command);
  return issue === undefined ? { command } : { problem: issue };
}

/** One failed check of a `412` answer: the key, the version it wanted, the one it has (`null`: absent). */
export interface FailedCheck {
  /** The key checked. */
  readonly key: string;
  /** The version the check wanted, `null` for absent. */
  readonly expected: string | null;
  /** The key's current version, `null` if absent. */
  readonly current: string | null;
}

/** The checks that failed, given each check's current version in check order. */
export function failedChecks(
  checks: readonly AtomicCheck[],
  current: readonly (string | null)[],
): FailedCheck[] {
  const failed: FailedCheck[] = [];
  checks.forEach((check, index) => {
    const now = current[index] ?? null;
    if (now !== check.version) {
      failed.push({ key: check.key, expected: check.version, current: now });
    }
  });
  return failed;
}
