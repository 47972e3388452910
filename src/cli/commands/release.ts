// release: runs the config's on_release, then deletes the worktree's port file.

import { showCommand } from "../../on_release.ts";
import { releasePorts } from "../../release.ts";
import { listWorktrees } from "../../worktree_list.ts";
import { allocateOptions } from "../args.ts";
import { assertMayRun, refusalMessage } from "../on_release.ts";
import { printWarning, writeStdout } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  if (values["all-stale"]) {
    const stale = (await listWorktrees()).filter((worktree) => worktree.prunable);
    if (stale.length === 0) {
      writeStdout("no stale worktrees\n");
      return 0;
    }
    writeStdout(
      `${stale.length} stale worktree${
        stale.length === 1
          ? ", whose directory is gone, reserves"
          : "s, whose directories are gone, reserve"
      } no ports already; ` +
        `nothing to release ("git worktree prune" forgets them, "worktree-ports prune" runs ` +
        `their "on_release"):\n` +
        stale.map((worktree) => `  ${worktree.path}\n`).join(""),
    );
    return 0;
  }
  const options = allocateOptions(values, "release");
  const dryRun = values["dry-run"] === true;
  let release;
  try {
    release = await releasePorts({
      ...options,
      dryRun,
      skipOnRelease: values["skip-on-release"] === true,
      onRun: (run) => {
        assertMayRun(run.command[0]);
        console.error(`on_release: ${showCommand(run.command)}`);
      },
    });
  } catch (error) {
    const refusal = await refusalMessage(error);
    if (refusal === undefined) throw error;
    console.error(`error: ${refusal}`);
    return 2;
  }
  for (const warning of release.warnings) printWarning(warning);
  if (dryRun) {
    writeStdout(
      (release.onRelease === undefined
        ? ""
        : `would run: ${
          showCommand(release.onRelease.command)
        } (in "${release.onRelease.cwd}")\n`) +
        (release.released
          ? `would release "${release.path}"\n`
          : `nothing to release: "${release.path}" does not exist\n`),
    );
    return 0;
  }
  writeStdout(
    (release.released
      ? `released "${release.path}"\n`
      : `nothing to release: "${release.path}" does not exist\n`) +
      release.envFiles.map((path) => `removed the env file "${path}"\n`).join(""),
  );
  return 0;
}
