/**
 * denokv's `sum` of V8 values (`sqlite/backend.rs`, `sum_v8`): a `sum`
 * whose operand is a JavaScript Number or BigInt (encoding 1) rather than a
 * `Deno.KvU64`, with optional bounds (`sum_min`, `sum_max`) that either
 * refuse or clamp (`sum_clamp`) a result outside them. Deno's client sends
 * one for `atomic().mutate({ type: "sum", key, value: 1 })`.
 *
 * The rules, as denokv's:
 *
 * - an absent key takes the operand (the bounds are not applied);
 * - Number + Number and BigInt + BigInt add, then apply the bounds, which
 *   must be of the operand's type;
 * - a stored `KvU64` plus a BigInt operand in 0..2^64-1 without bounds is a
 *   `KvU64` sum (wrapping), for clients from before V8 sums;
 * - anything else is refused with denokv's message (`Cannot sum KvU64 with
 *   Number`, ...), and the whole atomic write with it.
 *
 * Doubles add the same way on every replica (IEEE 754), so results are
 * deterministic. Results are written as denokv writes them (`v8_numbers.ts`).
 *
 * @module
 */

import { isU64Entry, type KvEntry, LE64_ENCODING, le64Bytes, readLe64, U64_MASK } from "./entry.ts";
import { decodeV8Number, encodeV8Number, type V8Number } from "./v8_numbers.ts";

/** Deno KV's V8 value encoding. */
export const V8_ENCODING = 1;

/** The bounds of a V8 sum, as the mutation carries them. */
export interface V8SumBounds {
  /** The lowest result allowed, in V8's format; absent or empty: none. */
  readonly sumMin?: Uint8Array;
  /** The highest result allowed, in V8's format; absent or empty: none. */
  readonly sumMax?: Uint8Array;
  /** Whether a result outside the bounds is clamped to them (else refused). */
  readonly sumClamp?: boolean;
}

/** What a V8 sum writes, or why the atomic write fails. */
export type V8SumOutcome =
  | { readonly ok: true; readonly value: Uint8Array; readonly encoding: number }
  | { readonly ok: false; readonly message: string };

/** Why a V8 sum's operand or bounds are not usable, or undefined (checked before proposing). */
export function v8SumProblem(operand: Uint8Array, bounds: V8SumBounds): string | undefined {
  const parsed = parseOperands(operand, bounds);
  return "message" in parsed ? parsed.message : undefined;
}

function parseOperands(
  operand: Uint8Array,
  bounds: V8SumBounds,
):
  | { readonly operand: V8Number; readonly min?: V8Number; readonly max?: V8Number }
  | { readonly message: string } {
  const value = decodeV8Number(operand);
  const bound = (bytes: Uint8Array | undefined) =>
    bytes === undefined || bytes.length === 0 ? null : decodeV8Number(bytes);
  const min = bound(bounds.sumMin);
  const max = bound(bounds.sumMax);
  if (value === undefined || min === undefined || max === undefined) {
    return { message: "Some of the parameters are not valid V8 values" };
  }
  if ((min !== null && min.kind !== value.kind) || (max !== null && max.kind !== value.kind)) {
    return { message: "Min/max parameters have different types than the operand" };
  }
  return {
    operand: value,
    ...(min === null ? {} : { min }),
    ...(max === null ? {} : { max }),
  };
}

/** The stored value as a sum operand: a `KvU64`, a Number or a BigInt. */
function storedOperand(entry: KvEntry): V8Number | { kind: "KvU64"; value: bigint } | undefined {
  if (isU64Entry(entry)) return { kind: "KvU64", value: readLe64(entry.value) };
  if (entry.encoding === V8_ENCODING) return decodeV8Number(entry.value);
  return undefined;
}

/** Applies the bounds to `result`: clamped, refused, or as it is. */
function bounded<T extends number | bigint>(
  result: T,
  options: { readonly min?: T; readonly max?: T; readonly clamp: boolean },
): T | undefined {
  const { min, max, clamp } = options;
  if (min !== undefined && result < min) return clamp ? min : undefined;
  if (max !== undefined && result > max) return clamp ? max : undefined;
  return result;
}

const OUT_OF_RANGE = "The result of a Sum operation would exceed its range limit";

/** The V8 sum of `operand` into `existing` (undefined: the key is absent). */
export function sumV8(
  existing: KvEntry | undefined,
  operand: Uint8Array,
  bounds: V8SumBounds,
): V8SumOutcome {
  const parsed = parseOperands(operand, bounds);
  if ("message" in parsed) return { ok: false, message: parsed.message };
  const written = (value: V8Number): V8SumOutcome => ({
    ok: true,
    value: encodeV8Number(value),
    encoding: V8_ENCODING,
  });
  if (existing === undefined) return written(parsed.operand);
  const current = storedOperand(existing);
  if (current === undefined) return { ok: false, message: "unsupported value type" };
  const { operand: value, min, max } = parsed;
  const clamp = bounds.sumClamp === true;
  if (
    current.kind === "KvU64" && value.kind === "BigInt" && min === undefined &&
    max === undefined && !clamp && value.value >= 0n && value.value <= U64_MASK
  ) {
    // Wrapping, as a KvU64 sum (`le64Bytes` takes it mod 2^64).
    return { ok: true, value: le64Bytes(current.value + value.value), encoding: LE64_ENCODING };
  }
  if (current.kind === "Number" && value.kind === "Number") {
    const result = bounded(current.value + value.value, {
      ...(min?.kind === "Number" ? { min: min.value } : {}),
      ...(max?.kind === "Number" ? { max: max.value } : {}),
      clamp,
    });
    return result === undefined
      ? { ok: false, message: OUT_OF_RANGE }
      : written({ kind: "Number", value: result });
  }
  if (current.kind === "BigInt" && value.kind === "BigInt") {
    const result = bounded(current.value + value.value, {
      ...(min?.kind === "BigInt" ? { min: min.value } : {}),
      ...(max?.kind === "BigInt" ? { max: max.value } : {}),
      clamp,
    });
    return result === undefined
      ? { ok: false, message: OUT_OF_RANGE }
      : written({ kind: "BigInt", value: result });
  }
  return { ok: false, message: `Cannot sum ${current.kind} with ${value.kind}` };
}
