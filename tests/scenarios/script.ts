/**
 * The file format of scenario scripts, after etcd raft's `datadriven` test
 * files (`testdata/*.txt`): each command is one line, followed by a `----`
 * line and the command's expected output, which ends at the first blank line.
 * Comment lines (`#`) and blank lines between commands are kept verbatim, so a
 * file rewritten with fresh output keeps its explanations.
 *
 * @module
 */

/** One command of a script with the output the file expects of it. */
export interface ScriptBlock {
  /** Comment and blank lines before the command, verbatim. */
  readonly preamble: readonly string[];
  /** The command line. */
  readonly command: string;
  /** Line number of the command (1-based), for error messages. */
  readonly line: number;
  /** The expected output lines (never blank lines). */
  readonly expected: readonly string[];
}

/** A parsed script: its blocks, and comment lines after the last one. */
export interface Script {
  /** Commands in file order. */
  readonly blocks: readonly ScriptBlock[];
  /** Comment and blank lines after the last command. */
  readonly trailer: readonly string[];
}

/** The line that separates a command from its output. */
export const SEPARATOR = "----";

/**
 * Parses a scenario script.
 *
 * @throws {SyntaxError} if a command is not followed by the separator line.
 */
export function parseScript(text: string, name = "script"): Script {
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const blocks: ScriptBlock[] = [];
  let preamble: string[] = [];
  let index = 0;
  while (index < lines.length) {
    const line = lines[index]!;
    if (line.trim() === "" || line.startsWith("#")) {
      preamble.push(line);
      index++;
      continue;
    }
    const commandLine = index + 1;
    if (lines[index + 1] !== SEPARATOR) {
      throw new SyntaxError(`${name}:${commandLine + 1}: expected "${SEPARATOR}" after a command`);
    }
    index += 2;
    const expected: string[] = [];
    while (index < lines.length && lines[index]!.trim() !== "") {
      expected.push(lines[index]!);
      index++;
    }
    blocks.push({ preamble, command: line.trim(), line: commandLine, expected });
    preamble = [];
  }
  return { blocks, trailer: preamble };
}

/**
 * Renders a script with `outputs` (one per block, in order) as its expected
 * output: what `REWRITE=1` writes back.
 */
export function formatScript(script: Script, outputs: readonly (readonly string[])[]): string {
  const lines: string[] = [];
  script.blocks.forEach((block, index) => {
    lines.push(...block.preamble, block.command, SEPARATOR, ...outputs[index]!);
    // The blank line that ends an output; the next preamble supplies its own
    // separation, so only add one when it does not start with a blank line.
    const next = script.blocks[index + 1]?.preamble ?? script.trailer;
    if (next.length === 0 || next[0]!.trim() !== "") lines.push("");
  });
  lines.push(...script.trailer);
  while (lines.length > 0 && lines[lines.length - 1]!.trim() === "") lines.pop();
  return `${lines.join("\n")}\n`;
}
