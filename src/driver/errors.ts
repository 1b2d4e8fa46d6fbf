/**
 * Why a replica did not answer a command with its result. Each error carries
 * the HTTP status it maps to, so that routes and clients decide by type, not
 * by message text.
 *
 * @module
 */

/** Why a request could not be proposed: nothing was proposed, the client may retry. */
export class UnavailableError extends Error {
  /** The HTTP status this maps to. */
  readonly status = 503;
  /** Suggested wait before retrying, in seconds. */
  readonly retryAfterSeconds: number;
  /** Creates an error with a reason for the client. */
  constructor(message: string, retryAfterSeconds = 1) {
    super(message);
    this.name = "UnavailableError";
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The command was proposed but its outcome is not known in time: the client must read to find out. */
export class OutcomeUnknownError extends Error {
  /** The HTTP status this maps to. */
  readonly status = 504;
  /** Creates an error with a reason for the client. */
  constructor(message: string) {
    super(message);
    this.name = "OutcomeUnknownError";
  }
}
