/**
 * One request to a replica's admin route with the cluster secret, answered
 * the same way for every admin command: the response when the replica
 * accepted it, or an error whose one-line message says why not.
 *
 * @module
 */

import { KvError } from "../errors.ts";

/** The replica could not be reached, or did not answer in time. */
export class AdminUnreachableError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "AdminUnreachableError";
  }
}

/** Settings of {@linkcode adminRequest}. */
export interface AdminRequestOptions {
  /** The cluster secret, sent as a bearer token. */
  readonly secret: string;
  /** Gives up after this many milliseconds (the whole answer, body included). */
  readonly timeoutMs: number;
  /** A JSON body to POST instead of a GET. */
  readonly json?: unknown;
  /** The method, when neither GET nor a POST of `json` (a DELETE). */
  readonly method?: "DELETE";
}

/**
 * GETs (or, with `json`, POSTs; or DELETEs) `path` of `server`'s admin route (`/admin${path}`) and resolves with
 * the response once the replica accepted the request (2xx).
 *
 * @throws {AdminUnreachableError} if the replica could not be reached in time.
 * @throws {KvError} with the replica's status and its `error` message (or the
 *   start of the body) if it refused.
 */
export async function adminRequest(
  server: string,
  path: string,
  options: AdminRequestOptions,
): Promise<Response> {
  const base = server.replace(/\/+$/, "");
  let response: Response;
  try {
    response = await fetch(`${base}/admin${path}`, {
      ...(options.json === undefined ? {} : { method: "POST", body: JSON.stringify(options.json) }),
      ...(options.method === undefined ? {} : { method: options.method }),
      headers: {
        authorization: `Bearer ${options.secret}`,
        ...(options.json === undefined ? {} : { "content-type": "application/json" }),
      },
      signal: AbortSignal.timeout(options.timeoutMs),
    });
  } catch (error) {
    const reason = error instanceof DOMException && error.name === "TimeoutError"
      ? `no answer within ${options.timeoutMs} ms`
      : (error as Error).message;
    throw new AdminUnreachableError(`cannot reach ${server}: ${reason}`);
  }
  if (response.ok) return response;
  const text = await response.text();
  let message = text.slice(0, 200);
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === "string") message = body.error;
  } catch { /* not JSON: the start of the text */ }
  throw new KvError(`${server} refused (${response.status}): ${message}`, response.status);
}
