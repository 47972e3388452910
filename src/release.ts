// Releasing a worktree's port file.

import { loadConfig } from "./config.ts";
import { type EnvFile, placeEnvFiles, removeEnvFiles } from "./env_file.ts";
import { type Environment, environmentOf } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { removeStaleTemporaryFiles } from "./files.ts";
import { dropKeptCopy } from "./kept_copy.ts";
import { lockRepository } from "./lock.ts";
import { PORT_FILE_NAME } from "./names.ts";
import { assertNotDirectory } from "./output.ts";
import { joinPath, relativeInside } from "./paths.ts";
import { type PortFilePathOptions, readPortFile, realPortFilePath } from "./port_file.ts";
import { assertStillWorktree, currentListing, openWorktree } from "./repository.ts";

/** Options for {@linkcode releasePorts}. */
export interface ReleaseOptions extends PortFilePathOptions, Pick<Environment, "git"> {
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
}

/** What {@linkcode releasePorts} did. */
export interface Release {
  /** The port file. */
  path: string;
  /** The file existed and was deleted. */
  released: boolean;
  /** The env files the config names that this tool wrote, deleted with it. */
  envFiles: string[];
}

/**
 * Deletes the current worktree's port file under the lock, so that its slot
 * is free for the next allocation. A missing file is not an error.
 *
 * @param options Where, which port file, the lock timeout and the git runner.
 * @returns The path and whether a file was deleted.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED` or `LOCK_TIMEOUT`.
 *
 * @example Usage
 * ```ts ignore
 * import { releasePorts } from "@org/worktree-ports";
 *
 * const { released, path } = await releasePorts();
 * console.log(released ? `deleted ${path}` : "nothing to release");
 * ```
 */
export async function releasePorts(options: ReleaseOptions = {}): Promise<Release> {
  const env = environmentOf(options);
  const listed = await openWorktree(options.cwd, env);
  assertNotDirectory(realPortFilePath(listed.root, options));
  // The env files are the config's: one that cannot be read names none.
  let envFileNames: string[] | undefined;
  try {
    envFileNames = loadConfig(listed.root).envFiles;
  } catch (error) {
    if (!(error instanceof WorktreePortsError)) throw error;
  }
  using _lock = await lockRepository(listed.commonDir, { timeoutMs: options.lockTimeoutMs });
  const repository = await currentListing(listed, env);
  assertStillWorktree(repository.root);
  const path = realPortFilePath(repository.root, options);
  removeStaleTemporaryFiles(path);
  if (path === joinPath(repository.root, PORT_FILE_NAME)) dropKeptCopy(repository.root);
  // The env files the file says were written with it, as well as the config's.
  const written = readPortFile(path);
  const recorded = written.state === "read" ? written.meta?.env_files ?? [] : [];
  const names = [...new Set([...(envFileNames ?? []), ...recorded])];
  let released = true;
  try {
    await Deno.remove(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    released = false;
  }
  // Only where allocate writes them: with the worktree's own port file, and
  // nowhere a link leads out of the worktree.
  let envFiles: EnvFile[] = [];
  if (relativeInside(repository.root, path) !== undefined) {
    try {
      envFiles = placeEnvFiles(repository.root, names, path);
    } catch (error) {
      if (!(error instanceof WorktreePortsError)) throw error;
    }
  }
  return { path, released, envFiles: removeEnvFiles(envFiles) };
}
