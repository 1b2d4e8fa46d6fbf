/**
 * Wide-area round-trip matrices and the latency floors they imply (round trips
 * between AWS regions from the fantoch project's planet data; the SOSP'13
 * EPaxos paper's five sites).
 *
 * File format: `{"regions": ["VA", ...], "rtt_ms": [[0, 59.9, ...], ...]}`,
 * a square matrix of round trips in milliseconds, one row per region; replica
 * `i` runs in region `i`. Emulation applies a one-way delay of RTT/2 to each
 * directed link.
 *
 * @module
 */

import { quorumSizes } from "../core/quorum.ts";

/** A round-trip matrix. */
export interface RttMatrix {
  /** Region names; replica `i` is in region `i`. */
  readonly regions: readonly string[];
  /** Round trips in milliseconds, `rtt_ms[i][j]` from region `i` to `j`. */
  readonly rtt_ms: readonly (readonly number[])[];
}

/** Checks a parsed matrix file; returns it or throws a `TypeError` naming the problem. */
export function parseRttMatrix(value: unknown, source = "matrix"): RttMatrix {
  if (typeof value !== "object" || value === null) {
    throw new TypeError(`${source} must be a JSON object`);
  }
  const { regions, rtt_ms } = value as Record<string, unknown>;
  if (
    !Array.isArray(regions) ||
    !regions.every((region) => typeof region === "string" && region.length > 0)
  ) {
    throw new TypeError(`${source}: regions must be a list of names`);
  }
  const n = regions.length;
  if (n < 3 || n > 9 || n % 2 === 0) {
    throw new TypeError(`${source}: needs an odd number of regions from 3 to 9, got ${n}`);
  }
  if (new Set(regions).size !== n) throw new TypeError(`${source}: region names repeat`);
  if (!Array.isArray(rtt_ms) || rtt_ms.length !== n) {
    throw new TypeError(`${source}: rtt_ms must have ${n} rows`);
  }
  rtt_ms.forEach((row: unknown, i: number) => {
    if (!Array.isArray(row) || row.length !== n) {
      throw new TypeError(`${source}: rtt_ms[${i}] must have ${n} entries`);
    }
    row.forEach((rtt: unknown, j: number) => {
      if (typeof rtt !== "number" || !(rtt >= 0 && rtt <= 10_000)) {
        throw new TypeError(
          `${source}: rtt_ms[${i}][${j}] must be a number of milliseconds from 0 to 10000`,
        );
      }
      if (i === j && rtt !== 0) throw new TypeError(`${source}: rtt_ms[${i}][${i}] must be 0`);
    });
  });
  return { regions: regions as string[], rtt_ms: rtt_ms as number[][] };
}

/** Reads and checks a matrix file. */
export async function loadRttMatrix(path: string): Promise<RttMatrix> {
  const text = await Deno.readTextFile(path);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TypeError(`${path} is not valid JSON: ${(error as Error).message}`);
  }
  return parseRttMatrix(value, path);
}

/** Round trips from region `from` to every live peer, ascending. */
function peerRtts(matrix: RttMatrix, from: number, dead: ReadonlySet<number>): number[] {
  return matrix.rtt_ms[from]!
    .filter((_, to) => to !== from && !dead.has(to))
    .sort((a, b) => a - b);
}

/**
 * The fast-path floor of region `region`: the round trip to the farthest
 * member of its nearest fast quorum (`n - e` replicas, itself included), among
 * live replicas. `Infinity` if too few are alive.
 */
export function fastFloor(
  matrix: RttMatrix,
  region: number,
  dead: ReadonlySet<number> = new Set(),
): number {
  const quorum = quorumSizes(matrix.regions.length);
  return peerRtts(matrix, region, dead)[quorum.fastQuorumSize - 2] ?? Number.POSITIVE_INFINITY;
}

/**
 * The slow-path floor: the fast-path round trip plus an Accept round to the
 * closest `n - f - 1` live peers.
 */
export function slowFloor(
  matrix: RttMatrix,
  region: number,
  dead: ReadonlySet<number> = new Set(),
): number {
  const quorum = quorumSizes(matrix.regions.length);
  const accept = peerRtts(matrix, region, dead)[quorum.slowQuorumSize - 2] ??
    Number.POSITIVE_INFINITY;
  return fastFloor(matrix, region, dead) + accept;
}

/**
 * The best leader-based (Multi-Paxos) latency per region: client to leader,
 * then the leader's round trip to its closest majority, for the one leader
 * that minimises the mean over regions.
 */
export function leaderLatencies(
  matrix: RttMatrix,
  dead: ReadonlySet<number> = new Set(),
): { leader: number; latencies: number[] } {
  const n = matrix.regions.length;
  const majority = quorumSizes(n).slowQuorumSize;
  let best: { leader: number; latencies: number[]; mean: number } | undefined;
  for (let leader = 0; leader < n; leader++) {
    if (dead.has(leader)) continue;
    const commit = peerRtts(matrix, leader, dead)[majority - 2] ?? Number.POSITIVE_INFINITY;
    const latencies = Array.from(
      { length: n },
      (_, region) => matrix.rtt_ms[region]![leader]! + commit,
    );
    const live = latencies.filter((_, region) => !dead.has(region));
    const mean = live.reduce((sum, latency) => sum + latency, 0) / live.length;
    if (best === undefined || mean < best.mean) best = { leader, latencies, mean };
  }
  return { leader: best!.leader, latencies: best!.latencies };
}
