#!/usr/bin/env -S deno run --allow-read --allow-run=fly --allow-net --allow-env=EPAXOS_CLIENT_TOKEN
/**
 * epaxos-kv on Fly.io: one Machine with its own volume per region, from
 * `fly.toml` beside this file (RUNBOOK.md). Run from the repository root:
 *
 * ```sh
 * deploy/fly/launch.ts create --app NAME --regions iad,lhr,nrt [--org ORG] [--image IMAGE | --label LABEL] [--restore BACKUP]
 * deploy/fly/launch.ts join --app NAME --region REGION --id ID --through REGION --image IMAGE
 * deploy/fly/launch.ts upgrade --app NAME --image IMAGE
 * ```
 *
 * - `create`: the app, its secrets (`fly secrets import`, from stdin: random
 *   cluster secret and client token, printed once), the image (`fly deploy
 *   --build-only --push`), then per region a volume (`fly volumes create`)
 *   and a Machine (`fly machine run --machine-config`), replica `i` in the
 *   `i`-th region, reached by its peers at `http://REGION.NAME.internal:8001`.
 *   The cluster file is generated from the regions and written into every
 *   Machine; with `--restore`, the backup too, and each replica is seeded
 *   from it.
 * - `join`: a volume and a Machine for a member added or replaced with
 *   `deno task admin` (`--join` through the member in region `--through`).
 * - `upgrade`: each Machine in turn to IMAGE (`fly machine update`, which
 *   waits for its /readyz check), then its `/status` (through Fly's proxy,
 *   `fly-force-instance-id`) must say ready with no peer refusing a peer
 *   protocol version, before the next.
 *
 * `--dry-run` prints the commands instead of running them. A Machine's
 * config is made from `fly.toml` by {@linkcode machineConfig}: `fly machine
 * run` does not read it.
 *
 * @module
 */

import { parse as parseToml } from "smol-toml";
import { REPLICA_ENV } from "../../src/cli/replica.ts";
import { type ClusterConfig, parseClusterConfig } from "../../src/server/config.ts";
import { parseHostPort } from "../../src/net/endpoint.ts";

/** What this deployment reads of `fly.toml`. */
export interface FlyToml {
  /** The app's name (`app`), the default of `--app`. */
  readonly app: string;
  /** `[env]`: set in every Machine. */
  readonly env: Readonly<Record<string, string>>;
  /** `[[mounts]]`'s volume name and where it is mounted. */
  readonly mount: {
    readonly source: string;
    readonly destination: string;
    readonly sizeGb: number;
  };
  /** `[http_service]`'s port in the Machine. */
  readonly internalPort: number;
  /** The Machine's `services` (`[http_service]` with its checks), as `fly deploy` makes them. */
  readonly services: readonly Record<string, unknown>[];
  /** The Machine's `checks` (`[checks]`). */
  readonly checks: Readonly<Record<string, Record<string, unknown>>>;
  /** The Machine's `restart` (`[[restart]]`). */
  readonly restart: Readonly<Record<string, unknown>>;
  /** The Machine's `guest` (`[[vm]]`). */
  readonly guest: Readonly<Record<string, unknown>>;
  /** `kill_signal` and `kill_timeout`, as the Machine's `stop_config`. */
  readonly stopConfig: Readonly<Record<string, unknown>>;
}

/** A problem with `fly.toml`, naming the field. */
export class FlyTomlError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(`fly.toml: ${message}`);
    this.name = "FlyTomlError";
  }
}

type Table = Record<string, unknown>;

function table(value: unknown, field: string): Table {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FlyTomlError(`${field} must be a table`);
  }
  return value as Table;
}

function single(value: unknown, field: string): Table {
  if (!Array.isArray(value) || value.length !== 1) {
    throw new FlyTomlError(`${field} must be given exactly once ([[${field}]])`);
  }
  return table(value[0], field);
}

function text(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new FlyTomlError(`${field} must be a string`);
  }
  return value;
}

/** The HTTP check fields `fly deploy` copies from `fly.toml` into a Machine's config. */
const CHECK_FIELDS = ["type", "port", "method", "path", "interval", "timeout", "grace_period"];

function check(value: unknown, field: string, type?: string): Record<string, unknown> {
  const source = table(value, field);
  const copied: Record<string, unknown> = type === undefined ? {} : { type };
  for (const name of CHECK_FIELDS) {
    if (source[name] !== undefined) copied[name] = source[name];
  }
  if (copied.method !== undefined) copied.method = String(copied.method).toUpperCase();
  return copied;
}

/**
 * Parses `fly.toml` into what a Machine's config needs, with the checks this
 * deployment relies on: every env name is one a replica reads, the volume is
 * mounted at `EPAXOS_DATA`, and the service's port is the listener's.
 *
 * @throws {FlyTomlError} naming the field that is wrong.
 */
export function parseFlyToml(source: string): FlyToml {
  let root: Table;
  try {
    root = parseToml(source) as Table;
  } catch (error) {
    throw new FlyTomlError(`not valid TOML: ${(error as Error).message}`);
  }
  const env = table(root.env, "[env]") as Record<string, unknown>;
  const known = new Set<string>(Object.values(REPLICA_ENV));
  for (const [name, value] of Object.entries(env)) {
    if (!known.has(name)) throw new FlyTomlError(`[env] ${name} is no variable a replica reads`);
    text(value, `[env] ${name}`);
  }
  const mounts = single(root.mounts, "mounts");
  const destination = text(mounts.destination, "[[mounts]] destination");
  if (destination !== env[REPLICA_ENV.data]) {
    throw new FlyTomlError(
      `[[mounts]] destination ${destination} is not ${REPLICA_ENV.data} (${env[REPLICA_ENV.data]})`,
    );
  }
  const size = /^(\d+)gb$/.exec(String(mounts.initial_size ?? "1gb"));
  if (size === null) throw new FlyTomlError("[[mounts]] initial_size must be such as 10gb");
  const http = table(root.http_service, "[http_service]");
  const internalPort = http.internal_port;
  const listen = parseHostPort(String(env[REPLICA_ENV.listen] ?? ""));
  if (listen === undefined || listen.port !== internalPort) {
    throw new FlyTomlError(
      `[http_service] internal_port ${internalPort} is not the port of ${REPLICA_ENV.listen}`,
    );
  }
  // As `fly deploy` makes them (flyctl's HTTPService.ToService): 80 and 443.
  const httpChecks = Array.isArray(http.checks) ? http.checks : [];
  const service = {
    protocol: "tcp",
    internal_port: internalPort,
    autostop: http.auto_stop_machines ?? "off",
    autostart: http.auto_start_machines ?? true,
    ports: [
      { port: 80, handlers: ["http"], force_https: http.force_https === true },
      { port: 443, handlers: ["http", "tls"] },
    ],
    checks: httpChecks.map((value, index) =>
      check(value, `[[http_service.checks]] ${index}`, "http")
    ),
  };
  const checks: Record<string, Record<string, unknown>> = {};
  for (const [name, value] of Object.entries(table(root.checks ?? {}, "[checks]"))) {
    checks[name] = check(value, `[checks.${name}]`);
  }
  const restart = single(root.restart, "restart");
  const vm = single(root.vm, "vm");
  return {
    app: text(root.app, "app"),
    env: env as Record<string, string>,
    mount: {
      source: text(mounts.source, "[[mounts]] source"),
      destination,
      sizeGb: Number(size[1]),
    },
    internalPort: internalPort as number,
    services: [service],
    checks,
    restart: {
      policy: text(restart.policy, "[[restart]] policy"),
      ...(restart.retries === undefined ? {} : { max_retries: restart.retries }),
    },
    guest: { cpu_kind: vm.cpu_kind, cpus: vm.cpus, memory_mb: vm.memory_mb },
    stopConfig: {
      ...(root.kill_signal === undefined ? {} : { signal: root.kill_signal }),
      ...(root.kill_timeout === undefined ? {} : { timeout: root.kill_timeout }),
    },
  };
}

/** Where the peers of the Machine in `region` reach it: Fly's private network. */
export function peerUrl(app: string, region: string, port: number): string {
  return `http://${region}.${app}.internal:${port}`;
}

/**
 * The cluster file of replicas in `regions`, replica `i` in `regions[i]`:
 * named after its region, reached at {@linkcode peerUrl}, the secrets in the
 * variables Fly sets from the app's secrets.
 *
 * @throws {ConfigError} if it is no valid cluster file (an even count, a
 *   region twice).
 */
export function clusterFileFor(
  app: string,
  regions: readonly string[],
  port: number,
): ClusterConfig {
  const file = {
    replicas: regions.map((region, id) => ({
      id,
      name: region,
      region,
      url: peerUrl(app, region, port),
    })),
    secret: { env: REPLICA_ENV.clusterSecret },
    clientToken: { env: REPLICA_ENV.clientToken },
  };
  return parseClusterConfig(JSON.stringify(file), "the generated cluster file");
}

/** Where a backup to seed from is written in a Machine: beside the cluster file. */
export const RESTORE_PATH = "/etc/epaxos/restore.jsonl";

/** `bytes` in base64, as a Machine's `files` take them. */
export function base64Of(bytes: Uint8Array): string {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  }
  return btoa(binary);
}

/** What {@linkcode machineConfig} makes a Machine of. */
export interface MachineSettings {
  /** The replica's id. */
  readonly id: number;
  /** The cluster file, written to `EPAXOS_CONFIG` (a member of the first configuration). */
  readonly cluster?: ClusterConfig;
  /** A backup to seed the replica from (base64), written to {@linkcode RESTORE_PATH}. */
  readonly restore?: string;
  /** Extra replica flags (`--join …` for a member added or replaced). */
  readonly args?: readonly string[];
}

/**
 * A Machine's config (`fly machine run --machine-config`) from `fly.toml`:
 * its env with the replica's id, services and checks, restart policy, size
 * and stop signal; the cluster file, or the extra flags. The image and the
 * volume are given to `fly machine run` beside it.
 */
export function machineConfig(fly: FlyToml, settings: MachineSettings): Record<string, unknown> {
  const config: Record<string, unknown> = {
    env: { ...fly.env, [REPLICA_ENV.id]: String(settings.id) },
    services: fly.services,
    checks: fly.checks,
    restart: fly.restart,
    guest: fly.guest,
    stop_config: fly.stopConfig,
  };
  const files: Record<string, string>[] = [];
  if (settings.cluster !== undefined) {
    const json = new TextEncoder().encode(JSON.stringify(settings.cluster));
    files.push({ guest_path: fly.env[REPLICA_ENV.config]!, raw_value: base64Of(json) });
  }
  const args = [...(settings.args ?? [])];
  if (settings.restore !== undefined) {
    files.push({ guest_path: RESTORE_PATH, raw_value: settings.restore });
    args.push("--restore", RESTORE_PATH);
  }
  if (files.length > 0) config.files = files;
  if (args.length > 0) {
    // Appended to the image's entrypoint (deploy/Dockerfile): flags of the replica.
    config.init = { cmd: args };
  }
  return config;
}

/** One command of a plan. */
export interface Step {
  /** Arguments of `fly`. */
  readonly argv: readonly string[];
  /** What it is for, printed before it runs. */
  readonly note: string;
  /** Given on its standard input (never on the command line: the secrets). */
  readonly stdin?: string;
}

/** Settings of {@linkcode createPlan}. */
export interface CreateSettings {
  /** The app. */
  readonly app: string;
  /** Regions, replica `i` in `regions[i]`. */
  readonly regions: readonly string[];
  /** The image to run; absent, one is built and pushed with `label`. */
  readonly image?: string;
  /** The label of the image built (`registry.fly.io/APP:LABEL`). */
  readonly label: string;
  /** The organization of a new app; absent, the app exists already. */
  readonly org?: string;
  /** The secrets, `NAME=VALUE` lines. */
  readonly secrets: string;
  /** Path of `fly.toml`, as `fly deploy --config` takes it. */
  readonly flyTomlPath: string;
  /** A backup every replica is seeded from (base64), if any. */
  readonly restore?: string;
}

/** The image a plan runs: the given one, or the one it builds. */
export function imageOf(settings: Pick<CreateSettings, "app" | "image" | "label">): string {
  return settings.image ?? `registry.fly.io/${settings.app}:${settings.label}`;
}

function volumeStep(fly: FlyToml, app: string, region: string): Step {
  return {
    argv: [
      "volumes",
      "create",
      fly.mount.source,
      "--app",
      app,
      "--region",
      region,
      "--size",
      String(fly.mount.sizeGb),
      "--yes",
    ],
    note: `the volume of the replica in ${region}`,
  };
}

function machineStep(
  fly: FlyToml,
  options: { app: string; region: string; image: string; settings: MachineSettings },
): Step {
  return {
    argv: [
      "machine",
      "run",
      options.image,
      "--app",
      options.app,
      "--region",
      options.region,
      "--name",
      `epaxos-${options.region}`,
      // By name: an unattached volume of that name in the region, the one just made.
      "--volume",
      `${fly.mount.source}:${fly.mount.destination}`,
      "--machine-config",
      JSON.stringify(machineConfig(fly, options.settings)),
      // Not waiting for its checks: /readyz passes once a fast quorum runs.
      "--detach",
    ],
    note: `replica ${options.settings.id} in ${options.region}`,
  };
}

/** The commands that create a cluster: app, secrets, image, then a volume and a Machine per region. */
export function createPlan(fly: FlyToml, settings: CreateSettings): Step[] {
  const cluster = clusterFileFor(settings.app, settings.regions, fly.internalPort);
  const image = imageOf(settings);
  const steps: Step[] = [];
  if (settings.org !== undefined) {
    steps.push({
      argv: ["apps", "create", settings.app, "--org", settings.org],
      note: "the app",
    });
  }
  steps.push({
    argv: ["secrets", "import", "--stage", "--app", settings.app],
    note: "the cluster secret and the client token (from stdin)",
    stdin: settings.secrets,
  });
  if (settings.image === undefined) {
    steps.push({
      argv: [
        "deploy",
        "--config",
        settings.flyTomlPath,
        "--app",
        settings.app,
        "--build-only",
        "--push",
        "--image-label",
        settings.label,
      ],
      note: `the image ${image}, from deploy/Dockerfile`,
    });
  }
  for (const region of settings.regions) steps.push(volumeStep(fly, settings.app, region));
  settings.regions.forEach((region, id) =>
    steps.push(
      machineStep(fly, {
        app: settings.app,
        region,
        image,
        settings: {
          id,
          cluster,
          ...(settings.restore === undefined ? {} : { restore: settings.restore }),
        },
      }),
    )
  );
  return steps;
}

/** Settings of {@linkcode joinPlan}. */
export interface JoinSettings {
  /** The app. */
  readonly app: string;
  /** The new Machine's region. */
  readonly region: string;
  /** The member's id, as `deno task admin add` printed it (or the replaced one's). */
  readonly id: number;
  /** The region of a running member to join through. */
  readonly through: string;
  /** The image the cluster runs. */
  readonly image: string;
}

/** The commands that start a member added or replaced: its volume and its Machine, with `--join`. */
export function joinPlan(fly: FlyToml, settings: JoinSettings): Step[] {
  const args = [
    "--join",
    peerUrl(settings.app, settings.through, fly.internalPort),
    "--url",
    peerUrl(settings.app, settings.region, fly.internalPort),
  ];
  return [
    volumeStep(fly, settings.app, settings.region),
    machineStep(fly, {
      app: settings.app,
      region: settings.region,
      image: settings.image,
      settings: { id: settings.id, args },
    }),
  ];
}

/** A Machine as `fly machine list --json` lists it (what is read of it). */
export interface ListedMachine {
  /** Its id. */
  readonly id: string;
  /** Its region. */
  readonly region: string;
  /** Its config: the replica's id in `env.EPAXOS_ID`. */
  readonly config?: { readonly env?: Readonly<Record<string, string>> };
}

/** The update of each Machine in turn, in the order of their replica ids. */
export function upgradePlan(
  app: string,
  image: string,
  machines: readonly ListedMachine[],
): { readonly machine: ListedMachine; readonly step: Step }[] {
  const idOf = (machine: ListedMachine) => Number(machine.config?.env?.[REPLICA_ENV.id] ?? NaN);
  return [...machines].sort((a, b) => idOf(a) - idOf(b)).map((machine) => ({
    machine,
    step: {
      // Waits for the Machine's checks, /readyz among them, up to 5 minutes.
      argv: [
        "machine",
        "update",
        machine.id,
        "--app",
        app,
        "--image",
        image,
        "--yes",
        "--wait-timeout",
        "300",
      ],
      note: `replica ${idOf(machine)} in ${machine.region}`,
    },
  }));
}

/**
 * Why a replica's `/status` says the upgrade must not go on, or `undefined`:
 * it must be ready, and no peer may refuse its peer protocol version, or it
 * theirs.
 */
export function statusProblem(status: unknown): string | undefined {
  const value = status as {
    ready?: unknown;
    peers?: { id?: unknown; protocolRefusal?: unknown }[];
  } | null;
  if (value === null || typeof value !== "object") return "/status answered no JSON object";
  if (value.ready !== true) return "it is not ready (no fast quorum reachable)";
  for (const peer of value.peers ?? []) {
    if (typeof peer.protocolRefusal === "string") {
      return `peer ${peer.id}: ${peer.protocolRefusal}`;
    }
  }
  return undefined;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function runFly(step: Step): Promise<string> {
  console.error(`# ${step.note}`);
  const command = new Deno.Command("fly", {
    args: [...step.argv],
    stdin: step.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "inherit",
  });
  const child = command.spawn();
  if (step.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(step.stdin));
    await writer.close();
  }
  const { code, stdout } = await child.output();
  const out = new TextDecoder().decode(stdout);
  if (code !== 0) throw new Error(`fly ${step.argv.slice(0, 2).join(" ")} failed (exit ${code})`);
  return out;
}

function show(step: Step): void {
  const quoted = step.argv.map((arg) => /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg}'`);
  console.log(
    `# ${step.note}\nfly ${quoted.join(" ")}${step.stdin === undefined ? "" : " < secrets"}`,
  );
}

function flagValue(args: readonly string[], name: string): string | undefined {
  const index = args.indexOf(`--${name}`);
  return index < 0 ? undefined : args[index + 1];
}

function required(args: readonly string[], name: string): string {
  const value = flagValue(args, name);
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

async function main(args: readonly string[]): Promise<void> {
  const here = new URL(".", import.meta.url);
  const flyTomlPath = new URL("fly.toml", here).pathname;
  const fly = parseFlyToml(await Deno.readTextFile(flyTomlPath));
  const dryRun = args.includes("--dry-run");
  const app = flagValue(args, "app") ?? fly.app;
  const run = async (steps: readonly Step[]) => {
    for (const step of steps) dryRun ? show(step) : await runFly(step);
  };
  switch (args[0]) {
    case "create": {
      const regions = required(args, "regions").split(",").map((region) => region.trim());
      const version = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", here))).version;
      const random = () => hex(crypto.getRandomValues(new Uint8Array(24)));
      const secrets =
        `${REPLICA_ENV.clusterSecret}=${random()}\n${REPLICA_ENV.clientToken}=${random()}\n`;
      const image = flagValue(args, "image");
      const org = flagValue(args, "org");
      const backup = flagValue(args, "restore");
      const restore = backup === undefined ? undefined : base64Of(await Deno.readFile(backup));
      const steps = createPlan(fly, {
        app,
        regions,
        ...(image === undefined ? {} : { image }),
        ...(org === undefined ? {} : { org }),
        ...(restore === undefined ? {} : { restore }),
        label: flagValue(args, "label") ?? `v${version}`,
        secrets,
        flyTomlPath: "deploy/fly/fly.toml",
      });
      console.log(JSON.stringify(clusterFileFor(app, regions, fly.internalPort), null, 2));
      await run(steps);
      if (!dryRun) {
        console.log(
          `\nThe client token (keep it; fly secrets list shows only digests):\n${secrets}`,
        );
        console.log(`Ready once every /readyz check passes: fly checks list --app ${app}`);
      }
      return;
    }
    case "join": {
      await run(joinPlan(fly, {
        app,
        region: required(args, "region"),
        id: Number(required(args, "id")),
        through: required(args, "through"),
        image: required(args, "image"),
      }));
      return;
    }
    case "upgrade": {
      const image = required(args, "image");
      const listed = JSON.parse(
        await runFly({ argv: ["machine", "list", "--app", app, "--json"], note: "the Machines" }),
      ) as ListedMachine[];
      const token = Deno.env.get(REPLICA_ENV.clientToken);
      for (const { machine, step } of upgradePlan(app, image, listed)) {
        if (dryRun) {
          show(step);
          continue;
        }
        await runFly(step);
        const response = await fetch(`https://${app}.fly.dev/status`, {
          headers: {
            "fly-force-instance-id": machine.id,
            ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
          },
          signal: AbortSignal.timeout(10_000),
        });
        const problem = response.ok
          ? statusProblem(await response.json())
          : `/status answered ${response.status}`;
        if (problem !== undefined) {
          throw new Error(`stopped after ${step.note}: ${problem}; the others are not upgraded`);
        }
        console.error(`# ${step.note}: upgraded, ready`);
      }
      return;
    }
    default:
      throw new Error("usage: launch.ts create|join|upgrade --app NAME … (see RUNBOOK.md)");
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(1);
  }
}
