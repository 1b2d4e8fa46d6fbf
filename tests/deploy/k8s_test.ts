/**
 * `deploy/k8s/`: every manifest parses (YAML with `npm:yaml`, strict: a
 * duplicate key or a syntax error fails), and the StatefulSet, services,
 * PodDisruptionBudget and ConfigMap agree with each other and with the
 * replica: its command line and variables, port, probes, data volume, the
 * cluster file and the pods' DNS names.
 */

import assert from "node:assert/strict";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { REPLICA_ENV } from "../../src/cli/replica.ts";
import { type ClusterConfig, parseClusterConfig } from "../../src/server/config.ts";
import {
  assertReplicaCommand,
  assertReplicaTls,
  dockerfile,
  EXTRA_ROOT_VARIABLES,
  listenPort,
  readDeployFile,
  replicaCommand,
} from "./deploy_helpers.ts";

// deno-lint-ignore no-explicit-any
type Manifest = any;

/** Every document of every manifest in `deploy/k8s/`, by kind and name. */
function manifests(): Map<string, Manifest> {
  const byKindAndName = new Map<string, Manifest>();
  const files = [...Deno.readDirSync(new URL("deploy/k8s/", new URL("../../", import.meta.url)))]
    .map((entry) => entry.name).filter((name) => name.endsWith(".yaml")).sort();
  assert.deepEqual(files, [
    "configmap.yaml",
    "pdb.yaml",
    "prometheus.yaml",
    "services.yaml",
    "statefulset.yaml",
  ]);
  for (const file of files) {
    for (const document of parseAllDocuments(readDeployFile(`deploy/k8s/${file}`))) {
      assert.deepEqual(document.errors, [], `${file} parses`);
      const value = document.toJS();
      assert.ok(typeof value?.kind === "string" && typeof value?.metadata?.name === "string");
      byKindAndName.set(`${value.kind}/${value.metadata.name}`, value);
    }
  }
  return byKindAndName;
}

const all = manifests();
const get = (key: string): Manifest => {
  const value = all.get(key);
  assert.ok(value !== undefined, `${key} is defined`);
  return value;
};
const statefulSet = get("StatefulSet/epaxos");
const pod = statefulSet.spec.template.spec;
const container = pod.containers[0];
const headless = get(`Service/${statefulSet.spec.serviceName}`);
const clients = get("Service/epaxos-kv");
const configMap = get("ConfigMap/epaxos-cluster");

/** The container's env: literal values, and where the others come from. */
const env: Record<string, string | undefined> = Object.fromEntries(
  container.env.map((item: { name: string; value?: string }) => [item.name, item.value]),
);
/** The shell script of the container's command, and the replica command in it. */
const script: string = container.args[0];
const execLine = script.split("\n").find((line) => line.startsWith("exec "));

Deno.test("k8s: every manifest parses, and the selectors select the StatefulSet's pods", () => {
  const labels = statefulSet.spec.template.metadata.labels;
  const selects = (selector: Record<string, string>) =>
    Object.entries(selector).every(([key, value]) => labels[key] === value);
  assert.ok(selects(statefulSet.spec.selector.matchLabels));
  assert.ok(selects(headless.spec.selector));
  assert.ok(selects(clients.spec.selector));
  const budget = get("PodDisruptionBudget/epaxos");
  assert.ok(selects(budget.spec.selector.matchLabels));
  assert.equal(budget.spec.maxUnavailable, 1);
});

Deno.test("k8s: peers resolve each other before they are ready, and start together", () => {
  assert.equal(headless.spec.clusterIP, "None");
  assert.equal(headless.spec.publishNotReadyAddresses, true);
  assert.equal(statefulSet.spec.podManagementPolicy, "Parallel");
  assert.equal(statefulSet.spec.updateStrategy.type, "RollingUpdate");
  assert.equal(statefulSet.spec.updateStrategy.rollingUpdate.maxUnavailable, 1);
});

Deno.test("k8s: the replica's command is the image's, with the variables it reads", () => {
  assert.deepEqual(container.command, ["/bin/sh", "-c"]);
  assert.ok(execLine !== undefined, "the script ends in exec");
  // `exec deno run … src/cli/replica.ts $extra`: the extra flags of args-<id>.
  const words = execLine.split(/\s+/).slice(1);
  assert.equal(words.at(-1), "$extra");
  const command = replicaCommand(words.slice(0, -1));
  // EPAXOS_ID is set by the script, from the pod's name.
  assert.match(script, /export EPAXOS_ID="\$\{POD_NAME##\*-\}"/);
  assert.equal(
    pod.containers[0].env.find((item: { name: string }) => item.name === "POD_NAME")
      .valueFrom.fieldRef.fieldPath,
    "metadata.name",
  );
  assertReplicaCommand(command, env, "statefulset.yaml");
  // The same permissions and script as the image's entrypoint, and the TLS
  // Secret's directory (the image's /etc/epaxos is the ConfigMap here).
  const image = replicaCommand(dockerfile().entrypoint);
  assert.deepEqual(
    { ...command, args: [], read: command.read.filter((path) => path !== TLS_DIRECTORY) },
    { ...image, args: [] },
  );
  assert.match(script, /\/etc\/epaxos\/args-\$EPAXOS_ID/);
});

Deno.test("k8s: secrets come from the Secret, as the cluster file says", () => {
  const cluster = parseClusterConfig(configMap.data["cluster.json"]);
  for (const reference of [cluster.secret, cluster.clientToken]) {
    assert.ok(reference !== undefined && "env" in reference);
    const item = container.env.find((item: { name: string }) => item.name === reference.env);
    assert.ok(item !== undefined, `${reference.env} is set`);
    assert.equal(item.valueFrom.secretKeyRef.name, "epaxos-secrets");
    assert.equal(item.valueFrom.secretKeyRef.optional, undefined, "required");
  }
  assert.equal(env[REPLICA_ENV.clusterSecret], undefined, "no literal secret");
});

Deno.test("k8s: ports, probes, volumes and the cluster file agree", () => {
  const port = listenPort(env);
  const https = container.ports.find((item: { name: string }) => item.name === "https");
  assert.equal(https.containerPort, port);
  for (const service of [headless, clients]) {
    assert.deepEqual(service.spec.ports.map((item: { targetPort: string }) => item.targetPort), [
      "https",
    ]);
  }
  // Over HTTPS: the replica serves TLS only on its port.
  const probe = (path: string) => ({ scheme: "HTTPS", path, port: "https" });
  assert.deepEqual(container.readinessProbe.httpGet, probe("/readyz"));
  assert.deepEqual(container.livenessProbe.httpGet, probe("/livez"));
  assert.deepEqual(container.startupProbe.httpGet, probe("/livez"));

  const mounts = new Map<string, { mountPath: string; readOnly?: boolean }>(
    container.volumeMounts.map((mount: { name: string }) => [mount.name, mount]),
  );
  // The data directory: the claim template's volume.
  const claim = statefulSet.spec.volumeClaimTemplates[0];
  assert.equal(mounts.get(claim.metadata.name)?.mountPath, env[REPLICA_ENV.data]);
  // The cluster file: a key of the ConfigMap, mounted where EPAXOS_CONFIG points.
  const config = env[REPLICA_ENV.config]!;
  const directory = config.slice(0, config.lastIndexOf("/"));
  const volume = pod.volumes.find((item: { configMap?: { name: string } }) =>
    item.configMap?.name === configMap.metadata.name
  );
  assert.equal(mounts.get(volume.name)?.mountPath, directory);
  assert.equal(mounts.get(volume.name)?.readOnly, true);
  const cluster = parseClusterConfig(configMap.data[config.slice(directory.length + 1)]);

  // One replica per pod, at the pod's name under the headless service.
  assert.equal(cluster.replicas.length, statefulSet.spec.replicas);
  cluster.replicas.forEach((replica, id) => {
    assert.equal(
      replica.url,
      `https://${statefulSet.metadata.name}-${id}.${headless.metadata.name}:${port}`,
    );
  });
  // A read-only root: Deno writes only to the data volume (and /tmp).
  assert.equal(container.securityContext.readOnlyRootFilesystem, true);
  assert.ok(mounts.has("tmp"));
});

/** Where the Secret `epaxos-tls` is mounted. */
const TLS_DIRECTORY = "/etc/epaxos-tls";

Deno.test("k8s: TLS from the Secret epaxos-tls, readable, trusting the cluster CA alone", () => {
  const command = replicaCommand(execLine!.split(/\s+/).slice(1, -1));
  const cluster = parseClusterConfig(configMap.data["cluster.json"]);
  // Set empty in the pod's env; DENO_CERT and NODE_EXTRA_CA_CERTS unset by the script.
  assertReplicaTls(cluster, command, env, "statefulset.yaml with configmap.yaml");
  const before = script.slice(0, script.indexOf(execLine!));
  assert.match(before, new RegExp(`^\\s*unset ${EXTRA_ROOT_VARIABLES.join(" ")}$`, "m"));
  const volume = pod.volumes.find((item: { name: string }) => item.name === "tls");
  assert.equal(volume.secret.secretName, "epaxos-tls");
  // Keys readable by the pod's group (fsGroup) and no one else.
  assert.equal(volume.secret.defaultMode, 0o440);
  assert.equal(pod.securityContext.fsGroup, pod.securityContext.runAsGroup);
  const mount = container.volumeMounts.find((item: { name: string }) => item.name === "tls");
  assert.deepEqual(mount, { name: "tls", mountPath: TLS_DIRECTORY, readOnly: true });
  // Every file the cluster file names is a key of the Secret the runbook makes.
  const runbook = readDeployFile("deploy/k8s/RUNBOOK.md");
  assert.match(runbook, /create secret generic epaxos-tls --from-file=tls\/ca\.pem/);
  assert.match(runbook, /for f in tls\/epaxos-\*\.pem/);
  assert.match(runbook, /deno task certs --config cluster\.json --out tls --renew/);
  for (const replica of cluster.replicas) {
    assert.equal(replica.tls!.cert, `${TLS_DIRECTORY}/${replica.name}.cert.pem`);
    assert.equal(replica.tls!.key, `${TLS_DIRECTORY}/${replica.name}.key.pem`);
  }
});

Deno.test("k8s: Prometheus scrapes every pod over https with an ops token and the CA", () => {
  const cluster = parseClusterConfig(configMap.data["cluster.json"]);
  const config = parseYaml(get("ConfigMap/epaxos-prometheus").data["prometheus.yml"]);
  assertScrape(config, cluster, "deploy/k8s/prometheus.yaml");
  assertScrape(
    parseYaml(readDeployFile("deploy/prometheus.yml")),
    parseClusterConfig(readDeployFile("deploy/clusters/aws3.json")),
    "deploy/prometheus.yml",
  );
  assert.throws(
    () =>
      assertScrape(
        parseYaml(readDeployFile("deploy/prometheus.yml").replace("scheme: https", "scheme: http")),
        parseClusterConfig(readDeployFile("deploy/clusters/aws3.json")),
        "http",
      ),
    /scheme/,
  );
});

/** A scrape job for every member of `cluster`, over https, with a token and the cluster CA. */
function assertScrape(config: Manifest, cluster: ClusterConfig, where: string): void {
  const [job] = config.scrape_configs;
  assert.equal(job.scheme, "https", `${where}: scheme`);
  assert.equal(job.metrics_path, "/metrics", `${where}: metrics_path`);
  assert.equal(job.authorization.type, "Bearer", `${where}: a bearer token`);
  assert.ok(job.authorization.credentials_file.startsWith("/"), `${where}: token from a file`);
  assert.ok(job.tls_config.ca_file.endsWith("ca.pem"), `${where}: the cluster CA`);
  assert.equal(job.tls_config.insecure_skip_verify, undefined, `${where}: verified`);
  assert.deepEqual(
    job.static_configs[0].targets,
    cluster.replicas.map((replica) => new URL(replica.url).host),
    `${where}: the members' hosts, as their certificates name them`,
  );
}

Deno.test("k8s: the args-<id> of the runbook are flags the replica takes", () => {
  const runbook = readDeployFile("deploy/k8s/RUNBOOK.md");
  const examples = [...runbook.matchAll(/"args-(\d+)":\s*"([^"]*)"/g)];
  assert.ok(examples.length >= 2, "the runbook shows args-<id> for --join and --restore");
  for (const [, , flags] of examples) {
    const command = replicaCommand(["deno", "run", "src/cli/replica.ts", ...flags!.split(" ")]);
    assertReplicaCommand(
      {
        ...command,
        net: true,
        read: ["/etc/epaxos", TLS_DIRECTORY, "/data"],
        write: ["/data"],
        env: [...Object.values(REPLICA_ENV)],
      },
      env,
      `args-<id> ${flags}`,
    );
  }
});
