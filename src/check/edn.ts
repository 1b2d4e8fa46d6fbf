/**
 * A reader for the one-line EDN maps of porcupine's kv histories, e.g.
 * `{:process 0, :type :invoke, :f :put, :key "3", :value "x 0 0 y"}`.
 *
 * @module
 */

/** An EDN keyword such as `:invoke`, without its colon. */
export interface EdnKeyword {
  /** The name, e.g. `invoke`. */
  readonly keyword: string;
}

/** The EDN values the reader understands. */
export type EdnValue = null | boolean | number | string | EdnKeyword | EdnValue[];

/** Whether an EDN value is the keyword `name`. */
export function isKeyword(value: EdnValue | undefined, name?: string): value is EdnKeyword {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    (name === undefined || value.keyword === name);
}

const DELIMITERS = ' \t\r\n,{}[]()"';
const ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  "\\": "\\",
  n: "\n",
  t: "\t",
  r: "\r",
};

/**
 * Reads one EDN map whose keys are keywords, returning it keyed by keyword
 * name.
 *
 * @throws {SyntaxError} when the text is not such a map
 */
export function parseEdnMap(text: string): Map<string, EdnValue> {
  let at = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at column ${at + 1}`);
  };
  const skipSpace = () => {
    while (at < text.length && " \t\r\n,".includes(text[at])) at++;
  };
  const readToken = (): string => {
    const start = at;
    while (at < text.length && !DELIMITERS.includes(text[at])) at++;
    return text.slice(start, at);
  };
  const readString = (): string => {
    at++; // opening quote
    let value = "";
    while (at < text.length && text[at] !== '"') {
      if (text[at] === "\\") {
        const escaped = ESCAPES[text[at + 1]];
        if (escaped === undefined) fail("Unknown string escape");
        value += escaped;
        at += 2;
      } else {
        value += text[at++];
      }
    }
    if (at >= text.length) fail("Unterminated string");
    at++; // closing quote
    return value;
  };
  const readValue = (): EdnValue => {
    skipSpace();
    if (at >= text.length) return fail("Expected a value");
    const c = text[at];
    if (c === '"') return readString();
    if (c === "[") {
      at++;
      const items: EdnValue[] = [];
      for (;;) {
        skipSpace();
        if (at >= text.length) return fail("Unterminated vector");
        if (text[at] === "]") {
          at++;
          return items;
        }
        items.push(readValue());
      }
    }
    const token = readToken();
    if (token === "") return fail(`Unexpected ${JSON.stringify(c)}`);
    if (token === "nil") return null;
    if (token === "true") return true;
    if (token === "false") return false;
    if (token.startsWith(":") && token.length > 1) return { keyword: token.slice(1) };
    if (/^[-+]?\d+$/.test(token)) return Number(token);
    return fail(`Unsupported value ${JSON.stringify(token)}`);
  };

  skipSpace();
  if (text[at] !== "{") fail("Expected {");
  at++;
  const map = new Map<string, EdnValue>();
  for (;;) {
    skipSpace();
    if (at >= text.length) fail("Unterminated map");
    if (text[at] === "}") {
      at++;
      break;
    }
    const key = readValue();
    if (!isKeyword(key)) fail("Expected a keyword key");
    map.set((key as EdnKeyword).keyword, readValue());
  }
  skipSpace();
  if (at < text.length) fail("Unexpected text after the map");
  return map;
}
