// Reading a command's arguments against its entry in the table; usage errors name
// the command, and the help they show is rendered from the table.

import type { AllocateOptions } from "../allocate.ts";
import { quoted } from "../errors.ts";
import type { CommandSpec, Values } from "./spec.ts";
import { nearest } from "./suggest.ts";

/**
 * A mistake in how the command was called: exit code 2, followed by the help
 * of the command it names, or the general help when it names none; a brief
 * one (a mistyped word) is one line alone.
 */
export class UsageError extends Error {
  /** The command whose help applies. */
  readonly command: string | undefined;
  /** The message says all there is: print it alone, with no help text after it. */
  readonly brief: boolean;
  constructor(message: string, command?: string, brief = false) {
    super(message);
    this.name = "UsageError";
    this.command = command;
    this.brief = brief;
  }
}

/**
 * A word that is no command or no option of a command: one line, naming the
 * nearest valid one when there is one, and where the valid ones are listed.
 */
export function unknownWord(
  what: string,
  word: string,
  candidates: readonly string[],
  command?: string,
): UsageError {
  const near = nearest(word, candidates);
  const help = command === undefined
    ? `"worktree-ports --help" lists the commands`
    : `"worktree-ports ${command} --help" lists its options`;
  return new UsageError(
    `Unknown ${what} ${quoted(word)}${command === undefined ? "" : ` for "${command}"`}` +
      `${near === undefined ? "" : ` (did you mean "${near}"?)`}; ${help}`,
    command,
    true,
  );
}

/** Reads the arguments after a command name by its entry in the table. */
export function parseCommandArgs(
  command: string,
  spec: CommandSpec,
  args: readonly string[],
): { values: Values; positionals: string[] } {
  const values: Values = {};
  const positionals: string[] = [];
  for (let index = 0; index < args.length; index++) {
    const arg = args[index];
    if (arg === "--") {
      positionals.push(...args.slice(index + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      if (spec.maxPositionals === Infinity) {
        positionals.push(...args.slice(index));
        break;
      }
      positionals.push(arg);
      continue;
    }
    const equals = arg.indexOf("=");
    const flag = equals === -1 ? arg : arg.slice(0, equals);
    const name = flag.startsWith("--")
      ? flag.slice(2)
      : Object.keys(spec.options).find((key) => `-${spec.options[key].short}` === flag);
    const option = name === undefined ? undefined : spec.options[name];
    if (name === undefined || option === undefined) {
      const flags = Object.entries(spec.options).flatMap(([key, { short }]) =>
        flag.startsWith("--") || short === undefined ? [`--${key}`] : [`-${short}`]
      );
      throw unknownWord("option", flag, flags, command);
    }
    if (option.type === "boolean") {
      if (equals !== -1) {
        throw new UsageError(`Option "${flag}" takes no value`, command);
      }
      values[name] = true;
      continue;
    }
    let value: string;
    if (equals !== -1) {
      value = arg.slice(equals + 1);
    } else if (index + 1 < args.length) {
      value = args[++index];
    } else {
      throw new UsageError(
        `Option "${flag}" needs a value (${option.value})`,
        command,
      );
    }
    values[name] = option.multiple
      ? [...(values[name] as string[] | undefined ?? []), value]
      : value;
  }
  if (positionals.length > spec.maxPositionals) {
    throw new UsageError(
      `Unexpected argument ${quoted(positionals.at(-1)!)} for "${command}"`,
      command,
    );
  }
  return { values, positionals };
}

export function allocateOptions(values: Values, command: string): AllocateOptions {
  const options: AllocateOptions = {
    config: values.config as string | undefined,
    output: values.output as string | undefined,
    force: values.force === true,
    overrideNames: FLAG_NAMES,
  };
  if (values.port !== undefined) options.ports = parsePortFlags(values.port as string[], command);
  if (values.stride !== undefined) {
    options.stride = parseCount("--stride", values.stride, command);
  }
  if (values.slots !== undefined) options.slots = parseCount("--slots", values.slots, command);
  if (values.scope !== undefined) options.scope = parseScopeFlag(values.scope, command);
  if (values["lock-timeout"] !== undefined) {
    const text = values["lock-timeout"] as string;
    const seconds = Number(text);
    if (text.trim() === "" || !(seconds >= 0)) {
      throw new UsageError(
        `Option "--lock-timeout" must be a number of seconds, 0 or more, got "${text}"`,
        command,
      );
    }
    options.lockTimeoutMs = seconds * 1000;
  }
  return options;
}

/** Errors that a flag causes name the flag. */
const FLAG_NAMES = {
  ports: `option "--port"`,
  stride: `option "--stride"`,
  slots: `option "--slots"`,
};

function parsePortFlags(flags: readonly string[], command: string): Record<string, number> {
  const ports: Record<string, number> = {};
  const given = new Map<string, string>();
  for (const flag of flags) {
    const match = /^([^=]+)=(\d+)$/.exec(flag);
    if (!match) {
      throw new UsageError(
        `Option "--port" must look like KEY=BASE, e.g. web=3000, got ${quoted(flag)}`,
        command,
      );
    }
    const earlier = given.get(match[1]);
    if (earlier !== undefined) {
      throw new UsageError(
        `Option "--port" names the key ${quoted(match[1])} more than once (${quoted(earlier)} and ${
          quoted(flag)
        }; give each key once)`,
        command,
      );
    }
    given.set(match[1], flag);
    ports[match[1]] = Number(match[2]);
  }
  return ports;
}

function parseScopeFlag(value: unknown, command: string): "machine" | "repository" {
  if (value !== "machine" && value !== "repository") {
    throw new UsageError(
      `Option "--scope" must be machine or repository, got "${value}"`,
      command,
    );
  }
  return value;
}

function parseCount(flag: string, value: unknown, command: string): number {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new UsageError(
      `Option "${flag}" must be a whole number, got "${value}"`,
      command,
    );
  }
  return Number(value);
}
