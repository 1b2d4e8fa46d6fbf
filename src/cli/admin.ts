/**
 * `deno task admin`: operations on an epaxos-kv cluster, through one
 * replica's admin route (`src/server/admin_route.ts`), with the cluster secret.
 *
 * ```
 * deno task admin --server http://127.0.0.1:8001 members
 * deno task admin --server http://127.0.0.1:8001 backup --out backup.jsonl
 * deno task admin --server http://127.0.0.1:8001 add --url http://127.0.0.1:8004
 * deno task admin --server http://127.0.0.1:8001 promote 3 4
 * deno task admin --server http://127.0.0.1:8001 remove 4
 * deno task admin --server http://127.0.0.1:8001 replace 2
 * deno task admin --server http://127.0.0.1:8001 leases all
 * deno task admin --server http://127.0.0.1:8001 token add ci --prefix app/
 * ```
 *
 * The secret comes from `EPAXOS_CLUSTER_SECRET`; when that is unset and the
 * server is on this machine, from `data/cluster-secret` under the working
 * directory, where the local cluster (`deno task start`) keeps it: `deno
 * task` runs in the project directory. It is never sent to another machine.
 *
 * @module
 */

import type { ConfigurationChange } from "../core/configuration_change.ts";
import { isLoopbackUrl } from "../net/endpoint.ts";
import { fetchBackup } from "./admin_backup.ts";
import { adminRequest } from "./admin_request.ts";
import {
  runTokenAction,
  TOKEN_FLAGS,
  TOKEN_OPTIONS,
  TOKEN_USAGE,
  tokenActionOf,
} from "./admin_tokens.ts";
import { integerOption, option, parseArgs, UsageError } from "./args.ts";

/** The usage text `--help` prints. */
export const USAGE = `Usage: deno task admin [--server URL] <command>

Operations on an epaxos-kv cluster, through a replica's admin route.

Commands:
  members          Print the cluster's configuration as JSON:
                   {"epoch": N, "members": [{"id", "name", "url", "role", "state", "alive",
                   "lagInstances", "lastContactMsAgo", "roundTripMs", "self"}]}
                   state is "caught-up" or "lagging" (lagInstances: instances the
                   member has not reported executing that the server has)
  add --url URL    Add a learner at URL (it receives everything and votes in no
                   quorum); prints {"epoch", "id", "configuration"}. Start it with
                   deno task start --join SERVER --id ID --url URL --listen HOST:PORT --data EMPTY_DIR
  promote ID...    Make learners voters (each must be caught up; voters stay odd)
  remove ID...     Remove members (voters stay odd and at least 3)
  replace ID [--url URL]
                   Give member ID, whose data is lost, a new incarnation (at URL,
                   or its old one): the old process is refused everywhere, and its
                   replacement starts with --join on an empty directory
  leases all|none|JSON
                   Set the quorum leases (linearizable reads served locally):
                   every key to every member, none, or rules such as
                   '{"rules":[{"prefix":"cfg/","holders":"all"}],"leaseMs":2000}'
                   (holders: "all" or member ids). A change of epoch, like the others
                   Each change is refused, changing nothing, when: another change is
                   in flight; the new quorums are not reachable among started,
                   caught-up members; voters would be even or fewer than 3; a
                   promoted learner is not caught up; a voter is down (add). On
                   success they print {"epoch", "configuration"}.
  backup --out FILE [--rate MBPS]
                   Write a consistent backup of the whole key-value state to FILE
                   while writes go on (the state at one point of the execution
                   order: every write acknowledged before the command started is
                   in it); checked completely before FILE is written. Prints
                   {"file", "keys", "bytes", "sha256", "stateDigest", "createdAt",
                   "floor", "checkedBy"} (checkedBy: the replica whose own digest at
                   the same point agreed; a disagreement refuses the backup). Restore it into a new cluster with
                   deno task start --restore FILE --config FILE --id ID.
                   --rate: MB/s the replica streams at (default 4, at most 1000;
                   faster costs the replica more of its CPU meanwhile).
${TOKEN_USAGE}

Options:
  --server URL     The replica to ask (default http://127.0.0.1:8001)
  --timeout MS     Request timeout in milliseconds (default 10000; for a backup,
                   the whole stream: 3600000, an hour, 14 GB at the default rate)
  --help           Print this text

The cluster secret comes from $EPAXOS_CLUSTER_SECRET or, when that is unset and
the server is on this machine (127.x.x.x, localhost, [::1]), from
data/cluster-secret (the local cluster's, in the project directory).

Exit status: 0 success; 1 refused or failed (the reason on stderr, one line);
2 usage error.
`;

/** The secret variable. */
export const SECRET_ENV = "EPAXOS_CLUSTER_SECRET";

/** Where the local cluster keeps its secret, relative to the project directory. */
export const LOCAL_SECRET_PATH = "data/cluster-secret";

/** Where {@linkcode runAdmin} reads and writes (defaults: the process's). */
export interface AdminIo {
  /** Reads an environment variable. */
  readonly env?: (name: string) => string | undefined;
  /** The local cluster's secret file (default {@linkcode LOCAL_SECRET_PATH}). */
  readonly localSecretPath?: string;
  /** Receives what the command prints. */
  readonly out?: (text: string) => void;
  /** Receives error lines. */
  readonly err?: (line: string) => void;
}

const COMMANDS = ["members", "backup", "add", "promote", "remove", "replace", "leases", "token"];

/** Member ids given as arguments. */
function memberIdsOf(command: string, args: readonly string[]): number[] {
  if (args.length === 0) throw new UsageError(`${command} needs member ids`);
  return args.map((text) => {
    if (!/^\d{1,9}$/.test(text)) throw new UsageError(`${command}: not a member id: ${text}`);
    return Number(text);
  });
}

/** The change a membership command asks for, or `undefined` for another command. */
function changeOf(
  command: string,
  rest: readonly string[],
  url: string | undefined,
): ConfigurationChange | undefined {
  switch (command) {
    case "add":
      if (url === undefined) throw new UsageError("add needs --url URL");
      if (rest.length > 0) throw new UsageError(`add takes no arguments, got ${rest[0]}`);
      return { kind: "add", url };
    case "promote":
    case "remove":
      if (url !== undefined) throw new UsageError(`--url is for add and replace, not ${command}`);
      return { kind: command, ids: memberIdsOf(command, rest) };
    case "replace": {
      const [id, ...more] = memberIdsOf(command, rest);
      if (more.length > 0) throw new UsageError("replace takes one member id");
      return { kind: "replace", id: id!, ...(url === undefined ? {} : { url }) };
    }
    case "leases": {
      if (url !== undefined) throw new UsageError("--url is for add and replace, not leases");
      if (rest.length !== 1) {
        throw new UsageError("leases takes one setting: all, none, or JSON rules");
      }
      const setting = rest[0]!;
      if (setting === "all" || setting === "none") return { kind: "leases", leases: setting };
      try {
        return { kind: "leases", leases: JSON.parse(setting) };
      } catch {
        throw new UsageError(`leases: not all, none or JSON: ${setting}`);
      }
    }
    default:
      if (url !== undefined) throw new UsageError(`--url is for add and replace, not ${command}`);
      if (rest.length > 0) throw new UsageError(`${command} takes no arguments, got ${rest[0]}`);
      return undefined;
  }
}

/** A refusal or failure, with the reason to print. */
class AdminError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "AdminError";
  }
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

async function clusterSecret(io: AdminIo, server: string): Promise<string> {
  const fromEnv = (io.env ?? ((name) => Deno.env.get(name)))(SECRET_ENV);
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  const path = io.localSecretPath ?? LOCAL_SECRET_PATH;
  if (!isLoopbackUrl(server)) {
    // The local cluster's secret never leaves this machine.
    throw new AdminError(
      `no cluster secret: set ${SECRET_ENV} (${path}, the local cluster's, is used only for a ` +
        `server on this machine, not ${server})`,
    );
  }
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? `${path} does not exist`
      : `cannot read ${path}: ${(error as Error).message}`;
    throw new AdminError(
      `no cluster secret: set ${SECRET_ENV}, or run in the project directory of a local ` +
        `cluster started with deno task start (${reason})`,
    );
  }
  const secret = text.trim();
  if (secret === "") throw new AdminError(`no cluster secret: ${path} is empty`);
  return secret;
}

function serverUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`--server must be a URL such as http://127.0.0.1:8001, got ${text}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`--server must be an http or https URL, got ${text}`);
  }
  return url.href.replace(/\/+$/, "");
}

/** GETs (or, with `json`, POSTs) `path` of the admin route and resolves with its JSON body. */
async function adminGet(
  server: string,
  path: string,
  options: { readonly secret: string; readonly timeoutMs: number; readonly json?: unknown },
): Promise<unknown> {
  const response = await adminRequest(server, path, options);
  try {
    return JSON.parse(await response.text());
  } catch {
    throw new AdminError(`${server} answered something that is not JSON`);
  }
}

/**
 * Runs `deno task admin` with arguments `argv` and resolves with its exit
 * status: 0 on success, 1 on a refusal or failure (one line on `err`), 2 on a
 * usage error (with the usage text).
 */
export async function runAdmin(argv: readonly string[], io: AdminIo = {}): Promise<number> {
  const out = io.out ?? ((text: string) => console.log(text));
  const err = io.err ?? ((line: string) => console.error(line));
  try {
    const args = parseArgs(argv, {
      options: ["server", "timeout", "out", "rate", "url", ...TOKEN_OPTIONS],
      flags: ["help", ...TOKEN_FLAGS],
    });
    if (args.flags.has("help")) {
      out(USAGE);
      return 0;
    }
    const [command, ...rest] = args.positional;
    if (command === undefined) throw new UsageError("No command given");
    if (!COMMANDS.includes(command)) throw new UsageError(`Unknown command ${command}`);
    // Named client tokens (`admin_tokens.ts`) take their own arguments.
    const tokenAction = command === "token" ? tokenActionOf(rest, args) : undefined;
    if (
      tokenAction === undefined &&
      (TOKEN_OPTIONS.some((name) => args.options.has(name)) ||
        TOKEN_FLAGS.some((name) => args.flags.has(name)))
    ) {
      throw new UsageError(`--prefix, --database, --ops and --read-only are for token add`);
    }
    if (tokenAction !== undefined && option(args, "url") !== undefined) {
      throw new UsageError("--url is for add and replace, not token");
    }
    const change = tokenAction === undefined
      ? changeOf(command, rest, option(args, "url"))
      : undefined;
    const server = serverUrl(option(args, "server", "http://127.0.0.1:8001")!);
    const outFile = option(args, "out");
    if (command === "backup" && outFile === undefined) {
      throw new UsageError("backup needs --out FILE");
    }
    const rate = integerOption(args, "rate", { min: 1, max: 1000 });
    if (command !== "backup" && (outFile !== undefined || rate !== undefined)) {
      throw new UsageError(`--out and --rate are for backup, not ${command}`);
    }
    const timeoutMs = integerOption(args, "timeout", {
      min: 1,
      max: 3_600_000,
      // A change waits for its epoch to start (the route's own deadline is 15 s).
      fallback: command === "backup" ? 3_600_000 : change !== undefined ? 20_000 : 10_000,
    })!;
    const secret = await clusterSecret(io, server);
    if (tokenAction !== undefined) {
      out(
        JSON.stringify(await runTokenAction(server, tokenAction, { secret, timeoutMs }), null, 2),
      );
      return 0;
    }
    if (command === "backup") {
      const summary = await fetchBackup(server, outFile!, {
        secret,
        timeoutMs,
        ...(rate === undefined ? {} : { rateMBps: rate }),
      });
      out(JSON.stringify(summary, null, 2));
      return 0;
    }
    if (change !== undefined) {
      const answer = await adminGet(server, "/members/change", { secret, timeoutMs, json: change });
      out(JSON.stringify(answer, null, 2));
      return 0;
    }
    const members = await adminGet(server, "/members", { secret, timeoutMs });
    out(JSON.stringify(members, null, 2));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      err(`admin: ${oneLine(error.message)}\n\n${USAGE}`);
      return 2;
    }
    err(`admin: ${oneLine(error instanceof Error ? error.message : String(error))}`);
    return 1;
  }
}

/**
 * The `deno` arguments that run `deno task admin` with `args` as its own
 * process, with the task's permissions (for tests and benchmarks that drive
 * the CLI as an operator does).
 */
export function adminProcessArgs(args: readonly string[]): string[] {
  return [
    "run",
    "--allow-net",
    `--allow-env=${SECRET_ENV}`,
    "--allow-read",
    "--allow-write",
    new URL(import.meta.url).pathname,
    ...args,
  ];
}

if (import.meta.main) Deno.exit(await runAdmin(Deno.args));
