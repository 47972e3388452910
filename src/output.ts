// What an explicit output path may not be.

import { clip, WorktreePortsError } from "./errors.ts";
import { isSymlink, realPathOfNearest, realPathOr } from "./files.ts";
import { gitDirsOf, nearestGitDirs } from "./git_dirs.ts";
import { META_KEY } from "./names.ts";
import { comparablePath, joinPath, parentOf, relativeInside } from "./paths.ts";
import { readPortFile } from "./port_file.ts";
import { findContaining, knownGitDirs, realPaths, type Repository } from "./repository.ts";

/**
 * Refuses an output inside another worktree's tree: a port file there would
 * be read as that worktree's own.
 */
export async function assertOwnOutput(
  repository: Repository,
  path: string,
  inside: string | undefined,
): Promise<void> {
  const refuse = (why: string) => {
    throw new WorktreePortsError("INVALID_OUTPUT", `Cannot write "${path}": ${why}`);
  };
  if (inside !== undefined && /[\r\n]/.test(inside)) {
    refuse("a path with a line break cannot be kept out of git (choose another name)");
  }
  const real = realPathOfNearest(path);
  const gitDirs = [joinPath(repository.root, ".git"), repository.commonDir];
  try {
    gitDirs.push((knownGitDirs(repository) ?? gitDirsOf(repository.root)).gitDir);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  for (const dir of gitDirs) {
    const realDir = realPathOr(dir);
    if (
      [path, real].some((candidate) =>
        comparablePath(candidate) === comparablePath(dir) ||
        comparablePath(candidate) === comparablePath(realDir) ||
        relativeInside(dir, candidate) !== undefined ||
        relativeInside(realDir, candidate) !== undefined
      )
    ) {
      refuse(`it is inside git's own directory "${dir}" (choose a path in the worktree)`);
    }
  }
  const worktrees = repository.worktrees.filter((worktree) => !worktree.bare);
  let holder = findContaining(worktrees, path, (worktree) => worktree.path);
  if (holder === undefined || holder === repository.current) {
    holder = findContaining(await realPaths(worktrees), real, (entry) => entry.real)?.worktree ??
      holder;
  }
  if (holder !== undefined && holder !== repository.current) {
    throw new WorktreePortsError(
      "INVALID_OUTPUT",
      `Cannot write "${path}": it is inside the worktree "${holder.path}", not this one ` +
        `("${repository.root}"); run "worktree-ports allocate" in that worktree instead`,
    );
  }
  // A worktree of another repository (a clone beside this one, a submodule):
  // the nearest .git above the path leads to another common directory.
  const near = nearestGitDirs(parentOf(real));
  if (near !== undefined && realPathOr(near.commonDir) !== realPathOr(repository.commonDir)) {
    throw new WorktreePortsError(
      "INVALID_OUTPUT",
      `Cannot write "${path}": it is inside the worktree "${near.at}" of another repository ` +
        `("${near.commonDir}"), not this one ("${repository.root}"); run "worktree-ports ` +
        `allocate" in that worktree instead`,
    );
  }
}

/**
 * Refuses an output that exists and is no port file: `--output README.md`
 * must not replace a file someone keeps. A port file is a JSON object of
 * ports and strings (and its metadata); an empty file, as `mktemp` makes,
 * holds nothing to lose. A directory is left for the write to refuse.
 */
export function assertReplaceableOutput(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return;
  }
  if (info.isDirectory || (info.isFile && info.size === 0)) return;
  const file = readPortFile(path);
  const nested = file.state === "read"
    ? Object.keys(file.data).find((key) => {
      const value = file.data[key];
      return key !== META_KEY && typeof value === "object" && value !== null;
    })
    : undefined;
  const problem = file.state === "unreadable"
    ? file.reason
    : nested !== undefined
    ? `its "${clip(nested)}" holds an object or array, which no port file has`
    : undefined;
  if (problem === undefined) return;
  throw new WorktreePortsError(
    "INVALID_OUTPUT",
    `Cannot write "${path}": it is not a port file (${problem}), and writing would replace it ` +
      `(choose another output path, or remove the file first)`,
  );
}

export function assertNotDirectory(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    if (error instanceof Deno.errors.NotCapable) throw error;
    // A link that leads nowhere (a loop) is replaced by the write, not followed.
    if (isSymlink(path)) return;
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
  if (info.isDirectory) {
    throw new Error(`Cannot write "${path}": it is a directory`);
  }
}
