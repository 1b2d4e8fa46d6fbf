/**
 * The epaxos-kv HTTP client: {@linkcode KvClient} and the errors it throws,
 * the same classes a replica throws (`src/errors.ts`).
 *
 * @module
 */

export {
  type Consistency,
  type DeleteOptions,
  failedToConnect,
  type GetOptions,
  KvClient,
  type KvClientEntry,
  type KvClientOptions,
  type KvListPage,
  type ListOptions,
  normalizeServerUrl,
  type PutOptions,
  type PutResult,
  type ReplicaPeerStatus,
  type ReplicaStatus,
  type RequestOptions,
  type ServerStrategy,
} from "./client.ts";
export {
  ClientRequestError,
  KvError,
  // The client's names for the base class and its options, kept for callers.
  KvError as KvClientError,
  type KvErrorOptions,
  type KvErrorOptions as KvClientErrorOptions,
  OutcomeUnknownError,
  PreconditionFailedError,
  UnavailableError,
  type UnavailableErrorOptions,
} from "../errors.ts";
