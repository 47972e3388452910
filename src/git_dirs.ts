// Git's directories read as git reads them: `.git`, `commondir`, and the admin
// entries under `<common dir>/worktrees/`.

import { pathExists, readRegularTextFile } from "./files.ts";
import type { GitRunner } from "./git.ts";
import { comparablePath, joinPath, resolvePath } from "./paths.ts";

/** A worktree whose `.git` is gone is no worktree there any more (moved, removed or pruneable). */
export function worktreeExists(worktree: string): boolean {
  return pathExists(joinPath(worktree, ".git"));
}

/**
 * The nearest `.git` at or above `dir`, found as git finds it, with the git
 * directory and common directory it leads to; `undefined` when there is none
 * or it cannot be read.
 */
export function nearestGitDirs(
  dir: string,
): { at: string; gitDir: string; commonDir: string } | undefined {
  for (let candidate = dir;;) {
    try {
      return { at: candidate, ...gitDirsOf(candidate) };
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      if (!(error instanceof Deno.errors.NotFound)) return undefined;
    }
    const parent = candidate.replace(/[\\/][^\\/]*$/, "");
    if (parent === candidate || parent === "") return undefined;
    candidate = parent;
  }
}

/** The names of the admin entries, sorted; `undefined` when they cannot be read. */
export function adminEntries(commonDir: string): string | undefined {
  try {
    const names: string[] = [];
    for (const entry of Deno.readDirSync(joinPath(commonDir, "worktrees"))) names.push(entry.name);
    return names.sort().join("\0");
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return error instanceof Deno.errors.NotFound ? "" : undefined;
  }
}

/**
 * Follows `.git` the way git does (a directory, or a file saying `gitdir:`,
 * then the `commondir` file of a linked worktree) so that finding the lock
 * costs no second git process. Falls back to asking git.
 */
export async function findCommonDir(root: string, git: GitRunner): Promise<string> {
  try {
    return gitDirsOf(root).commonDir;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const output = await git.run(["rev-parse", "--git-common-dir"], root);
    return resolvePath(root, output.replace(/\r?\n$/, ""));
  }
}

/**
 * The git directory of the worktree at `root` and the repository's common
 * directory, found by reading `.git` and `commondir` as git does.
 *
 * @throws {Deno.errors.NotFound} When `root` has no `.git`.
 */
export function gitDirsOf(root: string): { gitDir: string; commonDir: string } {
  const dotGit = joinPath(root, ".git");
  let gitDir = dotGit;
  if (Deno.statSync(dotGit).isFile) {
    const text = readRegularTextFile(dotGit);
    if (!text.startsWith("gitdir: ")) throw new SyntaxError(`Unexpected "${dotGit}"`);
    gitDir = resolvePath(root, text.slice("gitdir: ".length).replace(/\r?\n$/, ""));
  }
  try {
    const common = readRegularTextFile(joinPath(gitDir, "commondir"));
    return { gitDir, commonDir: resolvePath(gitDir, common.replace(/\r?\n$/, "")) };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { gitDir, commonDir: gitDir };
    throw error;
  }
}

/** The admin entry, `<common dir>/worktrees/<id>`, whose `gitdir` names the worktree at `path`. */
export function adminDirOf(commonDir: string, worktreePath: string): string | undefined {
  const target = comparablePath(joinPath(worktreePath, ".git"));
  const admin = joinPath(commonDir, "worktrees");
  try {
    for (const entry of Deno.readDirSync(admin)) {
      const dir = joinPath(admin, entry.name);
      let gitdir: string;
      try {
        gitdir = readRegularTextFile(joinPath(dir, "gitdir")).replace(/\r?\n$/, "");
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw error;
        continue;
      }
      if (comparablePath(gitdir) === target) return dir;
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  return undefined;
}
