/**
 * Renders one replica's `/metrics` page (Prometheus text format), with names
 * mirroring etcd's: `epaxos_proposals_committed_total{path}` (the fast-path
 * ratio is EPaxos's key health signal), `epaxos_storage_commit_duration_seconds`
 * (the analogue of etcd's WAL fsync duration), `epaxos_peer_round_trip_time_seconds`.
 *
 * @module
 */

import { labelValue, MetricsPage } from "../runtime/metrics.ts";
import type { ReplicaDriver } from "../driver/driver.ts";

/** The `/metrics` page of `node`. */
export function renderMetrics(node: ReplicaDriver, names?: readonly string[]): string {
  const stats = node.stats;
  const core = node.core;
  const metrics = node.metrics;
  const peerName = (id: number) => labelValue(names?.[id] ?? `replica-${id}`);
  const peers = node.peers();
  const now = node.now();
  const leases = node.leaseStatus();
  const quorumReads = node.quorumReadStatus();
  const expiry = node.expiryStatus();
  const page = new MetricsPage()
    .family(
      "epaxos_proposals_committed_total",
      "counter",
      "Instances this replica coordinated to commit, by path.",
      [
        `epaxos_proposals_committed_total{path="fast"} ${stats.fastCommits}`,
        `epaxos_proposals_committed_total{path="slow"} ${stats.slowCommits}`,
      ],
    )
    .family("epaxos_recoveries_total", "counter", "Recoveries started by this replica.", [
      `epaxos_recoveries_total ${stats.recoveriesStarted}`,
    ])
    .family(
      "epaxos_reproposals_total",
      "counter",
      "Own proposals replaced by a Nop and proposed again.",
      [
        `epaxos_reproposals_total ${stats.reproposals}`,
      ],
    )
    .family("epaxos_executed_commands_total", "counter", "Client commands executed here.", [
      `epaxos_executed_commands_total ${stats.executedCommands}`,
    ])
    .family("epaxos_executed_instances_total", "counter", "Instances executed here.", [
      `epaxos_executed_instances_total ${stats.executedInstances}`,
    ])
    .family(
      "epaxos_pruned_instances_total",
      "counter",
      "Instances executed everywhere and forgotten here.",
      [
        `epaxos_pruned_instances_total ${stats.prunedInstances}`,
      ],
    )
    .family("epaxos_instances_pending", "gauge", "Instances known here and not yet committed.", [
      `epaxos_instances_pending ${core.uncommittedCount}`,
    ])
    .family("epaxos_instances_held", "gauge", "Instances held in memory.", [
      `epaxos_instances_held ${core.instanceCount}`,
    ])
    .family(
      "epaxos_held_commands",
      "gauge",
      "Client commands held until every replica executes them (past --max-held-commands, " +
        "peers far behind are pruned past).",
      [`epaxos_held_commands ${core.heldCommands}`],
    )
    .family(
      "epaxos_pruned_past_peers",
      "gauge",
      "Peers this replica pruned past: they install a snapshot to catch up.",
      [`epaxos_pruned_past_peers ${core.prunedPastPeers().length}`],
    )
    .family(
      "epaxos_retention_prunes_total",
      "counter",
      "Prune steps that went past peers far behind, the retention bound reached.",
      [`epaxos_retention_prunes_total ${core.stats.retentionPrunes}`],
    )
    .family("epaxos_epoch", "gauge", "The configuration epoch this replica is in.", [
      `epaxos_epoch ${node.configuration.epoch}`,
    ])
    .family(
      "epaxos_lease_valid",
      "gauge",
      "1 when this replica holds a majority of caught-up lease grants (it may read locally).",
      [`epaxos_lease_valid ${leases.valid ? 1 : 0}`],
    )
    .family(
      "epaxos_lease_grant_remaining_seconds",
      "gauge",
      "Per grantor, how long its lease grant to this replica has left.",
      Object.entries(leases.grantRemainingMs).map(([peer, ms]) =>
        `epaxos_lease_grant_remaining_seconds{peer="${peerName(Number(peer))}"} ${ms / 1000}`
      ),
    )
    .family(
      "epaxos_lease_reads_total",
      "counter",
      "Linearizable reads by how they were served: locally under a lease, or through the protocol (and why).",
      [
        `epaxos_lease_reads_total{served="local"} ${leases.reads.localReads}`,
        `epaxos_lease_reads_total{served="protocol",reason="no_lease"} ${leases.reads.fallbacks.noLease}`,
        `epaxos_lease_reads_total{served="protocol",reason="not_leased"} ${leases.reads.fallbacks.notLeased}`,
        `epaxos_lease_reads_total{served="protocol",reason="held_too_long"} ${leases.reads.fallbacks.heldTooLong}`,
        `epaxos_lease_reads_total{served="protocol",reason="expired_during_read"} ${leases.reads.fallbacks.expiredDuringRead}`,
      ],
    )
    .family(
      "epaxos_lease_held_reads_total",
      "counter",
      "Local reads held for a pending write to their keys first.",
      [`epaxos_lease_held_reads_total ${leases.reads.heldReads}`],
    )
    .family(
      "epaxos_lease_held_read_seconds_total",
      "counter",
      "Time local reads spent held for pending writes.",
      [`epaxos_lease_held_read_seconds_total ${leases.reads.heldReadMs / 1000}`],
    )
    .family(
      "epaxos_lease_writes_total",
      "counter",
      "Writes this replica coordinated that waited on lease holders, and those decided after a silent holder's promises ran out.",
      [
        `epaxos_lease_writes_total{outcome="held_for_holders"} ${leases.writes.heldForHolders}`,
        `epaxos_lease_writes_total{outcome="released"} ${leases.writes.released}`,
      ],
    )
    .family(
      "epaxos_lease_write_hold_seconds_total",
      "counter",
      "Time writes this replica coordinated waited on lease holders beyond their quorum.",
      [`epaxos_lease_write_hold_seconds_total ${leases.writes.heldMs / 1000}`],
    )
    .family(
      "epaxos_quorum_reads_total",
      "counter",
      "Linearizable reads no lease served, by outcome: served after one round trip to a majority, or proposed as a command (and why).",
      [
        `epaxos_quorum_reads_total{outcome="served"} ${quorumReads.served}`,
        `epaxos_quorum_reads_total{outcome="command",reason="refused"} ${quorumReads.fallbacks.refused}`,
        `epaxos_quorum_reads_total{outcome="command",reason="timed_out"} ${quorumReads.fallbacks.timedOut}`,
        `epaxos_quorum_reads_total{outcome="command",reason="interrupted"} ${quorumReads.fallbacks.interrupted}`,
      ],
    )
    .family(
      "epaxos_quorum_read_seconds_total",
      "counter",
      "Time served quorum reads took, start to answer.",
      [`epaxos_quorum_read_seconds_total ${quorumReads.servedMs / 1000}`],
    )
    .family(
      "epaxos_quorum_read_answers_total",
      "counter",
      "Read dependency requests this replica answered for peers, as a voter.",
      [`epaxos_quorum_read_answers_total ${quorumReads.answeredForPeers}`],
    )
    .family("epaxos_snapshots_installed_total", "counter", "Snapshots installed here.", [
      `epaxos_snapshots_installed_total ${metrics.snapshotsInstalled}`,
    ])
    .family(
      "epaxos_snapshot_fetches_failed_total",
      "counter",
      "Snapshot fetches or installs that failed and were tried again.",
      [`epaxos_snapshot_fetches_failed_total ${metrics.snapshotFetchesFailed}`],
    )
    .family("epaxos_execution_pending", "gauge", "Known instances waiting to execute here.", [
      `epaxos_execution_pending ${core.pendingExecution}`,
    ])
    .family("epaxos_client_commands_total", "counter", "Client commands by outcome.", [
      `epaxos_client_commands_total{outcome="proposed"} ${metrics.commandsProposed}`,
      `epaxos_client_commands_total{outcome="answered"} ${metrics.commandsAnswered}`,
      `epaxos_client_commands_total{outcome="refused"} ${metrics.requestsRefused}`,
      `epaxos_client_commands_total{outcome="timed_out"} ${metrics.requestsTimedOut}`,
    ])
    .family("epaxos_peer_batches_received_total", "counter", "Peer batches received.", [
      `epaxos_peer_batches_received_total ${metrics.batchesReceived}`,
    ])
    .family("epaxos_peer_messages_received_total", "counter", "Peer messages received.", [
      `epaxos_peer_messages_received_total ${metrics.messagesReceived}`,
    ])
    .family(
      "epaxos_storage_commit_duration_seconds",
      "histogram",
      "Duration of one storage commit (a group commit of one Ready).",
      metrics.storageCommitSeconds.render("epaxos_storage_commit_duration_seconds"),
    )
    .family(
      "epaxos_batch_commands",
      "histogram",
      "Client commands carried by each instance this replica proposed.",
      metrics.batchSize.render("epaxos_batch_commands"),
    )
    .family(
      "epaxos_request_duration_seconds",
      "histogram",
      "Client-seen latency from submission to execution here.",
      metrics.requestSeconds.render("epaxos_request_duration_seconds"),
    )
    .family(
      "epaxos_proposal_commit_duration_seconds",
      "histogram",
      "Time from proposing an instance here to deciding it (fast, slow or by recovery).",
      metrics.commitSeconds.render("epaxos_proposal_commit_duration_seconds"),
    )
    .family(
      "epaxos_peer_round_trip_time_seconds",
      "gauge",
      "Smoothed round trip to each peer.",
      peers.filter((peer) => peer.roundTripMs !== undefined).map((peer) =>
        `epaxos_peer_round_trip_time_seconds{peer="${peerName(peer.peer)}"} ${
          peer.roundTripMs! / 1000
        }`
      ),
    )
    .family(
      "epaxos_peer_last_contact_seconds",
      "gauge",
      "Seconds since the last successful exchange with each peer.",
      peers.filter((peer) => peer.lastContactMs !== undefined).map((peer) =>
        `epaxos_peer_last_contact_seconds{peer="${peerName(peer.peer)}"} ${
          (now - peer.lastContactMs!) / 1000
        }`
      ),
    )
    .family("epaxos_peer_messages_dropped_total", "counter", "Messages a peer link gave up on.", [
      ...peers.map((peer) =>
        `epaxos_peer_messages_dropped_total{peer="${peerName(peer.peer)}"} ${peer.droppedMessages}`
      ),
    ])
    .family(
      "epaxos_expire_commands_total",
      "counter",
      "Expire commands this replica proposed for expired keys, and those refused or of unknown outcome.",
      [
        `epaxos_expire_commands_total{outcome="proposed"} ${expiry.commandsProposed}`,
        `epaxos_expire_commands_total{outcome="failed"} ${expiry.commandsFailed}`,
      ],
    )
    .family(
      "epaxos_expired_keys_total",
      "counter",
      "Expired keys named by this replica's expire commands, and those they deleted (the rest were rewritten or deleted already).",
      [
        `epaxos_expired_keys_total{outcome="proposed"} ${expiry.keysProposed}`,
        `epaxos_expired_keys_total{outcome="deleted"} ${expiry.keysDeleted}`,
      ],
    )
    .family("epaxos_keys", "gauge", "Keys in the executed state.", [
      `epaxos_keys ${node.state.size}`,
    ]);
  return page.toString();
}
