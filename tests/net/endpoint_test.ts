import assert from "node:assert/strict";
import { formatHostPort, parseHostPort, urlEndpoint } from "../../src/net/endpoint.ts";

Deno.test("urlEndpoint takes the URL's port, else its scheme's default", () => {
  assert.deepEqual(urlEndpoint("http://10.0.0.1:8001/peer"), { hostname: "10.0.0.1", port: 8001 });
  assert.deepEqual(urlEndpoint("http://va.example"), { hostname: "va.example", port: 80 });
  assert.deepEqual(urlEndpoint("https://va.example"), { hostname: "va.example", port: 443 });
  assert.deepEqual(urlEndpoint(new URL("https://va.example:9443/")), {
    hostname: "va.example",
    port: 9443,
  });
  assert.deepEqual(urlEndpoint("http://[::1]:8001"), { hostname: "::1", port: 8001 });
});

Deno.test("parseHostPort reads HOST:PORT and refuses anything else", () => {
  assert.deepEqual(parseHostPort("127.0.0.1:8001"), { hostname: "127.0.0.1", port: 8001 });
  assert.deepEqual(parseHostPort("[::1]:0"), { hostname: "::1", port: 0 });
  assert.deepEqual(parseHostPort("va.example:65535"), { hostname: "va.example", port: 65535 });
  for (
    const bad of [
      "127.0.0.1",
      ":8001",
      "host:",
      "host:65536",
      "host:123456",
      "host:8x",
      "::1",
      "fe80::1",
      "[::1:8001",
      "::1]:8001",
      "[]:8001",
    ]
  ) {
    assert.equal(parseHostPort(bad), undefined, bad);
  }
});

Deno.test("formatHostPort round-trips through parseHostPort, bracketing IPv6", () => {
  for (const text of ["127.0.0.1:8001", "[::1]:8001", "va.example:443"]) {
    assert.equal(formatHostPort(parseHostPort(text)!), text);
  }
  assert.equal(formatHostPort(urlEndpoint("https://[2001:db8::1]")), "[2001:db8::1]:443");
});
