// Releasing a worktree's port file, after running the config's on_release.

import { loadConfig } from "./config.ts";
import { type EnvFile, placeEnvFiles, removeEnvFiles } from "./env_file.ts";
import { type Environment, environmentOf } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { removeStaleTemporaryFiles } from "./files.ts";
import { dropKeptCopy } from "./kept_copy.ts";
import { lockRepository } from "./lock.ts";
import { META_KEY, PORT_FILE_NAME } from "./names.ts";
import {
  type OnReleaseCommand,
  onReleaseCommand,
  type OnReleaseResult,
  runOnRelease,
  showCommand,
} from "./on_release.ts";
import { assertNotDirectory } from "./output.ts";
import { joinPath, relativeInside } from "./paths.ts";
import {
  isForeign,
  type PortFilePathOptions,
  readPortFile,
  realPortFilePath,
} from "./port_file.ts";
import { assertStillWorktree, currentListing, openWorktree } from "./repository.ts";
import { forgetWorktrees, readMemory, writeMemory } from "./worktree_memory.ts";

/** Options for {@linkcode releasePorts}. */
export interface ReleaseOptions extends PortFilePathOptions, Pick<Environment, "git"> {
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * Change nothing: only say what would run and which file would go.
   *
   * @default {false}
   */
  dryRun?: boolean;
  /**
   * Free the ports without running the config's `on_release`.
   *
   * @default {false}
   */
  skipOnRelease?: boolean;
  /**
   * Called with the config's `on_release`, filled in, just before it runs.
   *
   * @default {undefined}
   */
  onRun?: (run: OnReleaseCommand) => void;
}

/** What {@linkcode releasePorts} did. */
export interface Release {
  /** The port file. */
  path: string;
  /** The file existed and was deleted (or, for a dry run, would be). */
  released: boolean;
  /** The env files the config names that this tool wrote, deleted with it. */
  envFiles: string[];
  /** The config's `on_release`, filled in, and (unless a dry run) how it ended. */
  onRelease?: OnReleaseCommand & Partial<OnReleaseResult>;
  /** Problems that did not stop the release, such as a config that cannot be read. */
  warnings: string[];
}

/**
 * Deletes the current worktree's port file under the lock, so that its slot
 * is free for the next allocation. A missing file is not an error. First, the
 * config's `on_release` runs in the worktree with the file's bundle (not under
 * the lock: a teardown may take a while); when it fails, nothing is deleted.
 *
 * @param options Where, which port file, the lock timeout, the git runner, and `dryRun`.
 * @returns The path, whether a file was deleted, and what `on_release` ran.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `LOCK_TIMEOUT` or `ON_RELEASE_FAILED`.
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
  const warnings: string[] = [];
  // The env files are the config's: one that cannot be read names none.
  let envFileNames: string[] | undefined;
  let onRelease: string[] | undefined;
  try {
    ({ envFiles: envFileNames, onRelease } = loadConfig(listed.root));
  } catch (error) {
    if (!(error instanceof WorktreePortsError)) throw error;
    warnings.push(`${error.message}; so no "on_release" of it runs`);
  }
  const ownPath = realPortFilePath(listed.root, options);
  const own = readPortFile(ownPath);
  let run: Release["onRelease"];
  // Only for a file of this worktree's own: a copied one holds another's bundle.
  if (
    onRelease !== undefined && !options.skipOnRelease && own.state === "read" &&
    own.meta !== undefined && !isForeign(own, listed.root)
  ) {
    const bundle = bundleOf(own.data);
    run = onReleaseCommand(onRelease, bundle, own.meta.slot, listed.current, listed.root);
    if (!options.dryRun) {
      options.onRun?.(run);
      const result = await runOnRelease(run);
      run = { ...run, ...result };
      if (result.code !== 0) {
        throw new WorktreePortsError(
          "ON_RELEASE_FAILED",
          `The config's "on_release" (${showCommand(run.command)}) failed with exit code ` +
            `${result.code}; the ports stay held: fix what failed and run "worktree-ports ` +
            `release" again (or "worktree-ports release --skip-on-release" to free them without it)`,
        );
      }
    }
  }
  if (options.dryRun) {
    return {
      path: ownPath,
      released: own.state !== "missing",
      envFiles: [],
      onRelease: run,
      warnings,
    };
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
  // Released, it is nothing for prune to tear down; its branch keeps its slot in mind.
  const memory = readMemory(repository.commonDir);
  const forgotten = forgetWorktrees(memory, [repository.current.path]);
  if (forgotten.worktrees.length !== memory.worktrees.length) {
    try {
      writeMemory(repository.commonDir, forgotten);
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      warnings.push(
        `Cannot forget this worktree in the memory prune reads: ${(error as Error).message}`,
      );
    }
  }
  return { path, released, envFiles: removeEnvFiles(envFiles), onRelease: run, warnings };
}

/** A port file's bundle: every top-level value but the metadata. */
function bundleOf(data: Record<string, unknown>): Record<string, number | string> {
  const bundle: Record<string, number | string> = {};
  for (const [key, value] of Object.entries(data)) {
    if (key !== META_KEY && (typeof value === "number" || typeof value === "string")) {
      bundle[key] = value;
    }
  }
  return bundle;
}
