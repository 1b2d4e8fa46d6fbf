/**
 * Configuration changes through a replica's admin route (`admin_route.ts`
 * mounts these on its guarded sub-app, at `/admin`):
 *
 * - `GET /admin/configuration`: the configuration of this replica's epoch
 *   (`src/core/configuration.ts`), which `deno task start --join` fetches.
 * - `POST /admin/members/change` with a JSON change (`ConfigurationChange`:
 *   `{"kind": "add", "url"}`, `{"kind": "promote", "ids"}`, `{"kind":
 *   "remove", "ids"}`, `{"kind": "replace", "id", "url"?}`, `{"kind":
 *   "leases", "leases": "all" | "none" | {rules...}}`): decided by
 *   `decideChange` against what this replica observes of the members
 *   (`describeMembers`), then proposed as a configuration change command
 *   (`ReconfCommand`) and answered once this replica is in the new epoch:
 *   `{"epoch", "configuration", "added"?}`. A refusal is 409 with a one-line
 *   reason and changes nothing; a change that another change overtook is 409
 *   too (the epoch it was for is taken).
 *
 * @module
 */

import type { Hono } from "hono";
import {
  type ClusterView,
  type ConfigurationChange,
  decideChange,
  type MemberStatus as ChangeMemberStatus,
} from "../core/configuration_change.ts";
import { isMemberId, sameConfiguration } from "../core/configuration.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { KvError, OutcomeUnknownError } from "../errors.ts";
import { type AdminRouteOptions, describeMembers } from "./admin_route.ts";
import { jsonBody } from "./json_body.ts";

/** Longest a change waits to execute here before the answer says its outcome is unknown. */
export const CHANGE_DEADLINE_MS = 15_000;

/** Largest change body accepted, in bytes. */
const MAX_CHANGE_BYTES = 4096;

/**
 * Why `value` is not a {@linkcode ConfigurationChange}, or `undefined` if it
 * is one (the shape only: `decideChange` judges the rest).
 */
export function changeProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "The change must be a JSON object";
  }
  const change = value as Record<string, unknown>;
  const ids = (field: unknown) =>
    Array.isArray(field) && field.length > 0 && field.length <= 32 && field.every(isMemberId);
  switch (change.kind) {
    case "add":
      return typeof change.url === "string" ? undefined : "add needs a url";
    case "promote":
    case "remove":
      return ids(change.ids) ? undefined : `${change.kind} needs ids: a list of member ids`;
    case "replace":
      if (!isMemberId(change.id)) return "replace needs an id";
      return change.url === undefined || typeof change.url === "string"
        ? undefined
        : "replace's url must be a string";
    case "leases":
      return change.leases === undefined
        ? 'leases needs leases: "all", "none" or rules'
        : undefined;
    default:
      return 'The change\'s kind must be "add", "promote", "remove", "replace" or "leases"';
  }
}

/** What `node` observes of the members, for `decideChange`. */
export function clusterView(options: AdminRouteOptions, inFlight: boolean): ClusterView {
  const members = new Map<number, ChangeMemberStatus>();
  for (const member of describeMembers(options).members) {
    members.set(member.id, { alive: member.alive, caughtUp: member.state === "caught-up" });
  }
  return { inFlight, members };
}

/** Resolves once `node` is in an epoch at least `epoch`, or after `deadlineMs`. */
async function epochReached(node: ReplicaDriver, epoch: number, deadlineMs: number) {
  const deadline = node.now() + deadlineMs;
  while (node.configuration.epoch < epoch && node.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Adds the membership routes to the admin sub-app `route` (already guarded). */
export function membershipRoutes(route: Hono, options: AdminRouteOptions): void {
  const { node } = options;
  // One change at a time from this replica; `Replica.fenced` covers changes
  // proposed elsewhere that this replica holds.
  let proposing = false;
  route.get("/configuration", (c) => {
    // `?for=ID`: a joiner on an empty disk asks. If this replica has taken
    // batches from that member's current incarnation, a process of it ran
    // and voted: starting it again empty would be amnesia. Best effort (a
    // replica restarted since has not heard it yet); the replica refuses
    // too (`ReplicaDriver`, an empty store behind an epoch).
    const forText = c.req.query("for");
    if (forText !== undefined) {
      if (!/^\d{1,3}$/.test(forText)) return c.json({ error: "for must be a member id" }, 400);
      const id = Number(forText);
      const member = node.configuration.members.find((candidate) => candidate.id === id);
      if (member !== undefined && node.heardAsCurrent(id)) {
        return c.json({
          error: `member ${id}'s incarnation ${member.incarnation} has run already: a replica ` +
            `whose data is lost must be replaced first (deno task admin replace ${id})`,
        }, 409);
      }
    }
    return c.json(node.configuration);
  });
  route.post("/members/change", async (c) => {
    const read = await jsonBody(c, MAX_CHANGE_BYTES, "The change");
    if ("refused" in read) return read.refused;
    const body = read.value;
    const problem = changeProblem(body);
    if (problem !== undefined) return c.json({ error: problem }, 400);
    const change = body as ConfigurationChange;
    const current = node.configuration;
    const decision = decideChange(
      current,
      change,
      clusterView(options, proposing || node.core.fenced),
    );
    if (!decision.ok) return c.json({ error: decision.reason }, 409);
    proposing = true;
    try {
      options.log?.(
        `proposing configuration change ${JSON.stringify(change)}: epoch ${decision.next.epoch}`,
      );
      await node.submit({ op: "reconf", configuration: decision.next });
      await epochReached(node, decision.next.epoch, CHANGE_DEADLINE_MS);
    } catch (error) {
      if (error instanceof OutcomeUnknownError) {
        // Proposed, answer lost: it may still take effect.
        return c.json({
          error: `The change's outcome is not known: ${error.message}; ` +
            "ask members to see the epoch",
        }, 504);
      }
      if (error instanceof KvError) {
        return c.json(
          { error: `The change was not made: ${error.message}` },
          error.status as ContentfulStatusCode,
        );
      }
      throw error;
    } finally {
      proposing = false;
    }
    const now = node.configuration;
    if (now.epoch < decision.next.epoch) {
      return c.json({
        error: `The change executed but this replica is still in epoch ${now.epoch}; ` +
          "ask again with members to see the outcome",
      }, 503);
    }
    if (now.epoch > decision.next.epoch) {
      // Another change followed at once: which one took epoch N is not known here.
      return c.json({
        error: `The cluster is already in epoch ${now.epoch}, past the change's ` +
          `${decision.next.epoch}: ask members to see whether it was made`,
      }, 504);
    }
    if (!sameConfiguration(now, decision.next)) {
      return c.json({
        error: `Another change took epoch ${now.epoch} first; nothing of this one was made`,
      }, 409);
    }
    return c.json({
      epoch: decision.next.epoch,
      configuration: decision.next,
      ...(decision.added === undefined ? {} : { added: decision.added, id: decision.added.id }),
    });
  });
}
