/**
 * Conditional requests of the curl API (RFC 9110 §13): the entity tags of
 * `If-Match` and `If-None-Match` (§8.8.3), compared strongly for a write's
 * `If-Match` (§13.1.1) and weakly for a read's `If-None-Match` (§13.1.2).
 * A key's entity tag is its version, quoted: `ETag: "3.0.1"`.
 *
 * @module
 */

import {
  MAX_CONDITION_VERSION_CHARS,
  MAX_CONDITION_VERSIONS,
  type VersionCondition,
} from "../kv/commands.ts";

/** One entity tag: `"opaque"`, or `W/"opaque"` when weak (RFC 9110 §8.8.3). */
export interface EntityTag {
  /** Whether it was marked weak (`W/`). */
  readonly weak: boolean;
  /** The text between the quotes. */
  readonly opaque: string;
}

/** A parsed `If-Match` or `If-None-Match` field: `*`, or a list of entity tags. */
export type EntityTagList =
  | { readonly any: true }
  | { readonly any: false; readonly tags: readonly EntityTag[] };

/** The entity tag of a version: `"3.0.1"`. */
export function etagOf(version: string): string {
  return `"${version}"`;
}

// One element of a list, RFC 9110 §5.6.1 (empty elements are allowed): an
// entity tag or nothing, with optional whitespace, then a comma or the end.
// etagc = %x21 / %x23-7E / obs-text.
const LIST_ELEMENT = /[ \t]*(?:(W\/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|$)/y;
// A version without its quotes, as `?cas=` takes it. Not RFC 9110, but curl
// users write `If-Match: 3.0.1`, and the replica took it before lists existed:
// accepted when it is the whole field.
const BARE_VERSION = /^[\x21\x23-\x2b\x2d-\x7e]+$/;

/**
 * Parses the value of an `If-Match` or `If-None-Match` field (`field` names
 * it in the problem): `*`, or a comma-separated list of at most
 * {@linkcode MAX_CONDITION_VERSIONS} entity tags; or a problem to answer 400.
 */
export function parseEntityTags(
  field: string,
  value: string,
): EntityTagList | { readonly problem: string } {
  const text = value.trim();
  if (text === "*") return { any: true };
  if (BARE_VERSION.test(text) && !text.startsWith("W/")) {
    return { any: false, tags: [{ weak: false, opaque: text }] };
  }
  const tags: EntityTag[] = [];
  let at = 0;
  while (at < text.length) {
    LIST_ELEMENT.lastIndex = at;
    const match = LIST_ELEMENT.exec(text);
    if (match === null || LIST_ELEMENT.lastIndex === at) {
      return {
        problem: `${field} must be * or a list of entity tags such as "1.0.0", "2.0.1" ` +
          `(RFC 9110 §8.8.3); cannot read ${JSON.stringify(text.slice(at, at + 24))}`,
      };
    }
    if (match[2] !== undefined) {
      if (tags.length === MAX_CONDITION_VERSIONS) {
        return { problem: `${field} lists more than ${MAX_CONDITION_VERSIONS} entity tags` };
      }
      tags.push({ weak: match[1] !== undefined, opaque: match[2] });
    }
    at = LIST_ELEMENT.lastIndex;
  }
  if (tags.length === 0) return { problem: `${field} names no entity tag` };
  return { any: false, tags };
}

/** What makes a write conditional: its `If-Match` and `If-None-Match` fields and `?cas=`. */
export interface WriteConditionInput {
  /** The `If-Match` field, if sent. */
  readonly ifMatch?: string | undefined;
  /** The `If-None-Match` field, if sent. */
  readonly ifNoneMatch?: string | undefined;
  /** The `cas` query parameter, if given: one version, unquoted. */
  readonly cas?: string | undefined;
}

/**
 * The condition of a write (`PUT`, `DELETE`), or a problem to answer 400:
 *
 * - `If-None-Match: *`: the key must not exist (create only); no other value.
 * - `If-Match` compares strongly (RFC 9110 §13.1.1): a weak tag `W/"v"` could
 *   never match, so it is refused with the reason, as is `*`, which the
 *   condition model cannot express. A list holds when the current version is
 *   any of its tags: the state machine checks the list at execution
 *   (`VersionCondition`), atomically with the write, so the request is one
 *   command, linearizable like a single version.
 * - `?cas=VERSION`: one version, as `If-Match: "VERSION"`.
 * - Two of them at once are refused: which one would win is a guess.
 */
export function writeCondition(
  input: WriteConditionInput,
): { readonly condition: VersionCondition | undefined } | { readonly problem: string } {
  const given = [
    input.ifMatch === undefined ? undefined : "If-Match",
    input.ifNoneMatch === undefined ? undefined : "If-None-Match",
    input.cas === undefined ? undefined : "?cas=",
  ].filter((name) => name !== undefined);
  if (given.length > 1) return { problem: `Use only one of ${given.join(", ")}` };
  if (input.ifNoneMatch !== undefined) {
    const parsed = parseEntityTags("If-None-Match", input.ifNoneMatch);
    if ("any" in parsed && parsed.any) return { condition: null };
    return { problem: "If-None-Match on a write supports only *, meaning create only" };
  }
  if (input.cas !== undefined) {
    if (
      input.cas.length === 0 || input.cas === "*" || input.cas.length > MAX_CONDITION_VERSION_CHARS
    ) {
      return { problem: "cas needs one version, as returned in ETag" };
    }
    return { condition: input.cas };
  }
  if (input.ifMatch === undefined) return { condition: undefined };
  const parsed = parseEntityTags("If-Match", input.ifMatch);
  if ("problem" in parsed) return parsed;
  if (parsed.any) {
    return {
      problem: "If-Match: * (any current version) is not supported; " +
        "give the version from ETag, or use If-None-Match: * to create only",
    };
  }
  const weak = parsed.tags.find((tag) => tag.weak);
  if (weak !== undefined) {
    return {
      problem: `If-Match compares strongly (RFC 9110 §13.1.1): the weak tag W/"${weak.opaque}" ` +
        `can never match; send the ETag as the replica gave it, without W/`,
    };
  }
  const versions = [...new Set(parsed.tags.map((tag) => tag.opaque))];
  if (
    versions.some((version) => version.length === 0 || version.length > MAX_CONDITION_VERSION_CHARS)
  ) {
    return {
      problem: `If-Match needs versions of 1 to ${MAX_CONDITION_VERSION_CHARS} characters, ` +
        "as returned in ETag",
    };
  }
  return { condition: versions.length === 1 ? versions[0]! : versions };
}

/**
 * Whether a `GET` or `HEAD` of a key is answered 304 Not Modified (RFC 9110
 * §13.1.2): the key exists (`current` is its version) and `If-None-Match` is
 * `*` or lists its tag, compared weakly (`W/"v"` matches `"v"`). A missing
 * key ignores the field (§13.2.1: the answer is a 404 either way); a
 * malformed one is a problem to answer 400.
 */
export function notModified(
  ifNoneMatch: string | undefined,
  current: string | undefined,
): { readonly notModified: boolean } | { readonly problem: string } {
  if (ifNoneMatch === undefined || current === undefined) return { notModified: false };
  const parsed = parseEntityTags("If-None-Match", ifNoneMatch);
  if ("problem" in parsed) return parsed;
  return { notModified: parsed.any || parsed.tags.some((tag) => tag.opaque === current) };
}
