/**
 * The `--cors-origin ORIGIN` option, shared by the replica (`replica.ts`) and
 * the starter that passes it on (`start.ts`). In a room of its own so that
 * the starter, a small supervisor, does not load the replica's whole module
 * graph to parse one option.
 *
 * @module
 */

import { corsOriginProblem, MAX_CORS_ORIGINS } from "../server/config.ts";
import { type ParsedArgs, UsageError } from "./args.ts";

/**
 * `--cors-origin ORIGIN`, repeatable: origins whose pages may call this
 * replica from a browser (CORS), added to the cluster file's `corsOrigins`;
 * absent, none. Each must be an origin as browsers send it
 * (`corsOriginProblem`), at most {@linkcode MAX_CORS_ORIGINS} of them.
 *
 * @throws {UsageError} if one is not such an origin, or there are too many.
 */
export function corsOriginsOption(args: ParsedArgs): string[] {
  const origins = args.options.get("cors-origin") ?? [];
  if (origins.length > MAX_CORS_ORIGINS) {
    throw new UsageError(
      `--cors-origin is given ${origins.length} times; at most ${MAX_CORS_ORIGINS}`,
    );
  }
  for (const origin of origins) {
    const problem = corsOriginProblem(origin);
    if (problem !== undefined) throw new UsageError(`--cors-origin: ${problem}`);
  }
  return [...new Set(origins)];
}
