/**
 * Metrics in the Prometheus text exposition format (version 0.0.4), named in
 * etcd's style: one prefix, base units, `_total` for counters.
 *
 * @module
 */

/** A cumulative histogram with fixed upper bounds. */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** Creates a histogram with the given bucket upper bounds (ascending). */
  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.#counts = new Array<number>(bounds.length).fill(0);
  }

  /** Records one observation. */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.#bounds.length; i++) {
      if (value <= this.#bounds[i]!) {
        this.#counts[i]!++;
        return;
      }
    }
  }

  /** Number of observations. */
  get count(): number {
    return this.#count;
  }

  /** Sum of observations. */
  get sum(): number {
    return this.#sum;
  }

  /** Renders the histogram's lines for metric `name` with `labels` (already formatted). */
  render(name: string, labels = ""): string[] {
    const lines: string[] = [];
    let cumulative = 0;
    const join = (extra: string) => {
      const all = [labels, extra].filter((part) => part.length > 0).join(",");
      return all.length === 0 ? "" : `{${all}}`;
    };
    for (let i = 0; i < this.#bounds.length; i++) {
      cumulative += this.#counts[i]!;
      lines.push(`${name}_bucket${join(`le="${this.#bounds[i]}"`)} ${cumulative}`);
    }
    lines.push(`${name}_bucket${join(`le="+Inf"`)} ${this.#count}`);
    lines.push(`${name}_sum${join("")} ${this.#sum}`);
    lines.push(`${name}_count${join("")} ${this.#count}`);
    return lines;
  }
}

/** Builds a Prometheus text page. */
export class MetricsPage {
  readonly #lines: string[] = [];

  /** Adds a metric family header and its samples. */
  family(
    name: string,
    type: "counter" | "gauge" | "histogram",
    help: string,
    samples: readonly string[],
  ): this {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples);
    return this;
  }

  /** The page. */
  toString(): string {
    return this.#lines.join("\n") + "\n";
  }
}

/** Escapes a label value. */
export function labelValue(value: string | number): string {
  return String(value).replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

/**
 * The most recent observations (a fixed-size ring), for quantiles over "now"
 * in `/status`: a Prometheus histogram gives rates and coarse buckets, this
 * gives an operator an exact recent median at a glance.
 */
export class RecentWindow {
  readonly #values: Float64Array;
  #next = 0;
  #filled = 0;

  /** Keeps the last `capacity` observations. */
  constructor(capacity = 1024) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    }
    this.#values = new Float64Array(capacity);
  }

  /** Records one observation, forgetting the oldest when full. */
  observe(value: number): void {
    this.#values[this.#next] = value;
    this.#next = (this.#next + 1) % this.#values.length;
    if (this.#filled < this.#values.length) this.#filled++;
  }

  /** Number of observations held. */
  get size(): number {
    return this.#filled;
  }

  /**
   * The given quantiles (each in [0, 1], nearest rank) of the observations
   * held, or nulls when there are none.
   */
  quantiles(qs: readonly number[]): (number | null)[] {
    if (this.#filled === 0) return qs.map(() => null);
    const sorted = this.#values.slice(0, this.#filled).sort();
    return qs.map((q) => {
      const rank = Math.min(this.#filled - 1, Math.max(0, Math.ceil(q * this.#filled) - 1));
      return sorted[rank]!;
    });
  }
}
