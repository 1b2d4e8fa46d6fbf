/**
 * The image (`deploy/Dockerfile`), the three-replica `compose.yaml` and the
 * example cluster files agree with the replica: its permissions, variables,
 * port, volume and health check.
 */

import assert from "node:assert/strict";
import { parse as parseYaml } from "yaml";
import { REPLICA_ENV } from "../../src/cli/replica.ts";
import { parseClusterConfig } from "../../src/server/config.ts";
import {
  assertReplicaCommand,
  assertReplicaTls,
  dockerfile,
  listenPort,
  readDeployFile,
  replicaCommand,
} from "./deploy_helpers.ts";

Deno.test("the image runs the replica with least permissions on its data volume", () => {
  const { entrypoint, env } = dockerfile();
  const command = replicaCommand(entrypoint);
  const args = assertReplicaCommand(command, env, "Dockerfile");
  assert.equal(args.options.size, 0, "everything from the environment");
  assert.equal(env[REPLICA_ENV.data], "/data");
  const text = readDeployFile("deploy/Dockerfile");
  assert.match(text, /^VOLUME \["\/data"\]$/m);
  assert.match(text, new RegExp(`^EXPOSE ${listenPort(env)}$`, "m"));
  assert.match(text, /^USER deno$/m);
  assert.match(text, /\/livez/, "the health check asks /livez");
});

Deno.test("compose.yaml: three replicas of the image, each with its id, volume and port", () => {
  // Compose files use YAML merge keys (`<<: *replica`).
  const compose = parseYaml(readDeployFile("deploy/compose.yaml"), { merge: true });
  const { env } = dockerfile();
  const services = Object.entries(compose.services) as [string, {
    environment: Record<string, string>;
    volumes: string[];
    ports: string[];
  }][];
  const cluster = parseClusterConfig(readDeployFile("deploy/clusters/compose3.json"));
  assert.equal(services.length, cluster.replicas.length);
  services.forEach(([name, service], id) => {
    assert.equal(name, cluster.replicas[id]!.name);
    assert.equal(service.environment[REPLICA_ENV.id], String(id));
    for (const variable of Object.keys(service.environment)) {
      assert.ok(Object.values(REPLICA_ENV).includes(variable as never), variable);
    }
    assert.ok(service.volumes.includes(`data-${id}:${env[REPLICA_ENV.data]}`));
    assert.ok(
      service.volumes.some((volume) => volume.endsWith(`:${env[REPLICA_ENV.config]}:ro`)),
      "the cluster file where EPAXOS_CONFIG points",
    );
    assert.ok(service.ports.includes(`${8001 + id}:${listenPort(env)}`));
    assert.equal(cluster.replicas[id]!.url, `https://${name}:${listenPort(env)}`);
  });
});

Deno.test("compose.yaml on TLS: each replica reads the CA and its own pair, never the CA's key", () => {
  const compose = parseYaml(readDeployFile("deploy/compose.yaml"), { merge: true });
  const { entrypoint, env } = dockerfile();
  const command = replicaCommand(entrypoint);
  const cluster = parseClusterConfig(readDeployFile("deploy/clusters/compose3.json"));
  assertReplicaTls(cluster, command, env, "compose3.json under the Dockerfile");
  const services = Object.values(compose.services) as { volumes: string[] }[];
  services.forEach((service, id) => {
    const mounted = new Map(service.volumes.map((volume) => {
      const [from, to, mode] = volume.split(":");
      return [to!, { from: from!, mode }];
    }));
    const tls = cluster.replicas[id]!.tls!;
    for (const path of [cluster.tls!.ca!, tls.cert, tls.key]) {
      const mount = mounted.get(path);
      assert.ok(mount !== undefined, `replica-${id} mounts ${path}`);
      assert.equal(mount.mode, "ro", `${path} read-only`);
      // deno task certs --config deploy/clusters/compose3.json writes them here.
      assert.equal(mount.from, `./clusters/tls/${path.split("/").at(-1)}`);
    }
    for (const [to, { from }] of mounted) {
      assert.doesNotMatch(`${from} ${to}`, /ca-key\.pem/, "the CA's key stays on the host");
    }
  });
});

Deno.test("the image's health check asks /livez over https, then http", () => {
  const text = readDeployFile("deploy/Dockerfile").replace(/\\\n/g, " ");
  const check = text.match(/^HEALTHCHECK .* CMD (\[.*\])$/m);
  assert.ok(check !== null, "a HEALTHCHECK in exec form");
  const argv = JSON.parse(check[1]!) as string[];
  const port = listenPort(dockerfile().env);
  assert.ok(argv.includes(`--allow-net=127.0.0.1:${port}`));
  // Verification skipped for loopback alone (the certificate names the host).
  assert.ok(argv.includes("--unsafely-ignore-certificate-errors=127.0.0.1"));
  assert.match(argv.at(-1)!, new RegExp(`\\$\\{s\\}://127\\.0\\.0\\.1:${port}/livez`));
  assert.match(argv.at(-1)!, /'https'.*'http'/);
});

Deno.test("the TLS check refuses a certificate outside the permissions, and trusted extra roots", () => {
  const { entrypoint, env } = dockerfile();
  const command = replicaCommand(entrypoint);
  const cluster = parseClusterConfig(readDeployFile("deploy/clusters/compose3.json"));
  assert.throws(
    () => assertReplicaTls(cluster, { read: ["/data"] }, env, "narrowed"),
    /may read \/etc\/epaxos\/tls\/ca\.pem/,
  );
  assert.throws(
    () => assertReplicaTls(cluster, command, { ...env, DENO_CERT: "/x.pem" }, "extra"),
    /DENO_CERT is not set/,
  );
  assert.throws(
    () => assertReplicaTls(cluster, command, { ...env, DENO_TLS_CA_STORE: undefined }, "store"),
    /DENO_TLS_CA_STORE is set empty/,
  );
  const plain = parseClusterConfig(
    readDeployFile("deploy/clusters/compose3.json").replaceAll("https://", "http://"),
  );
  assert.throws(() => assertReplicaTls(plain, command, env, "plain"), /is https/);
});

Deno.test("the example cluster files are valid and name the secrets' variables", () => {
  for (const name of ["aws3.json", "aws5.json", "compose3.json"]) {
    const cluster = parseClusterConfig(readDeployFile(`deploy/clusters/${name}`));
    assert.deepEqual(cluster.secret, { env: REPLICA_ENV.clusterSecret }, name);
    // Across the internet: TLS by default.
    assertReplicaTls(
      cluster,
      { read: [name === "compose3.json" ? "/etc/epaxos/tls" : "/etc/epaxos-kv/tls"] },
      { DENO_TLS_CA_STORE: "" },
      name,
    );
    if (cluster.clientToken !== undefined) {
      assert.deepEqual(cluster.clientToken, { env: REPLICA_ENV.clientToken }, name);
    }
  }
});
