/**
 * The assertions Deno's `kv_test.ts` imports from its `test_util.ts` (which
 * re-exports `@std/assert`) and `@std/testing/types`, here on
 * `node:assert/strict`: JSR is not reachable from this project's machines.
 * Each keeps the contract the suite relies on from `@std/assert`: deep
 * equality that tells classes apart (`Deno.KvU64(1n)` is not
 * `Deno.KvU64(2n)`), `assertRejects`/`assertThrows` that check the error's
 * class and that its message includes a text, and an `AssertionError` class
 * that failures are instances of.
 *
 * @module
 */

import nodeAssert, { AssertionError } from "node:assert/strict";

export { AssertionError };

/** Fails unless `expr` is truthy. */
export function assert(expr: unknown, msg = ""): asserts expr {
  if (!expr) throw new AssertionError({ message: msg || `Expected a truthy value, got ${expr}` });
}

/** Fails unless `actual` and `expected` are deeply equal (same classes, same contents). */
export function assertEquals<T>(actual: unknown, expected: T, msg?: string): asserts actual is T {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

/** Fails if `actual` and `expected` are deeply equal. */
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.notDeepStrictEqual(actual, expected, msg);
}

/** A class of errors, as `assertThrows`/`assertRejects` take it. */
// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

/** Fails unless `error` is an instance of `errorClass` whose message includes `msgIncludes`. */
function assertIsError<E extends Error>(
  error: unknown,
  errorClass?: ErrorClass<E>,
  msgIncludes?: string,
): void {
  if (errorClass !== undefined && !(error instanceof errorClass)) {
    throw new AssertionError({
      message: `Expected error to be an instance of ${errorClass.name}, got ${Deno.inspect(error)}`,
    });
  }
  if (msgIncludes !== undefined) {
    const message = error instanceof Error ? error.message : String(error);
    if (!message.includes(msgIncludes)) {
      throw new AssertionError({
        message: `Expected error message to include ${JSON.stringify(msgIncludes)}, got ${
          JSON.stringify(message)
        }`,
      });
    }
  }
}

/** Fails unless `fn` throws (an `errorClass` whose message includes `msgIncludes`); returns the error. */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  errorClass?: ErrorClass<E>,
  msgIncludes?: string,
): E {
  try {
    fn();
  } catch (error) {
    assertIsError(error, errorClass, msgIncludes);
    return error as E;
  }
  throw new AssertionError({ message: "Expected function to throw." });
}

/**
 * Fails unless the promise `fn` returns rejects (with an `errorClass` whose
 * message includes `msgIncludes`); returns the error.
 */
export async function assertRejects<E extends Error = Error>(
  fn: () => PromiseLike<unknown>,
  errorClass?: ErrorClass<E>,
  msgIncludes?: string,
): Promise<E> {
  try {
    await fn();
  } catch (error) {
    assertIsError(error, errorClass, msgIncludes);
    return error as E;
  }
  throw new AssertionError({ message: "Expected function to reject." });
}

/** `true` if `T` and `U` are the same type (as `@std/testing/types`' `IsExact`). */
export type IsExact<T, U> = (<G>() => G extends T ? 1 : 2) extends (<G>() => G extends U ? 1 : 2)
  ? true
  : false;

/** A type-level assertion (checked by `deno check`; nothing happens at run time). */
export function assertType<T extends true | false>(_expectTrue: T): void {}
