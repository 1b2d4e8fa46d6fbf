/**
 * Joining a running cluster (`deno task start --join URL --id ID --url
 * OWN_URL`): the configuration is fetched from a member's admin route
 * (`GET /admin/configuration`, with the cluster secret), and checked to name
 * this replica, at this URL, before anything is opened. The replica then
 * starts with empty storage in that epoch, installs a snapshot from a voter,
 * and serves once it has (`ReplicaDriver` with `joining`).
 *
 * @module
 */

import {
  type Configuration,
  configurationProblem,
  describeConfiguration,
  normalizedUrl,
} from "../core/configuration.ts";
import { ConfigError } from "../server/config.ts";
import { PEER_PROTOCOL_HEADERS } from "../transport/peer_protocol.ts";

/** Longest the configuration fetch may take. */
export const JOIN_FETCH_TIMEOUT_MS = 10_000;

/** Settings of {@linkcode fetchConfiguration}. */
export interface FetchConfigurationOptions {
  /** The fetch to use (default the global one; tests swap it). */
  readonly fetch?: typeof fetch;
  /** The id of a member starting on an empty disk, asking to join (`?for=`). */
  readonly freshMember?: number;
  /** Aborts the request (besides its own {@linkcode JOIN_FETCH_TIMEOUT_MS}). */
  readonly signal?: AbortSignal;
  /** What the errors say they come from (default `--join`). */
  readonly purpose?: string;
}

/**
 * Fetches the configuration of `server`'s epoch: for `--join`, and for a
 * replica that asks a peer in a later epoch whether it is still a member
 * (`ReplicaDriverOptions.fetchConfiguration`).
 *
 * @throws {ConfigError} if the member cannot be reached, refuses, or answers
 *   something that is not a valid configuration.
 */
export async function fetchConfiguration(
  server: string,
  secret: string,
  options: FetchConfigurationOptions = {},
): Promise<Configuration> {
  const purpose = options.purpose ?? "--join";
  const fetcher = options.fetch ?? fetch;
  // A member starting on an empty disk says so: the member refuses an
  // incarnation it has heard from already (it would come back amnesiac).
  const query = options.freshMember === undefined ? "" : `?for=${options.freshMember}`;
  const url = `${server.replace(/\/+$/, "")}/admin/configuration${query}`;
  let response: Response;
  try {
    response = await fetcher(url, {
      headers: { authorization: `Bearer ${secret}`, ...PEER_PROTOCOL_HEADERS },
      signal: options.signal === undefined
        ? AbortSignal.timeout(JOIN_FETCH_TIMEOUT_MS)
        : AbortSignal.any([options.signal, AbortSignal.timeout(JOIN_FETCH_TIMEOUT_MS)]),
    });
  } catch (error) {
    throw new ConfigError(`${purpose}: cannot reach ${server}: ${(error as Error).message}`);
  }
  const text = await response.text();
  if (!response.ok) {
    let reason = text.slice(0, 200);
    try {
      reason = JSON.parse(text).error ?? reason;
    } catch { /* not JSON: the start of the body */ }
    throw new ConfigError(`${purpose}: ${server} refused (${response.status}): ${reason}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ConfigError(`${purpose}: ${server} answered something that is not JSON`);
  }
  const problem = configurationProblem(value);
  if (problem !== undefined) {
    throw new ConfigError(`${purpose}: ${server} answered an invalid configuration: ${problem}`);
  }
  return value as Configuration;
}

/**
 * Why member `id` at `ownUrl` cannot join with `config`, or `undefined` if it
 * can: it must be a member (an add or a replace made it one), at that URL.
 */
export function joinProblem(config: Configuration, id: number, ownUrl: string): string | undefined {
  const member = config.members.find((candidate) => candidate.id === id);
  if (member === undefined) {
    return `member ${id} is not in the cluster's configuration ${
      describeConfiguration(config)
    }: add it first (deno task admin add --url ${ownUrl})`;
  }
  if (member.url !== normalizedUrl(ownUrl)) {
    return `member ${id} is at ${member.url} in the cluster's configuration, not ${ownUrl}`;
  }
  return undefined;
}
