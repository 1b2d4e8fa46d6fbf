/**
 * The dashboard's script and style sheet, served by the replica itself
 * (`/ui/app.js`, `/ui/app.css`): plain JavaScript and CSS, no build step, no
 * font, image or script of another origin, every URL relative to the page's
 * origin (so it works the same over https).
 *
 * The script keeps the client token in `sessionStorage` (this tab only, gone
 * when it closes) and sends it as `Authorization: Bearer` on every request of
 * the key browser (`/kv`); it trades it for the dashboard's session cookie
 * (`POST /ui/session`, `session.ts`) so that its `EventSource` on
 * `/ui/events` is let in, and renews it while the page is open. Each event
 * replaces the live sections with the HTML the replica rendered; values of
 * keys are only ever put in the page as text (`textContent`), never as HTML.
 *
 * @module
 */

/** The script of the page (`/ui/app.js`). */
export const APP_JS = `"use strict";
(() => {
  const TOKEN_KEY = "epaxos-kv client token";
  const PAGE_SIZE = 20;
  const RENEW_MS = 4 * 60 * 1000;
  const RETRY_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const locked = document.body.dataset.locked === "true";

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }
  function withToken(headers) {
    const value = token();
    return value ? { ...headers, Authorization: "Bearer " + value } : headers;
  }
  function say(text, isError) {
    const message = $("kv-message");
    message.textContent = text;
    message.className = isError ? "error" : "";
  }
  async function refusal(response) {
    try {
      const body = await response.json();
      return response.status + ": " + (body.error || response.statusText);
    } catch {
      return response.status + " " + response.statusText;
    }
  }
  function keyPath(key) {
    return "/kv/" + key.split("/").map(encodeURIComponent).join("/");
  }
  function decoded(bytes) {
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return undefined;
    }
  }

  // --- The token, and the session cookie that lets the event stream in ---
  function showTokenState(text) {
    $("token-state").textContent = text || (token() ? "token set (this tab)" : "no token");
  }
  async function openSession() {
    if (!token()) return true;
    try {
      const response = await fetch("/ui/session", { method: "POST", headers: withToken({}) });
      if (response.ok) {
        showTokenState();
        return true;
      }
      showTokenState("token refused: " + await refusal(response));
    } catch (error) {
      showTokenState("could not reach the replica: " + error.message);
    }
    return false;
  }
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("token-input");
    const value = input.value.trim();
    input.value = "";
    if (value === "") return;
    sessionStorage.setItem(TOKEN_KEY, value);
    if (await openSession()) {
      if (locked) location.reload();
      else {
        connect();
        listKeys(pageStart());
      }
    }
  });
  $("token-forget").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    await fetch("/ui/session", { method: "DELETE" }).catch(() => undefined);
    showTokenState();
  });
  setInterval(() => { if (token()) openSession(); }, RENEW_MS);

  // --- Live sections, from /ui/events ---
  let source;
  let lastDigest;
  function connect() {
    if (locked) return;
    if (source) source.close();
    source = new EventSource("/ui/events");
    source.addEventListener("view", (event) => {
      const data = JSON.parse(event.data);
      for (const [id, html] of Object.entries(data.sections)) {
        const element = $(id);
        if (element) element.innerHTML = html;
      }
      $("live").textContent = "live, updated " + data.at;
      if (lastDigest !== undefined && data.digest !== lastDigest && listed) relist();
      lastDigest = data.digest;
    });
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        $("live").textContent = "reconnecting…";
        return;
      }
      $("live").textContent = "live updates stopped; retrying";
      const closed = source;
      setTimeout(async () => {
        if (source === closed) {
          await openSession();
          connect();
        }
      }, RETRY_MS);
    });
  }

  // --- The key browser, on the curl API ---
  let prefix = "";
  let starts = [undefined];
  let next = null;
  let listed = false;
  let listing = false;
  let relistAgain = false;
  function pageStart() {
    return starts[starts.length - 1];
  }
  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }
  function preview(item) {
    if (item.value === undefined) return "(binary)";
    return item.value.length > 60 ? item.value.slice(0, 60) + "…" : item.value;
  }
  async function listKeys(cursor) {
    if (listing) {
      relistAgain = true;
      return;
    }
    listing = true;
    try {
      let url = "/kv?limit=" + PAGE_SIZE + "&prefix=" + encodeURIComponent(prefix);
      if (cursor !== undefined) url += "&cursor=" + encodeURIComponent(cursor);
      const response = await fetch(url, { headers: withToken({}) });
      if (!response.ok) {
        say("listing refused: " + await refusal(response), true);
        return;
      }
      const body = await response.json();
      const rows = $("kv-rows");
      rows.replaceChildren();
      for (const item of body.items) {
        const tr = document.createElement("tr");
        tr.dataset.key = item.key;
        const keyCell = document.createElement("td");
        const open = document.createElement("button");
        open.type = "button";
        open.className = "link mono";
        open.textContent = item.key;
        open.addEventListener("click", () => viewKey(item.key));
        keyCell.append(open);
        tr.append(keyCell, cell(preview(item), "value"), cell(item.version, "mono"),
          cell(item.expiresAt || "", ""));
        rows.append(tr);
      }
      next = body.cursor;
      listed = true;
      $("kv-next").disabled = next === null;
      $("kv-page").textContent = "page " + starts.length + ", " + body.items.length + " keys" +
        (prefix === "" ? "" : " under " + JSON.stringify(prefix));
    } catch (error) {
      say("listing failed: " + error.message, true);
    } finally {
      listing = false;
      if (relistAgain) {
        relistAgain = false;
        listKeys(pageStart());
      }
    }
  }
  function relist() {
    listKeys(pageStart());
  }
  $("kv-list-form").addEventListener("submit", (event) => {
    event.preventDefault();
    prefix = $("kv-prefix").value;
    starts = [undefined];
    listKeys(undefined);
  });
  $("kv-first").addEventListener("click", () => {
    starts = [undefined];
    listKeys(undefined);
  });
  $("kv-next").addEventListener("click", () => {
    if (next === null) return;
    starts.push(next);
    listKeys(next);
  });

  let viewed;
  async function viewKey(key) {
    const response = await fetch(keyPath(key), { headers: withToken({}) });
    if (!response.ok) {
      say("reading " + key + " refused: " + await refusal(response), true);
      return;
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    const text = decoded(bytes);
    viewed = { key, text };
    $("kv-view").hidden = false;
    $("kv-view-key").textContent = key;
    $("kv-view-value").textContent = text === undefined
      ? "(" + bytes.length + " bytes, not UTF-8)"
      : text;
    const expires = response.headers.get("Kv-Expires");
    $("kv-view-meta").textContent = "version " + response.headers.get("Kv-Version") + ", " +
      bytes.length + " bytes" + (expires ? ", expires " + expires : "");
    resetDelete();
  }
  $("kv-edit").addEventListener("click", () => {
    if (!viewed || viewed.text === undefined) return;
    $("kv-put-key").value = viewed.key;
    $("kv-put-value").value = viewed.text;
    $("kv-put-value").focus();
  });
  // Deleting takes two clicks, the second within five seconds.
  let deleteArmed;
  function resetDelete() {
    clearTimeout(deleteArmed);
    deleteArmed = undefined;
    $("kv-delete").textContent = "Delete";
  }
  $("kv-delete").addEventListener("click", async () => {
    if (!viewed) return;
    if (deleteArmed === undefined) {
      $("kv-delete").textContent = "Click again to delete";
      deleteArmed = setTimeout(resetDelete, 5000);
      return;
    }
    resetDelete();
    const key = viewed.key;
    const response = await fetch(keyPath(key), { method: "DELETE", headers: withToken({}) });
    if (!response.ok) {
      say("deleting " + key + " refused: " + await refusal(response), true);
      return;
    }
    say("deleted " + key, false);
    viewed = undefined;
    $("kv-view").hidden = true;
    relist();
  });
  $("kv-put-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("kv-put-key").value;
    const response = await fetch(keyPath(key), {
      method: "PUT",
      headers: withToken({ "Content-Type": "application/octet-stream" }),
      body: $("kv-put-value").value,
    });
    if (!response.ok) {
      say("putting " + key + " refused: " + await refusal(response), true);
      return;
    }
    const body = await response.json();
    say("put " + key + ": version " + body.version, false);
    relist();
    viewKey(key);
  });

  // A locked page with a token in this tab (its session ran out): renew, then reload once.
  const RELOADED_KEY = "epaxos-kv reloaded for session";
  if (locked && token() && !sessionStorage.getItem(RELOADED_KEY)) {
    sessionStorage.setItem(RELOADED_KEY, "1");
    openSession().then((ok) => { if (ok) location.reload(); });
  } else {
    sessionStorage.removeItem(RELOADED_KEY);
  }
  showTokenState();
  connect();
  listKeys(undefined);
})();
`;

/** The style sheet of the page (`/ui/app.css`): system fonts only. */
export const APP_CSS = `:root {
  color-scheme: light dark;
  --line: #8884;
  --muted: #888;
  --bad: #c0392b;
  --good: #1e8449;
}
* { box-sizing: border-box; }
body {
  margin: 0;
  font: 14px/1.4 system-ui, sans-serif;
}
header {
  display: flex;
  flex-wrap: wrap;
  gap: 0.5rem 1.5rem;
  align-items: center;
  padding: 0.6rem 1rem;
  border-bottom: 1px solid var(--line);
}
header h1 { font-size: 1.1rem; margin: 0; }
main { padding: 0 1rem 2rem; }
h2 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
h3 { font-size: 0.95rem; margin: 0.8rem 0 0.3rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.2rem 0.5rem; border-bottom: 1px solid var(--line); }
th { font-weight: 600; }
tr.down td { color: var(--bad); }
tr.self td.name { font-weight: 600; }
.matrix td { font-variant-numeric: tabular-nums; }
.columns {
  display: grid;
  grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr));
  gap: 0 1.5rem;
}
.figures { display: flex; flex-wrap: wrap; gap: 0.4rem 1.5rem; margin: 0; }
.figure dt { color: var(--muted); font-size: 0.8rem; }
.figure dd { margin: 0; font-variant-numeric: tabular-nums; }
.row { display: flex; flex-wrap: wrap; gap: 0.4rem; align-items: center; }
.muted { color: var(--muted); }
.mono, pre { font-family: ui-monospace, monospace; }
pre { white-space: pre-wrap; word-break: break-all; border: 1px solid var(--line); padding: 0.4rem; }
.error { color: var(--bad); }
#kv-put-form label { display: block; margin: 0.3rem 0; }
#kv-put-form textarea { width: 100%; }
button.link {
  background: none;
  border: none;
  padding: 0;
  color: inherit;
  text-decoration: underline;
  cursor: pointer;
}
button.danger { color: var(--bad); }
`;

/** The page's icon (`/ui/favicon.svg`): without one, browsers ask for `/favicon.ico` and log its 404. */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">` +
  `<circle cx="8" cy="8" r="7" fill="#1e8449"/></svg>
`;
