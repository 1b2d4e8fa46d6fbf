/**
 * `deno task kv`: a command-line client of an epaxos-kv cluster, and a load
 * generator (`batch-put`) in the manner of the EPaxos reproduction's
 * `client batch-put ... --random-key --random-server` (Tu and Zeng,
 * "Reproducing Egalitarian Paxos", Princeton COS 518, 2019).
 *
 * ```
 * deno task kv put greeting hello
 * deno task kv get greeting
 * deno task kv batch-put 1000 --pipeline 100 --random-key --random-server --verify
 * ```
 *
 * Run `deno task kv --help` for every command and option.
 *
 * @module
 */

import {
  KvClient,
  type KvClientEntry,
  KvClientError,
  OutcomeUnknownError,
  PreconditionFailedError,
  type ReplicaStatus,
} from "../client/mod.ts";
import { MAX_LIST_LIMIT, MAX_VALUE_BYTES } from "../kv/commands.ts";
import { integerOption, option, parseArgs, type ParsedArgs, UsageError } from "./args.ts";

/** The usage text `--help` prints. */
export const USAGE = `Usage: deno task kv [options] <command> [arguments]

Talks to an epaxos-kv cluster over its HTTP API.

Commands:
  put KEY VALUE        Write VALUE (- reads it from stdin); prints the new version
      [--if-version V]   only if KEY is at version V (compare-and-set)
      [--if-absent]      only if KEY does not exist
  get KEY [--local]    Print KEY's value, raw, to stdout (--local: this replica's
                       state, without consensus; may be stale)
  del KEY [--if-version V]
                       Delete KEY (deleting a missing key succeeds)
  cas KEY EXPECTED_VERSION VALUE
                       Write VALUE only if KEY is at EXPECTED_VERSION
  list [--prefix P] [--limit N] [--cursor C] [--all] [--local]
                       Print key<TAB>version<TAB>value lines, in key order; one
                       page of N (default 100) unless --all follows every page.
                       Tabs, newlines, backslashes and bytes that are not UTF-8
                       are escaped as \\t \\n \\\\ \\xNN
  status               Summarize every server's /status
  batch-put N [--pipeline P] [--random-key] [--random-server] [--key-prefix S]
              [--value-size B] [--verify]
                       Load test: N puts with at most P (default 10) in flight, to
                       keys S0..S(N-1) in order or, with --random-key, N random
                       draws from them; each value is B bytes (default 32) and at
                       least its write tag. Prints ok / failed / unknown, ops/s and
                       latency. --verify then reads every written key from every
                       server (linearizable) and checks it holds the last
                       acknowledged value. S defaults to batch-<random>/

Options:
  --server URL         A replica to talk to (repeatable)
  --servers URL,URL    Replicas, comma-separated
                       (default http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003)
  --random-server      Send each request to a random replica (default: the first
                       listed that is up; 503s and refused connections fail over)
  --token T            Client token (default: $EPAXOS_CLIENT_TOKEN if readable)
  --timeout MS         Per-request timeout in milliseconds (default 10000)
  --retries N          Extra attempts on other replicas after a 503 or a refused
                       connection (default: one per other replica, at least 2)
  --verbose            Print versions and details to stderr
  --help               Print this text

Exit status: 0 success; 1 failure (not found, refused, unavailable, verify
failed); 2 usage error; 3 precondition failed (another version); 4 outcome
unknown (the write may or may not have happened: read the key to find out).
`;

/** The local cluster that `deno task start` runs. */
export const DEFAULT_SERVERS: readonly string[] = [
  "http://127.0.0.1:8001",
  "http://127.0.0.1:8002",
  "http://127.0.0.1:8003",
];

const TOKEN_ENV = "EPAXOS_CLIENT_TOKEN";

const GLOBAL_OPTIONS = ["server", "servers", "token", "timeout", "retries"];
const GLOBAL_FLAGS = ["random-server", "verbose", "help"];

interface CommandSpec {
  readonly arguments: readonly string[];
  readonly options: readonly string[];
  readonly flags: readonly string[];
}

const COMMANDS: Record<string, CommandSpec> = {
  "put": { arguments: ["KEY", "VALUE"], options: ["if-version"], flags: ["if-absent"] },
  "get": { arguments: ["KEY"], options: [], flags: ["local"] },
  "del": { arguments: ["KEY"], options: ["if-version"], flags: [] },
  "cas": { arguments: ["KEY", "EXPECTED_VERSION", "VALUE"], options: [], flags: [] },
  "list": { arguments: [], options: ["prefix", "limit", "cursor"], flags: ["all", "local"] },
  "status": { arguments: [], options: [], flags: [] },
  "batch-put": {
    arguments: ["N"],
    options: ["pipeline", "key-prefix", "value-size"],
    flags: ["random-key", "verify"],
  },
};

/** Exit statuses. */
const EXIT = { ok: 0, failed: 1, usage: 2, precondition: 3, unknown: 4 } as const;

const encoder = new TextEncoder();

async function writeAll(
  target: { write(p: Uint8Array): Promise<number> },
  data: string | Uint8Array,
) {
  let bytes = typeof data === "string" ? encoder.encode(data) : data;
  while (bytes.length > 0) bytes = bytes.subarray(await target.write(bytes));
}

function out(data: string | Uint8Array): Promise<void> {
  return writeAll(Deno.stdout, data);
}

function err(text: string): Promise<void> {
  return writeAll(Deno.stderr, text);
}

/**
 * Escapes text for one tab-separated field: backslash, tab, newline, carriage
 * return and other control characters become `\\`, `\t`, `\n`, `\r`, `\xNN`.
 * Bytes that are not UTF-8 are all shown as `\xNN`.
 */
export function escapeField(value: string | Uint8Array): string {
  let text: string;
  if (typeof value === "string") {
    text = value;
  } else {
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(value);
    } catch {
      let escaped = "";
      for (const byte of value) {
        escaped += byte >= 0x20 && byte < 0x7f && byte !== 0x5c
          ? String.fromCharCode(byte)
          : `\\x${byte.toString(16).padStart(2, "0")}`;
      }
      return escaped;
    }
  }
  // deno-lint-ignore no-control-regex
  return text.replace(/[\\\t\n\r\x00-\x1f\x7f]/g, (char) => {
    switch (char) {
      case "\\":
        return "\\\\";
      case "\t":
        return "\\t";
      case "\n":
        return "\\n";
      case "\r":
        return "\\r";
      default:
        return `\\x${char.charCodeAt(0).toString(16).padStart(2, "0")}`;
    }
  });
}

/** The `fraction` percentile (nearest rank) of `sorted`, or `NaN` if it is empty. */
export function percentile(sorted: ArrayLike<number>, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil(fraction * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** One put of `batch-put`, as `--verify` judges reads against it. */
export interface WriteRecord {
  /** The value written (unique per write). */
  readonly value: string;
  /** When the put was sent (`performance.now()`). */
  readonly startMs: number;
  /** When it was acknowledged, for `ok` writes. */
  readonly endMs?: number;
  /** `ok`: acknowledged; `failed`: refused, nothing written; `unknown`: may or may not have happened. */
  readonly outcome: "ok" | "failed" | "unknown";
  /** The version the put was acknowledged with, for `ok` writes. */
  readonly version?: string;
}

/**
 * What is wrong with reading `read` (a value and version, or `undefined` for
 * a missing key) after every put in `writes` finished, or `undefined` if it
 * is a value the key may hold. Puts to one key can overlap, so "the last
 * acknowledged value" is a set: every acknowledged put that no other
 * acknowledged put started after, plus every put of unknown outcome (it may
 * take effect at any time). A refused put must leave no trace.
 */
export function readProblem(
  writes: readonly WriteRecord[],
  read: { readonly value: string; readonly version: string } | undefined,
): string | undefined {
  let lastAckedStart = Number.NEGATIVE_INFINITY;
  for (const write of writes) {
    if (write.outcome === "ok") lastAckedStart = Math.max(lastAckedStart, write.startMs);
  }
  const acked = writes.filter((write) => write.outcome === "ok");
  const candidates = writes.filter((write) =>
    write.outcome === "unknown" || (write.outcome === "ok" && !(lastAckedStart > write.endMs!))
  );
  const expected = () => {
    const last = acked.filter((write) => candidates.includes(write));
    const shown = last.slice(0, 3).map((write) => JSON.stringify(shorten(write.value)));
    return shown.length === 0 ? "no value" : shown.join(" or ");
  };
  if (read === undefined) {
    return acked.length === 0 ? undefined : `the key is missing, expected ${expected()}`;
  }
  const match = writes.find((write) => write.value === read.value);
  if (match === undefined) {
    return acked.length === 0 && !writes.some((write) => write.outcome === "unknown")
      ? undefined
      : `holds ${
        JSON.stringify(shorten(read.value))
      }, written by none of these puts; expected ${expected()}`;
  }
  if (match.outcome === "failed") {
    return `holds ${JSON.stringify(shorten(read.value))}, whose put was refused`;
  }
  if (!candidates.includes(match)) {
    return `holds ${
      JSON.stringify(shorten(read.value))
    }, overwritten by a later acknowledged put; expected ${expected()}`;
  }
  if (match.outcome === "ok" && match.version !== read.version) {
    return `holds the expected value at version ${read.version}, but its put was acknowledged with version ${match.version}`;
  }
  return undefined;
}

function shorten(text: string): string {
  return text.length <= 40 ? text : `${text.slice(0, 40)}...`;
}

function describeError(error: KvClientError, options: { readonly server?: boolean } = {}): string {
  const server = (options.server ?? true) ? error.server : undefined;
  const where = [
    error.answerStatus === undefined ? undefined : `HTTP ${error.answerStatus}`,
    server,
  ]
    .filter((part) => part !== undefined).join(" from ");
  return where === "" ? error.message : `${error.message} (${where})`;
}

function exitCodeOf(error: KvClientError): number {
  if (error instanceof PreconditionFailedError) return EXIT.precondition;
  if (error instanceof OutcomeUnknownError) return EXIT.unknown;
  return EXIT.failed;
}

function readToken(): string | undefined {
  // Query first: reading an environment variable without permission would prompt.
  try {
    if (Deno.permissions.querySync({ name: "env", variable: TOKEN_ENV }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(TOKEN_ENV);
  } catch {
    return undefined;
  }
}

function serversOf(args: ParsedArgs): string[] {
  const listed = [
    ...(args.options.get("server") ?? []),
    ...(args.options.get("servers") ?? []).flatMap((value) => value.split(",")),
  ].map((server) => server.trim()).filter((server) => server !== "");
  if ((args.options.has("server") || args.options.has("servers")) && listed.length === 0) {
    throw new UsageError("--server and --servers need at least one URL");
  }
  return listed.length === 0 ? [...DEFAULT_SERVERS] : listed;
}

function makeClient(args: ParsedArgs): KvClient {
  const token = option(args, "token") ?? readToken();
  const timeoutMs = integerOption(args, "timeout", { min: 1, max: 600_000, fallback: 10_000 })!;
  const retries = integerOption(args, "retries", { min: 0, max: 100 });
  try {
    return new KvClient({
      servers: serversOf(args),
      timeoutMs,
      strategy: args.flags.has("random-server") ? "random" : "first",
      ...(token === undefined || token === "" ? {} : { token }),
      ...(retries === undefined ? {} : { retries }),
    });
  } catch (error) {
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new UsageError(error.message);
    }
    throw error;
  }
}

async function readStdin(limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of Deno.stdin.readable) {
    size += chunk.length;
    if (size > limit) throw new UsageError(`The value on stdin is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  const value = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    value.set(chunk, offset);
    offset += chunk.length;
  }
  return value;
}

async function valueArgument(text: string): Promise<string | Uint8Array> {
  return text === "-" ? await readStdin(MAX_VALUE_BYTES) : text;
}

/**
 * Runs the CLI with `args` and resolves with its exit status. Output goes to
 * stdout (values, versions, listings, summaries) and stderr (errors, details).
 */
export async function main(args: readonly string[]): Promise<number> {
  try {
    const allOptions = new Set([
      ...GLOBAL_OPTIONS,
      ...Object.values(COMMANDS).flatMap((c) => c.options),
    ]);
    const allFlags = new Set([...GLOBAL_FLAGS, ...Object.values(COMMANDS).flatMap((c) => c.flags)]);
    const parsed = parseArgs(args, { options: [...allOptions], flags: [...allFlags] });
    if (parsed.flags.has("help") || parsed.positional[0] === "help") {
      await out(USAGE);
      return EXIT.ok;
    }
    const [command, ...rest] = parsed.positional;
    if (command === undefined) throw new UsageError("No command given");
    const spec = COMMANDS[command];
    if (spec === undefined) throw new UsageError(`Unknown command ${command}`);
    const allowed = new Set([...GLOBAL_OPTIONS, ...GLOBAL_FLAGS, ...spec.options, ...spec.flags]);
    for (const name of [...parsed.options.keys(), ...parsed.flags]) {
      if (!allowed.has(name)) throw new UsageError(`--${name} does not apply to ${command}`);
    }
    if (rest.length !== spec.arguments.length) {
      const expected = [command, ...spec.arguments].join(" ");
      throw new UsageError(
        rest.length < spec.arguments.length
          ? `${command} needs ${spec.arguments.slice(rest.length).join(" ")}: ${expected}`
          : `Too many arguments for ${command}: ${expected}`,
      );
    }
    const client = makeClient(parsed);
    return await run(command, rest, { client, args: parsed });
  } catch (error) {
    if (error instanceof UsageError) {
      await err(`kv: ${error.message}\nRun with --help for usage.\n`);
      return EXIT.usage;
    }
    if (error instanceof PreconditionFailedError) {
      const current = error.current === null
        ? "the key does not exist"
        : `the key is at version ${error.current}`;
      await err(`kv: precondition failed: ${current}\n`);
      return EXIT.precondition;
    }
    if (error instanceof KvClientError) {
      await err(`kv: ${describeError(error)}\n`);
      return exitCodeOf(error);
    }
    if (error instanceof RangeError) {
      await err(`kv: ${error.message}\n`);
      return EXIT.failed;
    }
    throw error;
  }
}

interface Context {
  readonly client: KvClient;
  readonly args: ParsedArgs;
}

async function run(command: string, rest: readonly string[], context: Context): Promise<number> {
  const { client, args } = context;
  const verbose = args.flags.has("verbose");
  switch (command) {
    case "put": {
      const [key, value] = rest as [string, string];
      const ifVersion = option(args, "if-version");
      if (ifVersion !== undefined && args.flags.has("if-absent")) {
        throw new UsageError("Use either --if-version or --if-absent, not both");
      }
      const { version } = await client.put(key, await valueArgument(value), {
        ...(ifVersion === undefined ? {} : { ifVersion }),
        ifAbsent: args.flags.has("if-absent"),
      });
      await out(`${version}\n`);
      return EXIT.ok;
    }
    case "cas": {
      const [key, expected, value] = rest as [string, string, string];
      const { version } = await client.put(key, await valueArgument(value), {
        ifVersion: expected,
      });
      await out(`${version}\n`);
      return EXIT.ok;
    }
    case "get": {
      const [key] = rest as [string];
      const entry = await client.get(key, {
        consistency: args.flags.has("local") ? "local" : "linearizable",
      });
      if (entry === undefined) {
        await err(`kv: key not found: ${key}\n`);
        return EXIT.failed;
      }
      await out(entry.value);
      if (verbose) await err(`version ${entry.version}\n`);
      return EXIT.ok;
    }
    case "del": {
      const [key] = rest as [string];
      const ifVersion = option(args, "if-version");
      await client.delete(key, ifVersion === undefined ? {} : { ifVersion });
      if (verbose) await err(`deleted ${key}\n`);
      return EXIT.ok;
    }
    case "list":
      return await list(client, args);
    case "status":
      return await status(client);
    case "batch-put":
      return await batchPut(client, rest[0]!, args);
  }
  throw new UsageError(`Unknown command ${command}`);
}

function listLine(entry: KvClientEntry): string {
  return `${escapeField(entry.key)}\t${escapeField(entry.version)}\t${escapeField(entry.value)}\n`;
}

async function list(client: KvClient, args: ParsedArgs): Promise<number> {
  const all = args.flags.has("all");
  const limit = integerOption(args, "limit", {
    min: 1,
    max: MAX_LIST_LIMIT,
    fallback: all ? MAX_LIST_LIMIT : 100,
  })!;
  const prefix = option(args, "prefix");
  const cursor = option(args, "cursor");
  const options = {
    limit,
    consistency: args.flags.has("local") ? "local" as const : "linearizable" as const,
    ...(prefix === undefined ? {} : { prefix }),
  };
  if (all) {
    if (cursor !== undefined) throw new UsageError("Use either --cursor or --all, not both");
    let count = 0;
    for await (const page of client.pages(options)) {
      await out(page.items.map(listLine).join(""));
      count += page.items.length;
    }
    if (args.flags.has("verbose")) await err(`${count} keys\n`);
    return EXIT.ok;
  }
  const page = await client.list({ ...options, ...(cursor === undefined ? {} : { cursor }) });
  await out(page.items.map(listLine).join(""));
  if (page.cursor !== null) {
    await err(
      `kv: more keys follow: continue with --cursor ${JSON.stringify(page.cursor)}, or use --all\n`,
    );
  }
  return EXIT.ok;
}

function statusLines(server: string, status: ReplicaStatus): string {
  const ratio = status.commits.fastRatio === null
    ? "-"
    : `${(status.commits.fastRatio * 100).toFixed(1)}%`;
  const region = status.region === null ? "" : ` (${status.region})`;
  const peers = status.peers.map((peer) => {
    const rtt = peer.roundTripMs === null ? "rtt -" : `rtt ${peer.roundTripMs} ms`;
    const seen = peer.lastContactMsAgo === null
      ? "never heard from"
      : `heard ${peer.lastContactMsAgo} ms ago`;
    return `${peer.name} ${rtt}, ${seen}`;
  });
  return `${server}  ${status.name}${region}  ${status.ready ? "ready" : "NOT READY"}  ` +
    `up ${status.uptimeSeconds} s  keys ${status.keys}  executed ${status.executed.commands} commands  ` +
    `fast path ${ratio}  state ${status.stateDigest}\n` +
    `  peers: ${peers.length === 0 ? "none" : peers.join("; ")}\n`;
}

async function status(client: KvClient): Promise<number> {
  const answers = await Promise.all(client.servers.map(async (server) => {
    try {
      return statusLines(server, await client.status(server));
    } catch (error) {
      if (!(error instanceof KvClientError)) throw error;
      return `${server}  UNREACHABLE: ${describeError(error, { server: false })}\n`;
    }
  }));
  await out(answers.join(""));
  return answers.some((line) => line.includes("  UNREACHABLE: ")) ? EXIT.failed : EXIT.ok;
}

/** Counts errors by message, keeping at most `limit` distinct messages. */
class ErrorTally {
  readonly #counts = new Map<string, number>();
  readonly #limit: number;
  #other = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  add(message: string): void {
    const count = this.#counts.get(message);
    if (count !== undefined) this.#counts.set(message, count + 1);
    else if (this.#counts.size < this.#limit) this.#counts.set(message, 1);
    else this.#other++;
  }

  lines(): string {
    const lines = [...this.#counts].sort((a, b) => b[1] - a[1]).map(([message, count]) =>
      `  ${count}x ${message}\n`
    );
    if (this.#other > 0) lines.push(`  ${this.#other}x other errors\n`);
    return lines.join("");
  }
}

/** Runs `count` tasks with at most `pipeline` in flight. */
async function runPipelined(
  count: number,
  pipeline: number,
  task: (index: number) => Promise<void>,
) {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(pipeline, count) }, worker));
}

function formatMs(ms: number): string {
  return Number.isNaN(ms) ? "-" : `${ms.toFixed(1)} ms`;
}

async function batchPut(client: KvClient, countText: string, args: ParsedArgs): Promise<number> {
  const count = Number(countText);
  if (!Number.isInteger(count) || count < 1 || count > 10_000_000) {
    throw new UsageError(`N must be an integer from 1 to 10000000, got ${countText}`);
  }
  const pipeline = integerOption(args, "pipeline", { min: 1, max: 10_000, fallback: 10 })!;
  const valueSize = integerOption(args, "value-size", {
    min: 0,
    max: MAX_VALUE_BYTES,
    fallback: 32,
  })!;
  const runId = crypto.randomUUID().slice(0, 8);
  const keyPrefix = option(args, "key-prefix", `batch-${runId}/`)!;
  const randomKey = args.flags.has("random-key");
  const verify = args.flags.has("verify");
  const width = String(count - 1).length;
  const keyOf = (index: number) => `${keyPrefix}${String(index).padStart(width, "0")}`;

  const latencies = new Float64Array(count);
  let ok = 0;
  let failed = 0;
  let unknown = 0;
  const failures = new ErrorTally(10);
  const writes = new Map<string, WriteRecord[]>();

  await out(
    `batch-put: ${count} puts of ${valueSize} B to ${client.servers.length} servers ` +
      `(${args.flags.has("random-server") ? "random server" : "first server up"}), ` +
      `${
        randomKey ? `${count} random draws from ${count} keys` : `${count} keys`
      } under ${keyPrefix}, ` +
      `pipeline ${pipeline}\n`,
  );
  const started = performance.now();
  await runPipelined(count, pipeline, async (index) => {
    const key = keyOf(randomKey ? Math.floor(Math.random() * count) : index);
    const tag = `${runId}:${index}:`;
    const value = tag.length >= valueSize ? tag : tag.padEnd(valueSize, ".");
    const startMs = performance.now();
    let record: WriteRecord;
    try {
      const { version } = await client.put(key, value);
      const endMs = performance.now();
      latencies[ok++] = endMs - startMs;
      record = { value, startMs, endMs, outcome: "ok", version };
    } catch (error) {
      if (!(error instanceof KvClientError) && !(error instanceof RangeError)) throw error;
      const outcome = error instanceof OutcomeUnknownError ? "unknown" : "failed";
      if (outcome === "unknown") unknown++;
      else failed++;
      failures.add(error instanceof KvClientError ? describeError(error) : error.message);
      record = { value, startMs, outcome };
    }
    if (verify) {
      const list = writes.get(key);
      if (list === undefined) writes.set(key, [record]);
      else list.push(record);
    }
  });
  const seconds = (performance.now() - started) / 1000;
  const sorted = latencies.subarray(0, ok).sort();
  await out(
    `ok ${ok}  failed ${failed}  unknown ${unknown}  in ${seconds.toFixed(3)} s  ` +
      `(${(ok / seconds).toFixed(1)} ops/s)\n` +
      `latency p50 ${formatMs(percentile(sorted, 0.5))}  p99 ${
        formatMs(percentile(sorted, 0.99))
      }  ` +
      `max ${formatMs(percentile(sorted, 1))}\n`,
  );
  if (failed + unknown > 0) {
    await err(`kv: ${failed} puts failed, ${unknown} of unknown outcome:\n${failures.lines()}`);
  }

  let verifyFailed = false;
  if (verify) verifyFailed = !(await verifyWrites(client, writes, pipeline));
  if (failed > 0 || verifyFailed) return EXIT.failed;
  return unknown > 0 ? EXIT.unknown : EXIT.ok;
}

/** Reads every written key from every server; reports problems and resolves with whether there were none. */
async function verifyWrites(
  client: KvClient,
  writes: ReadonlyMap<string, readonly WriteRecord[]>,
  pipeline: number,
): Promise<boolean> {
  const keys = [...writes.keys()];
  const servers = client.servers;
  const problems = new ErrorTally(20);
  let bad = 0;
  const decoder = new TextDecoder();
  const started = performance.now();
  await runPipelined(keys.length * servers.length, pipeline, async (index) => {
    const key = keys[Math.floor(index / servers.length)]!;
    const server = servers[index % servers.length]!;
    let problem: string | undefined;
    try {
      const entry = await client.get(key, { server });
      const wrong = readProblem(
        writes.get(key)!,
        entry === undefined
          ? undefined
          : { value: decoder.decode(entry.value), version: entry.version },
      );
      if (wrong !== undefined) problem = `${key} on ${server}: ${wrong}`;
    } catch (error) {
      if (!(error instanceof KvClientError)) throw error;
      // Without the key, so that one unreachable server is one line, not one per key.
      problem = `reads on ${server} failed: ${describeError(error, { server: false })}`;
    }
    if (problem !== undefined) {
      bad++;
      problems.add(problem);
    }
  });
  const seconds = (performance.now() - started) / 1000;
  const reads = keys.length * servers.length;
  if (bad === 0) {
    await out(
      `verify: ${keys.length} keys read from ${servers.length} servers (${reads} linearizable reads in ` +
        `${seconds.toFixed(3)} s): every read holds the last acknowledged value\n`,
    );
    return true;
  }
  await out(
    `verify: FAILED: ${bad} of ${reads} reads (${keys.length} keys x ${servers.length} servers)\n`,
  );
  await err(`kv: verify found:\n${problems.lines()}`);
  return false;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
