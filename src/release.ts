// Releasing a worktree's port file, after running the config's on_release.

import { loadConfig } from "./config.ts";
import { type EnvFile, placeEnvFiles, removeEnvFiles } from "./env_file.ts";
import { type Environment, environmentOf } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { pathExists, removeStaleTemporaryFiles } from "./files.ts";
import { dropKeptCopy } from "./kept_copy.ts";
import { lockRepository } from "./lock.ts";
import { META_KEY, PORT_FILE_NAME } from "./names.ts";
import {
  howItEnded,
  lockTeardown,
  type OnReleaseCommand,
  onReleaseCommand,
  type OnReleaseResult,
  runOnRelease,
  showCommand,
} from "./on_release.ts";
import { assertNotDirectory } from "./output.ts";
import { comparablePath, joinPath, relativeInside } from "./paths.ts";
import {
  isForeign,
  type PortFilePathOptions,
  type PortFileRead,
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
    // Its on_release cannot be known: releasing without it would leave what it tears down.
    if (!options.skipOnRelease) {
      throw new WorktreePortsError(
        error.code,
        `${error.message}; so its "on_release" cannot be known: fix the config, or run ` +
          `"worktree-ports release --skip-on-release" to free the ports without it`,
        { cause: error },
      );
    }
  }
  const ownPath = realPortFilePath(listed.root, options);
  const own = readPortFile(ownPath);
  let run: Release["onRelease"];
  // Only for a file of this worktree's own: a copied one holds another's bundle
  // (one that moved with its worktree is its own).
  if (
    onRelease !== undefined && !options.skipOnRelease && own.state === "read" &&
    own.meta !== undefined && !isForeign(own, listed.root, listed)
  ) {
    const bundle = bundleOf(own.data);
    run = onReleaseCommand(onRelease, bundle, own.meta.slot, listed.current, listed.root);
    if (!options.dryRun) {
      options.onRun?.(run);
      using _teardown = await lockTeardown(listed.commonDir);
      let result;
      try {
        result = await runOnRelease(run);
      } catch (error) {
        if (!(error instanceof WorktreePortsError)) throw error;
        throw new WorktreePortsError(
          error.code,
          `${error.message}; the ports stay held (run "worktree-ports release --skip-on-release" ` +
            `to free them without it)`,
          { cause: error },
        );
      }
      run = { ...run, ...result };
      if (result.code !== 0) {
        throw new WorktreePortsError(
          "ON_RELEASE_FAILED",
          `The config's "on_release" (${showCommand(run.command)}) ${howItEnded(result)}; ` +
            `the ports stay held: fix what failed and run "worktree-ports release" again (or ` +
            `"worktree-ports release --skip-on-release" to free them without it)`,
        );
      }
      // It may have removed the worktree itself (git worktree remove): done, then.
      if (!pathExists(listed.root)) {
        using _lock = await lockRepository(listed.commonDir, { timeoutMs: options.lockTimeoutMs });
        forgetPath(listed.commonDir, listed.current.path, own, warnings);
        return { path: ownPath, released: true, envFiles: [], onRelease: run, warnings };
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
  forgetPath(repository.commonDir, repository.current.path, written, warnings);
  return { path, released, envFiles: removeEnvFiles(envFiles), onRelease: run, warnings };
}

/**
 * Forgets what the memory holds of a worktree: at its path, or of its file's
 * allocation (recorded where it was before it moved). The caller holds the lock.
 */
function forgetPath(
  commonDir: string,
  worktree: string,
  own: PortFileRead,
  warnings: string[],
): void {
  const memory = readMemory(commonDir);
  const meta = own.state === "read" ? own.meta : undefined;
  const forgotten = forgetWorktrees(
    memory,
    memory.worktrees.filter((item) =>
      comparablePath(item.worktree) === comparablePath(worktree) ||
      (meta !== undefined && item.slot === meta.slot && item.allocatedAt === meta.allocated_at)
    ),
  );
  if (forgotten.worktrees.length === memory.worktrees.length) return;
  try {
    writeMemory(commonDir, forgotten);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot forget this worktree in the memory prune reads: ${(error as Error).message}`,
    );
  }
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
