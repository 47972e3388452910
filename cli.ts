#!/usr/bin/env -S deno run --allow-run=git,lsof,ps --allow-read --allow-write --allow-net=127.0.0.1,[::1],0.0.0.0,[::] --allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA
/**
 * The `worktree-ports` command line: allocates the current worktree's ports,
 * shows them, exports them as environment variables, runs commands with
 * them, and lists, checks, repairs and releases the bundles of every worktree.
 *
 * ```sh
 * deno run --allow-run=git --allow-read --allow-write \
 *   --allow-net='127.0.0.1,[::1],0.0.0.0,[::]' \
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
 * assert.equal(
 *   printed[1],
 *   'error: Unknown command "no-such-command"; "worktree-ports --help" lists the commands',
 * );
 * ```
 *
 * @module
 */

import { parseCommandArgs, unknownWord, UsageError } from "./src/cli/args.ts";
import { run as runAllocate } from "./src/cli/commands/allocate.ts";
import {
  ALLOCATE_PERMISSIONS,
  allocatePermissions,
  installFlags,
  missingPermissionMessage,
  missingPermissions,
  requiredFlags,
} from "./src/cli/permissions.ts";
import { writeStdout } from "./src/cli/print.ts";
import type { CommandSpec, OptionSpec } from "./src/cli/spec.ts";
import { SCOPES } from "./src/environment.ts";
import { WorktreePortsError } from "./src/errors.ts";
import { ENV_FORMATS } from "./src/names.ts";

/** What release and prune need besides: permission to run the config's on_release. */
const ON_RELEASE_NOTE =
  "and --allow-run=git,lsof,ps,PROGRAM (or --allow-run) to run on_release's PROGRAM";

const OPTIONS = {
  config: {
    type: "string",
    value: "FILE",
    help: "Config file (default: worktree-ports.config.json in the worktree root, if any)",
    complete: "files",
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
    complete: "files",
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
    complete: SCOPES,
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

/** The shells a completion script can be printed for. */
const SHELLS: readonly string[] = ["bash", "zsh", "fish"];

/**
 * A command's runner, loaded when the command runs, so that each command
 * loads only its part of the library: a short-lived process pays for every
 * module it loads. `allocate`, which every dev-server start and every new
 * worktree runs, is imported with the CLI, which costs it less than a
 * dynamic import would.
 */
function lazy(
  load: () => Promise<{ run: CommandSpec["run"] }>,
): CommandSpec["run"] {
  return async (values, positionals) => (await load()).run(values, positionals);
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
    permissions: allocatePermissions,
    run: runAllocate,
  },
  show: {
    usage: "show [KEY] [options]",
    summary:
      "Print this worktree's bundle, or just the value of KEY (updating a file the config outgrew)",
    options: { output: OPTIONS.output, config: OPTIONS.config, help: OPTIONS.help },
    maxPositionals: 1,
    permissions: () => ["git", "read"],
    run: lazy(() => import("./src/cli/commands/show.ts")),
  },
  env: {
    usage: "env [options]",
    summary: "Print this worktree's ports as environment variables (allocating first if needed)",
    options: {
      format: {
        type: "string",
        value: "FORMAT",
        help: "shell (export lines to eval, the default), dotenv, json, fish (set -gx lines) or " +
          "powershell ($env: lines)",
        complete: ENV_FORMATS,
      },
      ...ALLOCATION_OPTIONS,
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: allocatePermissions,
    run: lazy(() => import("./src/cli/commands/env.ts")),
  },
  exec: {
    usage: "exec [options] [--] COMMAND [ARGS...]",
    summary: "Run COMMAND with this worktree's ports in its environment (allocating if needed)",
    options: { ...ALLOCATION_OPTIONS, help: OPTIONS.help },
    maxPositionals: Infinity,
    arguments: "command",
    permissions: allocatePermissions,
    permissionNote: "and --allow-run=git,COMMAND (or --allow-run) to run COMMAND",
    run: lazy(() => import("./src/cli/commands/exec.ts")),
  },
  list: {
    usage: "list [options]",
    summary: "Show every worktree's slot, ports, state, and which process listens on each port",
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
    run: lazy(() => import("./src/cli/commands/list.ts")),
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
      scope: OPTIONS.scope,
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    // Other repositories hold slots too, found through the machine-wide index.
    permissions: (
      values,
    ) => ["git", "read", "net", ...allocatePermissions(values).filter((p) => p === "env")],
    run: lazy(() => import("./src/cli/commands/slots.ts")),
  },
  check: {
    usage: "check [--fix] [options]",
    summary: "Exit 1 if worktrees share a port, a port file is copied, unreadable or outdated, " +
      "or a stray process holds a worktree's port",
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
        ? allocatePermissions(values)
        : ["git", "read", ...allocatePermissions(values).filter((p) => p === "env")],
    run: lazy(() => import("./src/cli/commands/check.ts")),
  },
  release: {
    usage: "release [options]",
    summary: "Delete this worktree's port file so that its slot is free again",
    options: {
      "all-stale": {
        type: "boolean",
        help: "Instead, list worktrees whose directory is gone (they already reserve nothing)",
      },
      "dry-run": {
        type: "boolean",
        help: "Change nothing: print what on_release would run and which file would go",
      },
      "skip-on-release": {
        type: "boolean",
        help: "Free the ports without running the config's on_release",
      },
      output: OPTIONS.output,
      "lock-timeout": OPTIONS["lock-timeout"],
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: (values) =>
      values["all-stale"] || values["dry-run"] ? ["git", "read"] : ["git", "read", "write"],
    permissionNote: ON_RELEASE_NOTE,
    run: lazy(() => import("./src/cli/commands/release.ts")),
  },
  prune: {
    usage: "prune [options]",
    summary: "Run the on_release of worktrees removed without release, and forget them",
    options: {
      all: {
        type: "boolean",
        help: "Every repository of the machine-wide index, not only this one",
      },
      "dry-run": {
        type: "boolean",
        help: "Change nothing: print what would run, be forgotten and be ended",
      },
      kill: {
        type: "boolean",
        help: "End the processes still listening on a gone worktree's ports",
      },
      forget: {
        type: "boolean",
        help: "Also forget the slot each branch last held",
      },
      "skip-on-release": {
        type: "boolean",
        help: "Forget gone worktrees without running their on_release",
      },
      "lock-timeout": OPTIONS["lock-timeout"],
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: (values) =>
      values["dry-run"] ? ["git", "read", "env"] : ["git", "read", "write", "env"],
    permissionNote: `${ON_RELEASE_NOTE}, and for --kill, kill in --allow-run`,
    run: lazy(() => import("./src/cli/commands/prune.ts")),
  },
  proxy: {
    usage: "proxy [--port N]",
    summary: "Serve every worktree's services as http://<service>.<worktree>.<repo>.localhost:1355",
    options: {
      port: {
        type: "string",
        value: "N",
        help: "The port to listen on, on 127.0.0.1 and ::1 (default: 1355)",
      },
      help: OPTIONS.help,
    },
    maxPositionals: 0,
    permissions: () => ["read", "write", "net", "env"],
    run: lazy(() => import("./src/cli/commands/proxy.ts")),
  },
  completions: {
    usage: "completions bash|zsh|fish",
    summary: "Print a shell completion script for the commands and their options",
    options: { help: OPTIONS.help },
    maxPositionals: 1,
    permissions: () => [],
    arguments: { name: "shell", complete: SHELLS },
    run: async (_values, positionals) => {
      const { completionScript } = await import("./src/cli/completions.ts");
      writeStdout(completionScript(positionals[0], COMMANDS));
      return 0;
    },
  },
};

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
    "Permissions: " + requiredFlags(ALLOCATE_PERMISSIONS),
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
    if (command === undefined) throw new UsageError("Missing command");
    if (command === "--help" || command === "-h") {
      console.log(usage());
      return 0;
    }
    if (command === "help") {
      const [topic, ...extra] = rest;
      if (extra.length > 0) throw new UsageError(`Unexpected argument "${extra[0]}"`);
      if (topic !== undefined && !Object.hasOwn(COMMANDS, topic)) {
        throw unknownWord("command", topic, Object.keys(COMMANDS));
      }
      console.log(topic === undefined ? usage() : commandUsage(topic));
      return 0;
    }
    if (command === "--version" || command === "-V") {
      console.log(await version());
      return 0;
    }
    if (!Object.hasOwn(COMMANDS, command)) {
      throw command.startsWith("-")
        ? unknownWord("option", command, ["--help", "--version"])
        : unknownWord("command", command, [...Object.keys(COMMANDS), "help"]);
    }
    const { values, positionals } = parseCommandArgs(command, COMMANDS[command], rest);
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
          `for "${command}"; "worktree-ports help ${command}" lists all it needs`,
          installFlags(command),
        ),
      );
      return 2;
    }
    return await COMMANDS[command].run(values, positionals);
  } catch (error) {
    // The reader of stdout went away (`list | head -1`): stop, quietly, as
    // other command-line tools do.
    if (error instanceof Deno.errors.BrokenPipe) return 0;
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    if (error instanceof UsageError && !error.brief) {
      console.error(`\n${error.command === undefined ? usage() : commandUsage(error.command)}`);
    }
    return exitCodeOf(error);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
