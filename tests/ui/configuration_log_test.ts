import assert from "node:assert/strict";
import type { Configuration, Member } from "../../src/core/configuration.ts";
import {
  ConfigurationLog,
  describeChange,
  MAX_LOGGED_CHANGES,
} from "../../src/ui/configuration_log.ts";

function member(id: number, options: Partial<Member> = {}): Member {
  return { id, incarnation: 1, url: `http://r${id}.test`, role: "voter", ...options };
}

function config(epoch: number, members: Member[], leases?: Configuration["leases"]): Configuration {
  return { epoch, members, nextId: 9, ...(leases === undefined ? {} : { leases }) };
}

const three = [member(0), member(1), member(2)];

Deno.test("describeChange names what changed between two epochs", () => {
  const cases: [string, Configuration | undefined, Configuration, string][] = [
    ["first", undefined, config(3, three), "in force when this replica started (epoch 3)"],
    [
      "add a learner",
      config(1, three),
      config(2, [...three, member(3, { role: "learner" })]),
      "added 3 as learner (http://r3.test)",
    ],
    [
      "promote",
      config(2, [...three, member(3, { role: "learner" })]),
      config(3, [...three, member(3)]),
      "promoted 3",
    ],
    ["remove", config(1, three), config(2, three.slice(0, 2)), "removed 2"],
    [
      "replace",
      config(1, three),
      config(2, [member(0), member(1, { incarnation: 2 }), member(2)]),
      "replaced 1 (incarnation 2)",
    ],
    [
      "move",
      config(1, three),
      config(2, [member(0), member(1), member(2, { url: "http://new.test" })]),
      "moved 2 to http://new.test",
    ],
    [
      "leases",
      config(1, three),
      config(2, three, {
        leaseMs: 2000,
        renewMs: 500,
        drift: 0.01,
        rules: [{ prefix: "", holders: "all" }],
      }),
      "leases: 1 rule, 2000 ms",
    ],
    ["nothing", config(1, three), config(2, three), "no member changed"],
    [
      "two at once",
      config(1, three),
      config(2, [member(0), member(1), member(4)]),
      "added 4 as voter (http://r4.test); removed 2",
    ],
  ];
  for (const [name, before, after, expected] of cases) {
    assert.equal(describeChange(before, after), expected, name);
  }
});

Deno.test("ConfigurationLog notes each new epoch once, newest first", () => {
  const log = new ConfigurationLog();
  log.observe(config(1, three), 1000);
  log.observe(config(1, three), 2000); // Same epoch: nothing new.
  log.observe(config(2, three.slice(0, 2)), 3000);
  assert.deepEqual(log.entries().map((entry) => [entry.epoch, entry.atMs, entry.change]), [
    [2, 3000, "removed 2"],
    [1, 1000, "in force when this replica started (epoch 1)"],
  ]);
  assert.equal(log.entries()[0]!.configuration, "e2 [0v1 1v1]");
});

Deno.test("ConfigurationLog keeps at most its bound, dropping the oldest", () => {
  const log = new ConfigurationLog();
  for (let epoch = 1; epoch <= MAX_LOGGED_CHANGES + 5; epoch++) {
    log.observe(config(epoch, three), epoch);
  }
  assert.equal(log.entries().length, MAX_LOGGED_CHANGES);
  assert.equal(log.entries()[0]!.epoch, MAX_LOGGED_CHANGES + 5);
  assert.equal(log.entries().at(-1)!.epoch, 6);
  assert.throws(() => new ConfigurationLog(0), RangeError);
});
