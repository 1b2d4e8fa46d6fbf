/**
 * JSON error answers of the replica's routes: `{"error": message, ...}` with
 * the status, and the answer to a {@linkcode KvError} (its status, with
 * `Retry-After` when nothing was proposed and advice when the outcome is
 * unknown).
 *
 * @module
 */

import type { Context } from "hono";
import { KvError, OutcomeUnknownError, UnavailableError } from "../errors.ts";

/** A JSON error answer: `{"error": message, ...extra}` with `status`. */
export function problem(
  c: Context,
  status: number,
  message: string,
  extra: Record<string, unknown> = {},
): Response {
  return c.json({ error: message, ...extra }, status as 400);
}

/**
 * The answer to a {@linkcode KvError}: its status and message, with
 * `Retry-After` when nothing was proposed and advice when the outcome is
 * unknown.
 */
export function kvProblem(c: Context, error: KvError): Response {
  if (error instanceof UnavailableError) {
    c.header("Retry-After", String(error.retryAfterSeconds ?? 1));
  }
  const message = error instanceof OutcomeUnknownError
    ? `${error.message}; read the key to learn whether it applied`
    : error.message;
  return problem(c, error.status, message);
}
