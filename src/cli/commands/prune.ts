// prune: runs the on_release of worktrees removed without release, and forgets them.

import { holderName } from "../../holders.ts";
import { showCommand } from "../../on_release.ts";
import { type PrunedWorktree, pruneWorktrees } from "../../prune.ts";
import { IS_WINDOWS } from "../../paths.ts";
import { assertMayRun, assertMayRunAll, refusalMessage } from "../on_release.ts";
import { allocateOptions } from "../args.ts";
import { printWarning, writeStdout } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  const dryRun = values["dry-run"] === true;
  const kill = values.kill === true;
  let pruned;
  try {
    if (kill && !dryRun) {
      const program = IS_WINDOWS ? "taskkill" : "kill";
      assertMayRun(program, `"prune --kill" ends processes with "${program}"`);
    }
    pruned = await pruneWorktrees({
      lockTimeoutMs: allocateOptions(values, "prune").lockTimeoutMs,
      all: values.all === true,
      dryRun,
      kill,
      forget: values.forget === true,
      skipOnRelease: values["skip-on-release"] === true,
      // Every program is asked about before the first runs: nothing half done.
      beforeRunning: (runs) => assertMayRunAll(runs.map((run) => run.command[0])),
      onRun: (run, worktree) => {
        console.error(`on_release for "${worktree.worktree}": ${showCommand(run.command)}`);
      },
    });
  } catch (error) {
    const refusal = await refusalMessage(error);
    if (refusal === undefined) throw error;
    console.error(`error: ${refusal}`);
    return 2;
  }
  for (const warning of pruned.warnings) printWarning(warning);
  const lines: string[] = [];
  for (const gone of pruned.worktrees) lines.push(...report(gone, dryRun, kill));
  if (pruned.forgottenBranches.length > 0) {
    lines.push(
      `${dryRun ? "would forget" : "forgot"} the slot of ${
        pruned.forgottenBranches.map((branch) => `"${branch}"`).join(", ")
      }`,
    );
  }
  if (lines.length === 0) lines.push("nothing to prune");
  writeStdout(lines.map((line) => line + "\n").join(""));
  return pruned.worktrees.some((gone) => gone.failed !== undefined) ? 1 : 0;
}

function report(gone: PrunedWorktree, dryRun: boolean, kill: boolean): string[] {
  const about = [
    ...(gone.branch === undefined ? [] : [`branch "${gone.branch}"`]),
    `slot ${gone.slot}`,
  ].join(", ");
  const ports = Object.entries(gone.bundle).map(([key, value]) => `${key}=${value}`).join(" ");
  const lines = [`gone: "${gone.worktree}" (${about}): ${ports}`];
  if (gone.onRelease !== undefined && dryRun) {
    lines.push(`  would run: ${showCommand(gone.onRelease.command)} (in "${gone.onRelease.cwd}")`);
  }
  for (const { key, port, holder } of gone.listeners) {
    const what = holder.command === undefined ? "" : ` \`${holder.command}\``;
    const ended = gone.killed.includes(holder.pid ?? -1);
    const hint = ended
      ? ", ended"
      : holder.pid === undefined || holder.worktree
      ? ""
      : kill
      ? ""
      : ` (${dryRun ? "prune --kill would end it" : "prune --kill ends it"})`;
    lines.push(`  ${holderName(holder)}${what} still listens on ${key} ${port}${hint}`);
  }
  if (gone.failed !== undefined) {
    lines.push(
      `  kept: ${gone.failed}; fix it and run "worktree-ports prune" again (or ` +
        `"prune --skip-on-release" to forget it without running it)`,
    );
  } else {
    lines.push(`  ${dryRun ? "would forget it" : "forgotten"}`);
  }
  return lines;
}
