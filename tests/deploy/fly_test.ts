/**
 * `deploy/fly/`: `fly.toml` parses (TOML with `npm:smol-toml`) and agrees
 * with the replica, and the commands `launch.ts` would run (its plans, made
 * without running anything) create one Machine with its own volume per
 * region, with the image's command line, the replica's variables and a
 * cluster file generated from the regions; a member joining gets `--join`
 * flags the replica takes; an upgrade goes one Machine at a time.
 */

import assert from "node:assert/strict";
import { parse as parseToml } from "smol-toml";
import { REPLICA_ENV } from "../../src/cli/replica.ts";
import { ConfigError, parseClusterConfig } from "../../src/server/config.ts";
import {
  clusterFileFor,
  createPlan,
  type CreateSettings,
  type FlyToml,
  FlyTomlError,
  joinPlan,
  parseFlyToml,
  peerUrl,
  RESTORE_PATH,
  statusProblem,
  type Step,
  upgradePlan,
} from "../../deploy/fly/launch.ts";
import {
  assertReplicaCommand,
  dockerfile,
  listenPort,
  readDeployFile,
  replicaCommand,
  within,
} from "./deploy_helpers.ts";

const source = readDeployFile("deploy/fly/fly.toml");
const fly = parseFlyToml(source);
const SECRETS =
  "EPAXOS_CLUSTER_SECRET=s3cret-value-0123456789\nEPAXOS_CLIENT_TOKEN=t0ken-value-0123456789\n";
const REGIONS = ["iad", "lhr", "nrt"];

/** The plan of `create` for app `kv-test` in {@linkcode REGIONS}, with `settings` changed. */
function plan(settings: Partial<CreateSettings> = {}): Step[] {
  return createPlan(fly, {
    app: "kv-test",
    regions: REGIONS,
    label: "v0.1.0",
    secrets: SECRETS,
    flyTomlPath: "deploy/fly/fly.toml",
    ...settings,
  });
}

/** The machine config JSON of a `fly machine run` step. */
function machineConfigOf(step: Step): Record<string, unknown> & {
  env: Record<string, string>;
  files?: { guest_path: string; raw_value: string }[];
  init?: { cmd: string[] };
  services: { internal_port: number; checks: { path: string }[] }[];
  checks: Record<string, { path: string; port: number }>;
} {
  const at = step.argv.indexOf("--machine-config");
  assert.ok(at > 0, "a --machine-config");
  return JSON.parse(step.argv[at + 1]!);
}

Deno.test("fly.toml parses, and its env, volume, port and checks agree with the replica", () => {
  parseToml(source); // TOML as such
  const { env: imageEnv } = dockerfile();
  // Fly's private network is IPv6: the listener takes [::], on the image's port.
  assert.equal(fly.env[REPLICA_ENV.listen], `[::]:${listenPort(imageEnv)}`);
  assert.equal(fly.internalPort, listenPort(fly.env));
  assert.equal(fly.mount.destination, fly.env[REPLICA_ENV.data]);
  assert.equal(fly.env[REPLICA_ENV.config], imageEnv[REPLICA_ENV.config]);
  const service = fly.services[0] as { checks: { path: string; type: string }[] };
  assert.deepEqual(service.checks.map((check) => [check.type, check.path]), [["http", "/readyz"]]);
  assert.equal(fly.checks.livez?.path, "/livez");
  assert.equal(fly.checks.livez?.port, fly.internalPort);
  // The secrets are the app's secrets, never in fly.toml.
  assert.equal(fly.env[REPLICA_ENV.clusterSecret], undefined);
  assert.equal(fly.env[REPLICA_ENV.clientToken], undefined);
});

Deno.test("fly.toml that disagrees with the replica is refused, naming the field", () => {
  const broken = (from: string | RegExp, to: string, message: RegExp) =>
    assert.throws(() => parseFlyToml(source.replace(from, to)), (error: unknown) => {
      assert.ok(error instanceof FlyTomlError, String(error));
      assert.match(error.message, message);
      return true;
    });
  broken('destination = "/data"', 'destination = "/srv"', /\[\[mounts\]\] destination \/srv/);
  broken("internal_port = 8001", "internal_port = 8080", /internal_port 8080/);
  broken("[env]\n", '[env]\n  EPAXOS_SECRET = "x"\n', /EPAXOS_SECRET is no variable/);
  broken("[[vm]]", "[vmx]", /vm must be given exactly once/);
  broken("app =", "app = = ", /not valid TOML/);
});

Deno.test("create: app, secrets from stdin, image, then a volume and a Machine per region", () => {
  const steps = plan({ org: "personal" });
  const heads = steps.map((step) => step.argv.slice(0, 2).join(" "));
  assert.deepEqual(heads, [
    "apps create",
    "secrets import",
    "deploy --config",
    "volumes create",
    "volumes create",
    "volumes create",
    "machine run",
    "machine run",
    "machine run",
  ]);
  // The secrets only on stdin: in no argument of any command.
  assert.equal(steps[1]!.stdin, SECRETS);
  for (const step of steps) {
    assert.ok(!step.argv.join(" ").includes("s3cret-value"), step.argv.join(" "));
  }
  assert.ok(steps[2]!.argv.includes("--build-only") && steps[2]!.argv.includes("--push"));
  const cluster = clusterFileFor("kv-test", REGIONS, fly.internalPort);
  REGIONS.forEach((region, id) => {
    const volume = steps[3 + id]!.argv;
    assert.deepEqual(volume.slice(2, 7), [
      fly.mount.source,
      "--app",
      "kv-test",
      "--region",
      region,
    ]);
    const run = steps[6 + id]!;
    assert.equal(run.argv[2], "registry.fly.io/kv-test:v0.1.0");
    assert.equal(run.argv[run.argv.indexOf("--region") + 1], region);
    assert.equal(
      run.argv[run.argv.indexOf("--volume") + 1],
      `${fly.mount.source}:${fly.env[REPLICA_ENV.data]}`,
    );
    const config = machineConfigOf(run);
    assert.equal(config.env[REPLICA_ENV.id], String(id));
    // The image's command line with this Machine's variables.
    const args = assertReplicaCommand(replicaCommand(dockerfile().entrypoint), config.env, region);
    assert.equal(args.options.size, 0);
    assert.equal(config.init, undefined, "no extra flags");
    // The cluster file where EPAXOS_CONFIG points, generated from the regions.
    assert.equal(config.files?.[0]?.guest_path, config.env[REPLICA_ENV.config]);
    const written = parseClusterConfig(atob(config.files![0]!.raw_value));
    assert.deepEqual(written, cluster);
    assert.equal(
      written.replicas[id]!.url,
      `http://${region}.kv-test.internal:${fly.internalPort}`,
    );
    assert.equal(written.replicas[id]!.region, region);
    assert.deepEqual(config.services[0]!.checks.map((check) => check.path), ["/readyz"]);
    assert.equal(config.checks.livez!.path, "/livez");
  });
  assert.deepEqual(cluster.secret, { env: REPLICA_ENV.clusterSecret });
  assert.deepEqual(cluster.clientToken, { env: REPLICA_ENV.clientToken });
});

Deno.test("create with an image builds nothing; regions must make a valid cluster", () => {
  const steps = plan({ image: "registry.example/epaxos-kv:1" });
  assert.ok(steps.every((step) => step.argv[0] !== "deploy" && step.argv[0] !== "apps"));
  assert.equal(steps.at(-1)!.argv[2], "registry.example/epaxos-kv:1");
  for (const regions of [["iad", "lhr"], ["iad", "lhr", "iad"]]) {
    assert.throws(() => plan({ regions }), ConfigError);
  }
});

Deno.test("create --restore: every replica is seeded from the backup, written beside its cluster file", () => {
  const backup = btoa("a backup's bytes");
  const steps = plan({ image: "registry.example/epaxos-kv:1", restore: backup });
  const runs = steps.filter((step) => step.argv[1] === "run");
  assert.equal(runs.length, REGIONS.length);
  for (const run of runs) {
    const config = machineConfigOf(run);
    assert.deepEqual(config.files?.map((file) => file.guest_path), [
      config.env[REPLICA_ENV.config],
      RESTORE_PATH,
    ]);
    assert.equal(config.files![1]!.raw_value, backup);
    const command = replicaCommand([...dockerfile().entrypoint, ...config.init!.cmd]);
    const args = assertReplicaCommand(command, config.env, "restore");
    assert.deepEqual(args.options.get("restore"), [RESTORE_PATH]);
    assert.ok(within(RESTORE_PATH, command.read), "the replica may read the backup");
  }
});

Deno.test("join: a volume and a Machine whose extra flags join through another region", () => {
  const [volume, run] = joinPlan(fly as FlyToml, {
    app: "kv-test",
    region: "syd",
    id: 3,
    through: "iad",
    image: "registry.fly.io/kv-test:v0.1.0",
  });
  assert.deepEqual(volume!.argv.slice(0, 2), ["volumes", "create"]);
  const config = machineConfigOf(run!);
  assert.equal(config.env[REPLICA_ENV.id], "3");
  assert.equal(config.files, undefined, "a joiner has no cluster file");
  const command = replicaCommand([...dockerfile().entrypoint, ...config.init!.cmd]);
  const args = assertReplicaCommand(command, config.env, "join");
  assert.deepEqual(args.options.get("join"), [peerUrl("kv-test", "iad", fly.internalPort)]);
  assert.deepEqual(args.options.get("url"), [peerUrl("kv-test", "syd", fly.internalPort)]);
});

Deno.test("upgrade: one Machine at a time, in replica order, each waiting for its checks", () => {
  const machines = [
    { id: "m-c", region: "nrt", config: { env: { [REPLICA_ENV.id]: "2" } } },
    { id: "m-a", region: "iad", config: { env: { [REPLICA_ENV.id]: "0" } } },
    { id: "m-b", region: "lhr", config: { env: { [REPLICA_ENV.id]: "1" } } },
  ];
  const plan = upgradePlan("kv-test", "registry.fly.io/kv-test:v2", machines);
  assert.deepEqual(plan.map(({ machine }) => machine.id), ["m-a", "m-b", "m-c"]);
  for (const { step } of plan) {
    assert.deepEqual(step.argv.slice(0, 2), ["machine", "update"]);
    assert.ok(step.argv.includes("--wait-timeout"));
    assert.ok(!step.argv.includes("--skip-health-checks"));
  }
});

Deno.test("upgrade: /status must say ready, with no peer refusing a protocol version", () => {
  const ready = { ready: true, peers: [{ id: 1, protocolRefusal: null }] };
  assert.equal(statusProblem(ready), undefined);
  assert.match(statusProblem({ ...ready, ready: false })!, /not ready/);
  assert.equal(
    statusProblem({
      ready: true,
      peers: [{ id: 2, protocolRefusal: "peer 2 refused our peer protocol 2" }],
    }),
    "peer 2: peer 2 refused our peer protocol 2",
  );
  assert.match(statusProblem(null)!, /no JSON object/);
});

Deno.test("fly: the runbook's launch.ts commands are ones it takes", () => {
  const runbook = readDeployFile("deploy/fly/RUNBOOK.md");
  const uses = [...runbook.matchAll(/deploy\/fly\/launch\.ts (\w+)/g)].map((match) => match[1]);
  assert.ok(uses.length >= 3);
  for (const use of uses) assert.ok(["create", "join", "upgrade"].includes(use!), use);
});
