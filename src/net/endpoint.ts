/**
 * Host and port of a network endpoint, worked out one way for every part that
 * needs it: the peer transport dials a replica's URL, and the starter and the
 * replica bind the address that URL names (or `--listen`). Keeping the scheme
 * default and the IPv6 bracket rule here means the address a replica binds is
 * always the one its peers dial.
 *
 * @module
 */

/** A host name (IPv6 literals without brackets) and a TCP port. */
export interface Endpoint {
  /** Host name or IP literal, as `Deno.listen` and `Deno.connect` take it. */
  readonly hostname: string;
  /** TCP port, 0 to 65535. */
  readonly port: number;
}

/**
 * The endpoint an `http:` or `https:` URL names: its port, or the scheme's
 * default (443 for https, 80 for http) when it names none.
 */
export function urlEndpoint(url: string | URL): Endpoint {
  const parsed = typeof url === "string" ? new URL(url) : url;
  return {
    hostname: unbracket(parsed.hostname),
    port: Number(parsed.port || (parsed.protocol === "https:" ? 443 : 80)),
  };
}

/**
 * Parses `HOST:PORT`, an IPv6 host in brackets (`[::1]:8001`); `undefined`
 * when the text is not of that form (an unbracketed IPv6 address such as
 * `::1` is ambiguous, so refused) or the port is out of range.
 */
export function parseHostPort(text: string): Endpoint | undefined {
  const match = /^(?:\[([^\[\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(text);
  if (match === null) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { hostname: match[1] ?? match[2]!, port };
}

/** Renders an endpoint as `HOST:PORT`, bracketing IPv6 literals. */
export function formatHostPort(endpoint: Endpoint): string {
  const host = endpoint.hostname.includes(":") ? `[${endpoint.hostname}]` : endpoint.hostname;
  return `${host}:${endpoint.port}`;
}

function unbracket(host: string): string {
  return host.replace(/^\[(.*)\]$/, "$1");
}

/**
 * Whether the URL `url` names this machine (`localhost`, `[::1]`,
 * `127.x.x.x`): where the local cluster's secret file may be used.
 */
export function isLoopbackUrl(url: string): boolean {
  const host = new URL(url).hostname;
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
