/**
 * `deno run --allow-read bench/cpu_profile.ts FILE.cpuprofile... [--top N]
 * [--last S] [--skip-end S]`: where a V8 CPU profile (`deno run --cpu-prof`,
 * or `bench:throughput --cpu-prof DIR`) spends its time, as two Markdown
 * tables: functions by self time, and by inclusive time (a function's own
 * samples plus its callees', each sample counted once per function however
 * deep the recursion). Several files are added together.
 *
 * A profile covers the whole life of the process. `--skip-end S` leaves out
 * its last S seconds and `--last S` keeps only the S seconds before that, so
 * that a profile of `bench:throughput` can be cut to its last measurement
 * (which ends about 2.5 s before the replicas stop: the pause before the
 * read-back, the read-back and the convergence check).
 *
 * @module
 */

/** One node of a V8 CPU profile's call tree. */
export interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly hitCount?: number;
  readonly children?: readonly number[];
}

/** A V8 CPU profile (`.cpuprofile`, the Chrome DevTools format). */
export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples?: readonly number[];
  /** Microseconds from the previous sample (from `startTime` for the first), one per sample. */
  readonly timeDeltas?: readonly number[];
}

/** The part of a profile to count, in seconds before its end. */
export interface ProfileWindow {
  /** Seconds at the end left out (default 0). */
  readonly skipEndS?: number;
  /** Seconds kept before those (default: everything). */
  readonly lastS?: number;
}

/** Time per function, in samples. */
export interface ProfileSummary {
  /** Samples in all. */
  readonly total: number;
  /** Samples whose top frame is the function. */
  readonly self: Map<string, number>;
  /** Samples with the function anywhere on the stack. */
  readonly inclusive: Map<string, number>;
}

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url === "" ? "" : url.replace(/^.*\/(src|bench|tests|node_modules|ext)\//, "$1/");
  return `${functionName || "(anonymous)"}${file === "" ? "" : ` ${file}:${lineNumber + 1}`}`;
}

/**
 * Adds `profile`'s samples to `summary` (or a new summary); with `window`,
 * only the samples inside it (which needs the profile's sample times).
 */
export function summarize(
  profile: CpuProfile,
  summary?: ProfileSummary,
  window: ProfileWindow = {},
): ProfileSummary {
  const result = summary ?? { total: 0, self: new Map(), inclusive: new Map() };
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const hits = new Map<number, number>();
  const windowed = window.lastS !== undefined || window.skipEndS !== undefined;
  if (profile.samples !== undefined) {
    const deltas = profile.timeDeltas;
    if (windowed && (deltas === undefined || deltas.length !== profile.samples.length)) {
      throw new Error("A window needs the profile's sample times (timeDeltas)");
    }
    const end = profile.endTime - (window.skipEndS ?? 0) * 1e6;
    const start = window.lastS === undefined ? -Infinity : end - window.lastS * 1e6;
    let time = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      if (windowed) {
        time += deltas![i]!;
        if (time < start || time > end) continue;
      }
      const id = profile.samples[i]!;
      hits.set(id, (hits.get(id) ?? 0) + 1);
    }
  } else if (windowed) {
    throw new Error("A window needs the profile's samples");
  } else {
    for (const node of profile.nodes) hits.set(node.id, node.hitCount ?? 0);
  }
  for (const [id, count] of hits) {
    const node = byId.get(id);
    if (node === undefined || count === 0) continue;
    const name = frameName(node);
    if (name.startsWith("(idle)")) continue;
    (result as { total: number }).total += count;
    result.self.set(name, (result.self.get(name) ?? 0) + count);
    const seen = new Set<string>();
    for (
      let current: number | undefined = id;
      current !== undefined;
      current = parent.get(current)
    ) {
      const frame = frameName(byId.get(current)!);
      if (seen.has(frame)) continue;
      seen.add(frame);
      result.inclusive.set(frame, (result.inclusive.get(frame) ?? 0) + count);
    }
  }
  return result;
}

/** Renders the top `top` functions by self and inclusive time. */
export function profileTables(summary: ProfileSummary, top = 30): string {
  const table = (title: string, map: Map<string, number>) =>
    [
      `| ${title} | % | function |`,
      "|---:|---:|---|",
      ...[...map].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, count]) =>
        `| ${count} | ${(100 * count / summary.total).toFixed(1)} | ${
          name.replaceAll("|", "\\|")
        } |`
      ),
    ].join("\n");
  return [
    `${summary.total} samples (idle excluded)`,
    "",
    table("self samples", summary.self),
    "",
    table("inclusive samples", summary.inclusive),
  ].join("\n");
}

if (import.meta.main) {
  const files: string[] = [];
  let top = 30;
  let lastS: number | undefined;
  let skipEndS: number | undefined;
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--top") top = Number(Deno.args[++i]);
    else if (Deno.args[i] === "--last") lastS = Number(Deno.args[++i]);
    else if (Deno.args[i] === "--skip-end") skipEndS = Number(Deno.args[++i]);
    else files.push(Deno.args[i]!);
  }
  const seconds = (value: number | undefined) =>
    value === undefined || (Number.isFinite(value) && value >= 0);
  if (
    files.length === 0 || !Number.isInteger(top) || top < 1 || !seconds(lastS) || !seconds(skipEndS)
  ) {
    console.error("usage: cpu_profile.ts FILE.cpuprofile... [--top N] [--last S] [--skip-end S]");
    Deno.exit(2);
  }
  const window: ProfileWindow = {
    ...(lastS === undefined ? {} : { lastS }),
    ...(skipEndS === undefined ? {} : { skipEndS }),
  };
  let summary: ProfileSummary | undefined;
  for (const file of files) {
    const profile = JSON.parse(await Deno.readTextFile(file)) as CpuProfile;
    summary = summarize(profile, summary, window);
  }
  console.log(profileTables(summary!, top));
}
