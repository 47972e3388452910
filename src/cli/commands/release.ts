// release: deletes the worktree's port file.

import { releasePorts } from "../../release.ts";
import { listWorktrees } from "../../worktree_list.ts";
import { allocateOptions } from "../args.ts";
import { writeStdout } from "../print.ts";
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
        `nothing to release ("git worktree prune" forgets them):\n` +
        stale.map((worktree) => `  ${worktree.path}\n`).join(""),
    );
    return 0;
  }
  const options = allocateOptions(values, "release");
  const release = await releasePorts(options);
  writeStdout(
    (release.released
      ? `released "${release.path}"\n`
      : `nothing to release: "${release.path}" does not exist\n`) +
      release.envFiles.map((path) => `removed the env file "${path}"\n`).join(""),
  );
  return 0;
}
