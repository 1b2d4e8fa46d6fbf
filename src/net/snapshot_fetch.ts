/**
 * The receiving side of snapshot transfer: fetches a peer's snapshot
 * (`GET /peer/v1/snapshot`, `src/server/snapshot_route.ts`) for a replica
 * that its peers pruned past, keeping what arrived in a partial file so that
 * a transfer cut midway, even by a restart of this process, goes on from
 * where it stopped instead of from the start.
 *
 * ## The partial file
 *
 * With `partialPath`, every chunk of the body is appended to that file
 * before it is parsed, and a sidecar `partialPath + ".json"`,
 * `{"peerUrl", "barrier", "bytes"}`, names the peer and the snapshot's barrier
 * (written before the first byte, then every
 * {@linkcode SIDECAR_EVERY_BYTES} and when the transfer stops; `bytes` is a
 * lower bound of the file's length). A later call for the same peer finds
 * them and asks for `?barrier=ID&offset=LENGTH`, then parses the file's bytes
 * followed by the rest. If the peer no longer holds that snapshot (410) or
 * anything does not match (another peer, a file shorter than the sidecar
 * says, an answer for another barrier or offset, a resumed file that does
 * not check out), the partial is deleted and the transfer starts afresh,
 * once. Both files are deleted once the snapshot is read; one call at a time
 * per `partialPath`.
 *
 * @module
 */

import { KvError } from "../errors.ts";
import type { KvCommand } from "../kv/commands.ts";
import { MAX_BARRIER_LENGTH, readSnapshot, SnapshotFormatError } from "../kv/snapshot_file.ts";
import type { ReplicaSnapshot } from "../storage/types.ts";
import { PEER_PROTOCOL_HEADERS, PEER_PROTOCOL_RANGE_HEADER } from "../transport/peer_protocol.ts";

/** Path of the snapshot route on a peer. */
export const SNAPSHOT_PATH = "/peer/v1/snapshot";
/** Response header naming the barrier of the snapshot streamed (to resume with). */
export const SNAPSHOT_BARRIER_HEADER = "epaxos-snapshot-barrier";
/** Response header naming the byte of the snapshot file the body starts at. */
export const SNAPSHOT_OFFSET_HEADER = "epaxos-snapshot-offset";
/** Default of {@linkcode FetchSnapshotOptions.timeoutMs}. */
export const DEFAULT_SNAPSHOT_TIMEOUT_MS = 60_000;
/** The sidecar is rewritten after this many bytes more arrived. */
export const SIDECAR_EVERY_BYTES = 4 * 1024 * 1024;
/** Most bytes of a refusal's body read for its message. */
const MAX_ERROR_BODY_BYTES = 4096;
/** Largest sidecar read. */
const MAX_SIDECAR_BYTES = 4096;

/** Settings of {@linkcode fetchSnapshot}. */
export interface FetchSnapshotOptions {
  /** The cluster secret, sent as a bearer token. */
  readonly secret: string;
  /**
   * The asking replica's id (`?for=`): the source then keeps what it will
   * need after installing the snapshot (`Replica.holdForSnapshot`).
   */
  readonly requester?: number;
  /**
   * The asking replica's epoch (`?epoch=`): a source in a later epoch then
   * answers with the state its epoch started with (`takeSnapshotWith`).
   */
  readonly requesterEpoch?: number;
  /**
   * A file in the replica's data directory to keep the transfer in, so that
   * a later call resumes it (see the module's documentation); absent, the
   * body is parsed as it arrives and a cut transfer starts again from zero.
   */
  readonly partialPath?: string;
  /** Aborts the transfer (rejecting with the signal's reason); the partial file is kept. */
  readonly signal?: AbortSignal;
  /** The fetch to use (default the global one; tests swap it). */
  readonly fetch?: typeof fetch;
  /**
   * Gives up when the peer sends nothing for this many milliseconds: no
   * answer, or no byte of the body (default
   * {@linkcode DEFAULT_SNAPSHOT_TIMEOUT_MS}). Taking the snapshot (a barrier
   * command and a second replica's digest) happens before the answer.
   */
  readonly timeoutMs?: number;
  /**
   * Receives one line per transfer started: resumed from a byte of the
   * partial file, or afresh from byte 0 (saying why a kept partial could not
   * go on, if there was one).
   */
  readonly log?: (line: string) => void;
}

/** The peer answered with a refusal; {@linkcode KvError.status} is its HTTP status. */
export class SnapshotRefusedError extends KvError {
  /** Creates the error. */
  constructor(message: string, status: number, server: string) {
    super(message, status, { server, answerStatus: status });
    this.name = "SnapshotRefusedError";
  }
}

/** The peer could not be reached, did not answer in time, or the transfer was cut. */
export class SnapshotUnreachableError extends Error {
  /** The peer asked. */
  readonly peerUrl: string;

  /** Creates the error. */
  constructor(message: string, peerUrl: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = "SnapshotUnreachableError";
    this.peerUrl = peerUrl;
  }
}

/** What a partial transfer's sidecar records. */
interface Sidecar {
  readonly peerUrl: string;
  readonly barrier: string;
  readonly bytes: number;
}

/** A transfer to go on with: the barrier and the bytes already in the partial file. */
interface Resume {
  readonly barrier: string;
  readonly offset: number;
}

/** The partial transfer cannot go on: start afresh. */
class StartAfresh extends Error {}

/**
 * Fetches a snapshot from the peer at `peerUrl` (its base URL), resuming a
 * transfer kept in `partialPath`, and returns it once read and checked
 * entirely (`readSnapshot`: SHA-256, counts, digest, records).
 *
 * @throws {SnapshotRefusedError} if the peer refused (401 wrong secret, 429
 *   busy, 500 divergence, 503, ...): the partial file is kept.
 * @throws {SnapshotUnreachableError} if the peer could not be reached, was
 *   silent for `timeoutMs`, or the transfer was cut: the partial file is kept.
 * @throws {SnapshotFormatError} if what the peer sent is not a valid
 *   snapshot: the partial file is deleted.
 * @throws the signal's reason if `signal` aborted.
 */
export async function fetchSnapshot(
  peerUrl: string,
  options: FetchSnapshotOptions,
): Promise<ReplicaSnapshot<KvCommand>> {
  const base = peerUrl.replace(/\/+$/, "");
  const found = await findResume(base, options.partialPath);
  let afresh = found.discarded;
  if (found.resume !== undefined) {
    options.log?.(
      `resuming the snapshot from replica ${base} at byte ${found.resume.offset} ` +
        `(barrier ${found.resume.barrier})`,
    );
    try {
      return await transfer(base, options, found.resume);
    } catch (error) {
      if (!(error instanceof StartAfresh)) throw error;
      await removePartial(options.partialPath!);
      afresh = `the partial transfer could not go on: ${oneLine(error)}`;
    }
  }
  options.log?.(
    `fetching the snapshot from replica ${base} afresh, from byte 0` +
      (afresh === undefined ? "" : ` (${afresh})`),
  );
  return await transfer(base, options, undefined);
}

/**
 * The base URL of the peer whose transfer is kept in `partialPath` (by its
 * sidecar), if one is: a later {@linkcode fetchSnapshot} from that peer
 * resumes it, one from another peer deletes it and starts afresh.
 */
export async function keptTransferPeer(partialPath: string): Promise<string | undefined> {
  return (await readSidecar(partialPath))?.peerUrl;
}

/** One request and its body, from `resume` or from zero. */
async function transfer(
  base: string,
  options: FetchSnapshotOptions,
  resume: Resume | undefined,
): Promise<ReplicaSnapshot<KvCommand>> {
  const { partialPath, signal } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_SNAPSHOT_TIMEOUT_MS;
  const requester = [
    ...(options.requester === undefined ? [] : [`for=${options.requester}`]),
    ...(options.requesterEpoch === undefined ? [] : [`epoch=${options.requesterEpoch}`]),
  ].join("&");
  const url = resume === undefined
    ? `${base}${SNAPSHOT_PATH}${requester === "" ? "" : `?${requester}`}`
    : `${base}${SNAPSHOT_PATH}?barrier=${
      encodeURIComponent(resume.barrier)
    }&offset=${resume.offset}${requester === "" ? "" : `&${requester}`}`;
  // Silence for `timeoutMs` aborts: before the answer, and between chunks.
  const idle = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const quiet = () => {
    clearTimeout(timer);
    timer = setTimeout(() => idle.abort(), timeoutMs);
  };
  const stopped = () => {
    if (signal?.aborted) return signal.reason;
    if (idle.signal.aborted) {
      return new SnapshotUnreachableError(
        `Snapshot from ${base}: nothing received for ${timeoutMs} ms`,
        base,
      );
    }
    return undefined;
  };
  quiet();
  try {
    let response: Response;
    try {
      response = await (options.fetch ?? fetch)(url, {
        headers: { authorization: `Bearer ${options.secret}`, ...PEER_PROTOCOL_HEADERS },
        signal: signal === undefined ? idle.signal : AbortSignal.any([signal, idle.signal]),
      });
    } catch (error) {
      throw stopped() ??
        new SnapshotUnreachableError(
          `Cannot reach ${base} for a snapshot: ${oneLine(error)}`,
          base,
          { cause: error },
        );
    }
    quiet();
    if (!response.ok) {
      const message = await errorMessage(response);
      // A refusal of our peer protocol version is no reason to start afresh.
      const versionRefused = response.headers.has(PEER_PROTOCOL_RANGE_HEADER);
      if (
        resume !== undefined && !versionRefused &&
        (response.status === 410 || response.status === 400)
      ) {
        throw new StartAfresh(message);
      }
      throw new SnapshotRefusedError(
        `${base} refused the snapshot (${response.status}): ${message}`,
        response.status,
        base,
      );
    }
    const barrier = response.headers.get(SNAPSHOT_BARRIER_HEADER) ?? "";
    const offset = response.headers.get(SNAPSHOT_OFFSET_HEADER) ?? "0";
    const body = response.body ?? new ReadableStream<Uint8Array>({ start: (c) => c.close() });
    if (resume !== undefined && (barrier !== resume.barrier || offset !== String(resume.offset))) {
      await body.cancel();
      throw new StartAfresh("the peer answered for another barrier or offset");
    }
    if (
      resume === undefined &&
      (barrier.length === 0 || barrier.length > MAX_BARRIER_LENGTH || offset !== "0")
    ) {
      await body.cancel();
      throw new SnapshotFormatError(`${base} answered without a valid barrier at offset 0`);
    }
    // Each chunk restarts the silence timer as it arrives.
    const watched = body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          quiet();
          controller.enqueue(chunk);
        },
      }),
      signal === undefined ? {} : { signal },
    );
    const bytes = partialPath === undefined ? watched : await keptStream(watched, {
      partialPath,
      peerUrl: base,
      barrier,
      resume,
      onPrefixChunk: quiet,
    });
    let snapshot: ReplicaSnapshot<KvCommand>;
    try {
      snapshot = await readSnapshot(bytes);
    } catch (error) {
      const reason = stopped();
      if (reason !== undefined) throw reason;
      if (error instanceof StartAfresh || error instanceof SnapshotUnreachableError) throw error;
      if (error instanceof SnapshotFormatError) {
        if (resume !== undefined) throw new StartAfresh(error.message);
        if (partialPath !== undefined) await removePartial(partialPath);
        throw new SnapshotFormatError(`Snapshot from ${base}: ${error.message}`);
      }
      throw new SnapshotUnreachableError(
        `Snapshot transfer from ${base} was cut: ${oneLine(error)}`,
        base,
        { cause: error },
      );
    }
    if (partialPath !== undefined) await removePartial(partialPath);
    return snapshot;
  } finally {
    clearTimeout(timer);
  }
}

/** Settings of {@linkcode keptStream}. */
interface KeptOptions {
  readonly partialPath: string;
  readonly peerUrl: string;
  readonly barrier: string;
  readonly resume: Resume | undefined;
  /** Called for each chunk read back from the partial file (the peer waits meanwhile). */
  readonly onPrefixChunk: () => void;
}

/**
 * The whole snapshot file as a stream: the partial file's bytes (when
 * resuming), then `body`, each chunk of which is appended to the partial file
 * before it is handed on.
 */
async function keptStream(
  body: ReadableStream<Uint8Array>,
  options: KeptOptions,
): Promise<ReadableStream<Uint8Array>> {
  const { partialPath, peerUrl, barrier, resume } = options;
  if (resume === undefined) {
    await Deno.writeFile(partialPath, new Uint8Array(0));
    await writeSidecar(partialPath, { peerUrl, barrier, bytes: 0 });
  }
  const file = await Deno.open(partialPath, { write: true, append: true });
  async function* chunks(): AsyncGenerator<Uint8Array> {
    let bytes = resume?.offset ?? 0;
    let sidecarAt = bytes;
    try {
      if (resume !== undefined) {
        const prefix = await Deno.open(partialPath, { read: true });
        try {
          const buffer = new Uint8Array(64 * 1024);
          for (let read = 0; read < resume.offset;) {
            const wanted = Math.min(buffer.length, resume.offset - read);
            const count = await prefix.read(buffer.subarray(0, wanted));
            if (count === null) throw new StartAfresh("the partial file shrank");
            read += count;
            options.onPrefixChunk();
            yield buffer.slice(0, count);
          }
        } finally {
          prefix.close();
        }
      }
      for await (const chunk of body) {
        await writeAll(file, chunk);
        bytes += chunk.length;
        if (bytes - sidecarAt >= SIDECAR_EVERY_BYTES) {
          await writeSidecar(partialPath, { peerUrl, barrier, bytes });
          sidecarAt = bytes;
        }
        yield chunk;
      }
    } finally {
      file.close();
      await writeSidecar(partialPath, { peerUrl, barrier, bytes }).catch(() => {});
    }
  }
  return ReadableStream.from(chunks());
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

/**
 * The transfer kept in `partialPath` that can go on from `peerUrl`, if there
 * is one; anything else kept there is deleted (`discarded` says what).
 */
async function findResume(
  peerUrl: string,
  partialPath: string | undefined,
): Promise<{ resume?: Resume; discarded?: string }> {
  if (partialPath === undefined) return {};
  const sidecar = await readSidecar(partialPath);
  let size: number | undefined;
  try {
    size = (await Deno.stat(partialPath)).size;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (
    sidecar !== undefined && size !== undefined && sidecar.peerUrl === peerUrl &&
    size >= sidecar.bytes
  ) {
    return { resume: { barrier: sidecar.barrier, offset: size } };
  }
  if (sidecar === undefined && size === undefined) return {};
  await removePartial(partialPath);
  const discarded = sidecar === undefined
    ? "discarded a partial file without its sidecar"
    : sidecar.peerUrl !== peerUrl
    ? `discarded a partial transfer from ${sidecar.peerUrl}`
    : size === undefined
    ? "discarded a sidecar without its partial file"
    : `discarded a partial file shorter (${size} bytes) than its sidecar says (${sidecar.bytes})`;
  return { discarded };
}

async function readSidecar(partialPath: string): Promise<Sidecar | undefined> {
  let text: string;
  try {
    const path = `${partialPath}.json`;
    if ((await Deno.stat(path)).size > MAX_SIDECAR_BYTES) return undefined;
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  try {
    const value = JSON.parse(text);
    const { peerUrl, barrier, bytes } = value ?? {};
    if (
      typeof peerUrl === "string" && typeof barrier === "string" && barrier.length > 0 &&
      barrier.length <= MAX_BARRIER_LENGTH && Number.isSafeInteger(bytes) && bytes >= 0
    ) {
      return { peerUrl, barrier, bytes };
    }
  } catch { /* not JSON: not a sidecar of ours */ }
  return undefined;
}

/** Replaces the sidecar in one step (a write, then a rename). */
async function writeSidecar(partialPath: string, sidecar: Sidecar): Promise<void> {
  const temporary = `${partialPath}.json.tmp`;
  await Deno.writeTextFile(temporary, JSON.stringify(sidecar));
  await Deno.rename(temporary, `${partialPath}.json`);
}

async function removePartial(partialPath: string): Promise<void> {
  for (const path of [`${partialPath}.json`, `${partialPath}.json.tmp`, partialPath]) {
    try {
      await Deno.remove(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}

/** The `error` of a refusal's JSON body, or the start of its text, on one line. */
async function errorMessage(response: Response): Promise<string> {
  let text = "";
  if (response.body !== null) {
    const reader = response.body.getReader();
    const parts: Uint8Array[] = [];
    let length = 0;
    try {
      while (length < MAX_ERROR_BODY_BYTES) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        length += value.length;
      }
    } catch { /* what arrived is enough */ }
    await reader.cancel().catch(() => {});
    const all = new Uint8Array(length);
    let at = 0;
    for (const part of parts) {
      all.set(part, at);
      at += part.length;
    }
    text = new TextDecoder().decode(all.subarray(0, MAX_ERROR_BODY_BYTES));
  }
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === "string") return oneLine(body.error);
  } catch { /* not JSON: the start of the text */ }
  return oneLine(text.slice(0, 200)) || response.statusText || "no reason given";
}

function oneLine(value: unknown): string {
  const text = value instanceof Error ? value.message : String(value);
  return text.replace(/\s+/g, " ").trim();
}
