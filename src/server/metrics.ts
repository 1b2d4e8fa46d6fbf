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
