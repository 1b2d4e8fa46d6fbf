import assert from "node:assert/strict";
import { leaseConfigurationProblem } from "../../src/core/lease.ts";
import { deriveConfig, reproduceCommand, type SimRequest } from "../../src/sim/config.ts";
import { parseSimArguments } from "../../src/sim/main.ts";
import { simulate, Simulation, type SimulationOptions } from "../../src/sim/simulation.ts";

/** Seeds for this run: fixed by SIM_SEED, otherwise new each run (and printed). */
const baseSeed = Number(Deno.env.get("SIM_SEED") ?? Math.floor(Math.random() * 1e9));

Deno.test(`simulation swarm with quorum leases and clock drift holds every invariant (seed ${baseSeed})`, () => {
  let localReads = 0;
  let grantsCompared = 0;
  for (const [replicas, count] of [[3, 6], [5, 3], [7, 2]] as const) {
    for (let offset = 0; offset < count; offset++) {
      const request: SimRequest = {
        seed: baseSeed + offset,
        replicas,
        commands: 200,
        leases: "on",
      };
      const config = deriveConfig(request);
      const result = simulate(config);
      assert.ok(result.ok, `${result.failure}\nreproduce: ${reproduceCommand(request, config)}`);
      localReads += result.localReads;
      grantsCompared += result.leaseGrantsCompared;
    }
  }
  assert.ok(localReads > 0, "no read was served locally");
  assert.ok(grantsCompared > 0, "no grant was compared with its grantor's promise");
});

Deno.test("lease runs draw durations for simulated time and clock rates within the declared drift", () => {
  let on = 0;
  for (let seed = 1; seed <= 200; seed++) {
    const config = deriveConfig({ seed, replicas: 5 });
    const leases = config.leases;
    if (leases === undefined) continue;
    on++;
    const { leaseMs, renewMs, drift } = leases.configuration;
    assert.equal(leaseConfigurationProblem(leases.configuration, 5), undefined);
    assert.ok(leaseMs >= 400 && leaseMs <= 2000, `leaseMs ${leaseMs}`);
    assert.ok(renewMs <= leaseMs / 4, `renewMs ${renewMs} of ${leaseMs}`);
    assert.ok(drift >= 0.01 && drift <= 0.05, `drift ${drift}`);
    const rates = leases.clockRates;
    assert.ok(Math.max(...rates) / Math.min(...rates) <= 1 + drift + 1e-12, `rates ${rates}`);
  }
  assert.ok(on > 60 && on < 140, `${on} of 200 seeds run leases`);
  // Asked for explicitly, leases are on or off whatever the seed draws, and
  // the printed line says which.
  const request: SimRequest = { seed: 4242, replicas: 3, leases: "on" };
  const config = deriveConfig(request);
  assert.ok(config.leases !== undefined);
  assert.equal(deriveConfig({ ...request, leases: "off" }).leases, undefined);
  assert.match(reproduceCommand(request, config), / --leases on$/);
  assert.equal(parseSimArguments(["--leases", "off"]).leases, "off");
  assert.throws(() => parseSimArguments(["--leases", "maybe"]), /on or off/);
});

/**
 * Runs seeds from 1 until the unsafe options break an invariant; checks
 * that the same seed passes without them (or with `safe`) and returns the
 * failure. `accept` skips seeds whose config cannot show the mistake.
 */
function firstCaught(
  name: string,
  options: {
    readonly replicas: number;
    readonly maxSeed: number;
    readonly unsafe: (config: ReturnType<typeof deriveConfig>) => SimulationOptions;
    readonly safe?: SimulationOptions;
    readonly accept?: (config: ReturnType<typeof deriveConfig>) => boolean;
  },
): string {
  for (let seed = 1; seed <= options.maxSeed; seed++) {
    const request: SimRequest = {
      seed,
      replicas: options.replicas,
      commands: 300,
      conflicts: "some",
      leases: "on",
    };
    const config = deriveConfig(request);
    if (options.accept !== undefined && !options.accept(config)) continue;
    const broken = new Simulation(config, options.unsafe(config)).run();
    if (broken.ok) continue;
    console.log(`${name}: caught at seed ${seed}: ${broken.failure}`);
    const safe = new Simulation(config, options.safe ?? {}).run();
    assert.ok(
      safe.ok,
      `the safe run fails seed ${seed} too: ${safe.failure}\nreproduce: ${
        reproduceCommand(request, config)
      }`,
    );
    return broken.failure!;
  }
  assert.fail(`no seed up to ${options.maxSeed} caught ${name}`);
}

/** A crash outlasts the lease: writes are released without the crashed holder. */
function crashesOutlastLeases(config: ReturnType<typeof deriveConfig>): boolean {
  const faults = config.faults;
  return faults !== undefined && faults.crashRate > 0 &&
    faults.downMs > config.leases!.configuration.leaseMs;
}

Deno.test("the simulator catches clocks that drift beyond the declared bound", () => {
  // Replica 0's clock runs at 1 / (1 + 4 drift), every other at 1 + drift:
  // its leases outlast its grantors' promises.
  const failure = firstCaught("drift beyond the bound", {
    replicas: 3,
    maxSeed: 20,
    unsafe: (config) => {
      const drift = config.leases!.configuration.drift;
      return {
        clockRates: config.leases!.clockRates.map((_, id) =>
          id === 0 ? 1 / (1 + 4 * drift) : 1 + drift
        ),
      };
    },
  });
  assert.match(failure, /lease ends before its grantor's promise|decided write|linearizability/);
});

Deno.test("the simulator catches a grant counted without catching up to its frontier", () => {
  const failure = firstCaught("a grant without catch-up", {
    replicas: 3,
    maxSeed: 200,
    accept: crashesOutlastLeases,
    unsafe: () => ({ unsafeLeases: { skipCatchUp: true } }),
  });
  assert.match(failure, /decided write|linearizability/);
});

Deno.test("the simulator catches a restarted grantor that ignores the restart rule", () => {
  const failure = firstCaught("a grantor ignoring the restart rule", {
    replicas: 3,
    maxSeed: 80,
    accept: (config) => (config.faults?.crashRate ?? 0) > 0,
    unsafe: () => ({ unsafeLeases: { ignoreRestart: true } }),
  });
  assert.match(failure, /lease ends before its grantor's promise|decided write|linearizability/);
});

Deno.test("the simulator catches a lease checked before a stalled read's state read", () => {
  // A read stalls (the process stops: a GC pause) between its verdict and
  // its state read. Checked again after the state read, the lease has run
  // out and the read goes through the protocol; checked only before, the
  // read returns a state without the writes decided meanwhile.
  const failure = firstCaught("the clock read before the state", {
    replicas: 3,
    maxSeed: 20,
    unsafe: () => ({ leaseReadStalls: { share: 0.05, unsafe: true } }),
    safe: { leaseReadStalls: { share: 0.05, unsafe: false } },
  });
  assert.match(failure, /decided write|linearizability/);
});
