/**
 * What the deployment tests share: the files of `deploy/`, and the replica's
 * command line as each target spells it (`deno run <permissions>
 * src/cli/replica.ts <flags>`), checked against what the replica reads
 * (`REPLICA_ENV`, `REPLICA_OPTIONS`, `REPLICA_FLAGS` of `src/cli/replica.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseArgs } from "../../src/cli/args.ts";
import { REPLICA_ENV, REPLICA_FLAGS, REPLICA_OPTIONS } from "../../src/cli/replica.ts";
import { parseHostPort } from "../../src/net/endpoint.ts";

/** The repository's root. */
export const ROOT = new URL("../../", import.meta.url);

/** The text of `path`, relative to the repository's root. */
export function readDeployFile(path: string): string {
  return Deno.readTextFileSync(new URL(path, ROOT));
}

/** Every environment variable a replica reads. */
export const REPLICA_ENV_NAMES: ReadonlySet<string> = new Set(Object.values(REPLICA_ENV));

/** A replica's `deno run` command line, taken apart. */
export interface ReplicaCommand {
  /** Whether `--allow-net` is given (to every host). */
  readonly net: boolean;
  /** `--allow-read` paths. */
  readonly read: readonly string[];
  /** `--allow-write` paths. */
  readonly write: readonly string[];
  /** `--allow-env` names. */
  readonly env: readonly string[];
  /** Other Deno flags (`--cached-only`). */
  readonly denoFlags: readonly string[];
  /** The script. */
  readonly script: string;
  /** The replica's own arguments. */
  readonly args: readonly string[];
}

/**
 * Takes apart `argv`, which starts with the Deno binary (`deno`, or a path
 * to it) and `run`.
 */
export function replicaCommand(argv: readonly string[]): ReplicaCommand {
  assert.match(argv[0] ?? "", /(^|\/)deno$/, `a deno binary: ${argv.join(" ")}`);
  assert.equal(argv[1], "run");
  const scriptAt = argv.findIndex((arg, index) => index > 1 && !arg.startsWith("-"));
  assert.ok(scriptAt > 0, `a script in ${argv.join(" ")}`);
  const list = (name: string) =>
    argv.slice(2, scriptAt).filter((arg) => arg.startsWith(`--${name}=`)).flatMap((arg) =>
      arg.slice(name.length + 3).split(",")
    );
  return {
    net: argv.slice(2, scriptAt).includes("--allow-net"),
    read: list("allow-read"),
    write: list("allow-write"),
    env: list("allow-env"),
    denoFlags: argv.slice(2, scriptAt).filter((arg) =>
      !/^--allow-(net|read|write|env)(=|$)/.test(arg)
    ),
    script: argv[scriptAt]!,
    args: argv.slice(scriptAt + 1),
  };
}

/** Whether `path` lies within one of `allowed` (Deno's permission paths). */
export function within(path: string, allowed: readonly string[]): boolean {
  return allowed.some((root) => path === root || path.startsWith(`${root.replace(/\/+$/, "")}/`));
}

/**
 * Asserts that `command` runs the replica with the least permissions its
 * environment `env` needs, as `deno task start` grants them: the network,
 * read of the cluster file and the data directory, write of the data
 * directory only, and exactly the variables a replica reads; and that its
 * arguments are flags the replica takes. Returns the parsed arguments.
 */
export function assertReplicaCommand(
  command: ReplicaCommand,
  env: Readonly<Record<string, string | undefined>>,
  where: string,
): ReturnType<typeof parseArgs> {
  assert.equal(command.script, "src/cli/replica.ts", `${where}: the script`);
  assert.ok(command.net, `${where}: --allow-net`);
  const data = env[REPLICA_ENV.data];
  const config = env[REPLICA_ENV.config];
  assert.ok(data !== undefined, `${where}: ${REPLICA_ENV.data} is set`);
  assert.ok(config !== undefined, `${where}: ${REPLICA_ENV.config} is set`);
  assert.deepEqual(command.write, [data], `${where}: writes the data directory only`);
  assert.ok(within(data, command.read), `${where}: reads ${data}`);
  assert.ok(within(config, command.read), `${where}: reads ${config}`);
  assert.deepEqual(
    new Set(command.env),
    REPLICA_ENV_NAMES,
    `${where}: --allow-env names exactly the variables a replica reads`,
  );
  const listen = env[REPLICA_ENV.listen];
  assert.ok(listen !== undefined && parseHostPort(listen) !== undefined, `${where}: listen`);
  for (const name of Object.keys(env)) {
    if (name.startsWith("EPAXOS_")) {
      assert.ok(REPLICA_ENV_NAMES.has(name), `${where}: ${name} is a variable a replica reads`);
    }
  }
  return parseArgs(command.args, { options: REPLICA_OPTIONS, flags: REPLICA_FLAGS });
}

/** The port of `EPAXOS_LISTEN` in `env`. */
export function listenPort(env: Readonly<Record<string, string | undefined>>): number {
  const endpoint = parseHostPort(env[REPLICA_ENV.listen] ?? "");
  assert.ok(endpoint !== undefined, `${REPLICA_ENV.listen} is HOST:PORT`);
  return endpoint.port;
}

/** The Dockerfile's `ENTRYPOINT` (exec form) and `ENV` settings. */
export function dockerfile(): { entrypoint: string[]; env: Record<string, string> } {
  // Continuation lines joined, comments dropped.
  const lines = readDeployFile("deploy/Dockerfile").split("\n").filter((line) =>
    !line.trimStart().startsWith("#")
  ).join("\n").replace(/\\\n/g, " ").split("\n");
  const entry = lines.find((line) => line.startsWith("ENTRYPOINT "));
  assert.ok(entry !== undefined, "an ENTRYPOINT");
  const entrypoint = JSON.parse(entry.slice("ENTRYPOINT ".length)) as string[];
  const env: Record<string, string> = {};
  for (const line of lines.filter((line) => line.startsWith("ENV "))) {
    for (const match of line.slice(4).matchAll(/(\w+)=(\S+)/g)) env[match[1]!] = match[2]!;
  }
  return { entrypoint, env };
}
