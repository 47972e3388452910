#!/usr/bin/env -S deno run --allow-run=git --allow-read --allow-write --allow-net=127.0.0.1,[::1],0.0.0.0 --allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA
/**
 * The `worktree-ports` command line: allocates the current worktree's ports,
 * shows them, exports them as environment variables, runs commands with
 * them, and lists, checks, repairs and releases the bundles of every worktree.
 *
 * ```sh
 * deno run --allow-run=git --allow-read --allow-write \
 *   --allow-net='127.0.0.1,[::1],0.0.0.0' \
 *   --allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA \
 *   jsr:@org/worktree-ports/cli allocate
 * ```
 *
 * It can also be called in-process, where it returns the exit code and
 * prints to the console:
 *
 * ```ts
 * import { main } from "@org/worktree-ports/cli";
 * import assert from "node:assert/strict";
 *
 * const printed: string[] = [];
 * const { log, error } = console;
 * console.log = console.error = (...data: unknown[]) => printed.push(data.join(" "));
 * try {
 *   assert.equal(await main(["--version"]), 0);
 *   assert.equal(await main(["no-such-command"]), 2);
 * } finally {
 *   Object.assign(console, { log, error });
 * }
 * assert.match(printed[0], /^\d+\.\d+\.\d+/);
 * assert.equal(printed[1], 'error: Unknown command "no-such-command"');
 * ```
 *
 * @module
 */
import {
  allocate,
  type AllocateOptions,
  type Allocation,
  bundleEnv,
  configWarnings,
  type EnvFormat,
  fixMachine,
  fixWorktrees,
  formatEnv,
  formatPortFile,
  INDEX_ENV_VARIABLES,
  inspectMachine,
  inspectWorktrees,
  listSlots,
  listWorktrees,
  loadBundle,
  loadConfig,
  type LoadedBundle,
  type Move,
  PROBE_HOSTNAMES,
  readBundle,
  releasePorts,
  runWithPorts,
  type SlotInfo,
  WorktreePortsError,
  type WorktreeStatus,
} from "./mod.ts";

// ---------------------------------------------------------------------------
// Commands and their options
// ---------------------------------------------------------------------------

type OptionSpec = {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
  value?: string;
  help: string;
};

type Values = Record<string, string | boolean | string[] | undefined>;

type Permission = "git" | "read" | "write" | "net" | "env";

interface CommandSpec {
  usage: string;
  summary: string;
  options: Record<string, OptionSpec>;
  /** How many positionals it takes; `Infinity` stops option parsing at the first one. */
  maxPositionals: number;
  permissions: (values: Values) => Permission[];
  /** What the permissions line of its help adds, beyond the flags. */
  permissionNote?: string;
  run: (values: Values, positionals: string[]) => Promise<number>;
}

const OPTIONS = {
  config: {
    type: "string",
    value: "FILE",
    help: "Config file (default: worktree-ports.config.json in the worktree root, if any)",
  },
  port: {
    type: "string",
    multiple: true,
    value: "KEY=BASE",
    help: "Base port of KEY, added to the config's ports or replacing KEY's; repeatable",
  },
  stride: { type: "string", value: "N", help: "Distance between slots (default: 100)" },
  slots: { type: "string", value: "N", help: "Slots for linked worktrees, 1 to N (default: 50)" },
  output: {
    type: "string",
    value: "FILE",
    help: "The port file (default: .worktree-ports.json in the worktree root)",
  },
  "lock-timeout": {
    type: "string",
    value: "SECONDS",
    help: "How long to wait for another allocation to finish (default: 10)",
  },
  scope: {
    type: "string",
    value: "SCOPE",
    help:
      "machine (avoid every indexed worktree's ports, the default) or repository (this one's only)",
  },
  help: { type: "boolean", short: "h", help: "Show help for this command" },
} satisfies Record<string, OptionSpec>;

/** The options of every command that may allocate. */
const ALLOCATION_OPTIONS = {
  config: OPTIONS.config,
  port: OPTIONS.port,
  stride: OPTIONS.stride,
  slots: OPTIONS.slots,
  output: OPTIONS.output,
  "lock-timeout": OPTIONS["lock-timeout"],
  scope: OPTIONS.scope,
};

const ALLOCATING: Permission[] = ["git", "read", "write", "net", "env"];

/** The machine-wide index is found through the environment; repository scope needs none of it. */
function allocating(values: Values): Permission[] {
  return values.scope === "repository" ? ALLOCATING.filter((p) => p !== "env") : ALLOCATING;
}

const COMMANDS: Record<string, CommandSpec> = {
  allocate: {
    usage: "allocate [options]",
    summary: "Give this worktree its bundle of ports, write it to the port file and print it",
    options: {
      ...ALLOCATION_OPTIONS,
      force: {
        type: "boolean",
        help: "Choose a slot afresh even when the current one could be kept",
      },
      timings: {
        type: "boolean",
        help: "Print where the time went (git, lock wait, locked, total) to stderr",
      },
      "dry-run": {
        type: "boolean",
        help: "Print what would be written, chosen the same way under the lock; write nothing",
      },
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: allocating,
    run: runAllocate,
  },
  show: {
    usage: "show [KEY] [options]",
    summary:
      "Print this worktree's bundle, or just the value of KEY (updating a file the config outgrew)",
    options: { output: OPTIONS.output, config: OPTIONS.config, help: OPTIONS.help },
    maxPositionals: 1,
    permissions: () => ["git", "read"],
    run: runShow,
  },
  env: {
    usage: "env [options]",
    summary: "Print this worktree's ports as environment variables (allocating first if needed)",
    options: {
      format: {
        type: "string",
        value: "FORMAT",
        help: "shell (export lines to eval, the default), dotenv, json or fish (set -gx lines)",
      },
      ...ALLOCATION_OPTIONS,
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: allocating,
    run: runEnv,
  },
  exec: {
    usage: "exec [options] [--] COMMAND [ARGS...]",
    summary: "Run COMMAND with this worktree's ports in its environment (allocating if needed)",
    options: { ...ALLOCATION_OPTIONS, help: OPTIONS.help },
    maxPositionals: Infinity,
    permissions: allocating,
    permissionNote: "and --allow-run=git,COMMAND (or --allow-run) to run COMMAND",
    run: runExec,
  },
  list: {
    usage: "list [options]",
    summary: "Show every worktree's slot, ports, state and which ports are listening",
    options: {
      json: { type: "boolean", help: "Print a JSON array instead of a table" },
      all: {
        type: "boolean",
        help: "Every indexed worktree on the machine, grouped by repository",
      },
      output: OPTIONS.output,
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: () => ["git", "read", "net", "env"],
    run: runList,
  },
  slots: {
    usage: "slots [--json] [options]",
    summary: "Show every slot's bundle, 0 to slots, who holds it, and which are skipped and why",
    options: {
      json: { type: "boolean", help: "Print a JSON array instead of a table" },
      config: OPTIONS.config,
      port: OPTIONS.port,
      stride: OPTIONS.stride,
      slots: OPTIONS.slots,
      output: OPTIONS.output,
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: () => ["git", "read", "net"],
    run: runSlots,
  },
  check: {
    usage: "check [--fix] [options]",
    summary:
      "Exit 1 if two worktrees share a port or a port file is copied, unreadable or outdated",
    options: {
      fix: {
        type: "boolean",
        help: "Repair what check finds, moving one worktree of each conflicting pair",
      },
      all: {
        type: "boolean",
        help: "Check (and with --fix, repair) every indexed worktree on the machine",
      },
      ...ALLOCATION_OPTIONS,
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: (values) =>
      values.fix
        ? allocating(values)
        : ["git", "read", ...allocating(values).filter((p) => p === "env")],
    run: runCheck,
  },
  release: {
    usage: "release [options]",
    summary: "Delete this worktree's port file so that its slot is free again",
    options: {
      "all-stale": {
        type: "boolean",
        help: "Instead, list worktrees whose directory is gone (they already reserve nothing)",
      },
      output: OPTIONS.output,
      "lock-timeout": OPTIONS["lock-timeout"],
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: (values) => values["all-stale"] ? ["git", "read"] : ["git", "read", "write"],
    run: runRelease,
  },
  completions: {
    usage: "completions bash|zsh|fish",
    summary: "Print a shell completion script for the commands and their options",
    options: { help: OPTIONS.help },
    maxPositionals: 1,
    permissions: () => [],
    run: runCompletions,
  },
};

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/** A mistake in how the command was called: exit code 2, followed by the usage that applies. */
class UsageError extends Error {
  readonly usage: string;
  constructor(message: string, usage: string) {
    super(message);
    this.name = "UsageError";
    this.usage = usage;
  }
}

function parseCommandArgs(
  command: string,
  args: string[],
): { values: Values; positionals: string[] } {
  const spec = COMMANDS[command];
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
      throw new UsageError(
        `Unknown option ${quoted(flag)} for "${command}"`,
        commandUsage(command),
      );
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
    values[name] = option.multiple
      ? [...(values[name] as string[] | undefined ?? []), value]
      : value;
  }
  if (positionals.length > spec.maxPositionals) {
    throw new UsageError(
      `Unexpected argument ${quoted(positionals.at(-1)!)} for "${command}"`,
      commandUsage(command),
    );
  }
  return { values, positionals };
}

/**
 * The version in deno.json, imported as JSON so that it is built into a
 * compiled binary, and only when asked: a JSON module costs every run of
 * the CLI most of a megabyte.
 */
async function version(): Promise<string> {
  const { default: config } = await import("./deno.json", { with: { type: "json" } });
  return config.version;
}

function usage(): string {
  const commands = Object.values(COMMANDS).map((spec) =>
    `  ${spec.usage.padEnd(38)} ${spec.summary}`
  );
  return [
    "worktree-ports: a distinct bundle of ports for every git worktree",
    "",
    "Usage: worktree-ports COMMAND [options]",
    "",
    "Commands:",
    ...commands,
    `  ${"help [COMMAND]".padEnd(38)} Show this help, or COMMAND's options and permissions`,
    "",
    "Options:",
    `  ${"-h, --help".padEnd(38)} Show this help (and COMMAND --help for a command's options)`,
    `  ${"-V, --version".padEnd(38)} Print the version`,
    "",
    "Permissions: " + requiredFlags(ALLOCATING),
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
    ...permissionLines(spec),
  ].join("\n");
}

/** The help's permission lines: what the command needs, and what each flag changes. */
function permissionLines(spec: CommandSpec): string[] {
  const needed = spec.permissions({});
  const lines = [
    "Permissions: " +
    [needed.length === 0 ? "none" : requiredFlags(needed), spec.permissionNote]
      .filter(Boolean).join(" "),
  ];
  for (const [name, option] of Object.entries(spec.options)) {
    if (option.type !== "boolean" || name === "help") continue;
    const changed = spec.permissions({ [name]: true });
    if (requiredFlags(changed) !== requiredFlags(needed)) {
      lines.push(`  with --${name}: ${requiredFlags(changed)}`);
    }
  }
  return lines;
}

function allocateOptions(values: Values, command: string): AllocateOptions {
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
        commandUsage(command),
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
        commandUsage(command),
      );
    }
    const earlier = given.get(match[1]);
    if (earlier !== undefined) {
      throw new UsageError(
        `Option "--port" names the key ${quoted(match[1])} more than once (${quoted(earlier)} and ${
          quoted(flag)
        }; give each key once)`,
        commandUsage(command),
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
      commandUsage(command),
    );
  }
  return value;
}

function parseCount(flag: string, value: unknown, command: string): number {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new UsageError(
      `Option "${flag}" must be a whole number, got "${value}"`,
      commandUsage(command),
    );
  }
  return Number(value);
}

// ---------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------

const NET_FLAG_HOSTS = PROBE_HOSTNAMES.map((host) => host.includes(":") ? `[${host}]` : host)
  .join(",");

const PERMISSION_FLAGS: Record<Permission, string> = {
  git: "--allow-run=git",
  read: "--allow-read",
  write: "--allow-write",
  // Quoted, so that the flag pastes into zsh, where `[::1]` is a glob.
  net: `--allow-net='${NET_FLAG_HOSTS}'`,
  env: `--allow-env=${INDEX_ENV_VARIABLES.join(",")}`,
};

/** How the README installs the command; the flags go between the two. */
const INSTALL_COMMAND = "deno install -g -f -n worktree-ports";
const INSTALL_MODULE = "jsr:@org/worktree-ports/cli";

/** The flags to install with: all the CLI's, and for `exec`, permission to run any command. */
function installFlags(command: string): string {
  const flags = requiredFlags(ALLOCATING);
  return command === "exec" ? flags.replace(PERMISSION_FLAGS.git, "--allow-run") : flags;
}

/**
 * What to do about missing permissions. An installed or compiled command
 * cannot be given flags: it has to be installed or compiled again with them.
 */
function missingPermissionMessage(missing: string, needs: string, install: string): string {
  if (Deno.build.standalone) {
    return `Missing permission: this compiled worktree-ports lacks ${missing} (${needs}); ` +
      `compile it again with "deno compile ${install} ${INSTALL_MODULE}"`;
  }
  return `Missing permission: run again with ${missing} (${needs}); ` +
    `an installed worktree-ports takes no flags: reinstall it with ` +
    `${INSTALL_COMMAND} ${install} ${INSTALL_MODULE}`;
}

function requiredFlags(permissions: readonly Permission[]): string {
  return permissions.map((permission) => PERMISSION_FLAGS[permission]).join(" ");
}

/**
 * The permissions that are not granted, asked with `Deno.permissions.query`
 * so that nothing prompts.
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
      : permission === "git"
      ? [{ name: "run", command: "git" }]
      : permission === "env"
      ? INDEX_ENV_VARIABLES.map((variable) => ({ name: "env", variable }))
      : [{ name: permission }];
    for (const descriptor of descriptors) {
      if (Deno.permissions.querySync(descriptor).state !== "granted") {
        if (permission !== "git" || !(await isMissingProgram("git"))) missing.push(permission);
        break;
      }
    }
  }
  return missing;
}

/**
 * Deno reports `--allow-run=PROGRAM` as not granted when the program is not
 * on PATH, the same as when the flag is missing. Spawning it tells the two
 * apart: a missing program fails before any permission check. It is only
 * tried where Deno cannot prompt, so asking never turns into a question.
 */
async function isMissingProgram(program: string): Promise<boolean> {
  if (Deno.stdin.isTerminal() && Deno.stderr.isTerminal()) return false;
  try {
    const child = new Deno.Command(program, { stdin: "null", stdout: "null", stderr: "null" })
      .spawn();
    child.kill();
    await child.status;
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}

// ---------------------------------------------------------------------------
// Running the commands
// ---------------------------------------------------------------------------

async function runAllocate(values: Values): Promise<number> {
  const options = { ...allocateOptions(values, "allocate"), dryRun: values["dry-run"] === true };
  const allocation = await withLockNotice(options, allocate);
  for (const warning of allocation.warnings) console.error(`warning: ${warning}`);
  if (values.timings) {
    const { git, lockWait, locked, total } = allocation.timings;
    console.error(
      `timings: git ${git.toFixed(1)} ms, lock wait ${lockWait.toFixed(1)} ms, ` +
        `locked ${locked.toFixed(1)} ms, total ${total.toFixed(1)} ms`,
    );
  }
  writeStdout(formatPortFile(allocation));
  return 0;
}

/**
 * Runs an operation that may wait for the lock, printing a line if the wait
 * grows long: most waits last milliseconds and deserve no line at all.
 */
async function withLockNotice<T>(
  options: AllocateOptions,
  operation: (options: AllocateOptions) => Promise<T>,
): Promise<T> {
  let notice: ReturnType<typeof setTimeout> | undefined;
  try {
    return await operation({
      ...options,
      onLockWait: (path) => {
        // The machine lock may be waited for after the repository's: one notice, for the current wait.
        if (notice !== undefined) clearTimeout(notice);
        notice = setTimeout(() => {
          console.error(`waiting for "${path}": another worktree-ports process holds the lock`);
        }, 1000);
      },
    });
  } finally {
    // Touching the timers at all costs a cold process milliseconds.
    if (notice !== undefined) clearTimeout(notice);
  }
}

async function runShow(values: Values, positionals: string[]): Promise<number> {
  const bundle = await readBundle({
    output: values.output as string | undefined,
    config: values.config as string | undefined,
  });
  if (bundle === undefined) {
    console.error(`error: This worktree has no ports yet (run "worktree-ports allocate")`);
    return 1;
  }
  if (bundle.outdated) {
    // Rewriting is what allocate does, and needs what it needs.
    const missing = await missingPermissions(ALLOCATING);
    if (missing.length > 0) {
      console.error(
        `error: Missing permission: run again with ${requiredFlags(missing)} ("show" rewrites ` +
          `"${bundle.path}", which the config has changed under, and needs ${
            requiredFlags(ALLOCATING)
          } for that)`,
      );
      return 2;
    }
    bundle.data = (await loadReportingAllocation(values, "show")).data;
  }
  if (bundle.foreign) {
    console.error(
      `warning: "${bundle.path}" was written for another worktree (copied?); run "worktree-ports allocate" to get this worktree's own ports`,
    );
  }
  // A rewritten file was checked against the other worktrees on the way.
  if (bundle.moved && !bundle.outdated) {
    console.error(
      `warning: "${bundle.path}" was written for "${
        (bundle.data.worktree_ports as { worktree: string }).worktree
      }", which is no worktree now (moved with its worktree, or copied from a removed one); ` +
        `run "worktree-ports allocate" to record this worktree's path and check its ports ` +
        `against the other worktrees`,
    );
  }
  const [key] = positionals;
  if (key === undefined) {
    writeStdout(JSON.stringify(bundle.data, null, 2) + "\n");
    return 0;
  }
  if (!Object.hasOwn(bundle.data, key)) {
    const keys = Object.keys(bundle.data).filter((name) => name !== "worktree_ports");
    console.error(
      `error: "${bundle.path}" has no key ${quoted(key)} (it has: ${keys.map(quoted).join(", ")})`,
    );
    return 1;
  }
  const value = bundle.data[key];
  writeStdout((typeof value === "string" ? value : JSON.stringify(value)) + "\n");
  return 0;
}

const ENV_FORMATS: readonly EnvFormat[] = ["shell", "dotenv", "json", "fish"];

async function runEnv(values: Values): Promise<number> {
  const format = (values.format ?? "shell") as EnvFormat;
  if (!ENV_FORMATS.includes(format)) {
    throw new UsageError(
      `Option "--format" must be shell, dotenv, json or fish, got "${format}"`,
      commandUsage("env"),
    );
  }
  const bundle = await loadReportingAllocation(values, "env");
  writeStdout(formatEnv(bundleEnv(bundle.data, { onWarning: printWarning }), format));
  return 0;
}

async function runExec(values: Values, positionals: string[]): Promise<number> {
  const [command, ...args] = positionals;
  if (command === undefined) {
    throw new UsageError(`Missing the command to run`, commandUsage("exec"));
  }
  const { state } = await Deno.permissions.query({ name: "run", command });
  if (state !== "granted" && !(await isMissingProgram(command))) {
    console.error(
      "error: " + missingPermissionMessage(
        `--allow-run=git,${command} (or --allow-run)`,
        `"exec" needs ${requiredFlags(ALLOCATING)} and permission to run the command`,
        installFlags("exec"),
      ),
    );
    return 2;
  }
  // Loaded first, so that a new allocation is reported before the command
  // starts rather than after it ends.
  const bundle = await loadReportingAllocation(values, "exec");
  // runWithPorts leaves out the same keys; say which before the command starts.
  bundleEnv(bundle.data, { onWarning: printWarning });
  let result;
  try {
    result = await runWithPorts(command, args, { bundle });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    console.error(`error: Cannot run "${command}": no such program`);
    return 127;
  }
  return result.code;
}

/** The worktree's bundle, allocating first if it has none; a new allocation is reported on stderr. */
async function loadReportingAllocation(values: Values, command: string): Promise<LoadedBundle> {
  const bundle = await withLockNotice(allocateOptions(values, command), loadBundle);
  if (bundle.allocation !== undefined) {
    for (const warning of bundle.allocation.warnings) console.error(`warning: ${warning}`);
    // Of several processes that found the file outdated, the one that rewrote it says so.
    if (!bundle.outdated && !bundle.moved) {
      console.error(
        `allocated slot ${bundle.allocation.slot} to this worktree ("${bundle.allocation.path}")`,
      );
    } else if (bundle.allocation.written) {
      console.error(
        bundle.outdated ? outdatedNotice(bundle.allocation) : movedNotice(bundle.allocation),
      );
    }
  }
  return bundle;
}

/** The line that says a moved or copied port file was rewritten for this worktree. */
function movedNotice(allocation: Allocation): string {
  return `recorded this worktree's path in "${allocation.path}" (slot ${allocation.slot}` +
    (allocation.kept ? " kept)" : ")");
}

/** The line that says an outdated port file was rewritten for the current config. */
function outdatedNotice(allocation: Allocation): string {
  return `updated "${allocation.path}" to the current config (` +
    (allocation.kept
      ? `slot ${allocation.slot} kept)`
      : `moved to slot ${allocation.slot}: the new ports of its old slot are taken)`);
}

async function runList(values: Values): Promise<number> {
  const options = { output: values.output as string | undefined, onWarning: printWarning };
  const statuses = values.all ? await inspectMachine(options) : await inspectWorktrees(options);
  if (values.json) {
    writeStdout(JSON.stringify(statuses, null, 2) + "\n");
  } else if (values.all) {
    writeStdout(formatGroups(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  } else {
    writeStdout(formatTable(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  }
  return 0;
}

function printWarning(warning: string): void {
  console.error(`warning: ${warning}`);
}

/** One table per repository, each under the repository's shared git directory. */
function formatGroups(statuses: readonly WorktreeStatus[], color: boolean): string {
  const groups = new Map<string, WorktreeStatus[]>();
  for (const status of statuses) {
    const key = status.repository ?? "";
    groups.set(key, [...(groups.get(key) ?? []), status]);
  }
  return [...groups].map(([repository, group]) =>
    `repository ${printable(repository)}\n` + formatTable(group, color)
  ).join("\n");
}

const STATE_COLORS: Record<WorktreeStatus["state"], string> = {
  ok: "32",
  outdated: "33",
  none: "2",
  duplicate: "31",
  foreign: "33",
  unreadable: "31",
  invalid: "31",
  stale: "2",
  absent: "33",
};

function formatTable(statuses: readonly WorktreeStatus[], color: boolean): string {
  const paint = (code: string, text: string) => color ? `\x1b[${code}m${text}\x1b[0m` : text;
  const rows = statuses.map((status) => [
    (status.current ? "* " : "  ") + printable(status.path),
    status.branch ?? "-",
    status.slot === undefined ? "-" : String(status.slot),
    status.state,
    Object.entries(status.ports)
      .map(([key, port]) => `${printable(key)}=${port}${portNote(status, key, port)}`)
      .join(" "),
    noteOf(status),
  ]);
  const header = ["  WORKTREE", "BRANCH", "SLOT", "STATE", "PORTS", "NOTE"];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length))
  );
  // Colour goes on after padding, so the columns line up either way.
  const line = (cells: string[]) =>
    cells.map((cell, column) => {
      const padded = cell.padEnd(widths[column]);
      if (column === 3) return paint(STATE_COLORS[cell as WorktreeStatus["state"]], padded);
      return padded.replaceAll("(listening)", paint("32", "(listening)"));
    }).join("  ").trimEnd();
  const title = header.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd();
  return [paint("1", title), ...rows.map(line)].join("\n") + "\n";
}

/** A port held by another repository says so: whatever listens on it may well be theirs. */
function portNote(status: WorktreeStatus, key: string, port: number): string {
  const elsewhere = status.conflicts.some((conflict) =>
    conflict.repository !== undefined && conflict.repository !== status.repository &&
    conflict.ports.includes(port)
  );
  if (elsewhere) return " (held by another repository)";
  return status.listening[key] ? " (listening)" : "";
}

/** A path as one table cell: quoted, with escapes, when it holds control characters. */
function printable(text: string): string {
  return /[\p{Cc}]/u.test(text) ? JSON.stringify(text) : text;
}

/** A key or path for a message, in double quotes: with escapes when it holds control characters. */
function quoted(text: string): string {
  return /[\p{Cc}]/u.test(text) ? JSON.stringify(text) : `"${text}"`;
}

function noteOf(status: WorktreeStatus): string {
  switch (status.state) {
    case "duplicate":
      return status.conflicts.map((c) =>
        `shares ${c.ports.join(", ")} with ${printable(c.worktree)}${
          c.repository !== undefined && c.repository !== status.repository
            ? " (another repository)"
            : ""
        }`
      )
        .join("; ");
    case "foreign":
      return `file written for ${printable(status.detail ?? "")}`;
    case "unreadable":
    case "invalid":
    case "absent":
      return status.detail ?? "";
    case "stale":
      return "directory gone";
    case "outdated":
      return "config changed since written";
    case "none":
      return "no port file";
    default:
      return "";
  }
}

async function runSlots(values: Values): Promise<number> {
  const slots = await listSlots({ ...allocateOptions(values, "slots"), onWarning: printWarning });
  if (values.json) {
    writeStdout(JSON.stringify(slots, null, 2) + "\n");
  } else {
    writeStdout(formatSlots(slots));
  }
  return 0;
}

function formatSlots(slots: readonly SlotInfo[]): string {
  const value = (value: number | string) =>
    typeof value === "string" && /[\s"]|^$/.test(value) ? JSON.stringify(value) : String(value);
  const rows = slots.map((info) => [
    String(info.slot),
    info.state,
    Object.entries(info.bundle).map(([key, v]) => `${key}=${printable(value(v))}`).join(" "),
    slotNote(info),
  ]);
  const header = ["SLOT", "STATE", "BUNDLE", "NOTE"];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length))
  );
  return [header, ...rows].map((cells) =>
    cells.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd() + "\n"
  ).join("");
}

function slotNote(info: SlotInfo): string {
  switch (info.state) {
    case "held":
      return info.holders.map(printable).join(", ") + (info.current ? " (this worktree)" : "");
    case "blocked":
      return `browsers refuse ${info.blocked.join(", ")}`;
    case "in-use":
      return `in use: ${info.busy.join(", ")}`;
    case "permission-denied":
      return `permission denied: ${info.denied.join(", ")}`;
    default:
      return info.slot === 0 ? "the main worktree's" : "";
  }
}

async function runCheck(values: Values): Promise<number> {
  const options = allocateOptions(values, "check");
  if (values.fix) {
    const moves = await withLockNotice(options, values.all ? fixMachine : fixWorktrees);
    for (const move of moves) {
      for (const warning of move.warnings) console.error(`warning: ${warning}`);
      writeStdout(formatMove(move) + "\n");
    }
    if (moves.length === 0) writeStdout("nothing to fix\n");
  }
  const inspect = values.all ? inspectMachine : inspectWorktrees;
  const statuses = await inspect({
    output: options.output,
    config: options.config,
    ports: options.ports,
    stride: options.stride,
    slots: options.slots,
    listening: false,
    scope: options.scope,
    onWarning: printWarning,
  });
  // In a bare repository's directory there is no worktree, and so no config.
  const current = values.all ? undefined : statuses.find((status) => status.current);
  if (current !== undefined) {
    for (const warning of configWarnings(loadConfig(current.path, options))) {
      console.error(`warning: ${warning}`);
    }
  }
  const problems = problemsOf(statuses);
  for (const problem of problems) writeStdout(problem + "\n");
  if (problems.length === 0) {
    writeStdout(`ok: ${statuses.length} worktrees, no shared ports\n`);
    return 0;
  }
  const acrossRepositories = !values.all &&
    statuses.some((status) =>
      status.conflicts.some((conflict) => conflict.repository !== undefined)
    );
  if (!values.fix || acrossRepositories) {
    console.error(
      `run "worktree-ports check --fix${
        acrossRepositories || values.all ? " --all" : ""
      }" to repair`,
    );
  }
  return 1;
}

function problemsOf(statuses: readonly WorktreeStatus[]): string[] {
  const problems: string[] = [];
  statuses.forEach((status, index) => {
    if (status.state === "foreign") {
      problems.push(`foreign: "${status.file}" was written for "${status.detail}"`);
    } else if (status.state === "unreadable") {
      problems.push(`unreadable: "${status.file}": ${status.detail}`);
    } else if (status.state === "invalid") {
      problems.push(`invalid: "${status.file}": ${status.detail}`);
    } else if (status.state === "outdated") {
      problems.push(
        `outdated: "${status.file}" is not what the config renders for slot ${status.slot} now`,
      );
    }
    for (const conflict of status.conflicts) {
      const other = statuses.findIndex((candidate) => candidate.path === conflict.worktree);
      if (other === -1) {
        problems.push(
          `conflict: "${status.path}" and "${conflict.worktree}" of the repository "${conflict.repository}" share ports ${
            conflict.ports.join(", ")
          }`,
        );
      } else if (other > index) {
        // Each pair once: from the worktree that comes first.
        problems.push(
          `conflict: "${status.path}" and "${conflict.worktree}" share ports ${
            conflict.ports.join(", ")
          }`,
        );
      }
    }
  });
  return problems;
}

function formatMove(move: Move): string {
  const ports = (ports: Record<string, number>) =>
    Object.entries(ports).map(([key, port]) => `${printable(key)}=${port}`).join(" ") || "(none)";
  const verb = move.reason === "outdated" ? "updated" : "moved";
  return `${verb} "${move.worktree}" (${move.reason}): ${ports(move.from)} -> ${
    ports(move.to)
  } (slot ${move.slot})`;
}

async function runRelease(values: Values): Promise<number> {
  if (values["all-stale"]) {
    const stale = (await listWorktrees()).filter((worktree) => worktree.prunable);
    if (stale.length === 0) {
      writeStdout("no stale worktrees\n");
      return 0;
    }
    writeStdout(
      `${stale.length} stale worktree(s), whose directory is gone, reserve no ports already; ` +
        `nothing to release ("git worktree prune" forgets them):\n` +
        stale.map((worktree) => `  ${worktree.path}\n`).join(""),
    );
    return 0;
  }
  const options = allocateOptions(values, "release");
  const release = await releasePorts(options);
  writeStdout(
    release.released
      ? `released "${release.path}"\n`
      : `nothing to release: "${release.path}" does not exist\n`,
  );
  return 0;
}

// ---------------------------------------------------------------------------
// Shell completions, generated from the command table above
// ---------------------------------------------------------------------------

const SHELLS = ["bash", "zsh", "fish"] as const;
const SCOPES = ["machine", "repository"] as const;

/** Values an option takes, for completion: a fixed list, files, or anything. */
function optionValues(name: string): readonly string[] | "files" | undefined {
  if (name === "format") return ENV_FORMATS;
  if (name === "scope") return SCOPES;
  if (name === "config" || name === "output") return "files";
  return undefined;
}

function runCompletions(_values: Values, positionals: string[]): Promise<number> {
  const [shell] = positionals;
  const generators = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion };
  if (!SHELLS.includes(shell as typeof SHELLS[number])) {
    throw new UsageError(
      shell === undefined
        ? "Missing the shell: bash, zsh or fish"
        : `Unknown shell "${shell}" (expected bash, zsh or fish)`,
      commandUsage("completions"),
    );
  }
  writeStdout(generators[shell as typeof SHELLS[number]]());
  return Promise.resolve(0);
}

function bashCompletion(): string {
  const commands = Object.keys(COMMANDS).join(" ");
  const cases = Object.entries(COMMANDS).map(([name, spec]) =>
    `    ${name}) words="${Object.keys(spec.options).map((option) => `--${option}`).join(" ")}" ;;`
  );
  return `# bash completion for worktree-ports: eval "$(worktree-ports completions bash)"
_worktree_ports() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} words
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${commands} --help --version" -- "$cur"))
    return
  fi
  case $prev in
    --format) COMPREPLY=($(compgen -W "${ENV_FORMATS.join(" ")}" -- "$cur")); return ;;
    --scope) COMPREPLY=($(compgen -W "${SCOPES.join(" ")}" -- "$cur")); return ;;
    --config|--output) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  case \${COMP_WORDS[1]} in
${cases.join("\n")}
  esac
  if [[ \${COMP_WORDS[1]} == completions && $COMP_CWORD -eq 2 ]]; then
    words="${SHELLS.join(" ")}"
  elif [[ \${COMP_WORDS[1]} == exec && $cur != -* ]]; then
    COMPREPLY=($(compgen -c -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _worktree_ports worktree-ports
`;
}

function zshCompletion(): string {
  const quote = (text: string) => `'${text.replaceAll("'", `'\\''`)}'`;
  const describe = (text: string) =>
    text.replaceAll(":", "\\:").replaceAll("[", "\\[").replaceAll("]", "\\]");
  const commands = Object.entries(COMMANDS).map(([name, spec]) =>
    `    ${quote(`${name}:${describe(spec.summary)}`)}`
  );
  const cases = Object.entries(COMMANDS).map(([name, spec]) => {
    const options = Object.entries(spec.options).map(([option, { help }]) => {
      const values = optionValues(option);
      const action = values === "files"
        ? ":file:_files"
        : Array.isArray(values)
        ? `:${option}:(${values.join(" ")})`
        : spec.options[option].type === "string"
        ? `:${option}: `
        : "";
      return quote(`--${option}[${describe(help)}]${action}`);
    });
    const extra = name === "completions"
      ? ` ${quote(`1:shell:(${SHELLS.join(" ")})`)}`
      : name === "exec"
      ? ` ${quote("*::command:_normal")}`
      : "";
    return `    ${name}) _arguments ${options.join(" ")}${extra} ;;`;
  });
  return `#compdef worktree-ports
# zsh completion for worktree-ports: source <(worktree-ports completions zsh), after compinit
_worktree_ports() {
  local -a commands
  commands=(
${commands.join("\n")}
  )
  if (( CURRENT == 2 )); then
    _describe command commands
    return
  fi
  words=(\${words[2,-1]})
  (( CURRENT-- ))
  case \${words[1]} in
${cases.join("\n")}
  esac
}
if [[ \${funcstack[1]} == _worktree_ports ]]; then
  _worktree_ports "$@"
else
  compdef _worktree_ports worktree-ports
fi
`;
}

function fishCompletion(): string {
  const quote = (text: string) => `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
  const lines = [
    "# fish completion for worktree-ports: worktree-ports completions fish | source",
    "complete -c worktree-ports -f",
  ];
  for (const [name, spec] of Object.entries(COMMANDS)) {
    lines.push(
      `complete -c worktree-ports -n __fish_use_subcommand -a ${name} -d ${quote(spec.summary)}`,
    );
    for (const [option, { help, type }] of Object.entries(spec.options)) {
      const values = optionValues(option);
      const argument = values === "files"
        ? " -r -F"
        : Array.isArray(values)
        ? ` -x -a ${quote(values.join(" "))}`
        : type === "string"
        ? " -x"
        : "";
      lines.push(
        `complete -c worktree-ports -n '__fish_seen_subcommand_from ${name}' -l ${option}${argument} -d ${
          quote(help)
        }`,
      );
    }
  }
  lines.push(
    `complete -c worktree-ports -n '__fish_seen_subcommand_from completions' -a ${
      quote(SHELLS.join(" "))
    }`,
    "complete -c worktree-ports -n '__fish_seen_subcommand_from exec' -a '(__fish_complete_subcommand --fcs-skip=2)'",
  );
  return lines.join("\n") + "\n";
}

/** Writes synchronously: the first asynchronous write to a pipe costs a process milliseconds. */
function writeStdout(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let written = 0; written < bytes.length;) {
    written += Deno.stdout.writeSync(bytes.subarray(written));
  }
}

function exitCodeOf(error: unknown): number {
  if (error instanceof UsageError) return 2;
  if (error instanceof WorktreePortsError) {
    return ["INVALID_CONFIG", "INVALID_OUTPUT", "NOT_A_WORKTREE"].includes(error.code) ? 2 : 1;
  }
  if (error instanceof Deno.errors.NotCapable) return 2;
  return 1;
}

/**
 * Runs the command line and returns its exit code: 0 success, 1 the
 * operation failed, 2 a usage, permission or configuration error; `exec`
 * returns its command's exit code. Results go to stdout; errors and warnings
 * go to stderr.
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
    if (command === "help") {
      const [topic, ...extra] = rest;
      if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}"`, usage());
      if (topic !== undefined && !Object.hasOwn(COMMANDS, topic)) {
        throw new UsageError(`Unknown command "${topic}"`, usage());
      }
      console.log(topic === undefined ? usage() : commandUsage(topic));
      return 0;
    }
    if (command === "--version" || command === "-V") {
      console.log(await version());
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
    const needed = COMMANDS[command].permissions(values);
    const missing = await missingPermissions(needed);
    if (missing.length > 0) {
      console.error(
        "error: " + missingPermissionMessage(
          requiredFlags(missing),
          `"${command}" needs ${requiredFlags(needed)}`,
          installFlags(command),
        ),
      );
      return 2;
    }
    return await COMMANDS[command].run(values, positionals);
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    if (error instanceof UsageError) console.error(`\n${error.usage}`);
    return exitCodeOf(error);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
