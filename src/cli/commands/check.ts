// check: exits 1 on shared ports or bad port files; with --fix, fixes them.

import { loadConfig } from "../../config.ts";
import { ENV_FILE_IN_THE_WAY, UNWRITABLE_ENV_FILE } from "../../env_file.ts";
import { fixMachine, fixWorktrees, isMovablyHeld } from "../../fix.ts";
import { machineIndexHome } from "../../index_home.ts";
import { inspectMachine, inspectWorktrees } from "../../inspect.ts";
import { INDEX_FILE_NAME } from "../../machine_index.ts";
import { isAbsolutePath, joinPath } from "../../paths.ts";
import { configWarnings } from "../../usable_ports.ts";
import { allocateOptions } from "../args.ts";
import { printWarning, withLockNotice, writeStdout } from "../print.ts";
import { formatMove, problemsOf } from "../reports.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  const options = allocateOptions(values, "check");
  if (values.fix) {
    const moves = await withLockNotice(options, values.all ? fixMachine : fixWorktrees);
    for (const move of moves) {
      for (const warning of move.warnings) console.error(`warning: ${warning}`);
      writeStdout(formatMove(move) + "\n");
    }
    if (moves.length === 0) writeStdout("nothing to fix\n");
  }
  if (values.all) {
    // Two environments can keep two indexes: say which one was read, and why.
    // One that cannot be used is named in a warning instead.
    const home = machineIndexHome((name) => Deno.env.get(name));
    if (home !== undefined && isAbsolutePath(home.dir)) {
      console.error(`index: "${joinPath(home.dir, INDEX_FILE_NAME)}" (from ${home.from})`);
    }
  }
  const inspect = values.all ? inspectMachine : inspectWorktrees;
  const statuses = await inspect({
    output: options.output,
    config: options.config,
    ports: options.ports,
    stride: options.stride,
    slots: options.slots,
    listening: false,
    gone: false,
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
    const count = `${statuses.length} worktree${statuses.length === 1 ? "" : "s"}`;
    writeStdout(`ok: ${count}, no shared ports\n`);
    return 0;
  }
  const acrossRepositories = !values.all &&
    statuses.some((status) =>
      status.conflicts.some((conflict) => conflict.repository !== undefined)
    );
  // A file at an env file's path that this tool did not write is never
  // replaced: only its owner can move it out of the way.
  const fixable = statuses.some((status) =>
    status.conflicts.length > 0 || isMovablyHeld(status) ||
    (["foreign", "unreadable", "invalid", "outdated"].includes(status.state) &&
      !(status.detail?.includes(ENV_FILE_IN_THE_WAY) ?? false) &&
      !(status.detail?.startsWith(UNWRITABLE_ENV_FILE) ?? false))
  );
  if ((!values.fix || acrossRepositories) && fixable) {
    console.error(
      `run "worktree-ports check --fix${
        acrossRepositories || values.all ? " --all" : ""
      }" to repair`,
    );
  }
  return 1;
}
