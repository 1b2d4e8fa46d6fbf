import assert from "node:assert/strict";
import { defaultListenAddress } from "../../src/server/config.ts";

Deno.test("defaultListenAddress takes the URL's port, else its scheme's default", () => {
  assert.equal(defaultListenAddress("http://10.0.0.1:8001"), "10.0.0.1:8001");
  assert.equal(defaultListenAddress("http://va.example"), "va.example:80");
  // An https URL without a port listens on 443; the replica once chose 80 here
  // while the starter granted network permission for 443.
  assert.equal(defaultListenAddress("https://va.example"), "va.example:443");
  assert.equal(defaultListenAddress("https://va.example:9443/"), "va.example:9443");
  assert.equal(defaultListenAddress("http://[::1]:8001"), "[::1]:8001");
});
