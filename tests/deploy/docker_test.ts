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
    assert.equal(cluster.replicas[id]!.url, `http://${name}:${listenPort(env)}`);
  });
});

Deno.test("the example cluster files are valid and name the secrets' variables", () => {
  for (const name of ["aws3.json", "aws5.json", "compose3.json"]) {
    const cluster = parseClusterConfig(readDeployFile(`deploy/clusters/${name}`));
    assert.deepEqual(cluster.secret, { env: REPLICA_ENV.clusterSecret }, name);
    if (cluster.clientToken !== undefined) {
      assert.deepEqual(cluster.clientToken, { env: REPLICA_ENV.clientToken }, name);
    }
  }
});
