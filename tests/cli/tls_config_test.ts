/**
 * TLS settings of a cluster: the cluster file's `tls` sections, the checks a
 * replica refuses to start without (a mixed http/https cluster, a
 * certificate for an http URL, none for an https one), the development
 * certificates of `deno task certs`, and the permissions the starter grants
 * a replica with TLS.
 */

import assert from "node:assert/strict";
import { parseClusterConfig } from "../../src/server/config.ts";
import {
  clusterCaOnlyEnvironment,
  mixedSchemeProblem,
  parseClusterTls,
  parseTlsFiles,
  replicaTlsProblem,
} from "../../src/net/tls.ts";
import { altNamesFor, describeCertificate } from "../../src/net/dev_ca.ts";
import { ensureClusterCertificates } from "../../src/cli/certs.ts";
import { replicaCommand } from "../../src/cli/start.ts";

const REPLICA_SCRIPT = new URL("../../src/cli/replica.ts", import.meta.url).pathname;
const DENO_CONFIG = new URL("../../deno.json", import.meta.url).pathname;

Deno.test("the cluster file's tls section and replica entries parse, or name what is wrong", () => {
  const config = parseClusterConfig(JSON.stringify({
    replicas: [0, 1, 2].map((id) => ({
      id,
      url: `https://10.0.0.${id + 1}:8001`,
      tls: { cert: `tls/r${id}.cert.pem`, key: `tls/r${id}.key.pem` },
    })),
    secret: { env: "EPAXOS_CLUSTER_SECRET" },
    tls: { ca: "tls/ca.pem" },
  }));
  assert.deepEqual(config.tls, { ca: "tls/ca.pem" });
  assert.deepEqual(config.replicas[2]!.tls, { cert: "tls/r2.cert.pem", key: "tls/r2.key.pem" });

  const table: [unknown, RegExp | undefined][] = [
    [undefined, undefined],
    [{ ca: "ca.pem", allowMixed: true }, undefined],
    [{}, undefined],
    ["ca.pem", /must be an object/],
    [{ ca: "" }, /ca must be the path/],
    [{ allowMixed: "yes" }, /allowMixed must be true or false/],
    [{ cert: "x" }, /has no field cert/],
  ];
  for (const [value, problem] of table) {
    const parsed = parseClusterTls(value);
    if (problem === undefined) assert.ok(!("problem" in parsed), JSON.stringify(value));
    else assert.match((parsed as { problem: string }).problem, problem, JSON.stringify(value));
  }
  assert.deepEqual(parseTlsFiles({ cert: "c", key: "k" }), { files: { cert: "c", key: "k" } });
  for (const bad of [{ cert: "c" }, { cert: "c", key: "" }, { cert: "c", key: "k", ca: "x" }, []]) {
    assert.ok("problem" in parseTlsFiles(bad), JSON.stringify(bad));
  }
  assert.throws(
    () =>
      parseClusterConfig(JSON.stringify({
        replicas: [0, 1, 2].map((id) => ({ id, url: `https://h${id}:1`, tls: { cert: "c" } })),
        secret: { value: "0123456789abcdef" },
      })),
    /replicas\[0\]\.tls must be \{"cert": PATH, "key": PATH\}/,
  );
});

Deno.test("a cluster mixing http and https is refused unless allowed, naming each side", () => {
  const replicas = [
    { name: "va", url: "https://10.0.0.1:8001" },
    { name: "ca", url: "https://10.0.0.2:8001" },
    { name: "ie", url: "http://10.0.0.3:8001" },
  ];
  const problem = mixedSchemeProblem(replicas, false)!;
  assert.match(
    problem,
    /https replicas \(va https:\/\/10\.0\.0\.1:8001, ca https:\/\/10\.0\.0\.2:8001\)/,
  );
  assert.match(problem, /http ones \(ie http:\/\/10\.0\.0\.3:8001\)/);
  assert.match(problem, /--allow-mixed-tls/);
  assert.equal(mixedSchemeProblem(replicas, true), undefined);
  assert.equal(mixedSchemeProblem(replicas.slice(0, 2), false), undefined);
  assert.equal(
    mixedSchemeProblem([{ name: "a", url: "http://a:1" }, { name: "b", url: "http://b:1" }], false),
    undefined,
  );
});

Deno.test("a replica's URL scheme and its certificate files must agree", () => {
  assert.equal(replicaTlsProblem("https://h:1", { cert: "c", key: "k" }), undefined);
  assert.equal(replicaTlsProblem("http://h:1", {}), undefined);
  assert.match(replicaTlsProblem("https://h:1", {})!, /is https: it needs a certificate and key/);
  assert.match(
    replicaTlsProblem("http://h:1", { cert: "c", key: "k" })!,
    /is http, but a certificate/,
  );
  assert.match(replicaTlsProblem("https://h:1", { cert: "c" })!, /give both/);
});

Deno.test("a replica process refuses a mixed cluster file, naming the replicas", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = `${dir}/cluster.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        replicas: [
          { id: 0, name: "one", url: "http://127.0.0.1:19097" },
          { id: 1, name: "two", url: "https://127.0.0.1:19098" },
          { id: 2, name: "three", url: "http://127.0.0.1:19099" },
        ],
        secret: { value: "0123456789abcdef0123" },
      }),
    );
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        `--config=${DENO_CONFIG}`,
        `--allow-read=${dir}`,
        `--allow-write=${dir}`,
        "--allow-env",
        "--allow-net=127.0.0.1",
        REPLICA_SCRIPT,
        "--config",
        config,
        "--id",
        "0",
        "--data",
        `${dir}/data`,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    const message = new TextDecoder().decode(stderr);
    assert.equal(code, 2, message);
    assert.match(message, /Refusing to start: the cluster mixes https replicas \(two https:/);
    assert.match(message, /http ones \(one http:\/\/127\.0\.0\.1:19097, three http:/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task certs: a CA once, a certificate per replica named after its host, keys 0600", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const replicas = [
      { name: "va", url: "https://10.0.0.1:8001" },
      { name: "ca", url: "https://ca.example.com" },
      { name: "local", url: "https://127.0.0.1:8003" },
    ];
    const made = await ensureClusterCertificates(dir, replicas);
    assert.equal(made.ca, `${dir}/ca.pem`);
    assert.equal(made.made.length, 4);
    // A replica named "ca" does not overwrite the CA.
    assert.deepEqual(made.replicas.get("ca"), {
      cert: `${dir}/ca.cert.pem`,
      key: `${dir}/ca.key.pem`,
    });
    const ca = describeCertificate(await Deno.readTextFile(made.ca));
    const va = describeCertificate(await Deno.readTextFile(`${dir}/va.cert.pem`));
    assert.equal(va.issuer, ca.subject);
    assert.deepEqual(va.altNames, ["ip:10.0.0.1"]);
    assert.deepEqual(
      describeCertificate(await Deno.readTextFile(`${dir}/ca.cert.pem`)).altNames,
      ["dns:ca.example.com"],
    );
    assert.deepEqual(
      [...describeCertificate(await Deno.readTextFile(`${dir}/local.cert.pem`)).altNames].sort(),
      ["dns:localhost", "ip:127.0.0.1", "ip:::1"],
    );
    for (const key of ["ca-key.pem", "va.key.pem", "ca.key.pem", "local.key.pem"]) {
      assert.equal((await Deno.stat(`${dir}/${key}`)).mode! & 0o777, 0o600, key);
    }
    // Again: everything kept. With renew: new replica certificates, same CA.
    const vaBefore = await Deno.readTextFile(`${dir}/va.cert.pem`);
    assert.deepEqual((await ensureClusterCertificates(dir, replicas)).made, []);
    const renewed = await ensureClusterCertificates(dir, replicas, { renew: true });
    assert.equal(renewed.made.length, 3);
    const vaAfter = await Deno.readTextFile(`${dir}/va.cert.pem`);
    assert.notEqual(vaAfter, vaBefore);
    assert.equal(describeCertificate(vaAfter).issuer, ca.subject);
    assert.deepEqual(altNamesFor(["https://[::1]:8001"]).map((n) => n.value).sort(), [
      "127.0.0.1",
      "::1",
      "localhost",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a replica with TLS may read its three files, and starts trusting the cluster CA alone", () => {
  const args = replicaCommand({
    configPath: "/c/cluster.json",
    id: 0,
    dataDir: "/c/replica-0",
    listen: "127.0.0.1:9101",
    secrets: [{ env: "EPAXOS_CLUSTER_SECRET" }],
    tls: { cert: "/c/tls/r0.cert.pem", key: "/c/tls/r0.key.pem", ca: "/c/tls/ca.pem" },
  });
  const read = args.find((arg) => arg.startsWith("--allow-read="))!.split("=")[1]!.split(",");
  for (const file of ["/c/tls/r0.cert.pem", "/c/tls/r0.key.pem", "/c/tls/ca.pem"]) {
    assert.ok(read.includes(file), file);
  }
  assert.ok(!read.includes("/c/tls/ca-key.pem"), "never the CA's key");
  assert.deepEqual(
    clusterCaOnlyEnvironment({ PATH: "/bin", DENO_CERT: "x.pem", NODE_EXTRA_CA_CERTS: "y.pem" }),
    { PATH: "/bin", DENO_TLS_CA_STORE: "" },
  );
});
