#!/usr/bin/env -S deno run --allow-run=git --allow-read --allow-write --allow-net=127.0.0.1,[::1],0.0.0.0
/**
 * The `worktree-ports` command line: allocates the current worktree's ports
 * and shows them.
 *
 * ```sh
 * deno run --allow-run=git --allow-read --allow-write \
 *   --allow-net='127.0.0.1,[::1],0.0.0.0' jsr:@org/worktree-ports/cli allocate
 * ```
 *
 * It can also be called in-process:
 *
 * ```ts ignore
 * import { main } from "@org/worktree-ports/cli";
 *
 * const exitCode = await main(["show", "port"]);
 * ```
 *
 * @module
 */
import {
  allocate,
  type AllocateOptions,
  formatPortFile,
  PROBE_HOSTNAMES,
  readBundle,
  WorktreePortsError,
} from "./mod.ts";
import denoJson from "./deno.json" with { type: "json" };

type OptionSpec = {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
  value?: string;
  help: string;
};

type Permission = "run" | "read" | "write" | "net";

interface CommandSpec {
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  maxPositionals: number;
  permissions: Permission[];
}

const HELP_OPTION: OptionSpec = {
  type: "boolean",
  short: "h",
  help: "Show help for this command",
};

const OUTPUT_OPTION: OptionSpec = {
  type: "string",
  value: "FILE",
  help: "The port file (default: .worktree-ports.json in the worktree root)",
};

const COMMANDS: Record<string, CommandSpec> = {
  allocate: {
    usage: "allocate [options]",
    summary: "Give this worktree its bundle of ports, write it to the port file and print it",
    options: {
      config: {
        type: "string",
        value: "FILE",
        help: "Config file (default: worktree-ports.config.json in the worktree root, if any)",
      },
      port: {
        type: "string",
        multiple: true,
        value: "KEY=BASE",
        help: "Base port of KEY; repeat for more keys (replaces the config's ports)",
      },
      stride: { type: "string", value: "N", help: "Distance between slots (default: 100)" },
      slots: {
        type: "string",
        value: "N",
        help: "Slots for linked worktrees, 1 to N (default: 50)",
      },
      output: OUTPUT_OPTION,
      force: {
        type: "boolean",
        help: "Choose a slot afresh even when the current one could be kept",
      },
      "lock-timeout": {
        type: "string",
        value: "SECONDS",
        help: "How long to wait for another allocation to finish (default: 10)",
      },
      help: HELP_OPTION,
    },
    maxPositionals: 0,
    permissions: ["run", "read", "write", "net"],
  },
  show: {
    usage: "show [KEY] [options]",
    summary: "Print this worktree's bundle, or just the value of KEY, without changing anything",
    options: { output: OUTPUT_OPTION, help: HELP_OPTION },
    maxPositionals: 1,
    permissions: ["run", "read"],
  },
};

const NET_FLAG_HOSTS = PROBE_HOSTNAMES.map((host) => host.includes(":") ? `[${host}]` : host)
  .join(",");

const PERMISSION_FLAGS: Record<Permission, string> = {
  run: "--allow-run=git",
  read: "--allow-read",
  write: "--allow-write",
  net: `--allow-net=${NET_FLAG_HOSTS}`,
};

/** A mistake in how the command was called: exit code 2, followed by the usage that applies. */
class UsageError extends Error {
  readonly usage: string;
  constructor(message: string, usage: string) {
    super(message);
    this.name = "UsageError";
    this.usage = usage;
  }
}

/** Parsed command line of one command. */
interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

function parseCommandArgs(command: string, args: string[]): ParsedArgs {
  const spec = COMMANDS[command].options;
  const values: ParsedArgs["values"] = {};
  const positionals: string[] = [];
  for (let index = 0; index < args.length; index++) {
    const arg = args[index];
    if (arg === "--") {
      positionals.push(...args.slice(index + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const equals = arg.indexOf("=");
    const flag = equals === -1 ? arg : arg.slice(0, equals);
    const name = flag.startsWith("--")
      ? flag.slice(2)
      : Object.keys(spec).find((key) => `-${spec[key].short}` === flag);
    const option = name === undefined ? undefined : spec[name];
    if (name === undefined || option === undefined) {
      throw new UsageError(`Unknown option "${flag}" for "${command}"`, commandUsage(command));
    }
    if (option.type === "boolean") {
      if (equals !== -1) {
        throw new UsageError(`Option "${flag}" takes no value`, commandUsage(command));
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
        commandUsage(command),
      );
    }
    if (option.multiple) {
      values[name] = [...(values[name] as string[] | undefined ?? []), value];
    } else {
      values[name] = value;
    }
  }
  if (positionals.length > COMMANDS[command].maxPositionals) {
    throw new UsageError(
      `Unexpected argument "${positionals.at(-1)}" for "${command}"`,
      commandUsage(command),
    );
  }
  return { values, positionals };
}

function usage(): string {
  const commands = Object.values(COMMANDS).map((spec) =>
    `  ${spec.usage.padEnd(24)} ${spec.summary}`
  );
  return [
    `worktree-ports ${denoJson.version}: a distinct bundle of ports for every git worktree`,
    "",
    "Usage: worktree-ports COMMAND [options]",
    "",
    "Commands:",
    ...commands,
    "",
    "Options:",
    "  -h, --help               Show this help (and COMMAND --help for a command's options)",
    "  -V, --version            Print the version",
    "",
    "Permissions: " + requiredFlags(COMMANDS.allocate.permissions),
  ].join("\n");
}

function commandUsage(command: string): string {
  const spec = COMMANDS[command];
  const options = Object.entries(spec.options).map(([name, option]) => {
    const flag = (option.short ? `-${option.short}, ` : "") + `--${name}` +
      (option.value ? ` ${option.value}` : "");
    return `  ${flag.padEnd(24)} ${option.help}`;
  });
  return [
    `Usage: worktree-ports ${spec.usage}`,
    "",
    spec.summary,
    "",
    "Options:",
    ...options,
    "",
    "Permissions: " + requiredFlags(spec.permissions),
  ].join("\n");
}

function requiredFlags(permissions: readonly Permission[]): string {
  return permissions.map((permission) => PERMISSION_FLAGS[permission]).join(" ");
}

/**
 * Returns the flags of the permissions that are not granted. Asks with
 * `Deno.permissions.query`, so nothing prompts.
 */
async function missingPermissions(
  permissions: readonly Permission[],
): Promise<Permission[]> {
  const missing: Permission[] = [];
  for (const permission of permissions) {
    const descriptors: Deno.PermissionDescriptor[] = permission === "net"
      ? PROBE_HOSTNAMES.map((host) => ({
        name: "net",
        host: host.includes(":") ? `[${host}]` : host,
      }))
      : permission === "run"
      ? [{ name: "run", command: "git" }]
      : [{ name: permission }];
    for (const descriptor of descriptors) {
      const { state } = await Deno.permissions.query(descriptor);
      if (state !== "granted") {
        if (permission !== "run" || !(await gitIsMissing())) missing.push(permission);
        break;
      }
    }
  }
  return missing;
}

/**
 * Deno reports `--allow-run=git` as not granted when git is not on PATH, the
 * same as when the flag is missing. Spawning git tells the two apart: a
 * missing binary fails before any permission check. It is only tried where
 * Deno cannot prompt, so asking never turns into an interactive question.
 */
async function gitIsMissing(): Promise<boolean> {
  if (Deno.stdin.isTerminal() && Deno.stderr.isTerminal()) return false;
  try {
    await new Deno.Command("git", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}

async function runAllocate(values: ParsedArgs["values"]): Promise<number> {
  const options: AllocateOptions = {
    config: values.config as string | undefined,
    output: values.output as string | undefined,
    force: values.force === true,
  };
  if (values.port !== undefined) options.ports = parsePortFlags(values.port as string[]);
  if (values.stride !== undefined) options.stride = parseCount("--stride", values.stride);
  if (values.slots !== undefined) options.slots = parseCount("--slots", values.slots);
  if (values["lock-timeout"] !== undefined) {
    const seconds = Number(values["lock-timeout"]);
    if (values["lock-timeout"] === "" || !(seconds >= 0)) {
      throw new UsageError(
        `Option "--lock-timeout" must be a number of seconds, 0 or more, got "${
          values["lock-timeout"]
        }"`,
        commandUsage("allocate"),
      );
    }
    options.lockTimeoutMs = seconds * 1000;
  }
  let notice: ReturnType<typeof setTimeout> | undefined;
  options.onLockWait = (path) => {
    // Most waits last milliseconds; only a long one deserves a line.
    notice = setTimeout(() => {
      console.error(`waiting for "${path}": another worktree-ports process holds the lock`);
    }, 1000);
  };
  try {
    const allocation = await allocate(options);
    for (const warning of allocation.warnings) console.error(`warning: ${warning}`);
    await writeStdout(formatPortFile(allocation));
    return 0;
  } finally {
    clearTimeout(notice);
  }
}

function parsePortFlags(flags: readonly string[]): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const flag of flags) {
    const match = /^([^=]+)=(\d+)$/.exec(flag);
    if (!match) {
      throw new UsageError(
        `Option "--port" must look like KEY=BASE, e.g. web=3000, got "${flag}"`,
        commandUsage("allocate"),
      );
    }
    ports[match[1]] = Number(match[2]);
  }
  return ports;
}

function parseCount(flag: string, value: unknown): number {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new UsageError(
      `Option "${flag}" must be a whole number, got "${value}"`,
      commandUsage("allocate"),
    );
  }
  return Number(value);
}

async function runShow(
  values: ParsedArgs["values"],
  positionals: string[],
): Promise<number> {
  const bundle = await readBundle({ output: values.output as string | undefined });
  if (bundle === undefined) {
    console.error(`error: This worktree has no ports yet (run "worktree-ports allocate")`);
    return 1;
  }
  if (bundle.foreign) {
    console.error(
      `warning: "${bundle.path}" was written for another worktree (copied?); run "worktree-ports allocate" to get this worktree's own ports`,
    );
  }
  const [key] = positionals;
  if (key === undefined) {
    await writeStdout(JSON.stringify(bundle.data, null, 2) + "\n");
    return 0;
  }
  if (!Object.hasOwn(bundle.data, key)) {
    const keys = Object.keys(bundle.data).filter((name) => name !== "worktree_ports");
    console.error(
      `error: "${bundle.path}" has no key "${key}" (it has: ${
        keys.map((k) => `"${k}"`).join(", ")
      })`,
    );
    return 1;
  }
  const value = bundle.data[key];
  await writeStdout((typeof value === "string" ? value : JSON.stringify(value)) + "\n");
  return 0;
}

async function writeStdout(text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let written = 0; written < bytes.length;) {
    written += await Deno.stdout.write(bytes.subarray(written));
  }
}

function exitCodeOf(error: unknown): number {
  if (error instanceof UsageError) return 2;
  if (error instanceof WorktreePortsError) {
    return error.code === "INVALID_CONFIG" || error.code === "NOT_A_WORKTREE" ? 2 : 1;
  }
  if (error instanceof Deno.errors.NotCapable) return 2;
  return 1;
}

/**
 * Runs the command line and returns its exit code: 0 success, 1 the
 * operation failed, 2 a usage, permission or configuration error. Results go
 * to stdout; errors and warnings go to stderr.
 *
 * @param args The arguments after the program name, e.g. `["show", "port"]`.
 * @returns The exit code.
 *
 * @example Usage
 * ```ts ignore
 * import { main } from "@org/worktree-ports/cli";
 *
 * Deno.exit(await main(["allocate", "--port", "web=3000"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  try {
    const [command, ...rest] = args;
    if (command === undefined) throw new UsageError("Missing command", usage());
    if (command === "--help" || command === "-h") {
      console.log(usage());
      return 0;
    }
    if (command === "--version" || command === "-V") {
      console.log(denoJson.version);
      return 0;
    }
    if (!Object.hasOwn(COMMANDS, command)) {
      throw new UsageError(
        command.startsWith("-") ? `Unknown option "${command}"` : `Unknown command "${command}"`,
        usage(),
      );
    }
    const { values, positionals } = parseCommandArgs(command, rest);
    if (values.help) {
      console.log(commandUsage(command));
      return 0;
    }
    const missing = await missingPermissions(COMMANDS[command].permissions);
    if (missing.length > 0) {
      console.error(
        `error: Missing permission: run again with ${requiredFlags(missing)} ` +
          `("${command}" needs ${requiredFlags(COMMANDS[command].permissions)})`,
      );
      return 2;
    }
    return command === "allocate" ? await runAllocate(values) : await runShow(values, positionals);
  } catch (error) {
    const code = exitCodeOf(error);
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    if (error instanceof UsageError) console.error(`\n${error.usage}`);
    return code;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
