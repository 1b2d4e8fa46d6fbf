/**
 * The one vocabulary of errors shared by a replica and its clients. A replica's
 * driver throws these, its HTTP app answers them with their status, and the
 * client (`KvClient`, in `src/client/`) maps the answers back to the
 * same classes: `instanceof UnavailableError` means the same thing on either
 * side of the wire.
 *
 * Each error carries the HTTP status of what it means as a typed field
 * ({@linkcode KvError.status}), so that routes and callers decide by type,
 * never by message text. The distinction a caller of a replicated store must
 * not lose is between {@linkcode UnavailableError} (nothing was proposed: safe
 * to retry) and {@linkcode OutcomeUnknownError} (it may or may not have taken
 * effect: read to find out, never retry blindly).
 *
 * @module
 */

/** Where an error was seen, and what caused it. */
export interface KvErrorOptions {
  /** The replica the error came from, when a client raised it. */
  readonly server?: string;
  /**
   * The HTTP status of the answer the client received, when one came. Usually
   * the error's own {@linkcode KvError.status}; it differs when the error
   * stands for an answer of another status (a 500 is an outcome unknown, 504).
   */
  readonly answerStatus?: number;
  /** The underlying error. */
  readonly cause?: unknown;
}

/** Base class of every error of the key-value API, server side and client side. */
export class KvError extends Error {
  /** The HTTP status this error means: what a replica answers it with. */
  readonly status: number;
  /** The replica the error came from, if a client raised it. */
  readonly server: string | undefined;
  /**
   * The HTTP status of the answer the client received; `undefined` if there
   * was no answer (raised by a replica itself, or the client could not connect
   * or gave up waiting).
   */
  readonly answerStatus: number | undefined;

  /** Creates an error that means HTTP `status`. */
  constructor(message: string, status: number, options: KvErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "KvError";
    this.status = status;
    this.server = options.server;
    this.answerStatus = options.answerStatus;
  }
}

/** Settings of an {@linkcode UnavailableError}. */
export interface UnavailableErrorOptions extends KvErrorOptions {
  /** Suggested wait before retrying, in seconds (a `Retry-After`), if any. */
  readonly retryAfterSeconds?: number;
  /** Attempts made before giving up (default 1). */
  readonly attempts?: number;
}

/**
 * Nothing was proposed (HTTP 503): the replica refused the request (no quorum
 * reachable, too much pending, shutting down), or no replica would take it or
 * could be connected to. The request may be retried later.
 */
export class UnavailableError extends KvError {
  /** Always 503. */
  declare readonly status: 503;
  /** Suggested wait before retrying, in seconds, if one was given. */
  readonly retryAfterSeconds: number | undefined;
  /** Attempts made before giving up: 1 for a replica's own refusal. */
  readonly attempts: number;

  /** Creates an error with a reason for the client. */
  constructor(message: string, options: UnavailableErrorOptions = {}) {
    super(message, 503, options);
    this.name = "UnavailableError";
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.attempts = options.attempts ?? 1;
  }
}

/**
 * The command was proposed, or the request sent, but its outcome is not known
 * (HTTP 504): it was not answered in time, the replica stopped, another 5xx
 * came back, or the connection was lost. A write may or may not have taken
 * effect: read the key to find out; never retry a compare-and-set blindly.
 */
export class OutcomeUnknownError extends KvError {
  /** Always 504. */
  declare readonly status: 504;

  /** Creates an error with a reason for the client. */
  constructor(message: string, options: KvErrorOptions = {}) {
    super(message, 504, options);
    this.name = "OutcomeUnknownError";
  }
}

/**
 * An {@linkcode OutcomeUnknownError} answered at once, not after a wait: the
 * replica installed a snapshot from a peer while the command was in flight
 * (its peers had pruned past it), and lost track of what it was waiting
 * for. The command may still take effect, or may have already.
 */
export class SnapshotInstalledError extends OutcomeUnknownError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "SnapshotInstalledError";
  }
}

/** A compare-and-set or compare-and-delete found another version (HTTP 412): nothing changed. */
export class PreconditionFailedError extends KvError {
  /** Always 412. */
  declare readonly status: 412;
  /** The key's current version, or `null` if the key does not exist. */
  readonly current: string | null;

  /** Creates an error. */
  constructor(message: string, current: string | null, options: KvErrorOptions = {}) {
    super(message, 412, options);
    this.name = "PreconditionFailedError";
    this.current = current;
  }
}

/**
 * A request refused as malformed or not allowed: a 4xx other than 412, whose
 * status says why (400 malformed, 401 no credential, 413 too large, ...).
 */
export class ClientRequestError extends KvError {
  /** Creates an error for a refusal with `status`. */
  constructor(message: string, status: number, options: KvErrorOptions = {}) {
    super(message, status, options);
    this.name = "ClientRequestError";
  }
}
