/**
 * Native TLS on a cluster of three real replica processes (issue 18 item 1):
 * clients over https with the cluster CA, writes replicated over TLS peer
 * links, Deno's KV client over https (`DENO_CERT`), a certificate reloaded
 * from its files without a restart and without a refused connection, and a
 * peer whose certificate the cluster CA did not sign refused before any
 * request (so before the cluster secret) reaches it, even when the
 * environment the replicas start from trusts its CA.
 */

import assert from "node:assert/strict";
import tls from "node:tls";
import { startProcessCluster, waitUntil } from "../../src/chaos/process_cluster.ts";
import { ensureClusterCertificates } from "../../src/cli/certs.ts";
import { altNamesFor, issueCertificate, makeCertificateAuthority } from "../../src/net/dev_ca.ts";

/** The serial number of the certificate `url` serves, read by a client trusting `ca`. */
function servedSerial(url: string, ca: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: hostname, port: Number(port), ca, servername: "" }, () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.destroy();
    });
    socket.on("error", reject);
  });
}

/** Opens a fresh TLS connection to `url` trusting `ca` and reports whether the handshake passed. */
async function handshakes(url: string, ca: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  try {
    const conn = await Deno.connectTls({ hostname, port: Number(port), caCerts: [ca] });
    try {
      await conn.handshake();
      return true;
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

Deno.test("a TLS cluster: https clients, TLS peers, Deno KV, reload, a rogue peer refused", async (t) => {
  // Another CA, which the environment the replicas are started from trusts:
  // they must not (they trust the cluster CA alone).
  const rogueCa = await makeCertificateAuthority("rogue CA");
  const rogueCaFile = await Deno.makeTempFile({ suffix: ".pem" });
  await Deno.writeTextFile(rogueCaFile, rogueCa.cert);
  const cluster = await startProcessCluster(3, {
    tls: true,
    env: { NODE_EXTRA_CA_CERTS: rogueCaFile, DENO_CERT: rogueCaFile },
  });
  const ca = await Deno.readTextFile(cluster.ca!);
  const [first, second, third] = cluster.urls as [string, string, string];
  const put = async (url: string, key: string, value: string) => {
    const response = await cluster.fetch(`${url}/kv/${key}`, { method: "PUT", body: value });
    assert.equal(response.status, 200, await response.text());
  };
  const get = async (url: string, key: string) => {
    const response = await cluster.fetch(`${url}/kv/${key}`);
    return { status: response.status, body: await response.text() };
  };
  try {
    await t.step("clients with the CA read and write over https; writes replicate", async () => {
      await put(first, "greeting", "hello");
      assert.deepEqual(await get(third, "greeting"), { status: 200, body: "hello" });
      const status = await (await cluster.fetch(`${second}/status`)).json();
      assert.ok(
        status.peers.every((peer: { lastContactMsAgo: number | null }) =>
          peer.lastContactMsAgo !== null
        ),
        JSON.stringify(status.peers),
      );
      // Without the CA, a client refuses the replica's certificate.
      await assert.rejects(() => fetch(`${first}/livez`));
      // Nothing answers http on an https replica's port.
      await assert.rejects(async () => {
        const response = await fetch(first.replace("https:", "http:") + "/livez");
        await response.body?.cancel();
      });
    });

    await t.step("Deno.openKv over https, trusting the CA through DENO_CERT", async () => {
      const script = `${cluster.root}/kv_client.ts`;
      await Deno.writeTextFile(
        script,
        `const kv = await Deno.openKv(Deno.args[0]);
await kv.set(["tls"], "over https");
console.log(JSON.stringify((await kv.get(["tls"])).value));
kv.close();`,
      );
      const run = (env: Record<string, string>) =>
        new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-net",
            "--allow-env=DENO_KV_ACCESS_TOKEN",
            "--unstable-kv",
            script,
            `${second}/databases/tls/connect`,
          ],
          env: { DENO_KV_ACCESS_TOKEN: "any-token-at-all", ...env },
          stdout: "piped",
          stderr: "piped",
        }).output();
      const { code, stdout, stderr } = await run({ DENO_CERT: cluster.ca! });
      assert.equal(code, 0, new TextDecoder().decode(stderr));
      assert.equal(new TextDecoder().decode(stdout).trim(), '"over https"');
      // Without the CA, Deno's client refuses the replica's certificate.
      const untrusting = await run({});
      assert.notEqual(untrusting.code, 0);
      assert.match(new TextDecoder().decode(untrusting.stderr), /certificate|UnknownIssuer/i);
    });

    await t.step(
      "a renewed certificate is served without a restart or a refused connection",
      async () => {
        const before = await servedSerial(first, ca);
        const ready = ensureClusterCertificates(`${cluster.root}/tls`, [
          { name: "r0", url: first },
        ], { renew: true });
        // New connections all along the reload. A connection queued at the
        // old listener when it closes is reset by the kernel (see
        // src/net/tls_server.ts), so a handshake may fail at the switch, but
        // rarely, and never twice in a row: a retry is served.
        let attempts = 0;
        let failures = 0;
        let after = before;
        const attempt = async () => {
          attempts++;
          if (await handshakes(first, ca)) return;
          failures++;
          assert.ok(await handshakes(first, ca), "a retried handshake failed too");
        };
        await ready;
        await waitUntil(async () => {
          await attempt();
          after = await servedSerial(first, ca);
          return after !== before;
        }, {
          deadlineMs: 15_000,
          what: "replica 0 to serve its renewed certificate",
          intervalMs: 20,
        });
        for (let i = 0; i < 20; i++) await attempt();
        assert.notEqual(after, before);
        assert.ok(failures <= 2, `${failures} of ${attempts} handshakes failed`);
        // Peers go on with it: a write through it reaches the others, and theirs it.
        await put(first, "after-reload", "a");
        await put(third, "after-reload-2", "b");
        assert.deepEqual(await get(second, "after-reload"), { status: 200, body: "a" });
        assert.deepEqual(await get(first, "after-reload-2"), { status: 200, body: "b" });
        assert.match(cluster.output(0), /TLS: certificate reloaded/);
      },
    );

    await t.step(
      "a peer whose certificate the cluster CA did not sign gets no request",
      async () => {
        await cluster.kill(2);
        // An impostor on replica 2's address, with a valid certificate for it
        // from the other CA (one the replicas' environment named, and the starter removed).
        const rogue = await issueCertificate(rogueCa, "r2", { altNames: altNamesFor([third]) });
        const listener = Deno.listenTls({
          hostname: "127.0.0.1",
          port: Number(new URL(third).port),
          cert: rogue.cert,
          key: rogue.key,
        });
        let connections = 0;
        let completed = 0;
        let bytes = 0;
        const serving = (async () => {
          for await (const conn of listener) {
            connections++;
            (async () => {
              try {
                await conn.handshake();
                completed++;
                const buffer = new Uint8Array(4096);
                for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
                  bytes += n;
                }
              } catch {
                // Refused by the replica: what this step expects.
              } finally {
                try {
                  conn.close();
                } catch { /* closed */ }
              }
            })();
          }
        })().catch(() => {});
        try {
          // Writes make replicas 0 and 1 send to replica 2 (and they probe it when idle).
          for (let i = 0; i < 5; i++) await put(first, `rogue-${i}`, "v");
          await waitUntil(() => connections >= 2, {
            deadlineMs: 10_000,
            what: "the replicas to try the impostor",
          });
          assert.equal(completed, 0, "no replica completed a handshake with the impostor");
          assert.equal(bytes, 0, "no request, so no cluster secret, reached it");
          const status = await (await cluster.fetch(`${first}/status`)).json();
          const toRogue = status.peers.find((peer: { id: number }) => peer.id === 2);
          assert.ok(toRogue.failedBatches > 0, JSON.stringify(toRogue));
          // Symmetrically, a client trusting only the rogue CA refuses the real replicas.
          assert.equal(await handshakes(first, rogueCa.cert), false);
          // The two honest replicas still commit together.
          await put(second, "still", "ok");
          assert.deepEqual(await get(first, "still"), { status: 200, body: "ok" });
        } finally {
          listener.close();
          await serving;
        }
      },
    );
  } catch (error) {
    for (const id of [0, 1, 2]) console.error(`--- replica ${id}\n${cluster.output(id)}`);
    throw error;
  } finally {
    await cluster.stop();
    await Deno.remove(rogueCaFile);
  }
});
