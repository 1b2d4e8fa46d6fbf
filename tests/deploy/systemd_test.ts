/**
 * `deploy/systemd/epaxos-kv.service`: it parses as a unit file (sections,
 * `Key=Value`, repeated keys, backslash continuations, comments), and its
 * command line, variables, data directory and restart policy agree with the
 * replica; the example environment file names only variables the unit
 * passes on.
 */

import assert from "node:assert/strict";
import { REPLICA_ENV } from "../../src/cli/replica.ts";
import { parseClusterConfig } from "../../src/server/config.ts";
import {
  assertReplicaCommand,
  assertReplicaTls,
  EXTRA_ROOT_VARIABLES,
  readDeployFile,
  replicaCommand,
  within,
} from "./deploy_helpers.ts";

/** A unit file: each section's keys, each with its values in order (a key may repeat). */
type Unit = Map<string, Map<string, string[]>>;

/**
 * Parses a unit file as systemd.syntax(7) describes it: `[Section]` headers,
 * `Key=Value` lines, `#` and `;` comments, a trailing backslash joining the
 * next line (with a space).
 *
 * @throws {Error} on a line that is none of these, or a key outside a section.
 */
function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  const lines = text.replace(/\\\n/g, " ").split("\n");
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) return;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header !== null) {
      section = new Map();
      assert.ok(!unit.has(header[1]!), `section ${header[1]} once`);
      unit.set(header[1]!, section);
      return;
    }
    const setting = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    if (setting === null || section === undefined) {
      throw new Error(`line ${index + 1} is no setting of a section: ${line}`);
    }
    const values = section.get(setting[1]!) ?? [];
    values.push(setting[2]!.trim().replace(/\s+/g, " "));
    section.set(setting[1]!, values);
  });
  return unit;
}

Deno.test("the unit parser reads sections, repeats, continuations; refuses stray lines", () => {
  const unit = parseUnit("# c\n[A]\nX=1\nX=2 \\\n  3\n; c\n[B]\nY=\n");
  assert.deepEqual(unit.get("A")?.get("X"), ["1", "2 3"]);
  assert.deepEqual(unit.get("B")?.get("Y"), [""]);
  assert.throws(() => parseUnit("X=1\n"), /no setting of a section/);
  assert.throws(() => parseUnit("[A]\nnot a setting\n"), /no setting of a section/);
});

const unit = parseUnit(readDeployFile("deploy/systemd/epaxos-kv.service"));
const service = unit.get("Service")!;
const one = (key: string): string => {
  const values = service.get(key);
  assert.equal(values?.length, 1, `${key} once`);
  return values![0]!;
};
/** The unit's `Environment=` settings. */
const environment: Record<string, string> = Object.fromEntries(
  (service.get("Environment") ?? []).map((setting) => {
    const at = setting.indexOf("=");
    return [setting.slice(0, at), setting.slice(at + 1)];
  }),
);

Deno.test("systemd: a unit with a user, its state directory and restart on failure", () => {
  assert.deepEqual([...unit.keys()], ["Unit", "Service", "Install"]);
  assert.equal(one("User"), "epaxos");
  assert.equal(one("Restart"), "on-failure");
  // A refused start exits 2 (bad configuration, a store of another format): not retried.
  assert.equal(one("RestartPreventExitStatus"), "2");
  assert.equal(one("KillSignal"), "SIGTERM");
  assert.equal(environment[REPLICA_ENV.data], `/var/lib/${one("StateDirectory")}`);
  assert.equal(environment.DENO_DIR, `/var/cache/${one("CacheDirectory")}`);
  assert.equal(unit.get("Install")?.get("WantedBy")?.[0], "multi-user.target");
});

/** The unit's `deno run` command line, without `$EPAXOS_ARGS`. */
const unitCommand = replicaCommand(one("ExecStart").split(" ").slice(0, -1));

Deno.test("systemd: the command line and the variables agree with the replica", () => {
  const words = one("ExecStart").split(" ");
  assert.equal(words.at(-1), "$EPAXOS_ARGS", "the environment file's extra flags, split");
  const command = unitCommand;
  assert.deepEqual(command.denoFlags, ["--cached-only"]);
  assertReplicaCommand(command, environment, "epaxos-kv.service");
  assert.equal(one("WorkingDirectory") + "/" + command.script, "/opt/epaxos-kv/src/cli/replica.ts");
  // The secrets and the id come from the environment file, not the unit.
  for (const name of [REPLICA_ENV.clusterSecret, REPLICA_ENV.clientToken, REPLICA_ENV.id]) {
    assert.equal(environment[name], undefined, `${name} is not in the unit`);
  }
  assert.equal(one("EnvironmentFile"), "/etc/epaxos-kv/replica.env");
  assert.ok(environment[REPLICA_ENV.config]!.startsWith("/etc/epaxos-kv/"));
});

Deno.test("systemd: the example environment file sets the id, the secrets and extra flags only", () => {
  const names = readDeployFile("deploy/systemd/replica.env.example").split("\n")
    .filter((line) => line.trim() !== "" && !line.startsWith("#"))
    .map((line) => line.slice(0, line.indexOf("=")));
  assert.deepEqual(names, [
    REPLICA_ENV.id,
    REPLICA_ENV.clusterSecret,
    REPLICA_ENV.clientToken,
    "EPAXOS_ARGS",
  ]);
  // The extra flags shown in it and in the runbook are the replica's.
  const examples = [
    ...readDeployFile("deploy/systemd/replica.env.example").matchAll(/EPAXOS_ARGS=(--.*)$/gm),
    ...readDeployFile("deploy/systemd/RUNBOOK.md").matchAll(/EPAXOS_ARGS=(--[^'"\n]*)/g),
  ];
  assert.ok(examples.length >= 2);
  for (const [, flags] of examples) {
    const command = replicaCommand(["deno", "run", "src/cli/replica.ts", ...flags!.split(" ")]);
    assertReplicaCommand(
      {
        ...command,
        net: true,
        read: unitCommand.read,
        write: [environment[REPLICA_ENV.data]!],
        env: [...Object.values(REPLICA_ENV)],
      },
      environment,
      `EPAXOS_ARGS=${flags}`,
    );
  }
});

Deno.test("systemd: hardened, without what V8 cannot run under", () => {
  for (
    const [key, value] of [
      ["NoNewPrivileges", "yes"],
      ["ProtectSystem", "strict"],
      ["ProtectHome", "yes"],
      ["PrivateTmp", "yes"],
      ["CapabilityBoundingSet", ""],
      ["RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"],
    ]
  ) {
    assert.equal(one(key!), value, key);
  }
  // V8's JIT writes the code it runs: W^X memory would kill the replica.
  assert.equal(service.get("MemoryDenyWriteExecute"), undefined);
});

Deno.test("systemd: TLS from /etc/epaxos-kv/tls, trusting the cluster CA alone", () => {
  // The unit sets DENO_TLS_CA_STORE empty and unsets the variables that add roots.
  const unset = (service.get("UnsetEnvironment") ?? []).flatMap((line) => line.split(/\s+/));
  for (const name of EXTRA_ROOT_VARIABLES) {
    assert.ok(unset.includes(name), `UnsetEnvironment names ${name}`);
  }
  // The cluster file the runbook installs (aws3.json) names files the unit may read.
  const cluster = parseClusterConfig(readDeployFile("deploy/clusters/aws3.json"));
  assertReplicaTls(cluster, unitCommand, environment, "epaxos-kv.service with aws3.json");
  // The TLS directory is read, never written (the replica cannot change its own key).
  assert.ok(!unitCommand.write.some((path) => within("/etc/epaxos-kv/tls/ca.pem", [path])));
  const runbook = readDeployFile("deploy/systemd/RUNBOOK.md");
  assert.match(runbook, /install -d -o root -g epaxos -m 0750 \/etc\/epaxos-kv\/tls/);
  assert.match(runbook, /-m 0640 tls\/va\.key\.pem \/etc\/epaxos-kv\/tls\/va\.key\.pem/);
  assert.match(runbook, /deno task certs --config cluster\.json --out tls --renew/);
});

Deno.test("systemd: a joining replica's TLS flags outside the permissions are refused", () => {
  const flags = "--join https://va.epaxos.internal:8001 --url https://ie.epaxos.internal:8001 " +
    "--tls-cert /srv/ie.cert.pem --tls-key /etc/epaxos-kv/tls/ie.key.pem --tls-ca /etc/epaxos-kv/tls/ca.pem";
  const command = replicaCommand(["deno", "run", "src/cli/replica.ts", ...flags.split(" ")]);
  assert.throws(
    () =>
      assertReplicaCommand(
        {
          ...command,
          net: true,
          read: unitCommand.read,
          write: unitCommand.write,
          env: unitCommand.env,
        },
        environment,
        "outside",
      ),
    /reads --tls-cert \/srv\/ie\.cert\.pem/,
  );
});
