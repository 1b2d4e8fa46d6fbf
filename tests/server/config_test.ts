import assert from "node:assert/strict";
import { ConfigError, defaultListenAddress, parseClusterConfig } from "../../src/server/config.ts";

Deno.test("defaultListenAddress takes the URL's port, else its scheme's default", () => {
  assert.equal(defaultListenAddress("http://10.0.0.1:8001"), "10.0.0.1:8001");
  assert.equal(defaultListenAddress("http://va.example"), "va.example:80");
  // An https URL without a port listens on 443; the replica once chose 80 here
  // while the starter granted network permission for 443.
  assert.equal(defaultListenAddress("https://va.example"), "va.example:443");
  assert.equal(defaultListenAddress("https://va.example:9443/"), "va.example:9443");
  assert.equal(defaultListenAddress("http://[::1]:8001"), "[::1]:8001");
});

const CLUSTER = {
  replicas: [0, 1, 2].map((id) => ({ id, url: `http://127.0.0.1:${8001 + id}` })),
  secret: { env: "EPAXOS_CLUSTER_SECRET" },
};

Deno.test("corsOrigins in the cluster file: absent by default, a list of origins as browsers send them", () => {
  assert.equal(parseClusterConfig(JSON.stringify(CLUSTER)).corsOrigins, undefined);
  const origins = ["https://app.example", "http://localhost:5173"];
  assert.deepEqual(
    parseClusterConfig(JSON.stringify({ ...CLUSTER, corsOrigins: origins })).corsOrigins,
    origins,
  );
  for (
    const [corsOrigins, reason] of [
      ["https://app.example", /corsOrigins must be a list of at most 64 origins/],
      [Array.from({ length: 65 }, (_, i) => `http://h${i}.example`), /at most 64/],
      [["*"], /corsOrigins\[0\]: "\*" is not an origin such as https:\/\/app.example/],
      [["https://app.example", 7], /corsOrigins\[1\]: an origin must be a string/],
      [["https://app.example/"], /corsOrigins\[0\]: .*no trailing slash \(https:\/\/app.example\)/],
    ] as const
  ) {
    assert.throws(
      () => parseClusterConfig(JSON.stringify({ ...CLUSTER, corsOrigins }), "cluster.json"),
      (error: unknown) =>
        error instanceof ConfigError && /^cluster.json: /.test(error.message) &&
        reason.test(error.message),
      JSON.stringify(corsOrigins).slice(0, 60),
    );
  }
});
