/**
 * Validation of messages received from peers. Everything the core steps must
 * have passed here: a malformed message is refused with a reason and never
 * reaches the state machine.
 *
 * @module
 */

import { isDeps } from "./deps.ts";
import { type Message, NOP, type Payload } from "./types.ts";

/** Largest instance number accepted (instance keys must stay exact doubles). */
export const MAX_INSTANCE_NUMBER = 2 ** 40;
/** Largest ballot accepted. */
export const MAX_BALLOT = 2 ** 46;
/** Most commands one instance may carry. */
export const MAX_BATCH_COMMANDS = 4096;

/** Most accesses one read asks about (a get has one, a list one span). */
export const MAX_READ_ACCESSES = 64;
/** Longest key or span end a read names, in UTF-16 code units (keys are at most 1024 bytes). */
export const MAX_READ_KEY_LENGTH = 4096;

/** Settings for {@linkcode validateMessage}. */
export interface ValidateOptions<C> {
  /** Cluster size. */
  readonly replicas: number;
  /** Whether a value is a well-formed command. */
  readonly isCommand: (value: unknown) => value is C;
}

/**
 * Checks that `value` is a well-formed message for this cluster. Returns the
 * message, or a sentence saying what is wrong.
 */
export function validateMessage<C>(
  value: unknown,
  options: ValidateOptions<C>,
): { ok: true; message: Message<C> } | { ok: false; reason: string } {
  const fail = (reason: string) => ({ ok: false as const, reason });
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return fail("Message is not an object");
  }
  const m = value as Record<string, unknown>;
  const n = options.replicas;
  const replica = (field: string) =>
    Number.isInteger(m[field]) && (m[field] as number) >= 0 && (m[field] as number) < n;
  const natural = (field: string, max: number, min = 0) =>
    Number.isInteger(m[field]) && (m[field] as number) >= min && (m[field] as number) <= max;
  // An instance's dependencies: the rows, then its `seq`.
  const deps = (field: string) => isDeps(m[field], n + 1);
  const rows = (field: string) => isDeps(m[field], n);
  const payload = (field: string): boolean => isPayload(m[field], options.isCommand);
  if (!replica("from") || !replica("to")) return fail("Message has no valid from and to");
  if (m.type === "frontier") {
    if (!rows("executed") || !rows("pruned")) return fail("Frontier has malformed vectors");
    if (!natural("highest", MAX_INSTANCE_NUMBER)) return fail("Frontier has a malformed highest");
    return { ok: true, message: m as unknown as Message<C> };
  }
  if (m.type === "leaserequest") {
    if (!natural("seq", Number.MAX_SAFE_INTEGER, 1)) {
      return fail("Lease request has a malformed seq");
    }
    if (m.heard !== undefined && typeof m.heard !== "boolean") {
      return fail("Lease request has a malformed heard");
    }
    return { ok: true, message: m as unknown as Message<C> };
  }
  if (m.type === "leasegrant") {
    if (
      !natural("seq", Number.MAX_SAFE_INTEGER, 1) || !rows("frontier") ||
      (m.empty !== undefined && typeof m.empty !== "boolean")
    ) {
      return fail("Lease grant is malformed");
    }
    return { ok: true, message: m as unknown as Message<C> };
  }
  if (m.type === "readdeps") {
    if (!natural("seq", Number.MAX_SAFE_INTEGER, 1) || !isReadAccesses(m.accesses)) {
      return fail("Read deps request is malformed");
    }
    return { ok: true, message: m as unknown as Message<C> };
  }
  if (m.type === "readdepsok") {
    if (!natural("seq", Number.MAX_SAFE_INTEGER, 1) || !rows("deps")) {
      return fail("Read deps answer is malformed");
    }
    return { ok: true, message: m as unknown as Message<C> };
  }
  if (!replica("owner") || !natural("number", MAX_INSTANCE_NUMBER, 1)) {
    return fail("Message names no valid instance");
  }
  const ballot = () => natural("ballot", MAX_BALLOT);
  // Lease holders named in a reply: a bitmask of positions, and the promise's time left.
  const leaseNaming = () =>
    (m.holders === undefined || natural("holders", 2 ** n - 1)) &&
    (m.leaseMs === undefined ||
      (typeof m.leaseMs === "number" && m.leaseMs >= 0 && m.leaseMs <= 3_600_000));
  let valid: boolean;
  switch (m.type) {
    case "preaccept":
      valid = m.command !== NOP && payload("command") && deps("deps");
      break;
    case "preacceptok":
      valid = deps("deps") && leaseNaming();
      break;
    case "accept":
    case "commit":
    case "validate":
      valid = ballot() && payload("command") && deps("deps");
      break;
    case "acceptok":
      valid = ballot() && leaseNaming();
      break;
    case "recover":
    case "nack":
      valid = ballot();
      break;
    case "leasenotice":
      valid = m.command !== NOP && payload("command");
      break;
    case "leaseack":
      valid = true;
      break;
    case "recoverok":
      valid = ballot() && natural("acceptedBallot", MAX_BALLOT) && natural("phase", 3) &&
        (m.command === undefined || payload("command")) &&
        (m.deps === undefined || deps("deps")) &&
        (m.initialDeps === undefined || deps("initialDeps"));
      break;
    case "validateok":
      valid = ballot() && isTriples(m.invalidators, n);
      break;
    case "waiting":
      valid = natural("rmaxSize", n);
      break;
    case "commitrequest":
      valid = natural("count", 256, 1);
      break;
    default:
      return fail(`Unknown message type ${describeValue(m.type)}`);
  }
  return valid
    ? { ok: true, message: m as unknown as Message<C> }
    : fail(`Malformed ${String(m.type)} message`);
}

function isPayload<C>(
  value: unknown,
  isCommand: (value: unknown) => value is C,
): value is Payload<C> {
  if (value === NOP) return true;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_BATCH_COMMANDS) {
    return false;
  }
  for (const command of value) if (!isCommand(command)) return false;
  return true;
}

/** Whether `value` is a non-empty list of read accesses (`{ key, end?, write: false }`). */
function isReadAccesses(value: unknown): boolean {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_READ_ACCESSES) {
    return false;
  }
  for (const access of value) {
    if (typeof access !== "object" || access === null || Array.isArray(access)) return false;
    const { key, end, write } = access as Record<string, unknown>;
    if (typeof key !== "string" || key.length > MAX_READ_KEY_LENGTH) return false;
    if (end !== undefined && (typeof end !== "string" || end.length > MAX_READ_KEY_LENGTH)) {
      return false;
    }
    // Only reads: a write access would ask for more than a read needs.
    if (write !== false) return false;
  }
  return true;
}

function isTriples(value: unknown, replicas: number): boolean {
  if (!Array.isArray(value) || value.length % 3 !== 0 || value.length > 3 * 65536) return false;
  for (let i = 0; i < value.length; i += 3) {
    const [owner, number, phase] = [value[i], value[i + 1], value[i + 2]];
    if (!Number.isInteger(owner) || owner < 0 || owner >= replicas) return false;
    if (!Number.isInteger(number) || number < 1 || number > MAX_INSTANCE_NUMBER) return false;
    if (!Number.isInteger(phase) || phase < 0 || phase > 3) return false;
  }
  return true;
}

/** A received value for an error message: JSON, cut to 64 characters (it comes from a peer). */
export function describeValue(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 64 ? `${text.slice(0, 64)}…` : text;
}
