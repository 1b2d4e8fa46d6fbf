/**
 * The dashboard's HTML, rendered on the replica with Hono's JSX (no build
 * step, no script of another origin): the page, and its live sections alone
 * ({@linkcode renderSections}), which each event of `/ui/events` carries and
 * the page's script puts in place. Every element a test or the script finds
 * has an `id` or a `data-*` name; the style is in `/ui/app.css`, never in a
 * `style` attribute (the Content-Security-Policy refuses those).
 *
 * @module
 */

// Rendered once to a string, never reconciled: list items need no `key` (which
// Hono's JSX would write out as an attribute).
// deno-lint-ignore-file jsx-key

import type { FC } from "hono/jsx";
import type { DashboardView, LatencyFigures } from "./view.ts";

/** A duration in ms as `12.3 ms`, or `—` when unknown. */
export function formatMs(value: number | null | undefined): string {
  return value === null || value === undefined ? "—" : `${value.toFixed(1)} ms`;
}

/** A ratio in [0, 1] as a percentage, or `—` when unknown. */
export function formatRatio(value: number | null): string {
  return value === null ? "—" : `${(value * 100).toFixed(1)} %`;
}

/** Seconds as `1h 2m 3s` (largest unit first, zero units left out but the last). */
export function formatUptime(seconds: number): string {
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const rest = seconds % 60;
  return [hours > 0 ? `${hours}h` : "", hours > 0 || minutes > 0 ? `${minutes}m` : "", `${rest}s`]
    .filter((part) => part !== "").join(" ");
}

/** A wall-clock time as `YYYY-MM-DD HH:MM:SS` UTC. */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ");
}

/** A table's head row: one `th` per column name. */
const Head: FC<{ columns: readonly string[] }> = (props) => (
  <thead>
    <tr>
      {props.columns.map((column) => <th>{column}</th>)}
    </tr>
  </thead>
);

const Figure: FC<{ name: string; label: string; value: string }> = (props) => (
  <div class="figure">
    <dt>{props.label}</dt>
    <dd data-figure={props.name}>{props.value}</dd>
  </div>
);

/** The replica's own state: name, epoch, readiness, keys. */
export const Summary: FC<{ view: DashboardView }> = ({ view }) => {
  const replica = view.replica;
  const state = replica.retired !== null
    ? `retired: ${replica.retired}`
    : replica.joining
    ? "joining"
    : replica.ready
    ? "ready"
    : "not ready";
  return (
    <dl class="figures">
      <Figure name="replica" label="Replica" value={`${replica.name} (id ${replica.id})`} />
      <Figure name="region" label="Region" value={replica.region ?? "—"} />
      <Figure name="state" label="State" value={state} />
      <Figure name="role" label="Role" value={replica.role} />
      <Figure name="epoch" label="Epoch" value={String(replica.epoch)} />
      <Figure name="configuration" label="Configuration" value={replica.configuration} />
      <Figure name="keys" label="Keys" value={String(replica.keys)} />
      <Figure name="uptime" label="Uptime" value={formatUptime(replica.uptimeSeconds)} />
      <Figure
        name="pending"
        label="Pending"
        value={`${view.pending.instances} to commit, ${view.pending.execution} to execute`}
      />
    </dl>
  );
};

/** The members table, as `GET /admin/members` describes them. */
export const Members: FC<{ view: DashboardView }> = ({ view }) => (
  <table>
    <Head
      columns={[
        "Id",
        "Name",
        "URL",
        "Role",
        "State",
        "Alive",
        "Behind",
        "Last heard",
        "Round trip",
      ]}
    />
    <tbody>
      {view.members.map((member) => (
        <tr
          data-member-id={String(member.id)}
          class={member.alive ? (member.self ? "self" : undefined) : "down"}
        >
          <td class="id">{member.id}</td>
          <td class="name">{member.name}{member.self ? " (this replica)" : ""}</td>
          <td class="url">{member.url ?? "—"}</td>
          <td class="role">{member.role}</td>
          <td class="state">{member.state}</td>
          <td class="alive">{member.alive ? "yes" : "no"}</td>
          <td class="lag">{member.lagInstances}</td>
          <td class="contact">
            {member.lastContactMsAgo === null ? "never" : `${member.lastContactMsAgo} ms ago`}
          </td>
          <td class="rtt">{member.self ? "—" : formatMs(member.roundTripMs)}</td>
        </tr>
      ))}
    </tbody>
  </table>
);

/** Round trips between the members: row measures, column is measured. */
export const RoundTripTable: FC<{ view: DashboardView }> = ({ view }) => {
  const { members, rows, ageMs } = view.roundTrips;
  return (
    <table class="matrix">
      <thead>
        <tr>
          <th>from \ to</th>
          {members.map((member) => <th>{member.name}</th>)}
          <th>age</th>
        </tr>
      </thead>
      <tbody>
        {members.map((from, row) => (
          <tr data-from={String(from.id)}>
            <th>{from.name}</th>
            {members.map((to, column) => (
              <td data-to={String(to.id)}>
                {from.id === to.id ? "·" : formatMs(rows[row]?.[column] ?? null)}
              </td>
            ))}
            <td class="age">{ageMs[row] === null ? "—" : `${Math.round(ageMs[row]! / 1000)} s`}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
};

function latencyText(figures: LatencyFigures): string {
  return figures.samples === 0
    ? "no samples yet"
    : `p50 ${formatMs(figures.p50)}, p99 ${formatMs(figures.p99)} (${figures.samples} sample${
      figures.samples === 1 ? "" : "s"
    })`;
}

/** Commit paths and latencies. */
export const Commits: FC<{ view: DashboardView }> = ({ view }) => (
  <dl class="figures">
    <Figure name="fast-ratio" label="Fast path" value={formatRatio(view.commits.fastRatio)} />
    <Figure name="fast-commits" label="Fast commits" value={String(view.commits.fast)} />
    <Figure name="slow-commits" label="Slow commits" value={String(view.commits.slow)} />
    <Figure
      name="recoveries"
      label="Recoveries"
      value={`${view.commits.recoveriesStarted} started, ${view.commits.recoveriesCommitted} committed`}
    />
    <Figure
      name="request-latency"
      label="Request latency"
      value={latencyText(view.latencyMs.request)}
    />
    <Figure
      name="commit-latency"
      label="Commit latency"
      value={latencyText(view.latencyMs.commit)}
    />
  </dl>
);

/** Leases and retention. */
export const LeasesAndRetention: FC<{ view: DashboardView }> = ({ view }) => {
  const { leases, retention } = view;
  const names = new Map(view.members.map((member) => [String(member.id), member.name]));
  const grants = leases.configured
    ? Object.entries(leases.grantRemainingMs)
      .map(([id, ms]) => `${names.get(id) ?? id}: ${ms} ms`).join(", ")
    : "";
  const ids = (list: readonly number[]) =>
    list.length === 0 ? "none" : list.map((id) => names.get(String(id)) ?? id).join(", ");
  return (
    <dl class="figures">
      <Figure
        name="leases"
        label="Leases"
        value={leases.configured
          ? `${leases.rules} rule${leases.rules === 1 ? "" : "s"}, ${leases.leaseMs} ms; ${
            leases.valid ? "held" : "not held"
          }`
          : "not configured"}
      />
      <Figure name="lease-grants" label="Grants to this replica" value={grants || "none"} />
      <Figure
        name="local-reads"
        label="Reads served locally"
        value={leases.configured ? formatRatio(leases.localReadRatio) : "—"}
      />
      <Figure
        name="held-commands"
        label="Commands held"
        value={`${retention.heldCommands} of ${retention.limit}`}
      />
      <Figure name="pruned-past" label="Pruned past" value={ids(retention.prunedPast)} />
      <Figure
        name="snapshots"
        label="Snapshots"
        value={`${retention.snapshotsInstalled} installed${
          retention.catchingUpBySnapshot || retention.prunedBy.length > 0
            ? `; catching up from ${ids(retention.prunedBy)}`
            : ""
        }`}
      />
    </dl>
  );
};

/** Recent configuration changes, newest first. */
export const Changes: FC<{ view: DashboardView }> = ({ view }) => (
  <table>
    <Head columns={["Epoch", "Seen", "Configuration", "Change"]} />
    <tbody>
      {view.changes.map((change) => (
        <tr data-epoch={String(change.epoch)}>
          <td>{change.epoch}</td>
          <td>{formatTime(change.atMs)}</td>
          <td class="mono">{change.configuration}</td>
          <td>{change.change}</td>
        </tr>
      ))}
    </tbody>
  </table>
);

/** The live sections by element id: the page has one element per id, each event replaces them. */
const SECTIONS: Readonly<Record<string, FC<{ view: DashboardView }>>> = {
  "summary-body": Summary,
  "members-body": Members,
  "round-trips-body": RoundTripTable,
  "commits-body": Commits,
  "leases-body": LeasesAndRetention,
  "changes-body": Changes,
};

/** Each live section of `view`, rendered to HTML, by the id of the element it fills. */
export function renderSections(view: DashboardView): Record<string, string> {
  const sections: Record<string, string> = {};
  for (const [id, Section] of Object.entries(SECTIONS)) {
    sections[id] = String(<Section view={view} />);
  }
  return sections;
}

const Section: FC<{ id: string; title: string; view: DashboardView }> = (props) => {
  const Body = SECTIONS[`${props.id}-body`]!;
  return (
    <section id={props.id}>
      <h2>{props.title}</h2>
      <div id={`${props.id}-body`}>
        <Body view={props.view} />
      </div>
    </section>
  );
};

const KeyBrowser: FC = () => (
  <section id="keys">
    <h2>Keys</h2>
    <form id="kv-list-form" class="row">
      <label>
        Prefix <input id="kv-prefix" name="prefix" autocomplete="off" spellcheck={false} />
      </label>
      <button type="submit">List</button>
      <button type="button" id="kv-first">First page</button>
      <button type="button" id="kv-next" disabled>Next page</button>
      <span id="kv-page" class="muted"></span>
    </form>
    <table id="kv-table">
      <Head columns={["Key", "Value", "Version", "Expires"]} />
      <tbody id="kv-rows"></tbody>
    </table>
    <div id="kv-view" hidden>
      <h3>
        <span id="kv-view-key" class="mono"></span>
      </h3>
      <pre id="kv-view-value"></pre>
      <p id="kv-view-meta" class="muted"></p>
      <button type="button" id="kv-edit">Edit</button>
      <button type="button" id="kv-delete" class="danger">Delete</button>
    </div>
    <form id="kv-put-form">
      <h3>Put a key</h3>
      <label>
        Key <input id="kv-put-key" name="key" required autocomplete="off" spellcheck={false} />
      </label>
      <label>
        Value <textarea id="kv-put-value" name="value" rows={3}></textarea>
      </label>
      <button type="submit">Put</button>
    </form>
    <p id="kv-message" role="status"></p>
  </section>
);

/**
 * The whole page of `view`; with `locked` instead (the dashboard needs a
 * token this request did not bring), the page without any figure, saying
 * why, with the token field and the key browser.
 */
export function renderPage(
  content: { readonly view: DashboardView } | { readonly locked: string },
  title: string,
): string {
  const view = "view" in content ? content.view : undefined;
  const page = (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{title}</title>
        <link rel="icon" href="/ui/favicon.svg" />
        <link rel="stylesheet" href="/ui/app.css" />
        <script src="/ui/app.js" defer></script>
      </head>
      <body data-locked={view === undefined ? "true" : "false"}>
        <header>
          <h1>epaxos-kv</h1>
          <span id="live" class="muted">{view === undefined ? "" : "connecting…"}</span>
          <form id="token-form" class="row">
            <label>
              Client token{" "}
              <input id="token-input" type="password" autocomplete="off" spellcheck={false} />
            </label>
            <button type="submit">Use token</button>
            <button type="button" id="token-forget">Forget</button>
            <span id="token-state" class="muted"></span>
          </form>
        </header>
        <main>
          {view === undefined
            ? (
              <section id="locked">
                <h2>Token needed</h2>
                <p id="locked-reason">{"locked" in content ? content.locked : ""}</p>
              </section>
            )
            : (
              <>
                <Section id="summary" title="This replica" view={view} />
                <Section id="members" title="Members" view={view} />
                <div class="columns">
                  <Section id="round-trips" title="Round trips" view={view} />
                  <Section id="commits" title="Commits" view={view} />
                  <Section id="leases" title="Leases and retention" view={view} />
                </div>
                <Section id="changes" title="Configuration changes" view={view} />
              </>
            )}
          <KeyBrowser />
        </main>
      </body>
    </html>
  );
  return `<!DOCTYPE html>\n${String(page)}`;
}
