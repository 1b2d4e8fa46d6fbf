/**
 * The seeded simulator: many replicas of the real core over a simulated network
 * with drop, duplication, reordering, delay, partitions, crashes that keep only
 * persisted records (including a crash between persist and send), and pauses.
 * A safety phase with faults is followed by a liveness phase that heals
 * everything and demands that every operation finish and every replica converge
 * (TigerBeetle's VOPR and FoundationDB's simulation are the models).
 *
 * Clients' gets take the lease path (`ReplicaDriver.readWith`); in runs with
 * quorum leases (`lease_config.ts`) each replica's clock runs at its own rate
 * within the declared drift, and every read served locally is checked
 * (`lease_checks.ts`).
 *
 * Everything derives from the seed; the same config replays the same run.
 *
 * @module
 */

import { describeKeyFailure, HistoryRecorder } from "../check/mod.ts";
import { keyNumber, keyOwner } from "../core/instance.ts";
import type { TimingOptions } from "../core/replica.ts";
import { OutcomeUnknownError, SnapshotInstalledError, UnavailableError } from "../errors.ts";
import type { KvCommand, KvCommandInput } from "../kv/commands.ts";
import { type KvResult, stateDigestOf } from "../kv/state_machine.ts";
import { Eventual } from "../runtime/completion.ts";
import {
  type Configuration,
  describeConfiguration,
  MAX_MEMBER_ID,
  voterIds,
} from "../core/configuration.ts";
import { decideChange } from "../core/configuration_change.ts";
import { defaultConfiguration } from "../driver/epoch.ts";
import { SeededRandom } from "../runtime/random.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import type { ReplicaDriver } from "../driver/driver.ts";
import type { SimConfig } from "./config.ts";
import { EventQueue } from "./event_queue.ts";
import { SimHost } from "./host.ts";
import {
  type AnsweredBackup,
  checkBackupDigests,
  checkChangeDigests,
  InvariantChecker,
  InvariantViolation,
} from "./invariants.ts";
import { describeSize, drawChange, observedView, type SimChange } from "./membership.ts";
import { SimNetwork } from "./network.ts";
import { LeaseChecks } from "./lease_checks.ts";
import type { UnsafeLeaseOptions } from "../core/lease_state.ts";
import type { LeaseReadStall } from "../driver/lease_reads.ts";

/** The outcome of one run. */
export interface SimResult {
  /** Whether every invariant held. */
  readonly ok: boolean;
  /** The first violation, if any. */
  readonly failure?: string;
  /** Client operations completed (ok or fail). */
  readonly completed: number;
  /** Client operations with an unknown outcome. */
  readonly indeterminate: number;
  /** Instances decided. */
  readonly decided: number;
  /** Fast and slow commits, recoveries, summed over replicas. */
  readonly fastCommits: number;
  /** Slow-path commits. */
  readonly slowCommits: number;
  /** Recoveries started. */
  readonly recoveries: number;
  /** Simulated milliseconds. */
  readonly simulatedMs: number;
  /** Messages sent. */
  readonly messages: number;
  /** Fault events injected (crashes, pauses, partitions). */
  readonly faultEvents: number;
  /** Recovery decisions by branch, summed over replicas. */
  readonly recoveryOutcomes: Readonly<Record<string, number>>;
  /** Backups answered (each checked as a read of every shared key). */
  readonly backups: number;
  /** Other replicas' digests at those backups, compared with the answer's. */
  readonly backupDigestsChecked: number;
  /** Snapshots installed by replicas their peers pruned past. */
  readonly snapshotsInstalled: number;
  /** Configuration changes (epoch bumps) proposed. */
  readonly epochChanges: number;
  /** Replicas wiped (amnesia) that joined again as a new incarnation. */
  readonly replacements: number;
  /** The highest epoch a replica reached. */
  readonly epoch: number;
  /** Membership changes (add, promote, remove) the decider accepted and the run proposed. */
  readonly memberChanges: number;
  /** Membership changes the decider refused (each is tried again a few times). */
  readonly refusedChanges: number;
  /** The size of each epoch's configuration known, in epoch order (`3`, `3+1l`, `5`, …). */
  readonly sizes: readonly string[];
  /**
   * Operations in flight at a replica a change removed while it was cut
   * off, which never learned it (so never answers), given up on after
   * healing as indeterminate rather than counted as hung.
   */
  readonly stranded: number;
  /**
   * GETs answered through a majority of voters (`src/core/quorum_read.ts`),
   * and those proposed as commands after all, by the processes alive at the
   * end (a crash loses its process's counts).
   */
  readonly quorumReads: { readonly served: number; readonly commands: number };
  /** Reads served locally under quorum leases (each checked, `lease_checks.ts`). */
  readonly localReads: number;
  /** Holders' grants compared with their grantors' promises at those reads. */
  readonly leaseGrantsCompared: number;
  /**
   * Writes decided without a named holder's acknowledgement once its
   * promises ran out, summed over the replicas running at the end.
   */
  readonly leaseWritesReleased: number;
}

/**
 * Replica slots: every member id a cluster may ever use (`MAX_MEMBER_ID`);
 * those above the starting size are booted only when a change adds them.
 */
const SLOTS = MAX_MEMBER_ID + 1;

/**
 * What a proposing replica counts as alive and caught up (`observedView`):
 * heard from within the drivers' contact window, and at most 20 instances
 * behind (the admin route's 1,000 would take in every member of a run this
 * small).
 */
const SIM_VIEW = { aliveWithinMs: 1000, caughtUpInstances: 20 } as const;

/** How often the run looks for replicas that executed their own removal, to stop them. */
const RETIRE_CHECK_MS = 50;

/** Timers for simulated time, where a tick is a millisecond and the network is fast. */
const SIM_TIMING: Partial<TimingOptions> = {
  defaultRoundTripTicks: 30,
  widenMarginTicks: 10,
  retransmitTicks: 60,
  maxRetransmitTicks: 800,
  commitRequestTicks: 80,
  recoveryTicks: 200,
  recoveryStaggerTicks: 80,
  orphanTicks: 1500,
  recoveryAttemptTicks: 300,
  frontierTicks: 40,
  scanTicks: 10,
  forgetTicks: 1000,
};

interface Client {
  readonly id: number;
  /** The replica it asks: moves to a voter when a change removes or demotes it. */
  node: number;
  busy: boolean;
  /** Request id of the operation outstanding. */
  request: string | undefined;
  deadline: number;
  /** Value read or written last, with its version, per key (for compare-and-set). */
  readonly known: Map<string, { value: string | null; version: string | null }>;
  operation:
    | { key: string; kind: "put" | "get" | "cas" | "delete" | "backup"; value?: string }
    | undefined;
  invokedInLiveness: boolean;
}

/** The history process of a backup's read of `key` (one per key, beside the client's own). */
function backupProcess(client: Client, key: string): string {
  return `${client.id}/backup/${key}`;
}

function sumOutcomes(all: readonly object[]): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const outcomes of all) {
    for (const [name, count] of Object.entries(outcomes)) sum[name] = (sum[name] ?? 0) + count;
  }
  return sum;
}

/** One line for a trace: `add http://replica-3.invalid`, `promote r3 r4`, `remove r1 r2`. */
function describeChange(change: SimChange): string {
  switch (change.kind) {
    case "add":
      return `add ${change.url}`;
    case "promote":
    case "remove":
      return `${change.kind} ${change.ids.map((id) => `r${id}`).join(" ")}`;
    case "replace":
      return `replace r${change.id}`;
    case "bump":
      return "bump";
    case "leases":
      return `leases ${JSON.stringify(change.leases)}`;
  }
}

/** Quorum reads served and fallen back to commands, summed over the live processes. */
function quorumReadCounts(hosts: readonly SimHost[]): { served: number; commands: number } {
  let served = 0;
  let commands = 0;
  for (const host of hosts) {
    const status = host.driver?.quorumReadStatus();
    if (status === undefined) continue;
    served += status.served;
    const { refused, timedOut, interrupted } = status.fallbacks;
    commands += refused + timedOut + interrupted;
  }
  return { served, commands };
}

/** Receives one line per interesting event when tracing a run. */
export type SimTrace = (line: string) => void;

/** Runs one simulation; `trace`, if given, receives a line per event (for debugging a seed). */
export function simulate(config: SimConfig, trace?: SimTrace): SimResult {
  return new Simulation(config, trace === undefined ? {} : { trace }).run();
}

/** Options of one run beyond its config (for tests of the simulator itself). */
export interface SimulationOptions {
  /** Receives a line per event (debugging a seed). */
  readonly trace?: SimTrace;
  /**
   * Runs the drivers with the broken answer rule (blind writes answered before
   * their decision is durable), to show that the simulator catches it.
   */
  readonly unsafeAnswerBlindWritesBeforeDurable?: boolean;
  /**
   * Ships snapshots that lack one of their keys (their digest recomputed, so
   * storage's own check passes), to show that the simulator catches a
   * snapshot whose state is not the state at its barrier.
   */
  readonly unsafeSnapshotsLoseAKey?: boolean;
  /**
   * A replica whose disk was wiped comes back under its old incarnation,
   * with no replace: the amnesia the replace exists for. For the negative
   * test only: the simulator must catch it.
   */
  readonly unsafeRejoinWithoutReplace?: boolean;
  /**
   * A member a change added is never started (an operator who ran `add`
   * but not `--join`). For the negative test only: the liveness check,
   * over the last configuration's members, must catch it.
   */
  readonly neverStartAdded?: boolean;
  /**
   * Serves quorum reads once a majority answered, without waiting for what
   * it named to apply. For the negative test only: the simulator must catch it.
   */
  readonly unsafeQuorumReadsWithoutWaiting?: boolean;
  /** Whether GETs no lease serves go through a majority before a command (default true). */
  readonly quorumReads?: boolean;
  /** For negative tests: every replica breaks a lease rule (`UnsafeLeaseOptions`). */
  readonly unsafeLeases?: UnsafeLeaseOptions;
  /**
   * For negative tests: per replica, its clock rate instead of the drawn one
   * (beyond the declared drift, the lease argument fails).
   */
  readonly clockRates?: readonly number[];
  /**
   * For tests: local reads stall between their verdict and their state read
   * (a process stall, `LeaseReadStall`): a `share` of them in the safety
   * phase, each for up to two and a half lease lengths; `unsafe` checks the
   * lease before the stall only. Absent: the config's share, checked safely.
   */
  readonly leaseReadStalls?: { readonly share: number; readonly unsafe: boolean };
  /** Check that holders' leases end before their grantors' promises (default true). */
  readonly checkLeaseExpiry?: boolean;
}

/** A run of the production driver, one per replica, on virtual time. */
export class Simulation {
  readonly #config: SimConfig;
  readonly #random: SeededRandom;
  readonly #faultRandom: SeededRandom;
  /** Draws of membership changes and of where their clients go (a stream of its own). */
  readonly #memberRandom: SeededRandom;
  readonly #queue = new EventQueue();
  readonly #network: SimNetwork;
  readonly #hosts: SimHost[] = [];
  readonly #clients: Client[] = [];
  readonly #checker: InvariantChecker;
  readonly #history: HistoryRecorder;
  /** Blind writes answered at commit, checked against what was decided. */
  readonly #acknowledged: {
    request: string;
    owner: number;
    number: number;
    index: number;
    epoch: number;
  }[] = [];
  /** Backups answered, with the digest their replica read. */
  readonly #backups: AnsweredBackup[] = [];
  /** Digests other replicas computed that were compared with a backup's. */
  #backupsChecked = 0;
  #snapshotsInstalled = 0;
  #now = 0;
  #issued = 0;
  #completed = 0;
  #indeterminate = 0;
  #faultEvents = 0;
  #epochChangesProposed = 0;
  /** Request ids of the configuration changes proposed (epoch bumps and replaces). */
  readonly #changeRequests: string[] = [];
  #valueCounter = 0;
  #liveness = false;
  #failure: string | undefined;

  readonly #trace: SimTrace | undefined;
  readonly #unsafeSnapshotsLoseAKey: boolean;
  readonly #unsafeRejoinWithoutReplace: boolean;
  readonly #neverStartAdded: boolean;
  readonly #leaseChecks: LeaseChecks;
  /** Replicas wiped and not yet replaced: nothing boots them but their replacement. */
  readonly #awaitingReplace = new Set<number>();
  #replacements = 0;
  /** Each epoch's configuration, as replicas start it (one per epoch, by Agreement). */
  readonly #configurations = new Map<number, Configuration>();
  /** Replicas with a membership change of theirs not answered yet (the admin route's `proposing`). */
  readonly #proposing = new Set<number>();
  #memberChangesProposed = 0;
  #changesRefused = 0;
  /** Operations given up on at replicas a change removed that never learned it. */
  #stranded = 0;

  constructor(config: SimConfig, options: SimulationOptions = {}) {
    this.#config = config;
    this.#trace = options.trace;
    this.#unsafeSnapshotsLoseAKey = options.unsafeSnapshotsLoseAKey ?? false;
    this.#unsafeRejoinWithoutReplace = options.unsafeRejoinWithoutReplace ?? false;
    this.#neverStartAdded = options.neverStartAdded ?? false;
    const root = new SeededRandom(config.seed);
    this.#random = root.fork();
    this.#faultRandom = root.fork();
    const driverRandom = root.fork();
    this.#memberRandom = new SeededRandom(config.seed ^ 0x3e3b_e125);
    this.#configurations.set(1, defaultConfiguration(config.replicas));
    this.#checker = new InvariantChecker(SLOTS);
    this.#history = new HistoryRecorder({ now: () => this.#now });
    const now = () => this.#now;
    const leases = config.leases;
    const clockRate = (id: number) => options.clockRates?.[id] ?? leases?.clockRates[id] ?? 1;
    this.#leaseChecks = new LeaseChecks({
      hosts: this.#hosts,
      checker: this.#checker,
      now,
      clockRate,
      ...(options.checkLeaseExpiry === undefined ? {} : { checkExpiry: options.checkLeaseExpiry }),
    });
    this.#network = new SimNetwork({
      slots: SLOTS,
      localTime: (id, simulatedMs) => this.#hosts[id]!.localTime(simulatedMs),
      queue: this.#queue,
      now,
      random: this.#faultRandom,
      minDelayMs: config.minDelayMs,
      maxDelayMs: config.maxDelayMs,
      faults: () => this.#liveness ? undefined : config.faults,
      deliver: (to, batch) => this.#hosts[to]!.receive(batch),
      answers: (id) => this.#hosts[id]!.answering,
      receiver: (id) => {
        const driver = this.#hosts[id]!.driver;
        return driver === undefined ? undefined : {
          epoch: driver.configuration.epoch,
          replicas: driver.core.replicas,
          removed: driver.removed,
        };
      },
    });
    for (let id = 0; id < SLOTS; id++) {
      const host: SimHost = new SimHost({
        id,
        queue: this.#queue,
        now,
        random: driverRandom,
        diskMaxMs: config.diskMaxMs,
        transport: this.#network.transport(id),
        ...(leases === undefined
          ? {}
          : { clock: { rate: clockRate(id), offsetMs: leases.clockOffsetsMs[id]! } }),
        driver: {
          replicas: config.replicas,
          ...(leases === undefined ? {} : {
            configuration: {
              ...defaultConfiguration(config.replicas),
              leases: leases.configuration,
            },
          }),
          ...(options.unsafeLeases === undefined ? {} : { unsafeLeases: options.unsafeLeases }),
          ...this.#leaseReadStall(
            id,
            options.leaseReadStalls ??
              (leases === undefined || leases.readStallShare === 0
                ? undefined
                : { share: leases.readStallShare, unsafe: false }),
          ),
          tickMs: 1,
          timing: SIM_TIMING,
          maxBatchCommands: config.batchSize,
          batchWindowMs: 2,
          markerDelayMs: 5,
          // The simulated clients keep their own deadlines.
          requestTimeoutMs: 10 * (config.safetyMs + config.livenessMs),
          contactWindowMs: 1000,
          maxHeldCommands: config.retentionCommands,
          snapshotFetchTimeoutMs: 3000,
          fetchSnapshot: (peer) => this.#fetchSnapshot(id, peer),
          observer: {
            executed: (execution) =>
              this.#checker.onExecuted(id, execution.owner, execution.number, execution.command),
            localRead: (accesses) => this.#leaseChecks.onLocalRead(id, accesses),
          },
          unsafeAnswerBlindWritesBeforeDurable: options.unsafeAnswerBlindWritesBeforeDurable ??
            false,
          ...(options.quorumReads === false ? { quorumReads: false } : {}),
          ...(options.unsafeQuorumReadsWithoutWaiting === true
            ? { unsafeQuorumReads: { serveWithoutWaiting: true } }
            : {}),
          ...(this.#trace === undefined ? {} : {
            log: (line: string) => this.#trace?.(`${this.#now} r${id} ${line}`),
            traceMessages: true,
          }),
        },
        onEpochStarted: (configuration) => {
          this.#noteConfiguration(configuration);
          this.#checker.onEpochStarted(id, configuration.epoch);
        },
        onInstalled: (snapshot) => {
          this.#snapshotsInstalled++;
          if (snapshot.configuration !== undefined) {
            this.#noteConfiguration(snapshot.configuration);
          }
          this.#checker.onSnapshotInstalled(id, snapshot);
        },
        onDurable: (batch) => {
          this.#checker.onPersist(id, batch.records, this.#now);
          for (const key of batch.effects.keys()) {
            this.#checker.onDurableExecution(id, keyOwner(key), keyNumber(key));
          }
        },
      });
      this.#hosts.push(host);
      // Slots above the starting size wait for a change that adds them.
      if (id < config.replicas) host.boot();
    }
    let clientId = 0;
    for (let node = 0; node < config.replicas; node++) {
      for (let i = 0; i < config.clientsPerReplica; i++) {
        this.#clients.push({
          id: clientId++,
          node,
          busy: false,
          request: undefined,
          deadline: 0,
          known: new Map(),
          operation: undefined,
          invokedInLiveness: false,
        });
      }
    }
  }

  /** The client history so far, as JSON lines (the checker's own format). */
  historyJsonLines(): string {
    return this.#history.toJsonLines();
  }

  run(): SimResult {
    try {
      this.#runPhases();
    } catch (error) {
      if (!(error instanceof InvariantViolation)) throw error;
      this.#failure = error.message;
    }
    const stats = this.#hosts.flatMap((host) =>
      host.driver === undefined ? [] : [host.driver.stats]
    );
    return {
      ok: this.#failure === undefined,
      ...(this.#failure === undefined ? {} : { failure: this.#failure }),
      completed: this.#completed,
      indeterminate: this.#indeterminate,
      decided: this.#checker.decidedCount,
      fastCommits: stats.reduce((sum, s) => sum + s.fastCommits, 0),
      slowCommits: stats.reduce((sum, s) => sum + s.slowCommits, 0),
      recoveries: stats.reduce((sum, s) => sum + s.recoveriesStarted, 0),
      simulatedMs: this.#now,
      messages: this.#network.messages,
      faultEvents: this.#faultEvents,
      recoveryOutcomes: sumOutcomes(stats.map((s) => s.recoveryOutcomes)),
      backups: this.#backups.length,
      backupDigestsChecked: this.#backupsChecked,
      snapshotsInstalled: this.#snapshotsInstalled,
      epochChanges: this.#epochChangesProposed,
      replacements: this.#replacements,
      epoch: Math.max(...this.#hosts.map((host) => host.driver?.configuration.epoch ?? 1)),
      memberChanges: this.#memberChangesProposed,
      refusedChanges: this.#changesRefused,
      stranded: this.#stranded,
      sizes: [...this.#configurations.keys()].sort((a, b) => a - b)
        .map((epoch) => describeSize(this.#configurations.get(epoch)!)),
      quorumReads: quorumReadCounts(this.#hosts),
      localReads: this.#leaseChecks.reads,
      leaseGrantsCompared: this.#leaseChecks.grantsCompared,
      leaseWritesReleased: this.#hosts.reduce(
        (sum, host) => sum + (host.driver?.leaseStatus().writes.released ?? 0),
        0,
      ),
    };
  }

  /**
   * The driver option that stalls replica `id`'s local reads, drawn on a
   * stream of their own (a run with the unsafe check stalls the same reads
   * as one with the safe check, until their histories part).
   */
  #leaseReadStall(
    id: number,
    stalls: SimulationOptions["leaseReadStalls"],
  ): { leaseReadStall?: LeaseReadStall } {
    const leaseMs = this.#config.leases?.configuration.leaseMs;
    if (stalls === undefined || leaseMs === undefined) return {};
    const random = new SeededRandom(this.#config.seed ^ 0x57a11 ^ (id << 20));
    return {
      leaseReadStall: {
        stall: (resume) => {
          if (random.next() >= stalls.share || this.#liveness) return false;
          const host = this.#hosts[id]!;
          if (!host.answering) return false;
          const delayMs = Math.ceil(leaseMs * 2.5 * random.next());
          this.#trace?.(`${this.#now} r${id} read stalls ${delayMs} ms`);
          host.stall(delayMs, resume);
          return true;
        },
        unsafeCheckBeforeStall: stalls.unsafe,
      },
    };
  }

  #runPhases(): void {
    const config = this.#config;
    if (config.faults !== undefined) this.#scheduleFaults();
    this.#scheduleEpochChanges();
    this.#scheduleMemberChanges();
    // Clients start once replicas have heard from each other (probes).
    for (const client of this.#clients) {
      this.#queue.schedule(50 + this.#random.int(10), () => this.#nextOperation(client));
    }
    // Safety phase: faults until most operations are issued or time runs out.
    const safetyTarget = Math.floor(config.commands * 0.7);
    while (this.#now < config.safetyMs && this.#issued < safetyTarget) this.#step();
    // Liveness phase: heal everything, then every operation must finish and
    // every replica converge within the bound.
    this.#heal();
    const deadline = this.#now + config.livenessMs;
    while (this.#now < deadline) {
      const target = this.#now + 100;
      while (this.#now < target) this.#step();
      this.#releaseStranded();
      if (this.#issued >= config.commands && this.#clients.every((client) => !client.busy)) {
        if (this.#converged()) break;
      }
    }
    const stuck = this.#clients.filter((client) => client.busy);
    if (this.#issued < config.commands || stuck.length > 0 || !this.#converged()) {
      for (const host of this.#hosts) {
        for (const line of host.driver?.core.describeState(20) ?? []) {
          this.#trace?.(`state ${line}`);
        }
      }
    }
    if (this.#issued < config.commands || stuck.length > 0) {
      throw new InvariantViolation(
        "liveness",
        `after healing, ${
          config.commands - this.#issued
        } operations not issued and ${stuck.length} outstanding after ${config.livenessMs} ms`,
      );
    }
    const final = this.#latestConfiguration();
    const members = final.members.map((member) => this.#hosts[member.id]!);
    if (!this.#converged()) {
      const frontiers = final.members.map((member) =>
        `r${member.id}[${this.#hosts[member.id]!.driver?.core.executedFrontier.join(" ")}]`
      );
      throw new InvariantViolation(
        "liveness",
        `replicas did not converge within ${config.livenessMs} ms: ${
          describeConfiguration(final)
        } ${frontiers.join(" ")}`,
      );
    }
    this.#checker.checkVisibility();
    this.#checker.checkExecutionOrder();
    this.#checker.checkAcknowledged(this.#acknowledged);
    this.#backupsChecked = checkBackupDigests(
      this.#backups,
      this.#hosts.map((host) => (request: string) => host.driver?.state.digestAtBackup(request)),
    );
    checkChangeDigests(
      this.#changeRequests,
      this.#hosts.map((host) => (request: string) => host.driver?.digestAfterBarrier(request)),
    );
    // The members of the last configuration: removed replicas stopped, and
    // slots never added hold nothing.
    for (const host of members) {
      const driver = host.driver!;
      const applied = driver.appliedPrefix.join(" ");
      const executed = driver.core.executedFrontier.join(" ");
      if (applied !== executed) {
        throw new InvariantViolation(
          "the state holds what executed",
          `replica ${driver.id} applied [${applied}] but executed [${executed}]`,
        );
      }
    }
    const digests = new Set(members.map((host) => host.driver!.state.digest));
    if (digests.size !== 1) {
      throw new InvariantViolation(
        "identical state",
        `replicas that executed the same instances hold different state: ${[...digests].join(" ")}`,
      );
    }
    // Only where no command conflicts: a configuration change and a
    // snapshot's barrier (a joiner's) conflict with every key, and the
    // commands the change's fence held back are recovered (at n = 7, a few
    // take the slow path even without membership changes).
    if (
      config.faults === undefined && config.sharedKeys === 0 &&
      this.#changeRequests.length === 0 && this.#snapshotsInstalled === 0
    ) {
      const cores = members.map((host) => host.driver!.core);
      const slow = cores.reduce((sum, core) => sum + core.stats.slowCommits, 0);
      const recoveries = cores.reduce((sum, core) => sum + core.stats.recoveriesStarted, 0);
      if (slow > 0 || recoveries > 0) {
        throw new InvariantViolation(
          "fast path",
          `no faults and no conflicts, yet ${slow} slow commits and ${recoveries} recoveries`,
        );
      }
    }
    // One hot key with many concurrent clients and indeterminate operations is
    // the search's worst case; give it room rather than report "unknown".
    const verdict = this.#history.check({ maxStepsPerKey: 400_000_000 });
    if (verdict.verdict !== "linearizable") {
      const failed = verdict.keys.find((key) => key.verdict !== "linearizable");
      if (failed !== undefined && this.#trace !== undefined) {
        const history = this.#history.toHistory();
        for (const line of describeKeyFailure(history, failed)) this.#trace(`history ${line}`);
      }
      throw new InvariantViolation(
        "linearizability",
        `${verdict.verdict} on key ${failed?.key ?? "?"} (${verdict.keys.length} keys checked)${
          failed?.explanation === undefined ? "" : `: ${failed.explanation}`
        }`,
      );
    }
  }

  #step(): void {
    const time = this.#queue.nextTime;
    if (time === Number.POSITIVE_INFINITY) {
      this.#now++;
      return;
    }
    this.#now = Math.max(this.#now, time);
    this.#queue.pop()!();
  }

  /**
   * The simulation's snapshot transfer: replica `to` asks `from` for a
   * snapshot, over a link that must be up both ways when it asks and when it
   * arrives, after one round trip plus a delay in proportion to the state.
   * A source that is down or cut off never answers (the driver times out).
   */
  #fetchSnapshot(to: number, from: number): PromiseLike<ReplicaSnapshot<KvCommand>> {
    const result = new Eventual<ReplicaSnapshot<KvCommand>>();
    const source = this.#hosts[from]!;
    const linked = () => this.#network.linked(to, from) && this.#network.linked(from, to);
    if (!source.answering || !linked()) return result;
    const receiver = this.#hosts[to]!;
    const receiverEpoch = receiver.driver?.configuration.epoch;
    this.#queue.schedule(
      this.#now + this.#config.maxDelayMs,
      source.gate(() => {
        source.driver?.takeSnapshotWith(
          {
            resolve: (snapshot) => {
              const transferMs = this.#config.maxDelayMs + Math.ceil(snapshot.entries.length / 100);
              this.#queue.schedule(
                this.#now + transferMs,
                receiver.gate(() => {
                  if (linked()) result.resolve(this.#tamper(snapshot));
                }),
              );
            },
            reject: (error) => result.reject(error),
          },
          to,
          receiverEpoch,
        );
      }),
    );
    return result;
  }

  #tamper(snapshot: ReplicaSnapshot<KvCommand>): ReplicaSnapshot<KvCommand> {
    if (!this.#unsafeSnapshotsLoseAKey || snapshot.entries.length === 0) return snapshot;
    const entries = snapshot.entries.slice(1);
    return { ...snapshot, entries, digest: stateDigestOf(entries) };
  }

  /**
   * Whether every member of the last configuration runs in its epoch with
   * nothing in flight, has executed the same instances, and holds the same
   * state (removed replicas and slots never added do not count).
   */
  #converged(): boolean {
    const final = this.#latestConfiguration();
    const hosts = final.members.map((member) => this.#hosts[member.id]!);
    const reference = hosts[0]!.driver;
    if (reference === undefined) return false;
    for (const host of hosts) {
      const driver = host.driver;
      if (driver === undefined || host.paused || driver.joining) return false;
      if (driver.configuration.epoch !== final.epoch) return false;
      const core = driver.core;
      if (core.uncommittedCount > 0 || core.pendingExecution > 0 || core.inflightProposals > 0) {
        return false;
      }
      for (let row = 0; row < reference.core.replicas; row++) {
        if (core.executedFrontier[row] !== reference.core.executedFrontier[row]) return false;
        if (core.executedFrontier[row]! < core.rowHighest[row]!) return false;
        if (core.executedFrontier[row]! < reference.core.rowHighest[row]!) return false;
      }
      if (driver.state.digest !== reference.state.digest) return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------------
  // Configuration changes.

  /**
   * Schedules `epochChanges` epoch bumps in the safety phase, drawn from
   * their own stream (so that runs without them draw as before).
   */
  #scheduleEpochChanges(): void {
    const random = new SeededRandom(this.#config.seed ^ 0x5eed_e90c);
    if (this.#config.amnesia) {
      const at = 300 + random.int(Math.max(1, this.#config.safetyMs - 2000));
      const node = random.int(this.#config.replicas);
      this.#queue.schedule(at, () => this.#amnesia(this.#faultTarget(node)));
    }
    for (let change = 0; change < this.#config.epochChanges; change++) {
      const at = 200 + random.int(Math.max(1, this.#config.safetyMs - 1200));
      const node = random.int(this.#config.replicas);
      this.#queue.schedule(at, () => this.#changeEpoch(node));
    }
  }

  /** Proposes, at replica `node` if it runs, the next epoch with the same members. */
  #changeEpoch(node: number): void {
    const host = this.#hosts[node]!;
    const driver = host.driver;
    if (driver === undefined || host.paused) return;
    const current = driver.configuration;
    const next = { ...current, epoch: current.epoch + 1 };
    this.#trace?.(`${this.#now} r${node} propose epoch ${next.epoch}`);
    this.#epochChangesProposed++;
    const request = driver.submitWith({ op: "reconf", configuration: next }, {
      resolve: () => this.#trace?.(`${this.#now} r${node} epoch ${next.epoch} executed`),
      // Refused, overtaken by another change, or not done in time: the run
      // goes on; what it checks is that every replica agrees in the end.
      reject: (error) =>
        this.#trace?.(`${this.#now} r${node} epoch ${next.epoch}: ${error.message}`),
    });
    this.#changeRequests.push(request);
  }

  /**
   * Crashes replica `node` with amnesia: its disk is wiped. After the down
   * time it is replaced (a new incarnation, through the protocol) and joins
   * again; with the unsafe option, it comes back as it was instead.
   */
  #amnesia(node: number): void {
    const host = this.#hosts[node]!;
    if (this.#liveness || !host.up) return;
    this.#faultEvents++;
    this.#trace?.(`${this.#now} r${node} crash with amnesia`);
    host.crash(false);
    host.wipe();
    for (const client of this.#clients) {
      if (client.node === node && client.busy) client.request = undefined;
    }
    const downMs = Math.ceil(this.#config.faults?.downMs ?? 200);
    if (this.#unsafeRejoinWithoutReplace) {
      this.#queue.schedule(this.#now + downMs, () => host.boot());
      return;
    }
    this.#awaitingReplace.add(node);
    this.#queue.schedule(this.#now + downMs, () => this.#replace(node, 0));
  }

  /** Proposes, at a live replica, that `node` be replaced; retries until it is. */
  #replace(node: number, attempt: number): void {
    if (!this.#awaitingReplace.has(node)) return;
    const retry = () => {
      if (attempt < 200) {
        this.#queue.schedule(this.#now + 200, () => this.#replace(node, attempt + 1));
      }
    };
    const candidates = this.#hosts.filter((host, id) =>
      id !== node && host.driver !== undefined && !host.paused && !host.driver.removed
    );
    if (candidates.length === 0) return retry();
    const proposer = candidates[this.#random.int(candidates.length)]!;
    const current = proposer.driver!.configuration;
    const member = current.members.find((candidate) => candidate.id === node);
    if (member === undefined) return;
    const next = {
      ...current,
      epoch: current.epoch + 1,
      members: current.members.map((candidate) =>
        candidate.id === node ? { ...candidate, incarnation: candidate.incarnation + 1 } : candidate
      ),
    };
    this.#trace?.(
      `${this.#now} propose replacing r${node} by incarnation ${member.incarnation + 1}`,
    );
    // The answer may never come (the proposer may crash): the replacement
    // joins once any replica is in an epoch that names its new incarnation,
    // and the replace is proposed again if none is after a while.
    this.#changeRequests.push(proposer.driver!.submitWith({ op: "reconf", configuration: next }, {
      resolve: () => {},
      reject: (error) => this.#trace?.(`${this.#now} replacing r${node}: ${error.message}`),
    }));
    this.#queue.schedule(this.#now + 1, () => this.#join(node, next, 0, () => retry()));
  }

  /** Boots wiped replica `node` as the incarnation `replaced` names, once a live replica is in that epoch. */
  #join(node: number, replaced: Configuration, attempt: number, giveUp: () => void): void {
    if (!this.#awaitingReplace.has(node)) return;
    const source = this.#hosts.find((host, id) =>
      id !== node && host.driver !== undefined &&
      host.driver.configuration.epoch >= replaced.epoch
    );
    const incarnation = (config: Configuration) =>
      config.members.find((member) => member.id === node)?.incarnation ?? 0;
    if (source === undefined || incarnation(source.driver!.configuration) < incarnation(replaced)) {
      // Another change overtook this one, or no replica is in it yet.
      if (attempt < 60) {
        this.#queue.schedule(this.#now + 50, () => this.#join(node, replaced, attempt + 1, giveUp));
      } else {
        giveUp();
      }
      return;
    }
    this.#awaitingReplace.delete(node);
    this.#replacements++;
    this.#trace?.(`${this.#now} r${node} joins as incarnation ${incarnation(replaced)}`);
    this.#hosts[node]!.bootJoining(source.driver!.configuration);
  }

  // ---------------------------------------------------------------------------
  // Membership changes: add, promote, remove (./membership.ts).

  /** Starts the run's chain of membership changes, and the watch that stops removed replicas. */
  #scheduleMemberChanges(): void {
    if (this.#config.memberChanges === 0) return;
    const left = this.#config.memberChanges;
    this.#queue.schedule(200 + this.#memberRandom.int(500), () => this.#memberChange(left, 0));
    this.#queue.schedule(RETIRE_CHECK_MS, () => this.#retireRemoved());
  }

  /**
   * Tries the next of `left` membership changes, as an operator makes them
   * with `deno task admin`: at a random live voter, drawn from its
   * configuration (`drawChange`), judged by the operator's decider
   * (`decideChange`) against what that voter observes, and proposed as a
   * `reconf` command when accepted (`membership_route.ts` does the same).
   * One at a time: the next follows once this one is answered, or given up
   * on; a refused one is drawn again a few times. Only in the safety
   * phase, among its faults.
   */
  #memberChange(left: number, attempt: number): void {
    if (this.#liveness || left === 0) return;
    const random = this.#memberRandom;
    const next = () =>
      this.#queue.schedule(
        this.#now + 100 + random.int(500),
        () => this.#memberChange(left - 1, 0),
      );
    const retry = () => {
      if (attempt >= 5) return next();
      this.#queue.schedule(this.#now + 200, () => this.#memberChange(left, attempt + 1));
    };
    const proposers = this.#hosts.filter((host) =>
      host.answering && host.driver!.core.isVoter && !host.driver!.removed &&
      !host.driver!.joining
    );
    if (proposers.length === 0) return retry();
    const driver = proposers[random.int(proposers.length)]!.driver!;
    const current = driver.configuration;
    const change = drawChange(current, random);
    if (change.kind === "bump") {
      this.#changeEpoch(driver.id);
      return next();
    }
    const view = observedView(driver, this.#proposing.has(driver.id), SIM_VIEW);
    const decision = decideChange(current, change, view);
    if (!decision.ok) {
      this.#changesRefused++;
      this.#trace?.(
        `${this.#now} r${driver.id} ${describeChange(change)} refused: ${decision.reason}`,
      );
      return retry();
    }
    this.#memberChangesProposed++;
    this.#proposing.add(driver.id);
    this.#trace?.(
      `${this.#now} r${driver.id} propose ${describeChange(change)}: ${
        describeConfiguration(decision.next)
      }`,
    );
    let answered = false;
    const done = (outcome: string) => {
      if (answered) return;
      answered = true;
      this.#proposing.delete(driver.id);
      this.#trace?.(`${this.#now} r${driver.id} ${describeChange(change)}: ${outcome}`);
      next();
    };
    this.#changeRequests.push(
      driver.submitWith({ op: "reconf", configuration: decision.next }, {
        resolve: () => done("executed"),
        reject: (error) => done(error.message),
      }),
    );
    // The proposer may crash before it answers: the operator stops waiting.
    this.#queue.schedule(this.#now + 3000, () => done("no answer"));
    if (decision.added !== undefined) this.#admit(decision.added.id, decision.next.epoch, 0);
  }

  /**
   * Starts added member `id` on an empty disk, as `deno task start --join`
   * does, once a live replica is in `epoch` or later: with that replica's
   * configuration, if it has the member (an add another change overtook,
   * or a later change undid, starts nothing). Polls, within a bound.
   */
  #admit(id: number, epoch: number, attempt: number): void {
    const host = this.#hosts[id]!;
    if (host.started || this.#neverStartAdded) return;
    const source = this.#hosts.find((candidate) =>
      candidate.driver !== undefined && !candidate.driver.removed &&
      candidate.driver.configuration.epoch >= epoch
    );
    if (source === undefined) {
      if (attempt < 600) {
        this.#queue.schedule(this.#now + 50, () => this.#admit(id, epoch, attempt + 1));
      }
      return;
    }
    const configuration = source.driver!.configuration;
    if (!configuration.members.some((member) => member.id === id)) {
      this.#trace?.(
        `${this.#now} r${id} not started: not in ${describeConfiguration(configuration)}`,
      );
      return;
    }
    this.#trace?.(`${this.#now} r${id} joins ${describeConfiguration(configuration)}`);
    host.bootJoining(configuration);
  }

  /**
   * Stops, for good, every replica that executed its own removal
   * (`ReplicaDriver.retired`) once every member of the last configuration
   * is in the epoch that removed it or later, as an operator stops a removed
   * member once the change is done: until then, the removed replica does
   * what its driver does (today nothing: it stops answering the moment it
   * executes its removal; membership.md's retire rule would have it answer
   * the old epoch until enough new members executed the change). Runs every
   * {@linkcode RETIRE_CHECK_MS}.
   */
  #retireRemoved(): void {
    const latest = this.#latestConfiguration();
    for (const [id, host] of this.#hosts.entries()) {
      const driver = host.driver;
      if (driver?.removed !== true) continue;
      // Replaced, not removed: the slot's next process is the replacement.
      if (this.#isMember(id)) continue;
      const removedIn = driver.configuration.epoch;
      const done = latest.members.every((member) =>
        (this.#hosts[member.id]!.driver?.configuration.epoch ?? 0) >= removedIn
      );
      if (!done) continue;
      this.#trace?.(`${this.#now} r${id} stops: ${driver.retired}`);
      host.retire();
    }
    this.#queue.schedule(this.#now + RETIRE_CHECK_MS, () => this.#retireRemoved());
  }

  /** Whether replica `id` is a member of the last configuration. */
  #isMember(id: number): boolean {
    return this.#latestConfiguration().members.some((member) => member.id === id);
  }

  /**
   * After healing, gives up on operations in flight at replicas that are not
   * members any more: one removed while cut off never learns it (peers of
   * the new epoch send it nothing and take nothing of its old one), so it
   * never answers, as a real client's request to it times out. Recorded as
   * indeterminate, and counted (`SimResult.stranded`).
   */
  #releaseStranded(): void {
    for (const client of this.#clients) {
      if (!client.busy || this.#isMember(client.node)) continue;
      this.#stranded++;
      this.#trace?.(`${this.#now} client ${client.id}: r${client.node} was removed; giving up`);
      this.#abandoned(client, client.request ?? "");
    }
  }

  /** Moves `client` to a voter of the last configuration if its replica is no longer one. */
  #rehome(client: Client): void {
    const voters = voterIds(this.#latestConfiguration());
    if (voters.includes(client.node)) return;
    const node = voters[this.#memberRandom.int(voters.length)]!;
    this.#trace?.(`${this.#now} client ${client.id} moves from r${client.node} to r${node}`);
    client.node = node;
  }

  /** Records `configuration` as its epoch's. */
  #noteConfiguration(configuration: Configuration): void {
    if (!this.#configurations.has(configuration.epoch)) {
      this.#configurations.set(configuration.epoch, configuration);
    }
  }

  /**
   * The configuration of the latest epoch any replica started or runs in
   * (every epoch has one configuration: its change is a committed command).
   */
  #latestConfiguration(): Configuration {
    let latest = this.#configurations.get(Math.max(...this.#configurations.keys()))!;
    for (const host of this.#hosts) {
      const configuration = host.driver?.configuration;
      if (configuration !== undefined && configuration.epoch > latest.epoch) latest = configuration;
    }
    return latest;
  }

  /**
   * The replicas there are now: started and not retired (without membership
   * changes, always `0..n-1`).
   */
  #activeIds(): number[] {
    const ids: number[] = [];
    for (const [id, host] of this.#hosts.entries()) {
      if (host.started && !host.retired) ids.push(id);
    }
    return ids;
  }

  /**
   * The replica a fault drawn for slot `drawn` hits: that slot's, if it
   * runs; else one of the replicas there are now. Without membership
   * changes, `drawn` itself (draws and targets as before they existed).
   */
  #faultTarget(drawn: number): number {
    if (this.#config.memberChanges === 0) return drawn;
    const ids = this.#activeIds();
    return ids.includes(drawn) ? drawn : ids[drawn % ids.length]!;
  }

  // ---------------------------------------------------------------------------
  // Faults.

  #scheduleFaults(): void {
    const faults = this.#config.faults!;
    const random = this.#faultRandom;
    // With membership changes, any slot: the target is who holds it then.
    const targets = this.#config.memberChanges === 0 ? this.#config.replicas : SLOTS;
    for (let second = 0; second * 1000 < this.#config.safetyMs; second++) {
      const at = (offset: number) => second * 1000 + offset;
      if (random.next() < faults.crashRate) {
        const node = random.int(targets);
        const afterPersist = random.next() < faults.crashAfterPersistRate;
        this.#queue.schedule(
          at(random.int(1000)),
          () => this.#crash(this.#faultTarget(node), afterPersist),
        );
      }
      if (random.next() < faults.pauseRate) {
        const node = random.int(targets);
        this.#queue.schedule(at(random.int(1000)), () => this.#pause(this.#faultTarget(node)));
      }
      if (random.next() < faults.partitionRate) {
        this.#queue.schedule(at(random.int(1000)), () => this.#partition());
      }
    }
  }

  #crash(id: number, afterPersist: boolean): void {
    if (this.#liveness) return;
    const host = this.#hosts[id]!;
    if (!host.up) return;
    this.#faultEvents++;
    this.#trace?.(`${this.#now} r${id} crash${afterPersist ? " after persist" : ""}`);
    host.crash(afterPersist);
    // Its clients' answers are lost with it: they time out (indeterminate).
    for (const client of this.#clients) {
      if (client.node === id && client.busy) client.request = undefined;
    }
    this.#queue.schedule(
      this.#now + Math.ceil(this.#config.faults!.downMs),
      () => this.#restart(id),
    );
  }

  #restart(id: number): void {
    const host = this.#hosts[id]!;
    // A wiped replica comes back only as its replacement; a slot never
    // added has nothing to restart. A replica removed while it was down
    // does restart (as a supervisor would start it): on its old disk, in an
    // epoch that has moved on without it, where it must disturb nothing.
    if (host.up || !host.started || host.retired || this.#awaitingReplace.has(id)) return;
    this.#trace?.(`${this.#now} r${id} restart`);
    host.boot();
  }

  #pause(id: number): void {
    if (this.#liveness) return;
    const host = this.#hosts[id]!;
    if (!host.up || host.paused) return;
    this.#faultEvents++;
    host.pause();
    this.#queue.schedule(
      this.#now + Math.ceil(this.#config.faults!.pauseMs),
      () => this.#hosts[id]!.resume(),
    );
  }

  #partition(): void {
    if (this.#liveness) return;
    this.#faultEvents++;
    // Over the replicas there are now (without membership changes: 0..n-1,
    // as before they existed, so that those runs draw the same).
    const ids = this.#activeIds();
    const n = ids.length;
    const random = this.#faultRandom;
    const block = (from: number, to: number) => this.#network.block(ids[from]!, ids[to]!);
    const order = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = random.int(i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    switch (random.int(5)) {
      case 0: { // isolate one replica
        const isolated = order[0]!;
        for (let other = 0; other < n; other++) {
          block(isolated, other);
          block(other, isolated);
        }
        break;
      }
      case 1: // minority / majority split
      case 2: {
        const minority = new Set(order.slice(0, (n - 1) / 2));
        for (let a = 0; a < n; a++) {
          for (let b = 0; b < n; b++) if (minority.has(a) !== minority.has(b)) block(a, b);
        }
        break;
      }
      case 3: { // ring: each replica reaches only its two neighbours
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < n; j++) {
            const distance = Math.abs(i - j);
            if (distance > 1 && distance < n - 1) block(order[i]!, order[j]!);
          }
        }
        break;
      }
      default: { // asymmetric: some directed links only
        for (let a = 0; a < n; a++) {
          for (let b = 0; b < n; b++) if (random.next() < 0.3) block(a, b);
        }
      }
    }
    this.#queue.schedule(
      this.#now + Math.ceil(this.#config.faults!.partitionMs),
      () => this.#network.heal(),
    );
  }

  #heal(): void {
    this.#liveness = true;
    this.#network.heal();
    for (let id = 0; id < this.#hosts.length; id++) {
      this.#restart(id);
      this.#hosts[id]!.resume();
    }
  }

  // ---------------------------------------------------------------------------
  // Clients: one operation outstanding each, unique written values.

  #nextOperation(client: Client): void {
    if (client.busy || this.#issued >= this.#config.commands) return;
    if (!this.#liveness && this.#issued >= Math.floor(this.#config.commands * 0.7)) {
      this.#queue.schedule(this.#now + 50, () => this.#nextOperation(client));
      return;
    }
    const random = this.#random;
    const key = this.#config.sharedKeys === 0
      ? `c${client.id}k${random.int(3)}`
      : `k${random.int(this.#config.sharedKeys)}`;
    const roll = random.next();
    // One operation in a hundred, where keys are shared, is a backup: a read of
    // every key at one point, checked as a read of each (the checker proves
    // each of them linearizable) and by every replica's digest at it.
    const kind = roll < 0.45
      ? "put"
      : roll < 0.8
      ? "get"
      : roll < 0.95
      ? "cas"
      : roll < 0.99 || this.#config.sharedKeys === 0
      ? "delete"
      : "backup";
    const request = `${client.id}.${this.#issued}`;
    if (this.#config.memberChanges > 0) this.#rehome(client);
    const driver = this.#hosts[client.node]!.driver;
    this.#issued++;
    if (driver === undefined || this.#hosts[client.node]!.paused) {
      // The replica cannot be reached: the request never leaves the client, so
      // it is no operation at all (a recorded cas "fail" would claim that the
      // comparison failed).
      this.#queue.schedule(this.#now + 20, () => this.#nextOperation(client));
      return;
    }
    client.busy = true;
    client.invokedInLiveness = this.#liveness;
    let command: KvCommandInput;
    switch (kind) {
      case "put": {
        const value = `v${++this.#valueCounter}`;
        client.operation = { key, kind, value };
        this.#history.invoke(client.id, { f: "put", key, value });
        command = { op: "put", key, value: new TextEncoder().encode(value) };
        break;
      }
      case "get":
        client.operation = { key, kind };
        this.#history.invoke(client.id, { f: "get", key });
        command = { op: "get", key };
        break;
      case "delete":
        client.operation = { key, kind };
        this.#history.invoke(client.id, { f: "delete", key });
        command = { op: "delete", key };
        break;
      case "backup":
        client.operation = { key, kind };
        for (const shared of this.#sharedKeyNames()) {
          this.#history.invoke(backupProcess(client, shared), { f: "get", key: shared });
        }
        command = { op: "backup" };
        break;
      case "cas": {
        const value = `v${++this.#valueCounter}`;
        const expected = client.known.get(key) ?? { value: null, version: null };
        client.operation = { key, kind, value };
        this.#history.invoke(client.id, { f: "cas", key, from: expected.value, to: value });
        command = {
          op: "put",
          key,
          value: new TextEncoder().encode(value),
          ifVersion: expected.version,
        };
        break;
      }
    }
    client.request = request;
    const timeout = this.#liveness ? this.#config.livenessMs : this.#config.clientTimeoutMs;
    client.deadline = this.#now + timeout;
    const deadline = client.deadline;
    this.#queue.schedule(client.deadline, () => {
      if (client.busy && client.request === request && client.deadline === deadline) {
        this.#timeout(client, request);
      } else if (client.busy && client.request === undefined && client.deadline === deadline) {
        this.#timeout(client, request);
      }
    });
    if (command.op === "get") {
      // Through the lease path: served here under a lease, else proposed.
      driver.readWith(command, {
        resolve: (result) => this.#complete(client, request, result),
        reject: (error) => this.#rejected(client, request, error, driver),
      });
      return;
    }
    const assigned = driver.submitWith(command, {
      resolve: (result) => {
        if (
          client.request === request && kind === "put" && result.op === "put" && result.ok
        ) {
          this.#noteAcknowledged(assigned, result.version);
        }
        if (client.request === request && result.op === "backup") {
          // By the request id the replicas know it by.
          this.#backups.push({ request: assigned, digest: result.digest });
        }
        this.#complete(client, request, result);
      },
      reject: (error) => this.#rejected(client, request, error, driver),
    });
  }

  #rejected(client: Client, request: string, error: Error, driver: ReplicaDriver): void {
    if (error instanceof UnavailableError) this.#notApplied(client, request);
    else if (error instanceof SnapshotInstalledError) this.#abandoned(client, request);
    else if (error instanceof OutcomeUnknownError && driver.removed) {
      // Its replica left the cluster (a change removed it) and said so at
      // once: unknown, like a snapshot installed, but no hang.
      this.#abandoned(client, request);
    } else if (error instanceof OutcomeUnknownError) this.#timeout(client, request);
    else throw error;
  }

  /** A blind put answered: its version names the instance and position it must be decided in. */
  #noteAcknowledged(request: string, version: string): void {
    const [number, owner, index] = version.split(".").map(Number);
    // From epoch 2 on, versions end with the epoch (`versionTagFor`).
    const epoch = Number(/e(\d+)$/.exec(version)?.[1] ?? 1);
    this.#acknowledged.push({ request, owner: owner!, number: number!, index: index!, epoch });
  }

  /** The shared keys, `k0` to `k{sharedKeys - 1}`. */
  #sharedKeyNames(): string[] {
    return Array.from({ length: this.#config.sharedKeys }, (_, i) => `k${i}`);
  }

  #complete(client: Client, request: string, result: KvResult): void {
    if (!client.busy || client.request !== request) return;
    const operation = client.operation!;
    switch (result.op) {
      case "backup": {
        const values = new Map(result.entries.map(([key, entry]) => [key, entry.value]));
        for (const shared of this.#sharedKeyNames()) {
          const value = values.get(shared);
          this.#history.ok(backupProcess(client, shared), {
            value: value === undefined ? null : new TextDecoder().decode(value),
          });
        }
        break;
      }
      case "get": {
        const value = result.ok && result.entry !== undefined
          ? new TextDecoder().decode(result.entry.value)
          : null;
        client.known.set(operation.key, {
          value,
          version: result.ok && result.entry !== undefined ? result.entry.version : null,
        });
        this.#history.ok(client.id, { value });
        break;
      }
      case "put":
        if (result.ok) {
          client.known.set(operation.key, { value: operation.value!, version: result.version });
          this.#history.ok(client.id);
        } else {
          client.known.delete(operation.key);
          this.#history.fail(client.id);
        }
        break;
      case "delete":
        if (result.ok) {
          client.known.set(operation.key, { value: null, version: null });
          this.#history.ok(client.id);
        } else {
          this.#history.fail(client.id);
        }
        break;
      case "list":
        this.#history.ok(client.id);
    }
    this.#completed++;
    this.#release(client);
  }

  /**
   * The operation certainly did not take effect (nothing was proposed, or
   * every instance that carried it was replaced by a Nop): it is withdrawn
   * from the history. It neither changed nor observed anything, so this is
   * exact, and unlike `info` it adds no branch to the checker's search (a
   * cas cannot be recorded as `fail`, which would mean "the comparison
   * failed").
   */
  #notApplied(client: Client, request: string): void {
    if (!client.busy || client.request !== request) return;
    this.#cancelOperation(client);
    this.#release(client);
  }

  /** Withdraws the client's operation from the history (a backup: each of its reads). */
  #cancelOperation(client: Client): void {
    if (client.operation?.kind === "backup") {
      for (const shared of this.#sharedKeyNames()) {
        this.#history.cancel(backupProcess(client, shared));
      }
    } else {
      this.#history.cancel(client.id);
    }
  }

  /**
   * The replica answered at once that the outcome is unknown (it installed a
   * snapshot meanwhile): indeterminate, like a timeout, but no hang.
   */
  #abandoned(client: Client, request: string): void {
    this.#timeout(client, request, { hung: false });
  }

  #timeout(client: Client, request: string, options: { hung: boolean } = { hung: true }): void {
    if (!client.busy) return;
    if (options.hung && this.#liveness && client.invokedInLiveness) {
      throw new InvariantViolation(
        "liveness",
        `operation ${request} of client ${client.id} on replica ${client.node} did not finish within ${this.#config.livenessMs} ms of healing`,
      );
    }
    if (client.operation?.kind === "backup") {
      // Reads change nothing: one that never answered is no operation.
      this.#cancelOperation(client);
    } else {
      this.#history.info(client.id);
      this.#indeterminate++;
      client.known.delete(client.operation!.key);
    }
    this.#release(client);
  }

  #release(client: Client): void {
    client.busy = false;
    client.request = undefined;
    client.operation = undefined;
    this.#queue.schedule(this.#now + 1 + this.#random.int(5), () => this.#nextOperation(client));
  }
}
