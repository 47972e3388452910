// The current worktree's bundle: read as it is, or loaded (allocating when needed).

import { allocateIn, type AllocateOptions, type Allocation } from "./allocate.ts";
import { type Environment, environmentOf } from "./environment.ts";
import {
  isForeign,
  isOutdatedFor,
  portFileData,
  portFilePath,
  type PortFilePathOptions,
  readPortFile,
} from "./port_file.ts";
import { openWorktree } from "./repository.ts";

/** Options for {@linkcode readBundle}. */
export interface ReadBundleOptions extends PortFilePathOptions, Pick<Environment, "git"> {
  /**
   * The config file the port file is compared with; relative paths are
   * resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
}

/** The current worktree's port file, as {@linkcode readBundle} found it. */
export interface CurrentBundle {
  /** The port file. */
  path: string;
  /** Its top-level values, exactly as stored. */
  data: Record<string, unknown>;
  /** The file names another worktree: it was copied, and its ports are not this worktree's. */
  foreign: boolean;
  /**
   * The file names a path that is no worktree now: it moved with its worktree
   * (`git worktree move`), or was copied from a removed worktree, whose slot
   * another worktree may hold by now. {@linkcode loadBundle} checks it against
   * the other worktrees and rewrites it.
   */
  moved: boolean;
  /**
   * The file's keys or values are not what the config renders for its slot
   * now: {@linkcode loadBundle} would rewrite it.
   */
  outdated: boolean;
}

/**
 * Reads the current worktree's port file without changing anything.
 *
 * @param options Where, which output file, and the git runner.
 * @returns The file's values, or `undefined` when there is no file yet.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`, or
 * `INVALID_CONFIG` when the config the file is compared with is not valid.
 * @throws {Error} When the file exists but cannot be read or parsed.
 *
 * @example Usage
 * ```ts ignore
 * import { readBundle } from "@org/worktree-ports";
 *
 * const bundle = await readBundle();
 * console.log(bundle?.data.port);
 * ```
 */
export async function readBundle(
  options: ReadBundleOptions = {},
): Promise<CurrentBundle | undefined> {
  const repository = await openWorktree(options.cwd, environmentOf(options));
  const path = portFilePath(repository.root, options);
  const file = readPortFile(path);
  if (file.state === "missing") return undefined;
  if (file.state === "unreadable") {
    throw new Error(
      `Cannot read "${path}": ${file.reason} (run "worktree-ports allocate" to replace it)`,
    );
  }
  const foreign = isForeign(file, repository.root, repository);
  return {
    path,
    data: file.data,
    foreign,
    moved: !foreign && file.meta !== undefined && file.meta.worktree !== repository.root,
    outdated: !foreign && file.meta !== undefined &&
      isOutdatedFor(repository, file.data, file.meta.slot, options),
  };
}

/** The current worktree's bundle, as {@linkcode loadBundle} found or made it. */
export interface LoadedBundle {
  /** The port file. */
  path: string;
  /** The bundle's top-level values. */
  data: Record<string, unknown>;
  /** The allocation made because the worktree had no port file of its own, if one was made. */
  allocation?: Allocation;
  /**
   * The file was rewritten, as `allocation`, because its keys or values were
   * not what the config renders for its slot now.
   *
   * @default {false}
   */
  outdated?: boolean;
  /**
   * The file, as `allocation`, was rewritten because it named a path that is
   * no worktree now: it moved with its worktree, or was copied from a removed
   * one. It keeps its slot unless another worktree holds it.
   *
   * @default {false}
   */
  moved?: boolean;
}

/**
 * The current worktree's bundle: its own port file when it has one,
 * otherwise a fresh allocation (a missing, unreadable or copied file). A file
 * the config has changed under (keys added, removed or rendered differently),
 * or holding a number that is not a port, is rewritten for the same slot
 * under the lock, as {@linkcode allocate} would; the slot changes only when
 * the new ports collide.
 *
 * @param options The same options as {@linkcode allocate}, used when allocating.
 * @returns The bundle's values, and the allocation if one was made.
 * @throws {WorktreePortsError} As {@linkcode allocate} does, when it allocates.
 *
 * @example Usage
 * ```ts ignore
 * import { bundleEnv, loadBundle } from "@org/worktree-ports";
 *
 * const { data } = await loadBundle();
 * console.log(bundleEnv(data));
 * ```
 */
export async function loadBundle(options: AllocateOptions = {}): Promise<LoadedBundle> {
  const start = performance.now();
  const env = environmentOf(options);
  const repository = await openWorktree(options.cwd, env);
  const path = portFilePath(repository.root, options);
  const file = readPortFile(path);
  let outdated = false;
  // A file that names another path (a moved worktree's, or a copy from a
  // removed one) is checked against the siblings under the lock: its slot
  // may be another worktree's by now.
  if (
    file.state === "read" && (file.meta === undefined || file.meta.worktree === repository.root)
  ) {
    outdated = file.invalid !== undefined || (file.meta !== undefined &&
      isOutdatedFor(repository, file.data, file.meta.slot, options));
    if (!outdated) return { path, data: file.data };
  }
  const moved = file.state === "read" && file.meta !== undefined &&
    file.meta.worktree !== repository.root && !isForeign(file, repository.root, repository);
  const allocation = await allocateIn(repository, options, env, start);
  return {
    path,
    data: portFileData(allocation),
    allocation,
    outdated,
    ...(moved ? { moved } : {}),
  };
}
