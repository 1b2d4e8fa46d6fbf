/**
 * Dependency sets.
 *
 * EPaxos* (Figure 3) states dependencies as explicit sets of instance ids. We
 * represent a dependency set as a vector with one entry per replica row: entry
 * `r` is the highest instance number of row `r` in the set, and the set is every
 * instance `(r, j)` with `1 <= j <= deps[r]` (a downward-closed set, as in the
 * SOSP'13 implementation). Union is the element-wise maximum, equality is
 * element-wise, membership is a comparison.
 *
 * The protocol stays the one proved in EPaxos*: a replica's reported set is a
 * superset of the conflicting instances it knows (`ConflictingIds`), which is
 * all the proofs of Agreement and Visibility use, and recovery's `ComputeI`
 * still tests conflicts command by command. What changes is only that a set may
 * name instances that do not conflict; the executor ignores those once their
 * commands are known.
 *
 * An instance's dependencies carry one more entry after the rows: its `seq`
 * (SOSP'13 §4.1, Figure 2), `deps[replicas]`. It is chosen with the
 * dependencies (one more than the highest `seq` of any conflicting instance the
 * replica knows, raised to the coordinator's), agreed with them (the fast path
 * needs equal vectors, the slow path takes the maximum as it takes the union)
 * and orders the commands of one strongly connected component at execution.
 * That is what lets a blind write be answered at commit (see
 * `driver/answer.ts`): a command proposed after a commit hears of it from some
 * replica of every quorum and so gets a higher `seq`. Frontier and prune
 * vectors carry rows only.
 *
 * Vectors are treated as immutable values once they leave the function that
 * built them: messages, records and instances share them.
 *
 * @module
 */

/** A dependency set: `deps[r]` is the highest instance number of row `r` in the set (0 for none). */
export type Deps = readonly number[];

/** The empty dependency set for `replicas` rows. */
export function emptyDeps(replicas: number): number[] {
  return new Array<number>(replicas).fill(0);
}

/** The empty dependencies of an instance for `replicas` rows: no instance, `seq` 0. */
export function emptyInstanceDeps(replicas: number): number[] {
  return new Array<number>(replicas + 1).fill(0);
}

/** The `seq` of an instance's dependencies for `replicas` rows (SOSP'13 §4.1). */
export function seqOf(deps: Deps, replicas: number): number {
  return deps[replicas] ?? 0;
}

/** Whether instance `(owner, number)` is in `deps`. */
export function depsContain(deps: Deps, owner: number, number: number): boolean {
  return number <= (deps[owner] ?? 0);
}

/** Whether two dependency sets are the same set. */
export function depsEqual(a: Deps, b: Deps): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let r = 0; r < a.length; r++) {
    if (a[r] !== b[r]) return false;
  }
  return true;
}

/** Whether every instance of `inner` is in `outer`. */
export function depsCover(outer: Deps, inner: Deps): boolean {
  for (let r = 0; r < inner.length; r++) {
    if ((inner[r] ?? 0) > (outer[r] ?? 0)) return false;
  }
  return true;
}

/** The union of two dependency sets; returns `a` itself when `b` adds nothing. */
export function depsUnion(a: Deps, b: Deps): Deps {
  if (depsCover(a, b)) return a;
  if (depsCover(b, a)) return b;
  const union = new Array<number>(a.length);
  for (let r = 0; r < a.length; r++) union[r] = Math.max(a[r] ?? 0, b[r] ?? 0);
  return union;
}

/** Raises `target` in place to include `source` (entries `source` lacks count as 0). */
export function depsRaise(target: number[], source: Deps): void {
  const length = Math.min(target.length, source.length);
  for (let r = 0; r < length; r++) {
    const value = source[r]!;
    if (value > target[r]!) target[r] = value;
  }
}

/** Renders a dependency set as `[r0 r1 ...]`, the form used by `describe*` output. */
export function describeDeps(deps: Deps | undefined): string {
  return deps === undefined ? "-" : `[${deps.join(" ")}]`;
}

/**
 * Renders an instance's dependencies as `[r0 r1 ... ^seq]`: the rows, then the
 * `seq` after a caret.
 */
export function describeInstanceDeps(deps: Deps | undefined): string {
  if (deps === undefined) return "-";
  if (deps.length === 0) return "[]";
  return `[${deps.slice(0, -1).join(" ")} ^${deps[deps.length - 1]}]`;
}

/**
 * Checks that a value received from outside is a well-formed vector of
 * `replicas` non-negative integers (rows; an instance's dependencies have
 * `replicas + 1`, the last being its `seq`).
 */
export function isDeps(value: unknown, replicas: number): value is Deps {
  if (!Array.isArray(value) || value.length !== replicas) return false;
  for (const entry of value) {
    if (!Number.isSafeInteger(entry) || entry < 0) return false;
  }
  return true;
}
