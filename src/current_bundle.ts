// The current worktree's bundle: read as it is, or loaded (allocating when needed).

import { allocateIn, type AllocateOptions, type Allocation } from "./allocate.ts";
import { renderBundle } from "./bundle.ts";
import type { LoadConfigOptions } from "./config.ts";
import { isReservedEnvName } from "./env_names.ts";
import { type Environment, environmentOf } from "./environment.ts";
import { quoted } from "./errors.ts";
import { isPort, META_KEY } from "./names.ts";
import {
  isForeign,
  isOutdated,
  isOutdatedFor,
  judgingConfig,
  portFileData,
  type PortFilePathOptions,
  type PortFileRead,
  readPortFile,
  realPortFilePath,
} from "./port_file.ts";
import { type OpenedRepository, openWorktree } from "./repository.ts";
import { blockedPortsOf } from "./usable_ports.ts";

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
  const path = realPortFilePath(repository.root, options);
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
  /**
   * Keys of the file left out of `data`, with why: with no config, a port
   * file gives only ports.
   *
   * @default {undefined}
   */
  warnings?: string[];
}

/**
 * How this worktree's file stands for what `show`, `env` and `exec` give:
 * `current`, its own file holding exactly what its config renders for its
 * slot (or, with no config at all, the ports of the flags it was allocated
 * with), to use as it is; `outdated`, its own file that the config has
 * changed under, or whose slot no allocation would give it; `moved`, its own
 * file recorded for a path that is no worktree now (moved with its worktree,
 * or copied from a removed one), whose slot another worktree may hold by now,
 * checked only by an allocation; `foreign`, `unowned` (no metadata: committed or
 * written by another tool), `invalid`, `unreadable` or `none`: not this
 * worktree's current bundle, which only an allocation makes.
 */
export type Standing =
  | {
    state: "current";
    /** What to give: the file's values, or with no config its ports alone. */
    data: Record<string, unknown>;
    /** Keys of the file left out, with why. */
    warnings: string[];
  }
  | { state: "outdated" | "foreign" | "moved" | "unowned" | "invalid" | "unreadable" | "none" };

/**
 * How this worktree's port file stands (see {@linkcode Standing}), changing
 * nothing: what `show` gives, without allocating.
 */
export async function readStanding(
  options: ReadBundleOptions,
): Promise<{ path: string; standing: Standing; file: PortFileRead; hasConfig: boolean }> {
  const repository = await openWorktree(options.cwd, environmentOf(options));
  const path = realPortFilePath(repository.root, options);
  const file = readPortFile(path);
  return {
    path,
    standing: standingOf(repository, path, file, options),
    file,
    hasConfig: judgingConfig(repository.root, options) !== undefined,
  };
}

/** How the file at `path` stands for the worktree of `repository` (see {@linkcode Standing}). */
function standingOf(
  repository: OpenedRepository,
  path: string,
  file: PortFileRead,
  options: LoadConfigOptions,
): Standing {
  if (file.state === "missing") return { state: "none" };
  if (file.state === "unreadable") return { state: "unreadable" };
  if (file.meta === undefined) return { state: "unowned" };
  if (file.meta.worktree !== repository.root) {
    return { state: isForeign(file, repository.root, repository) ? "foreign" : "moved" };
  }
  if (file.invalid !== undefined) return { state: "invalid" };
  // A slot no allocation gives this worktree (the main worktree's slot 0 in a
  // linked one, say) was written by hand: an allocation decides it again.
  const { slot } = file.meta;
  if (!Number.isInteger(slot) || slot < (repository.primary ? 0 : 1)) return { state: "outdated" };
  const config = judgingConfig(repository.root, options);
  if (config !== undefined) {
    if (slot > config.slots || blockedPortsOf(config, slot).length > 0) {
      return { state: "outdated" };
    }
    const bundle = renderBundle(config, slot, { worktree: repository.current });
    return isOutdated(file.data, bundle)
      ? { state: "outdated" }
      : { state: "current", data: file.data, warnings: [] };
  }
  // No config file and no overrides: it was allocated with --port flags,
  // which give ports and nothing else. A string came from somewhere else (a
  // commit, a copy) and is never handed on.
  const data: Record<string, unknown> = {};
  const left: string[] = [];
  for (const [key, value] of Object.entries(file.data)) {
    if (key === META_KEY || (isPort(value) && !isReservedEnvName(key.toUpperCase()))) {
      data[key] = value;
    } else {
      left.push(key);
    }
  }
  const warnings = left.length === 0 ? [] : [
    `Left out ${left.map(quoted).join(", ")} of "${path}": with no config, a port file gives ` +
    `only ports, under names no config would refuse (a config's templates make the rest; add ` +
    `them there to keep them)`,
  ];
  return { state: "current", data, warnings };
}

/**
 * The current worktree's bundle, never another's and never a name its config
 * does not produce: its own port file when that holds exactly what its
 * config renders for its slot, otherwise an allocation (a missing,
 * unreadable or copied file, or one without metadata, as a committed file
 * is). A file the config has changed under (keys added, removed or rendered
 * differently), or holding a number that is not a port, is rewritten for the
 * same slot under the lock, as {@linkcode allocate} would, naming the keys it
 * drops; the slot changes only when the new ports collide. With no config
 * file and no overrides, the file was allocated with `--port` flags: its
 * ports are given, and anything else in it is left out with a warning.
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
  const path = realPortFilePath(repository.root, options);
  const file = readPortFile(path);
  const standing = standingOf(repository, path, file, options);
  if (standing.state === "current") {
    return {
      path,
      data: standing.data,
      ...(standing.warnings.length > 0 ? { warnings: standing.warnings } : {}),
    };
  }
  const outdated = standing.state === "outdated" || standing.state === "invalid";
  const moved = standing.state === "moved";
  const allocation = await allocateIn(repository, options, env, start);
  return {
    path,
    data: portFileData(allocation),
    allocation,
    outdated,
    ...(moved ? { moved } : {}),
  };
}
