// The shape of the command table: commands, their options and arguments, and
// the permissions they need. Parsing, help, permission checks and shell
// completions are all read off one table of this shape.

/** What a value completes to: a fixed list, or file names. */
export type Completion = readonly string[] | "files";

/** One option of a command. */
export interface OptionSpec {
  type: "string" | "boolean";
  /** It may be given more than once; its values are collected in order. */
  multiple?: boolean;
  /** A one-letter alias, without the dash. */
  short?: string;
  /** The name of its value in help, e.g. `FILE`. */
  value?: string;
  help: string;
  /** What its value completes to; none for free text. */
  complete?: Completion;
}

/** The options given, by name. */
export type Values = Record<string, string | boolean | string[] | undefined>;

export type Permission = "git" | "read" | "write" | "net" | "env";

/** One command of the table. */
export interface CommandSpec {
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  /** How many positionals it takes; `Infinity` stops option parsing at the first one. */
  maxPositionals: number;
  /** What its positionals complete to: a fixed list for the first, or a command line to run. */
  arguments?: { name: string; complete: readonly string[] } | "command";
  permissions: (values: Values) => Permission[];
  /** What the permissions line of its help adds, beyond the flags. */
  permissionNote?: string;
  run: (values: Values, positionals: string[]) => Promise<number>;
}

/** The table: every command by name. */
export type Commands = Readonly<Record<string, CommandSpec>>;
