/**
 * What the deployment tests share: the files of `deploy/`, and the replica's
 * command line as each target spells it (`deno run <permissions>
 * src/cli/replica.ts <flags>`), checked against what the replica reads
 * (`REPLICA_ENV`, `REPLICA_OPTIONS`, `REPLICA_FLAGS` of `src/cli/replica.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { option, parseArgs } from "../../src/cli/args.ts";
import { REPLICA_ENV, REPLICA_FLAGS, REPLICA_OPTIONS } from "../../src/cli/replica.ts";
import { TLS_FLAGS, TLS_OPTIONS } from "../../src/cli/replica_tls.ts";
import { parseHostPort } from "../../src/net/endpoint.ts";
import type { ClusterConfig } from "../../src/server/config.ts";

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
  const args = parseArgs(command.args, {
    options: [...REPLICA_OPTIONS, ...TLS_OPTIONS],
    flags: [...REPLICA_FLAGS, ...TLS_FLAGS],
  });
  // A `--join`ed replica has no cluster file: its TLS files come by flags,
  // and must be readable under the permissions given.
  for (const name of TLS_OPTIONS) {
    const path = option(args, name);
    if (path !== undefined) {
      assert.ok(path.startsWith("/"), `${where}: --${name} ${path} is absolute`);
      assert.ok(within(path, command.read), `${where}: reads --${name} ${path}`);
    }
  }
  const cert = args.options.has("tls-cert");
  assert.equal(args.options.has("tls-key"), cert, `${where}: --tls-cert and --tls-key together`);
  if (args.options.has("join") && cert) {
    assert.ok(args.options.has("tls-ca"), `${where}: a --join with TLS needs --tls-ca`);
  }
  return args;
}

/** The variables that would make a TLS replica trust roots besides the cluster CA. */
export const EXTRA_ROOT_VARIABLES: readonly string[] = ["DENO_CERT", "NODE_EXTRA_CA_CERTS"];

/**
 * Asserts that a replica runs on TLS as the README's "TLS" section asks: every
 * member's URL is https with a certificate and key, the cluster names its CA,
 * each of these files lies within the `--allow-read` paths of `command` (as
 * absolute paths: a replica reads them relative to its working directory),
 * and the environment `env` makes it trust the cluster CA alone
 * (`DENO_TLS_CA_STORE` set empty; `DENO_CERT` and `NODE_EXTRA_CA_CERTS` not
 * set, and named in `unset` when the target can unset them).
 */
export function assertReplicaTls(
  cluster: ClusterConfig,
  command: Pick<ReplicaCommand, "read">,
  env: Readonly<Record<string, string | undefined>>,
  where: string,
): void {
  const ca = cluster.tls?.ca;
  assert.ok(ca !== undefined, `${where}: the cluster file names its CA`);
  const files = [ca];
  for (const replica of cluster.replicas) {
    assert.equal(new URL(replica.url).protocol, "https:", `${where}: ${replica.url} is https`);
    assert.ok(replica.tls !== undefined, `${where}: ${replica.name} has a certificate and key`);
    files.push(replica.tls.cert, replica.tls.key);
  }
  for (const file of files) {
    assert.ok(file.startsWith("/"), `${where}: ${file} is absolute`);
    assert.ok(within(file, command.read), `${where}: the replica may read ${file}`);
  }
  assert.ok(
    !files.some((file) => /(^|\/)ca-key\.pem$/.test(file)),
    `${where}: no replica reads the CA's key`,
  );
  assert.equal(env.DENO_TLS_CA_STORE, "", `${where}: DENO_TLS_CA_STORE is set empty`);
  for (const name of EXTRA_ROOT_VARIABLES) {
    assert.equal(env[name], undefined, `${where}: ${name} is not set`);
  }
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
    for (const match of line.slice(4).matchAll(/(\w+)=("[^"]*"|\S*)/g)) {
      env[match[1]!] = match[2]!.replace(/^"(.*)"$/, "$1");
    }
  }
  return { entrypoint, env };
}
