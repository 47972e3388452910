// Git's directories read as git reads them: `.git`, `commondir`, and the admin
// entries under `<common dir>/worktrees/`.

import { needsAllAccess, pathExists, readRegularTextFile } from "./files.ts";
import type { GitRunner } from "./git.ts";
import { baseName, comparablePath, joinPath, parentOf, resolvePath } from "./paths.ts";

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
      if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
      if (!(error instanceof Deno.errors.NotFound)) return undefined;
    }
    const parent = candidate.replace(/[\\/][^\\/]*$/, "");
    if (parent === candidate || parent === "") return undefined;
    candidate = parent;
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
    if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
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

/**
 * One admin entry of a linked worktree, `<common dir>/worktrees/<id>`: git
 * makes it when the worktree is added and deletes it when the worktree is
 * removed or pruned.
 */
export interface AdminEntry {
  /** Its folder. */
  dir: string;
  /**
   * The worktree's `.git` file, as the entry's `gitdir` file names it (git
   * keeps it current when the worktree moves); `undefined` when unreadable.
   */
  gitFile: string | undefined;
}

/**
 * The admin entries of a repository, in order of name: `[]` when it has no
 * linked worktree, `undefined` when the folder cannot be read. Each entry's
 * `gitdir` file is read only when `withGitFiles` is set.
 */
function readAdminEntries(
  commonDir: string,
  withGitFiles = true,
): AdminEntry[] | undefined {
  const admin = joinPath(commonDir, "worktrees");
  const names: string[] = [];
  try {
    for (const entry of Deno.readDirSync(admin)) names.push(entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
    return error instanceof Deno.errors.NotFound ? [] : undefined;
  }
  return names.sort().map((name) => {
    const dir = joinPath(admin, name);
    return { dir, gitFile: withGitFiles ? readGitFile(dir) : undefined };
  });
}

/** What an admin entry's `gitdir` file names; `undefined` when it cannot be read. */
function readGitFile(dir: string): string | undefined {
  try {
    return readRegularTextFile(joinPath(dir, "gitdir")).replace(/\r?\n$/, "");
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
    return undefined;
  }
}

/**
 * The names of the admin entries, as one string that changes when a linked
 * worktree is added or removed; `undefined` when they cannot be read.
 */
export function adminEntryNames(commonDir: string): string | undefined {
  return readAdminEntries(commonDir, false)?.map((entry) => baseName(entry.dir)).join("\0");
}

/** The admin entry whose `gitdir` names the worktree at `worktreePath`. */
export function adminEntryOf(commonDir: string, worktreePath: string): AdminEntry | undefined {
  const target = comparablePath(joinPath(worktreePath, ".git"));
  return readAdminEntries(commonDir)?.find((entry) =>
    entry.gitFile !== undefined && comparablePath(entry.gitFile) === target
  );
}

/**
 * The worktrees of a repository as git's own files name them, without running
 * git: the main worktree beside a common directory named `.git`, then every
 * linked one through its admin entry.
 */
export function worktreesOnDisk(commonDir: string): string[] {
  const worktrees = /[\\/]\.git$/.test(commonDir) ? [parentOf(commonDir)] : [];
  for (const entry of readAdminEntries(commonDir) ?? []) {
    if (entry.gitFile !== undefined) worktrees.push(parentOf(entry.gitFile));
  }
  return worktrees;
}
