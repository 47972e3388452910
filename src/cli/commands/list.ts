// list: every worktree's slot, ports and state.

import { inspectMachine, inspectWorktrees } from "../../inspect.ts";
import { printWarning, writeStdout } from "../print.ts";
import { gitDirsOf } from "../../git_dirs.ts";
import type { WorktreeStatus } from "../../inspect.ts";
import { readMemory } from "../../worktree_memory.ts";
import { formatGroups, formatRemembered, formatTable } from "../reports.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  // The table names each holder by its short name: its command line would take one more program run.
  const options = {
    output: values.output as string | undefined,
    commandLines: Boolean(values.json),
    onWarning: printWarning,
  };
  const statuses = values.all ? await inspectMachine(options) : await inspectWorktrees(options);
  if (values.json) {
    writeStdout(JSON.stringify(statuses, null, 2) + "\n");
  } else if (values.all) {
    writeStdout(formatGroups(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  } else {
    writeStdout(formatTable(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  }
  if (!values.json) writeStdout(formatRemembered(rememberedSlots(statuses)));
  return 0;
}

/** The slots remembered for branches that no worktree listed has checked out. */
function rememberedSlots(statuses: readonly WorktreeStatus[]): { branch: string; slot: number }[] {
  const current = statuses.find((status) => status.current);
  const commonDirs = new Set(statuses.flatMap((status) => status.repository ?? []));
  if (commonDirs.size === 0 && current !== undefined) {
    try {
      commonDirs.add(gitDirsOf(current.path).commonDir);
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
  const checkedOut = new Set(
    statuses.filter((status) => status.state !== "gone").flatMap((status) => status.branch ?? []),
  );
  return [...commonDirs].flatMap((commonDir) =>
    Object.entries(readMemory(commonDir).branches)
      .filter(([branch]) => !checkedOut.has(branch))
      .map(([branch, { slot }]) => ({ branch, slot }))
  );
}
