/**
 * A batch as atomic units, and the units packed into as few atomic commits as
 * Deno KV's limits allow.
 *
 * A batch is a sequence of atomic units (one per record, an instance record
 * with its execution effects; then one per leftover set of effects), exactly
 * as in `MemoryStorage`. Units are packed greedily, in order, into as few
 * `kv.atomic()` commits as Deno KV's limits allow (see `writes.ts`); a unit is
 * never split between commits. The effects of a commit's units go out as one
 * effects log entry (`effects_log.ts`). A unit that does not fit in one commit
 * at all is written through the redo log (`redo_log.ts`).
 *
 * @module
 */

import { instanceKey, keyNumber, keyOwner } from "../../core/instance.ts";
import type { PersistBatch } from "../types.ts";
import { concat } from "./chunks.ts";
import { type EffectsLog, logCost, logEffects } from "./effects_log.ts";
import { floorWrite, type Instances } from "./instances.ts";
import type { RedoLog } from "./redo_log.ts";
import {
  accumulate,
  type AtomicWriter,
  costOf,
  fits,
  resetCost,
  sum,
  type Write,
  zeroCost,
} from "./writes.ts";

/** An atomic unit of a batch: writes, and the effects it logs. */
export interface Unit {
  /** The unit's writes. */
  readonly writes: readonly Write[];
  /** `encodeEffects` of the unit's instance, when it has changes. */
  readonly effects?: Uint8Array;
}

/** What a {@linkcode CommitPacker} writes with. */
export interface CommitPackerParts {
  /** Makes the atomic commits. */
  readonly writer: AtomicWriter;
  /** Numbers and chunks the units' effects. */
  readonly log: EffectsLog;
  /** Takes the units too large for one commit. */
  readonly redo: RedoLog;
}

/**
 * The atomic commit being filled: its writes, and the effects of its units,
 * which go out as one log entry (one sequence number per commit, not per
 * instance, so that a snapshot deletes few log keys). Used for one batch.
 */
export class CommitPacker {
  readonly #writer: AtomicWriter;
  readonly #log: EffectsLog;
  readonly #redo: RedoLog;
  #writes: Write[] = [];
  #effects: Uint8Array[] = [];
  /** The log entry of the commit being filled, once a unit has effects. */
  #seq: number | undefined;
  readonly #cost = zeroCost();

  /** Packs with `parts`. */
  constructor(parts: CommitPackerParts) {
    this.#writer = parts.writer;
    this.#log = parts.log;
    this.#redo = parts.redo;
  }

  /**
   * Adds `unit` to the commit being filled, committing that one first if the
   * unit does not fit in it too; a unit too large for any commit goes through
   * the redo log on its own.
   */
  async add(unit: Unit): Promise<void> {
    const unitCost = costOf(unit.writes);
    if (unit.effects !== undefined) accumulate(unitCost, logCost(unit.effects.length));
    if (!fits(unitCost)) {
      await this.flush();
      const own = [...unit.writes];
      if (unit.effects !== undefined) {
        this.#log.grow(unit.effects.length);
        for (const w of this.#log.writes(this.#log.next(), unit.effects)) own.push(w);
      }
      await this.#redo.write(own);
      this.#log.written(this.#log.seq);
      return;
    }
    if (!fits(sum(this.#cost, unitCost))) await this.flush();
    accumulate(this.#cost, unitCost);
    for (const w of unit.writes) this.#writes.push(w);
    if (unit.effects !== undefined) {
      this.#seq ??= this.#log.next();
      this.#effects.push(unit.effects);
      this.#log.grow(unit.effects.length);
    }
  }

  /** Commits what was added since the last commit, with its log entry. */
  async flush(): Promise<void> {
    const seq = this.#seq;
    if (seq !== undefined) {
      for (const w of this.#log.writes(seq, concat(this.#effects, 0))) this.#writes.push(w);
    }
    if (this.#writes.length > 0) await this.#writer.commit(this.#writes);
    if (seq !== undefined) this.#log.written(seq);
    this.#writes = [];
    this.#effects = [];
    this.#seq = undefined;
    resetCost(this.#cost);
  }
}

/** The batch's atomic units, in order (MemoryStorage's order, exactly). */
export async function batchUnits<C>(
  batch: PersistBatch<C>,
  instances: Instances<C>,
): Promise<Unit[]> {
  const units: Unit[] = [];
  const effects = batch.effects;
  const applied = new Set<number>();
  // Chunks written by earlier units of this batch, so that a later delete
  // in the same batch finds them although they are not on disk yet.
  const written = new Map<number, number>();
  for (const record of batch.records) {
    switch (record.kind) {
      case "floor":
        units.push({ writes: [floorWrite(record.pruneFloor)] });
        break;
      case "delete":
        units.push({ writes: await instances.deleteWrites(record, written) });
        break;
      case "instance": {
        const writes = instances.recordWrites(record, written);
        const key = instanceKey(record.owner, record.number);
        const mutations = effects.get(key);
        let logged: Uint8Array | undefined;
        if (mutations !== undefined && !applied.has(key)) {
          applied.add(key);
          logged = logEffects(record.owner, record.number, mutations);
        }
        units.push({ writes, effects: logged });
        break;
      }
    }
  }
  if (applied.size < effects.size) {
    for (const [key, mutations] of effects) {
      if (applied.has(key)) continue;
      const logged = logEffects(keyOwner(key), keyNumber(key), mutations);
      if (logged !== undefined) units.push({ writes: [], effects: logged });
    }
  }
  return units;
}
