/**
 * Round trips between the members as a matrix, for the dashboard: row `a`,
 * column `b` is `a`'s smoothed round trip to `b`, as `a`'s peer transport
 * measures it from its batches' answers (`src/transport/http.ts`, an EWMA
 * with gain 1/8, as TCP's SRTT of RFC 6298 §2).
 *
 * This replica's own row is read from its transport at each render. The other
 * rows are what each member's `GET /admin/members` says (`roundTripMs`),
 * asked with the cluster secret, as the backup's digest check asks a peer
 * (`src/server/admin_route.ts`): at most one request in flight per member,
 * none more often than every {@linkcode ROW_REFRESH_MS}, each given up after
 * {@linkcode ROW_TIMEOUT_MS}, and only while someone looks (a render asks for
 * the refresh). A row older than {@linkcode ROW_STALE_MS} is shown as unknown.
 *
 * @module
 */

import { type AdminRouteOptions, describeMembers } from "../server/admin_route.ts";

/** Least time between two requests for one member's row, ms. */
export const ROW_REFRESH_MS = 3000;
/** Longest a request for a row may take, ms. */
export const ROW_TIMEOUT_MS = 1000;
/** A row fetched longer ago than this is no longer shown, ms. */
export const ROW_STALE_MS = 15_000;
/** Largest answer read from a member (its members list), bytes. */
const MAX_ROW_BYTES = 64 * 1024;

/** The matrix as the dashboard shows it. */
export interface RoundTripMatrix {
  /** The members, in id order: rows and columns both. */
  readonly members: readonly { readonly id: number; readonly name: string }[];
  /**
   * By row (the measuring member, in `members`' order), by column: the round
   * trip in ms, or null if unknown (not measured, or the row is stale).
   */
  readonly rows: readonly (readonly (number | null)[])[];
  /** By row: how old its figures are, ms (0 for this replica's own; null if never fetched). */
  readonly ageMs: readonly (number | null)[];
}

interface FetchedRow {
  /** When it was fetched, by the node's clock. */
  readonly atMs: number;
  /** Round trips by member id. */
  readonly roundTripMs: ReadonlyMap<number, number>;
}

/**
 * The round trips of a member's `GET /admin/members` answer, by member id,
 * or `undefined` if the answer is not of that shape.
 */
export function roundTripsOfMembers(body: unknown): Map<number, number> | undefined {
  if (typeof body !== "object" || body === null) return undefined;
  const members = (body as { members?: unknown }).members;
  if (!Array.isArray(members) || members.length > 64) return undefined;
  const result = new Map<number, number>();
  for (const member of members) {
    if (typeof member !== "object" || member === null) return undefined;
    const { id, roundTripMs } = member as { id?: unknown; roundTripMs?: unknown };
    if (typeof id !== "number" || !Number.isInteger(id)) return undefined;
    if (typeof roundTripMs === "number" && Number.isFinite(roundTripMs) && roundTripMs >= 0) {
      result.set(id, roundTripMs);
    }
  }
  return result;
}

/** Keeps the rows of the round-trip matrix that other members measured. */
export class RoundTrips {
  readonly #options: AdminRouteOptions;
  readonly #rows = new Map<number, FetchedRow>();
  readonly #asked = new Map<number, number>();
  readonly #inFlight = new Set<number>();

  /** Rows of the members `options` describes, asked with its secret and `fetch`. */
  constructor(options: AdminRouteOptions) {
    this.#options = options;
  }

  /** Requests in flight now (at most one per member). */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /**
   * Asks each other live member with a URL for its row, unless it was asked
   * within {@linkcode ROW_REFRESH_MS} or is being asked; returns at once (the
   * answers land in later {@linkcode RoundTrips.matrix} calls).
   */
  refresh(): void {
    const { node } = this.#options;
    const now = node.now();
    for (const member of describeMembers(this.#options).members) {
      if (member.self || member.url === null || this.#inFlight.has(member.id)) continue;
      const asked = this.#asked.get(member.id);
      if (asked !== undefined && now - asked < ROW_REFRESH_MS) continue;
      this.#asked.set(member.id, now);
      this.#inFlight.add(member.id);
      this.#fetchRow(member.id, member.url).finally(() => this.#inFlight.delete(member.id));
    }
  }

  async #fetchRow(id: number, url: string): Promise<void> {
    const fetcher = this.#options.fetch ?? fetch;
    try {
      const response = await fetcher(`${url}/admin/members`, {
        headers: { authorization: `Bearer ${this.#options.secret}` },
        signal: AbortSignal.timeout(ROW_TIMEOUT_MS),
      });
      const text = await response.text();
      if (!response.ok || text.length > MAX_ROW_BYTES) return;
      const roundTripMs = roundTripsOfMembers(JSON.parse(text));
      if (roundTripMs !== undefined) {
        this.#rows.set(id, { atMs: this.#options.node.now(), roundTripMs });
      }
    } catch {
      // Unreachable, slow or malformed: the row stays as it was, and ages.
    }
  }

  /** The matrix now: this replica's row from its transport, the others as last fetched. */
  matrix(): RoundTripMatrix {
    const { node } = this.#options;
    const now = node.now();
    const members = describeMembers(this.#options).members;
    const own = new Map(node.peers().map((peer) => [peer.peer, peer.roundTripMs]));
    const rows: (number | null)[][] = [];
    const ageMs: (number | null)[] = [];
    for (const from of members) {
      if (from.self) {
        rows.push(members.map((to) => to.self ? null : rounded(own.get(to.id))));
        ageMs.push(0);
        continue;
      }
      const row = this.#rows.get(from.id);
      const age = row === undefined ? null : Math.max(0, Math.round(now - row.atMs));
      ageMs.push(age);
      rows.push(
        members.map((to) =>
          row === undefined || age! > ROW_STALE_MS || to.id === from.id
            ? null
            : rounded(row.roundTripMs.get(to.id))
        ),
      );
    }
    return { members: members.map(({ id, name }) => ({ id, name })), rows, ageMs };
  }
}

function rounded(value: number | undefined): number | null {
  return value === undefined ? null : Number(value.toFixed(1));
}
