/**
 * The wrk Lua scripts of `deno task bench:throughput`, generated per system and
 * workload, and the parser of the result line they print.
 *
 * A script gives wrk thread `i` the address of target `i mod targets`, so the
 * connections spread evenly over every replica (wrk splits them evenly over its
 * threads). Each thread seeds its own generator and builds each request by
 * string concatenation from parts prepared in `init`: keys are a three-byte
 * prefix and six digits, so an etcd key's base64 is the prefix's encoding
 * followed by the encodings of two three-digit groups, looked up in a table
 * generated here rather than computed in Lua. Values are 64 bytes, one per
 * thread, naming the workload and the thread (see {@link threadValue}), so a
 * read-back after a run can tell which run wrote a key.
 *
 * The script defines no `response` function, which would make wrk hand every
 * answer's headers and body to Lua; wrk counts answers with a status above 399
 * itself (`errors.status`). `done` prints one line, {@link RESULT_MARKER}
 * followed by JSON: requests, duration, errors, latency percentiles
 * (microseconds), the requests sent per kind, and wrk's own CPU time.
 *
 * @module
 */

import { VALUE_BYTES, type Workload } from "./options.ts";

/** Which system a script drives. */
export type System = "epaxos" | "etcd";

/** Where a wrk thread sends its requests. */
export interface Target {
  /** An IP address or host name. */
  readonly host: string;
  /** The TCP port. */
  readonly port: number;
}

/** The targets of base URLs (`http://host:port`), in order. */
export function targetsOf(urls: readonly string[]): Target[] {
  return urls.map((url) => {
    const { hostname, port } = new URL(url);
    return { host: hostname, port: Number(port) };
  });
}

/** What a generated script does. */
export interface ScriptSpec {
  /** The system's HTTP API: epaxos-kv's `/kv/<key>` or etcd's gRPC gateway. */
  readonly system: System;
  /** etcd's gateway prefix (`/v3` from 3.4, `/v3beta` in 3.3); required for etcd. */
  readonly etcdApiPrefix?: string;
  /** Thread `i` (from 0) sends to `targets[i % targets.length]`. */
  readonly targets: readonly Target[];
  /** wrk threads the run will use (one value is generated for each). */
  readonly threads: number;
  /** The keys and the read share. */
  readonly workload: Workload;
  /** Seeds every thread's generator (thread `i` gets `seed * 1009 + i`). */
  readonly seed: number;
  /**
   * Think time in milliseconds before each request of a connection (wrk's
   * `delay()`), to hold the load below the peak; none when absent.
   */
  readonly delayMs?: number;
}

/** The prefix of the one line of results a script prints. */
export const RESULT_MARKER = "BENCH_THROUGHPUT_RESULT";

/** Most wrk threads a script is generated for. */
export const MAX_THREADS = 64;

/** The value thread `thread` (from 1) writes in workload `tag`: `tag-t<thread>-` padded to 64 bytes. */
export function threadValue(tag: string, thread: number): string {
  const head = `${tag}-t${thread}-`;
  if (head.length > VALUE_BYTES) throw new Error(`Value tag ${tag} is too long`);
  return head.padEnd(VALUE_BYTES, ".");
}

/** Whether `value` is one {@link threadValue} wrote, and for which tag. */
export function valueTag(value: string): string | undefined {
  if (value.length !== VALUE_BYTES) return undefined;
  const match = /^([a-z-]+)-t(\d+)-\.*$/.exec(value);
  return match === null ? undefined : match[1];
}

/** Base64 of an ASCII string. */
export function base64(text: string): string {
  return btoa(text);
}

function luaString(text: string): string {
  if (!/^[\x20-\x7e]*$/.test(text)) {
    throw new Error(`Only printable ASCII goes into a Lua string, got ${JSON.stringify(text)}`);
  }
  return `"${text.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

/** Generates the wrk Lua script for `spec`. */
export function wrkScript(spec: ScriptSpec): string {
  const { system, targets, threads, workload, seed } = spec;
  if (targets.length === 0) throw new Error("A script needs at least one target");
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new Error(`Threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
  }
  if (workload.keyPrefix.length !== 3) {
    throw new Error(`A key prefix must be three bytes, got ${JSON.stringify(workload.keyPrefix)}`);
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 2 ** 31) {
    throw new Error(`The seed must be an integer from 0 to 2^31, got ${seed}`);
  }
  const etcd = system === "etcd";
  const apiPrefix = spec.etcdApiPrefix ?? "";
  if (etcd && !/^\/v3(alpha|beta)?$/.test(apiPrefix)) {
    throw new Error(
      `An etcd script needs the API prefix /v3, /v3beta or /v3alpha, got ${apiPrefix}`,
    );
  }
  const values = Array.from({ length: threads }, (_, i) => {
    const value = threadValue(workload.name, i + 1);
    return luaString(etcd ? base64(value) : value);
  });
  const digits = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, "0"));
  const lines = [
    `-- bench:throughput load script: ${system} ${workload.name}.`,
    "-- Generated by bench/throughput/lua.ts for one run; not meant to be edited.",
    "",
    `local TARGETS = { ${
      targets.map((target) => `{ ${luaString(target.host)}, ${luaString(String(target.port))} }`)
        .join(", ")
    } }`,
    `local VALUES = { ${values.join(", ")} }`,
    `local KEY_PREFIX = ${luaString(etcd ? base64(workload.keyPrefix) : workload.keyPrefix)}`,
    `local KEY_COUNT = ${workload.keyCount}`,
    `local READ_PERCENT = ${workload.readPercent}`,
    `local SEED = ${seed}`,
    etcd
      ? `local DIGITS = { [0] = ${digits.map((group) => luaString(base64(group))).join(", ")} }`
      : "local DIGITS = nil",
    "",
    "-- Setup runs in wrk's main thread, once per thread, before any starts.",
    "local threads = {}",
    "",
    "function setup(thread)",
    "  local index = #threads + 1",
    "  local target = TARGETS[(index - 1) % #TARGETS + 1]",
    "  thread.addr = wrk.lookup(target[1], target[2])[1]",
    '  thread:set("thread_index", index)',
    '  thread:set("host_header", target[1] .. ":" .. target[2])',
    "  threads[index] = thread",
    "end",
    "",
    "-- Each thread runs in a Lua state of its own.",
    "reads = 0",
    "writes = 0",
    "local digits",
    "local read_head",
    "local write_head",
    "local write_tail",
    "",
    "function init(args)",
    "  math.randomseed(SEED * 1009 + thread_index)",
    "  if DIGITS then",
    "    digits = DIGITS",
    "  else",
    "    digits = {}",
    "    for i = 0, 999 do",
    '      digits[i] = string.format("%03d", i)',
    "    end",
    "  end",
    "  local value = VALUES[(thread_index - 1) % #VALUES + 1]",
    ...(etcd
      ? [
        `  local head = " HTTP/1.1\\r\\nHost: " .. host_header .. "\\r\\nContent-Type: application/json\\r\\nContent-Length: "`,
        `  read_head = "POST ${apiPrefix}/kv/range" .. head`,
        `  write_head = "POST ${apiPrefix}/kv/put" .. head`,
        `  write_tail = '","value":"' .. value .. '"}'`,
      ]
      : [
        '  read_head = " HTTP/1.1\\r\\nHost: " .. host_header .. "\\r\\n\\r\\n"',
        `  write_head = " HTTP/1.1\\r\\nHost: " .. host_header .. "\\r\\nContent-Length: ${VALUE_BYTES}\\r\\n\\r\\n"`,
        "  write_tail = value",
      ]),
    "end",
    "",
    "local function key()",
    "  local k = math.random(0, KEY_COUNT - 1)",
    "  return KEY_PREFIX .. digits[math.floor(k / 1000)] .. digits[k % 1000]",
    "end",
    "",
    "function request()",
    "  local k = key()",
    "  if READ_PERCENT > 0 and math.random(1, 100) <= READ_PERCENT then",
    "    reads = reads + 1",
    ...(etcd
      ? [
        `    local body = '{"key":"' .. k .. '"}'`,
        '    return read_head .. #body .. "\\r\\n\\r\\n" .. body',
      ]
      : ['    return "GET /kv/" .. k .. read_head']),
    "  end",
    "  writes = writes + 1",
    ...(etcd
      ? [
        `  local body = '{"key":"' .. k .. write_tail`,
        '  return write_head .. #body .. "\\r\\n\\r\\n" .. body',
      ]
      : ['  return "PUT /kv/" .. k .. write_head .. write_tail']),
    "end",
    "",
    ...(spec.delayMs === undefined ? [] : [
      `function delay() return ${Math.max(0, Math.round(spec.delayMs))} end`,
      "",
    ]),
    "-- Done runs in the main thread after every thread stopped.",
    "local function number(x)",
    "  if x ~= x or x == math.huge or x == -math.huge then",
    '    return "null"',
    "  end",
    '  return string.format("%.0f", x)',
    "end",
    "",
    "function done(summary, latency, requests)",
    "  local sent_reads, sent_writes = 0, 0",
    "  for _, thread in ipairs(threads) do",
    '    sent_reads = sent_reads + (thread:get("reads") or 0)',
    '    sent_writes = sent_writes + (thread:get("writes") or 0)',
    "  end",
    "  local e = summary.errors",
    '  local l = "null"',
    "  if summary.requests > 0 then",
    `    l = '{"min":' .. number(latency.min) .. ',"mean":' .. number(latency.mean) ..`,
    `      ',"max":' .. number(latency.max) .. ',"p50":' .. number(latency:percentile(50)) ..`,
    `      ',"p90":' .. number(latency:percentile(90)) .. ',"p99":' .. number(latency:percentile(99)) ..`,
    `      ',"p999":' .. number(latency:percentile(99.9)) .. '}'`,
    "  end",
    `  io.write("\\n${RESULT_MARKER} " .. '{"requests":' .. number(summary.requests) ..`,
    `    ',"duration_us":' .. number(summary.duration) .. ',"bytes":' .. number(summary.bytes) ..`,
    `    ',"errors":{"connect":' .. number(e.connect) .. ',"read":' .. number(e.read) ..`,
    `    ',"write":' .. number(e.write) .. ',"status":' .. number(e.status) ..`,
    `    ',"timeout":' .. number(e.timeout) .. '},"latency_us":' .. l ..`,
    `    ',"sent_reads":' .. number(sent_reads) .. ',"sent_writes":' .. number(sent_writes) ..`,
    `    ',"threads":' .. number(#threads) .. ',"cpu_s":' .. string.format("%.3f", os.clock()) .. "}\\n")`,
    "end",
    "",
  ];
  return lines.join("\n");
}

/** wrk's error counts. */
export interface WrkErrors {
  /** Failed connection attempts. */
  readonly connect: number;
  /** Socket read errors. */
  readonly read: number;
  /** Socket write errors. */
  readonly write: number;
  /** Answers with a status above 399. */
  readonly status: number;
  /** Requests with no answer within wrk's timeout. */
  readonly timeout: number;
}

/** Latency percentiles in microseconds, as wrk measured them. */
export interface WrkLatency {
  readonly min: number;
  readonly mean: number;
  readonly max: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
}

/** What one wrk run reports through the script's result line. */
export interface WrkResult {
  /** Completed requests, error statuses included. */
  readonly requests: number;
  /** The measured duration in microseconds. */
  readonly duration_us: number;
  /** Bytes received. */
  readonly bytes: number;
  /** Error counts. */
  readonly errors: WrkErrors;
  /** Null when no request completed. */
  readonly latency_us: WrkLatency | null;
  /** Reads sent (including any still in flight at the end). */
  readonly sent_reads: number;
  /** Writes sent (including any still in flight at the end). */
  readonly sent_writes: number;
  /** wrk threads. */
  readonly threads: number;
  /** wrk's CPU time (user and system, every thread) in seconds. */
  readonly cpu_s: number;
}

function count(value: unknown, what: string, generator: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new Error(`${generator}'s result has no valid ${what}: ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Finds and checks the line starting with `marker` in a load generator's
 * output, in the shape of {@link WrkResult} (the Lua scripts' and the gRPC
 * load generator's alike); throws if it is missing or malformed. Returns the
 * checked result and the raw JSON, for fields a generator adds.
 */
export function parseResultLine(
  stdout: string,
  options: { readonly marker: string; readonly generator: string },
): { readonly result: WrkResult; readonly raw: Record<string, unknown> } {
  const { marker, generator } = options;
  const line = stdout.split("\n").find((candidate) => candidate.startsWith(`${marker} `));
  if (line === undefined) {
    throw new Error(`${generator} printed no ${marker} line; its output:\n${stdout.slice(-2000)}`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(line.slice(marker.length + 1));
  } catch (error) {
    throw new Error(
      `${generator}'s result line is not JSON (${(error as Error).message}): ${line}`,
    );
  }
  const errors = raw.errors as Record<string, unknown> | undefined;
  if (typeof errors !== "object" || errors === null) {
    throw new Error(`${generator}'s result has no errors: ${line}`);
  }
  const latency = raw.latency_us as Record<string, unknown> | null | undefined;
  if (latency === undefined || (latency !== null && typeof latency !== "object")) {
    throw new Error(`${generator}'s result has no latency: ${line}`);
  }
  const get = (value: unknown, what: string) => count(value, what, generator);
  const requests = get(raw.requests, "requests");
  if (requests > 0 && latency === null) {
    throw new Error(`${generator}'s result has no latency: ${line}`);
  }
  const result: WrkResult = {
    requests,
    duration_us: get(raw.duration_us, "duration_us"),
    bytes: get(raw.bytes, "bytes"),
    errors: {
      connect: get(errors.connect, "errors.connect"),
      read: get(errors.read, "errors.read"),
      write: get(errors.write, "errors.write"),
      status: get(errors.status, "errors.status"),
      timeout: get(errors.timeout, "errors.timeout"),
    },
    latency_us: latency === null ? null : {
      min: get(latency.min, "latency.min"),
      mean: get(latency.mean, "latency.mean"),
      max: get(latency.max, "latency.max"),
      p50: get(latency.p50, "latency.p50"),
      p90: get(latency.p90, "latency.p90"),
      p99: get(latency.p99, "latency.p99"),
      p999: get(latency.p999, "latency.p999"),
    },
    sent_reads: get(raw.sent_reads, "sent_reads"),
    sent_writes: get(raw.sent_writes, "sent_writes"),
    threads: get(raw.threads, "threads"),
    cpu_s: get(raw.cpu_s, "cpu_s"),
  };
  return { result, raw };
}

/** Finds and checks the result line in wrk's output; throws if it is missing or malformed. */
export function parseWrkOutput(stdout: string): WrkResult {
  return parseResultLine(stdout, { marker: RESULT_MARKER, generator: "wrk" }).result;
}
