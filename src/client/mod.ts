/**
 * The epaxos-kv HTTP client: {@linkcode KvClient} and its typed errors.
 *
 * @module
 */

export {
  ClientRequestError,
  type Consistency,
  type DeleteOptions,
  failedToConnect,
  type GetOptions,
  KvClient,
  type KvClientEntry,
  KvClientError,
  type KvClientErrorOptions,
  type KvClientOptions,
  type KvListPage,
  type ListOptions,
  normalizeServerUrl,
  OutcomeUnknownError,
  PreconditionFailedError,
  type PutOptions,
  type PutResult,
  type ReplicaPeerStatus,
  type ReplicaStatus,
  type RequestOptions,
  type ServerStrategy,
  UnavailableError,
} from "./client.ts";
