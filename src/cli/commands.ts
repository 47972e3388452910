// One runner per command: each calls the library, prints, and returns an exit code.

import { allocate, type AllocateOptions, type Allocation } from "../allocate.ts";
import { loadConfig } from "../config.ts";
import { loadBundle, type LoadedBundle, readBundle } from "../current_bundle.ts";
import { bundleEnv, ENV_FORMATS, type EnvFormat, formatEnv } from "../env.ts";
import { quoted } from "../errors.ts";
import { runWithPorts } from "../exec.ts";
import { fixMachine, fixWorktrees } from "../fix.ts";
import { inspectMachine, inspectWorktrees } from "../inspect.ts";
import { formatPortFile } from "../port_file.ts";
import { releasePorts } from "../release.ts";
import { listSlots } from "../slots.ts";
import { configWarnings } from "../usable_ports.ts";
import { listWorktrees } from "../worktree_list.ts";
import { allocateOptions, UsageError } from "./args.ts";
import {
  ALLOCATE_PERMISSIONS,
  installFlags,
  isMissingProgram,
  missingPermissionMessage,
  missingPermissions,
  requiredFlags,
} from "./permissions.ts";
import { formatGroups, formatMove, formatSlots, formatTable, problemsOf } from "./reports.ts";
import type { Values } from "./spec.ts";
import { printWarning, writeStdout } from "./stdout.ts";

export async function runAllocate(values: Values): Promise<number> {
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
export async function withLockNotice<T>(
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

export async function runShow(values: Values, positionals: string[]): Promise<number> {
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
    const missing = await missingPermissions(ALLOCATE_PERMISSIONS);
    if (missing.length > 0) {
      console.error(
        `error: Missing permission: run again with ${requiredFlags(missing)} ("show" rewrites ` +
          `"${bundle.path}", which the config has changed under, and needs ${
            requiredFlags(ALLOCATE_PERMISSIONS)
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

export async function runEnv(values: Values): Promise<number> {
  const format = (values.format ?? "shell") as EnvFormat;
  if (!ENV_FORMATS.includes(format)) {
    throw new UsageError(
      `Option "--format" must be shell, dotenv, json or fish, got "${format}"`,
      "env",
    );
  }
  const bundle = await loadReportingAllocation(values, "env");
  writeStdout(formatEnv(bundleEnv(bundle.data, { onWarning: printWarning }), format));
  return 0;
}

export async function runExec(values: Values, positionals: string[]): Promise<number> {
  const [command, ...args] = positionals;
  if (command === undefined) {
    throw new UsageError(`Missing the command to run`, "exec");
  }
  const { state } = await Deno.permissions.query({ name: "run", command });
  if (state !== "granted" && !(await isMissingProgram(command))) {
    console.error(
      "error: " + missingPermissionMessage(
        `--allow-run=git,${command} (or --allow-run)`,
        `"exec" needs ${requiredFlags(ALLOCATE_PERMISSIONS)} and permission to run the command`,
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
export async function loadReportingAllocation(
  values: Values,
  command: string,
): Promise<LoadedBundle> {
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
export function movedNotice(allocation: Allocation): string {
  return `recorded this worktree's path in "${allocation.path}" (slot ${allocation.slot}` +
    (allocation.kept ? " kept)" : ")");
}

/** The line that says an outdated port file was rewritten for the current config. */
export function outdatedNotice(allocation: Allocation): string {
  return `updated "${allocation.path}" to the current config (` +
    (allocation.kept
      ? `slot ${allocation.slot} kept)`
      : `moved to slot ${allocation.slot}: the new ports of its old slot are taken)`);
}

export async function runList(values: Values): Promise<number> {
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

export async function runSlots(values: Values): Promise<number> {
  const slots = await listSlots({ ...allocateOptions(values, "slots"), onWarning: printWarning });
  if (values.json) {
    writeStdout(JSON.stringify(slots, null, 2) + "\n");
  } else {
    writeStdout(formatSlots(slots));
  }
  return 0;
}

export async function runCheck(values: Values): Promise<number> {
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

export async function runRelease(values: Values): Promise<number> {
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
