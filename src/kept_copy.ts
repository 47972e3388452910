// The copy of a linked worktree's port file kept in its admin entry in git's directory.

import { removeStaleTemporaryFiles, writeFileAtomic } from "./files.ts";
import { adminEntryOf, gitDirsOf } from "./git_dirs.ts";
import { joinPath } from "./paths.ts";
import { type PortFileRead, readPortFile } from "./port_file.ts";

/**
 * Name of the copy of a linked worktree's port file kept in its directory
 * under `<common dir>/worktrees/`. Git deletes that directory when the
 * worktree is removed or pruned, so the copy lives exactly as long as the
 * worktree. It answers for a worktree whose own file cannot be read: one whose
 * file is unreadable, or a locked worktree whose directory is away.
 */
const KEPT_COPY_NAME = "worktree-ports.json";

/**
 * Where the copy of a linked worktree's port file is kept; `undefined` if its
 * git directory is unknown. `known` is its git directory, when already read.
 */
export function keptCopyPath(
  root: string,
  known?: { gitDir: string; commonDir: string },
): string | undefined {
  try {
    const { gitDir, commonDir } = known ?? gitDirsOf(root);
    return gitDir === commonDir ? undefined : joinPath(gitDir, KEPT_COPY_NAME);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return undefined;
  }
}

/** Refreshes the kept copy when the file changed or the copy is missing; a failure is a warning. */
export function keepCopy(path: string, text: string, changed: boolean, warnings: string[]): void {
  try {
    if (!changed && Deno.statSync(path).isFile) return;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  try {
    removeStaleTemporaryFiles(path);
    writeFileAtomic(path, text);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot keep a copy of the port file in git's directory: ${(error as Error).message}`,
    );
  }
}

/** Deletes the kept copy of a released worktree's file. */
export function dropKeptCopy(root: string): void {
  const path = keptCopyPath(root);
  if (path === undefined) return;
  try {
    Deno.removeSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
}

/**
 * The kept copy of a worktree known by its path, found through the `gitdir`
 * files of the admin entries (its own `.git` file may be gone with it).
 */
export function readKeptCopy(commonDir: string, worktreePath: string): PortFileRead {
  const admin = adminEntryOf(commonDir, worktreePath);
  return admin === undefined
    ? { state: "missing" }
    : readPortFile(joinPath(admin.dir, KEPT_COPY_NAME));
}
