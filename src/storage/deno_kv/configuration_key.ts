/**
 * The configuration of the epoch a store is in, under
 * `["meta", "configuration"]` (`keys.ts`): written in the switch of an install
 * of a snapshot of a later epoch (`install.ts`), read when the store is
 * prepared and loaded. An absent key is epoch 1, whose configuration is the
 * cluster file's: stores written before epochs existed read as they were,
 * in the same format version.
 *
 * @module
 */

import { type Configuration, configurationProblem } from "../../core/configuration.ts";
import { decodeMsgpack, encodeMsgpack } from "../codec.ts";
import { copyConfiguration, MalformedSnapshotError } from "../snapshot_check.ts";
import { CONFIGURATION_KEY, describeKey, StorageFormatError } from "./keys.ts";
import { DENO_KV_LIMITS, type Write, write } from "./writes.ts";

/**
 * The write of a valid `configuration` to `["meta", "configuration"]`.
 *
 * @throws {MalformedSnapshotError} if it is too large for one value (about
 *   a thousand members), so that it never needs chunks.
 */
export function configurationWrite(configuration: Configuration): Write {
  const value = encodeMsgpack(copyConfiguration(configuration));
  if (value.length > DENO_KV_LIMITS.value) {
    throw new MalformedSnapshotError(
      `Snapshot configuration is not storable: it encodes to ${value.length} bytes, ` +
        `over ${DENO_KV_LIMITS.value}`,
    );
  }
  return write(CONFIGURATION_KEY, value);
}

/**
 * The stored configuration, if any.
 *
 * @throws {StorageFormatError} if the key holds anything but a valid
 *   configuration (`configurationProblem`).
 */
export async function readConfiguration(kv: Deno.Kv): Promise<Configuration | undefined> {
  const stored = await kv.get(CONFIGURATION_KEY);
  if (stored.versionstamp === null) return undefined;
  const where = `Malformed configuration at key ${describeKey(CONFIGURATION_KEY)}`;
  let value: unknown;
  try {
    if (!(stored.value instanceof Uint8Array)) throw new Error("not bytes");
    value = decodeMsgpack(stored.value);
  } catch (error) {
    throw new StorageFormatError(`${where}: ${(error as Error).message}`);
  }
  const problem = configurationProblem(value);
  if (problem !== undefined) throw new StorageFormatError(`${where}: ${problem}`);
  return copyConfiguration(value as Configuration);
}
