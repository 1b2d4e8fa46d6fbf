/**
 * Wing & Gong's linearizability search with Lowe's state cache (the algorithm
 * porcupine's `checker.go` describes), run separately on each key.
 *
 * The history of a key becomes a doubly linked list of call and return
 * entries in real-time order. The search walks the list: at a call it tries to
 * linearize that operation next (apply it to the model, "lift" its call and
 * return out of the list, restart from the head); at a return it has met an
 * operation that should already have been linearized, so it backtracks. A
 * cache of (set of linearized operations, model state) pairs prunes every
 * configuration that was already explored, which is what makes the search fast
 * in practice.
 *
 * @module
 */

import { Bitset } from "./bitset.ts";
import { describeOrigin, type Operation, partitionByKey } from "./history.ts";
import type { Model } from "./model.ts";
import { StateCache } from "./state_cache.ts";

/** The answer for a whole history or for one key. */
export type Verdict = "linearizable" | "not-linearizable" | "unknown";

/** Options of {@linkcode checkOperations}. */
export interface CheckOptions {
  /**
   * Search steps allowed per key; past it the key's verdict is `unknown`
   * instead of the search running on. Default {@linkcode DEFAULT_MAX_STEPS_PER_KEY}.
   */
  readonly maxStepsPerKey?: number;
  /**
   * Whether to stop at the first key found not linearizable (default `true`).
   * Keys are searched in interleaved slices, so the easiest refutation is
   * found first; keys left undecided get verdict `unknown`.
   */
  readonly stopOnFailure?: boolean;
}

/**
 * The default search budget per key: over ten times what the hardest history
 * in `tests/testdata/linearizability/` needs (about 400 000 steps); a search
 * that uses it all takes about a second and a few hundred megabytes.
 */
export const DEFAULT_MAX_STEPS_PER_KEY = 5_000_000;

/** Past this slice size, keys are searched one at a time. */
const ROUND_ROBIN_SLICE_LIMIT = 1 << 16;

/** The result of checking one key. */
export interface KeyCheckResult {
  /** The key. */
  readonly key: string;
  /** The key's verdict. */
  readonly verdict: Verdict;
  /** How many operations touched the key. */
  readonly operationCount: number;
  /** Search steps spent on the key. */
  readonly steps: number;
  /**
   * Indices into the checked operations: a complete linearization when the
   * verdict is `linearizable`, otherwise the longest linearizable prefix found.
   */
  readonly linearization: readonly number[];
  /**
   * When not linearizable: the index of the operation that could not take
   * effect after the longest prefix (the earliest to return of those left).
   */
  readonly blockedOperation?: number;
  /** When not linearizable or unknown: one line saying why. */
  readonly explanation?: string;
}

/** The result of checking a history. */
export interface CheckResult {
  /**
   * `not-linearizable` if any key is, else `unknown` if any key ran out of
   * budget, else `linearizable`.
   */
  readonly verdict: Verdict;
  /** One result per key, in order of the key's first operation. */
  readonly keys: readonly KeyCheckResult[];
  /** How many operations were checked. */
  readonly operationCount: number;
  /** Search steps spent on all keys. */
  readonly steps: number;
}

/**
 * Decides whether `operations` are linearizable with respect to `model`,
 * checking each key separately.
 *
 * @example
 * ```ts
 * import { checkOperations, describeCheckResult, kvHistoryFromEvents, kvModel } from "./mod.ts";
 *
 * const { operations } = kvHistoryFromEvents([
 *   { process: 0, type: "invoke", f: "put", key: "a", value: "v1" },
 *   { process: 0, type: "ok", f: "put", key: "a" },
 *   { process: 1, type: "invoke", f: "get", key: "a" },
 *   { process: 1, type: "ok", f: "get", key: "a", value: null },
 * ]);
 * const result = checkOperations(kvModel, operations);
 * result.verdict; // "not-linearizable": the get missed the completed put
 * console.log(describeCheckResult(result));
 * ```
 */
export function checkOperations<S, I, O>(
  model: Model<S, I, O>,
  operations: readonly Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult {
  const maxSteps = options.maxStepsPerKey ?? DEFAULT_MAX_STEPS_PER_KEY;
  if (!(maxSteps > 0)) {
    throw new RangeError(`Step budget must be positive, got ${maxSteps}`);
  }
  const stopOnFailure = options.stopOnFailure ?? true;
  const partitions = [...partitionByKey(operations)];
  const results = new Array<KeyCheckResult | undefined>(partitions.length);
  let active: { readonly index: number; search: KeySearch<S, I, O> | undefined }[] = partitions
    .map(([key, members], index) => ({
      index,
      search: new KeySearch(model, operations, { key, members }),
    }));

  // Keys are first searched round-robin in slices that double every round,
  // like porcupine's parallel per-key searches: an easy refutation of one key
  // is found without first finishing a hard key. Past a slice size, keys are
  // finished one at a time, and each search's cache is let go as soon as the
  // key is settled, so that only one large cache is alive at once.
  let refutedKey: string | undefined;
  for (let slice = 4096; active.length > 0 && refutedKey === undefined; slice *= 2) {
    for (const entry of active) {
      const search = entry.search;
      if (search === undefined) continue;
      const limit = slice > ROUND_ROBIN_SLICE_LIMIT ? maxSteps : search.steps + slice;
      search.advance(Math.min(maxSteps, limit));
      if (search.verdict === undefined && search.steps < maxSteps) continue;
      results[entry.index] = search.result(maxSteps, undefined);
      entry.search = undefined;
      if (search.verdict === "not-linearizable" && stopOnFailure) {
        refutedKey = search.key;
        break;
      }
    }
    active = active.filter((entry) => entry.search !== undefined);
  }
  for (const entry of active) {
    results[entry.index] = entry.search?.result(maxSteps, refutedKey);
  }

  const keys = results.filter((result): result is KeyCheckResult => result !== undefined);
  let verdict: Verdict = "linearizable";
  if (keys.some((k) => k.verdict === "not-linearizable")) verdict = "not-linearizable";
  else if (keys.some((k) => k.verdict === "unknown")) verdict = "unknown";
  const steps = keys.reduce((total, k) => total + k.steps, 0);
  return { verdict, keys, operationCount: operations.length, steps };
}

/**
 * Renders a result as text: one line for the verdict, then one line per key
 * that is not linearizable or undecided.
 */
export function describeCheckResult(result: CheckResult): string {
  const lines = [
    `${result.verdict} (${result.operationCount} operations, ${result.keys.length} keys)`,
  ];
  for (const key of result.keys) {
    if (key.explanation !== undefined) {
      lines.push(`key ${JSON.stringify(key.key)}: ${key.verdict}: ${key.explanation}`);
    }
  }
  return lines.join("\n");
}

interface KeyPartition {
  readonly key: string;
  /** Indices into the operations array of the operations on this key. */
  readonly members: readonly number[];
}

/** Index of the list's head sentinel; the tail sentinel is `2n + 1`. */
const HEAD = 0;

/** Seeds of the Zobrist hashes, fixed so that runs are reproducible. */
function zobristHashes(count: number): Int32Array {
  const hashes = new Int32Array(count);
  let seed = 0x2545f491;
  for (let i = 0; i < count; i++) {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let z = Math.imul(seed ^ (seed >>> 15), seed | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    hashes[i] = z ^ (z >>> 14);
  }
  return hashes;
}

/**
 * The search over one key's operations, resumable so that keys can be
 * interleaved. Operations are numbered 0 .. n-1 locally.
 *
 * Besides the cache, four reductions keep histories with many indeterminate
 * operations (timeouts) tractable. Each only skips configurations from which
 * a linearization exists only if one exists from a configuration the search
 * does visit; an indeterminate operation X never returned and its model step
 * accepts it anywhere, so moving X to the very end of a linearization keeps
 * it valid whenever X's effect is not needed:
 *
 * 1. Success as soon as only indeterminate operations are left (they all go
 *    last).
 * 2. An indeterminate operation that leaves the state unchanged is not
 *    linearized there (move it to the end).
 * 3. Of indeterminate operations with equal inputs, the one invoked first is
 *    linearized first (swap them: both never return).
 * 4. An indeterminate blind write is only followed by an operation that is
 *    not a blind write (otherwise its value is overwritten unseen: move it to
 *    the end). Configurations right after such a write are "restricted"; the
 *    restriction is an extra bit of the cached bitset.
 *
 * And dominance: if indeterminate X is linearized in a set, any way to
 * finish from (set, state) also finishes from (set - X, state), so if the
 * latter was explored and failed, the former is skipped.
 */
class KeySearch<S, I, O> {
  readonly key: string;
  /** Set once decided. */
  verdict: Verdict | undefined;
  /** Steps taken so far. */
  steps = 0;

  readonly #model: Model<S, I, O>;
  readonly #operations: readonly Operation<I, O>[];
  readonly #members: readonly number[];
  readonly #inputs: I[];
  readonly #outputs: (O | undefined)[];
  // The entry list: node 0 is the head, nodes 1 .. 2n the call and return
  // entries in real-time order, node 2n+1 the tail, so that lifting and
  // unlifting need no null checks.
  readonly #next: Int32Array;
  readonly #prev: Int32Array;
  readonly #nodeOperation: Int32Array;
  readonly #isCall: Uint8Array;
  /** For a call node, the node of its return. */
  readonly #returnNode: Int32Array;
  /** For an operation, the rank of its return among all entries. */
  readonly #returnRank: Int32Array;
  /** Operations that never returned and whose outcome is unknown. */
  readonly #indeterminate: Int32Array;
  readonly #isIndeterminate: Uint8Array;
  readonly #isBlindWrite: Uint8Array;
  /** For an indeterminate operation, the previous one with an equal input, or -1. */
  readonly #previousTwin: Int32Array;
  /** The bit that marks a restricted configuration (after an indeterminate blind write). */
  readonly #restrictedBit: number;
  // Zobrist hashing keeps the hash of the linearized set current in O(1)
  // per change; the cache resolves collisions by comparing the bitsets.
  readonly #zobrist: Int32Array;
  readonly #linearized: Bitset;
  #linearizedHash = 0;
  readonly #cache: StateCache<S>;
  readonly #stackNode: Int32Array;
  readonly #stackState: S[];
  #depth = 0;
  /** Determinate operations not yet linearized; the search succeeds at 0. */
  #determinateLeft: number;
  readonly #bestPrefix: Int32Array;
  #bestDepth = 0;
  /** Stack entries below this depth are unchanged since `#bestPrefix` was copied. */
  #bestValidDepth = 0;
  #state: S;
  #node: number;

  constructor(
    model: Model<S, I, O>,
    operations: readonly Operation<I, O>[],
    partition: KeyPartition,
  ) {
    const { key, members } = partition;
    const n = members.length;
    this.key = key;
    this.#model = model;
    this.#operations = operations;
    this.#members = members;
    // Searched with writes of unobserved values merged (see the model's
    // `mergeUnobservedWrites`); reports describe the original operations.
    this.#inputs = model.mergeUnobservedWrites?.(members.map((index) => operations[index])) ??
      members.map((index) => operations[index].input);
    this.#outputs = members.map((index) => operations[index].output);

    // Entries 0 .. 2n-1 before sorting: i < n is the call of operation i,
    // i >= n its return. Calls sort before returns at equal positions, which
    // makes operations with touching intervals concurrent (the permissive
    // reading).
    const order = new Int32Array(2 * n);
    const positions = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      order[i] = i;
      order[n + i] = n + i;
      positions[i] = operations[members[i]].invokedAt;
      positions[n + i] = operations[members[i]].completedAt;
    }
    order.sort((a, b) => {
      if (positions[a] !== positions[b]) return positions[a] < positions[b] ? -1 : 1;
      const kindA = a < n ? 0 : 1;
      const kindB = b < n ? 0 : 1;
      return kindA !== kindB ? kindA - kindB : a - b;
    });

    const size = 2 * n + 2;
    this.#next = new Int32Array(size);
    this.#prev = new Int32Array(size);
    this.#nodeOperation = new Int32Array(size);
    this.#isCall = new Uint8Array(size);
    this.#returnNode = new Int32Array(size);
    this.#returnRank = new Int32Array(n);
    const callNode = new Int32Array(n);
    const callRank = new Int32Array(n);
    for (let rank = 0; rank < 2 * n; rank++) {
      const node = rank + 1;
      const entry = order[rank];
      const op = entry < n ? entry : entry - n;
      this.#nodeOperation[node] = op;
      if (entry < n) {
        this.#isCall[node] = 1;
        callNode[op] = node;
        callRank[op] = rank;
      } else {
        this.#returnRank[op] = rank;
      }
    }
    for (let op = 0; op < n; op++) this.#returnNode[callNode[op]] = this.#returnRank[op] + 1;
    for (let node = 0; node < size; node++) {
      this.#next[node] = node + 1;
      this.#prev[node] = node - 1;
    }

    const indeterminate: number[] = [];
    this.#isIndeterminate = new Uint8Array(n);
    this.#isBlindWrite = new Uint8Array(n);
    this.#previousTwin = new Int32Array(n).fill(-1);
    for (let op = 0; op < n; op++) {
      const operation = operations[members[op]];
      if (model.isBlindWrite?.(operation.input) === true) this.#isBlindWrite[op] = 1;
      if (operation.output === undefined && operation.completedAt === Infinity) {
        indeterminate.push(op);
        this.#isIndeterminate[op] = 1;
      }
    }
    // Twins are chained in list order, the order the search tries them in.
    indeterminate.sort((a, b) => callRank[a] - callRank[b]);
    this.#indeterminate = Int32Array.from(indeterminate);
    if (model.inputKey !== undefined) {
      const lastWithInput = new Map<string, number>();
      for (const op of indeterminate) {
        const inputKey = model.inputKey(this.#inputs[op]);
        const twin = lastWithInput.get(inputKey);
        if (twin !== undefined) this.#previousTwin[op] = twin;
        lastWithInput.set(inputKey, op);
      }
    }
    this.#determinateLeft = n - indeterminate.length;

    this.#restrictedBit = n;
    this.#zobrist = zobristHashes(n + 1);
    this.#linearized = new Bitset(n + 1);
    this.#cache = new StateCache<S>(this.#linearized.words, (a, b) => model.equal(a, b));
    this.#stackNode = new Int32Array(n);
    this.#stackState = new Array(n);
    this.#bestPrefix = new Int32Array(n);
    this.#state = model.init();
    this.#node = this.#next[HEAD];
    if (this.#determinateLeft === 0) this.verdict = "linearizable";
  }

  /** Searches on until decided or until `stepLimit` steps in total. */
  advance(stepLimit: number): void {
    if (this.verdict !== undefined) return;
    const model = this.#model;
    const inputs = this.#inputs;
    const outputs = this.#outputs;
    const next = this.#next;
    const prev = this.#prev;
    const nodeOperation = this.#nodeOperation;
    const isCall = this.#isCall;
    const returnNode = this.#returnNode;
    const zobrist = this.#zobrist;
    const linearized = this.#linearized;
    const cache = this.#cache;
    const stackNode = this.#stackNode;
    const stackState = this.#stackState;
    const isIndeterminate = this.#isIndeterminate;
    const isBlindWrite = this.#isBlindWrite;
    const previousTwin = this.#previousTwin;
    const restrictedBit = this.#restrictedBit;
    const restrictedHash = zobrist[restrictedBit];
    let determinateLeft = this.#determinateLeft;
    let depth = this.#depth;
    let state = this.#state;
    let node = this.#node;
    let linearizedHash = this.#linearizedHash;
    let restricted = linearized.has(restrictedBit);
    let steps = this.steps;

    // Reduction 1: once only indeterminate operations are left, success.
    while (determinateLeft > 0) {
      if (steps >= stepLimit) break;
      steps++;
      if (isCall[node] === 1) {
        const op = nodeOperation[node];
        const indeterminate = isIndeterminate[op] === 1;
        if (
          // Reduction 4: after an indeterminate blind write, no blind write.
          (restricted && isBlindWrite[op] === 1) ||
          // Reduction 3: equal indeterminate operations go in list order.
          (indeterminate && previousTwin[op] !== -1 && !linearized.has(previousTwin[op]))
        ) {
          node = next[node];
          continue;
        }
        const result = model.step(state, inputs[op], outputs[op]);
        if (!result.ok) {
          node = next[node];
          continue;
        }
        const newState = result.state;
        // Reduction 2: an indeterminate no-op is useless here.
        if (indeterminate && model.equal(newState, state)) {
          node = next[node];
          continue;
        }
        const newRestricted = indeterminate && isBlindWrite[op] === 1;
        linearized.set(op);
        let newHash = linearizedHash ^ zobrist[op];
        if (newRestricted !== restricted) {
          if (newRestricted) linearized.set(restrictedBit);
          else linearized.clear(restrictedBit);
          newHash ^= restrictedHash;
        }
        const cacheHash = newHash ^ Math.imul(model.hash(newState), 0x9e3779b1);
        if (
          !cache.add(cacheHash, newState) ||
          (!newRestricted && this.#dominated(newHash, newState))
        ) {
          // Explored already, or dominated by a configuration that failed.
          linearized.clear(op);
          if (restricted) linearized.set(restrictedBit);
          else linearized.clear(restrictedBit);
          node = next[node];
          continue;
        }
        stackNode[depth] = node;
        stackState[depth] = state;
        depth++;
        if (depth > this.#bestDepth) {
          // Copy only what changed since the last copy, so that the copying
          // costs no more than the pushes.
          for (let i = this.#bestValidDepth; i < depth; i++) {
            this.#bestPrefix[i] = nodeOperation[stackNode[i]];
          }
          this.#bestDepth = depth;
          this.#bestValidDepth = depth;
        }
        state = newState;
        linearizedHash = newHash;
        restricted = newRestricted;
        if (!indeterminate) determinateLeft--;
        // Lift: unlink the call and its return.
        const ret = returnNode[node];
        next[prev[node]] = next[node];
        prev[next[node]] = prev[node];
        next[prev[ret]] = next[ret];
        prev[next[ret]] = prev[ret];
        node = next[HEAD];
      } else {
        // A return whose operation is not linearized yet: backtrack.
        if (depth === 0) {
          this.verdict = "not-linearizable";
          break;
        }
        depth--;
        if (depth < this.#bestValidDepth) this.#bestValidDepth = depth;
        node = stackNode[depth];
        state = stackState[depth];
        const op = nodeOperation[node];
        if (isIndeterminate[op] === 0) determinateLeft++;
        linearized.clear(op);
        linearizedHash ^= zobrist[op];
        const top = depth > 0 ? nodeOperation[stackNode[depth - 1]] : -1;
        const wasRestricted = top !== -1 && isIndeterminate[top] === 1 && isBlindWrite[top] === 1;
        if (wasRestricted !== restricted) {
          if (wasRestricted) linearized.set(restrictedBit);
          else linearized.clear(restrictedBit);
          linearizedHash ^= restrictedHash;
          restricted = wasRestricted;
        }
        // Unlift in the reverse order of the lift (dancing links).
        const ret = returnNode[node];
        next[prev[ret]] = ret;
        prev[next[ret]] = ret;
        next[prev[node]] = node;
        prev[next[node]] = node;
        node = next[node];
      }
    }
    if (determinateLeft === 0) this.verdict = "linearizable";
    this.#determinateLeft = determinateLeft;
    this.#depth = depth;
    this.#state = state;
    this.#node = node;
    this.#linearizedHash = linearizedHash;
    this.steps = steps;
  }

  /**
   * Whether the unrestricted configuration just reached (the linearized set,
   * hashing to `newHash`, with `newState`) is dominated by a configuration
   * (set - X, newState), X indeterminate, that is in the cache unrestricted.
   * Such a cached configuration has failed: it cannot be on the search stack,
   * whose sets are all subsets of the current one (the set before this step),
   * and equal to it only for the current configuration, which is either
   * restricted or, if X is the operation just linearized, has a different
   * state (reduction 2 skipped the no-ops).
   */
  #dominated(newHash: number, newState: S): boolean {
    const indeterminate = this.#indeterminate;
    if (indeterminate.length === 0) return false;
    const linearized = this.#linearized;
    const stateHash = Math.imul(this.#model.hash(newState), 0x9e3779b1);
    for (let i = 0; i < indeterminate.length; i++) {
      const other = indeterminate[i];
      if (!linearized.has(other)) continue;
      linearized.clear(other);
      const otherHash = newHash ^ this.#zobrist[other] ^ stateHash;
      const found = this.#cache.has(otherHash, newState);
      linearized.set(other);
      if (found) return true;
    }
    return false;
  }

  /** The result so far; undecided keys are `unknown`. */
  result(maxSteps: number, refutedKey: string | undefined): KeyCheckResult {
    const model = this.#model;
    const operations = this.#operations;
    const members = this.#members;
    const n = members.length;
    const base = { key: this.key, operationCount: n, steps: this.steps };
    if (this.verdict === "linearizable") {
      const linearization = new Array<number>(this.#depth);
      for (let i = 0; i < this.#depth; i++) {
        linearization[i] = members[this.#nodeOperation[this.#stackNode[i]]];
      }
      // The indeterminate operations left over go last.
      for (const op of this.#indeterminate) {
        if (!this.#linearized.has(op)) linearization.push(members[op]);
      }
      return { ...base, verdict: "linearizable", linearization };
    }

    const prefix = Array.from(this.#bestPrefix.subarray(0, this.#bestDepth), (op) => members[op]);
    let prefixState = model.init();
    for (const index of prefix) {
      const step = model.step(prefixState, operations[index].input, operations[index].output);
      if (step.ok) prefixState = step.state;
    }
    const progress = `the longest linearizable prefix has ${this.#bestDepth} of ${n} operations` +
      ` and leaves state ${model.describeState(prefixState)}`;
    if (this.verdict === undefined) {
      const why = this.steps >= maxSteps
        ? `search gave up after ${maxSteps} steps`
        : `search abandoned after ${this.steps} steps once key ${
          JSON.stringify(refutedKey)
        } was refuted`;
      return {
        ...base,
        verdict: "unknown",
        linearization: prefix,
        explanation: `${why}; ${progress}`,
      };
    }

    // The search backtracked out of the deepest prefix when it reached the
    // return of the earliest-returning operation left: nothing placed before
    // that return led anywhere.
    const inPrefix = new Uint8Array(n);
    for (let i = 0; i < this.#bestDepth; i++) inPrefix[this.#bestPrefix[i]] = 1;
    let blocked = -1;
    for (let op = 0; op < n; op++) {
      if (
        inPrefix[op] === 0 &&
        (blocked === -1 || this.#returnRank[op] < this.#returnRank[blocked])
      ) {
        blocked = op;
      }
    }
    const blockedOperation = operations[members[blocked]];
    const fits = model.step(prefixState, blockedOperation.input, blockedOperation.output).ok;
    const why = fits
      ? "it fits that state, but every way of placing it and its concurrent operations fails later"
      : "it contradicts that state, and placing concurrent operations first does not help";
    return {
      ...base,
      verdict: "not-linearizable",
      linearization: prefix,
      blockedOperation: members[blocked],
      explanation: `${progress}; then ${
        model.describeOperation(blockedOperation.input, blockedOperation.output)
      } (${describeOrigin(blockedOperation)}) cannot take effect: ${why}`,
    };
  }
}
