import assert from "node:assert/strict";
import { deriveConfig, reproduceCommand } from "../../src/sim/config.ts";
import { simulate, Simulation } from "../../src/sim/simulation.ts";

/** Seeds for this run: fixed by SIM_SEED, otherwise new each run (and printed). */
const baseSeed = Number(Deno.env.get("SIM_SEED") ?? Math.floor(Math.random() * 1e9));

Deno.test(`the swarms' GETs are served through a majority, linearizably (seed ${baseSeed})`, () => {
  for (const replicas of [3, 5]) {
    let served = 0;
    for (let offset = 0; offset < 4; offset++) {
      const request = {
        seed: baseSeed + offset,
        replicas,
        commands: 200,
        conflicts: "some",
      } as const;
      const config = deriveConfig(request);
      const result = simulate(config);
      assert.ok(result.ok, `${result.failure}\nreproduce: ${reproduceCommand(request, config)}`);
      served += result.quorumReads.served;
    }
    assert.ok(served > 0, `n=${replicas}: no GET was served through a majority`);
  }
});

Deno.test("the simulator catches quorum reads served without waiting for what the majority named", () => {
  // Serving once a majority answered, from a state that may lack the writes
  // they named, returns values older than writes that completed before the
  // read began. Some seed of a small swarm must show it; the rule (wait for
  // every conflicting instance named to apply here) passes the same seeds.
  const failures: string[] = [];
  for (let seed = 1; seed <= 40 && failures.length === 0; seed++) {
    const config = deriveConfig({ seed, replicas: 3, commands: 300, conflicts: "some" });
    const broken = new Simulation(config, { unsafeQuorumReadsWithoutWaiting: true }).run();
    if (broken.ok) continue;
    failures.push(`seed ${seed}: ${broken.failure}`);
    const safe = simulate(config);
    assert.ok(safe.ok, `the safe rule fails seed ${seed} too: ${safe.failure}`);
    assert.ok(safe.quorumReads.served > 0);
  }
  assert.ok(failures.length > 0, "no seed caught reads served without waiting");
  assert.match(failures[0]!, /linearizability/);
});
