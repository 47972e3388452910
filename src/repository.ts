// A repository as seen from a directory: its worktrees, the current one, its common
// directory, and its listing kept current under the lock.

import { type Env, environmentOf } from "./environment.ts";
import { notAWorktree, WorktreePortsError } from "./errors.ts";
import { realPathOr } from "./files.ts";
import { adminEntryNames, findCommonDir, nearestGitDirs, worktreeExists } from "./git_dirs.ts";
import { comparablePath, IS_WINDOWS, relativeInside, slashedPath } from "./paths.ts";
import { listWorktrees, type ListWorktreesOptions, type Worktree } from "./worktree_list.ts";

/** The repository around a directory, as {@linkcode openRepository} finds it. */
export interface Repository {
  /** Every worktree of the repository, the main one (or the bare repository) first. */
  worktrees: Worktree[];
  /** The worktree containing the directory. */
  current: Worktree;
  /** The real path of the current worktree's root. */
  root: string;
  /** The current worktree is the main worktree, which owns slot 0. */
  primary: boolean;
  /** The git directory shared by all worktrees, where the lock lives. */
  commonDir: string;
}

/**
 * Finds the worktree containing a directory, its siblings and the shared git
 * directory, with a single git call.
 *
 * @param options The directory and the git runner.
 * @returns The repository as seen from that directory.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` when the directory
 * is not inside a worktree (including inside a bare repository), `GIT_FAILED`
 * when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { openRepository } from "@org/worktree-ports";
 *
 * const repository = await openRepository();
 * console.log(repository.root, repository.primary);
 * ```
 */
export async function openRepository(
  options: ListWorktreesOptions = {},
): Promise<Repository> {
  const { worktrees, current, root, primary, commonDir } = await openWorktree(
    options.cwd,
    environmentOf(options),
  );
  return { worktrees, current, root, primary, commonDir };
}

/**
 * A repository as this package opens it: a {@linkcode Repository}, and what
 * was read on the way that later steps use again.
 */
export interface OpenedRepository extends Repository {
  /**
   * The names of the admin entries (see {@linkcode adminEntryNames}) taken
   * just before git listed the worktrees. Git adds an entry for every new
   * linked worktree and removes it with the worktree, so the same names
   * under the lock mean no worktree was added or removed since the listing.
   */
  listedEntries?: string;
  /** The current worktree's git directory, when it was read while opening it. */
  gitDir?: string;
}

/** {@linkcode openRepository} for the operations, refusing a bare repository's directory. */
export async function openWorktree(
  cwd: string | undefined,
  env: Pick<Env, "git">,
): Promise<OpenedRepository> {
  const repository = await openRepositoryOrBare(cwd, env);
  if (repository.current.bare) throw inBareRepository(repository);
  return repository;
}

/**
 * {@linkcode openRepository}, also from a bare repository's directory, where
 * `current` is the bare repository: enough for commands that only read the
 * linked worktrees.
 */
export async function openRepositoryOrBare(
  cwd: string | undefined,
  env: Pick<Env, "git">,
): Promise<OpenedRepository> {
  const start = cwd ?? Deno.cwd();
  let dir: string;
  try {
    dir = Deno.realPathSync(start);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw notAWorktree(start, error);
  }
  // The admin entries are taken before git lists the worktrees, so that a
  // worktree added after the listing shows up as a difference under the lock
  // (see currentListing).
  const near = nearestGitDirs(dir);
  const entries = near === undefined ? undefined : adminEntryNames(near.commonDir);
  const worktrees = await listWorktrees({ cwd: dir, git: env.git });
  const current = findContaining(worktrees, dir, (w) => w.path) ??
    findContaining(await realPaths(worktrees), dir, (w) => w.real)?.worktree ??
    mainNamedByGitDir(worktrees, near);
  if (current === undefined) throw notAWorktree(dir);
  const root = slashedPath(Deno.realPathSync(current.path));
  if (isInGitDirectory(root, dir)) throw notAWorktree(dir);
  // The `.git` found from `dir` is usually the root's own: no need to read it twice.
  const own = near !== undefined && comparablePath(near.at) === comparablePath(root)
    ? near
    : undefined;
  const commonDir = current.bare ? root : own?.commonDir ?? await findCommonDir(root, env.git);
  return {
    worktrees,
    current,
    root,
    primary: current === worktrees[0],
    commonDir,
    listedEntries: near?.commonDir === commonDir ? entries : undefined,
    gitDir: current.bare ? undefined : own?.gitDir,
  };
}

/**
 * The main worktree when git names it by its git directory, so that no listed
 * worktree contains `dir`: a worktree made with `git init --separate-git-dir`,
 * or the folder whose `.git` file points to a bare repository beside it
 * (`gitdir: ./.bare`). The nearest `.git` above `dir`, found as git finds it,
 * leads to the main entry's directory; the main entry then takes the folder
 * holding that `.git` as its path, while a bare one stays the bare repository.
 */
function mainNamedByGitDir(
  worktrees: Worktree[],
  found: ReturnType<typeof nearestGitDirs>,
): Worktree | undefined {
  const main = worktrees[0];
  if (main === undefined || main.prunable) return undefined;
  // A linked worktree's `.git` leads to its admin entry, never straight to
  // the common directory; one moved away from its listed path is not the
  // main worktree.
  if (
    found === undefined || found.gitDir !== found.commonDir ||
    comparablePath(realPathOr(found.commonDir)) !== comparablePath(realPathOr(main.path))
  ) {
    return undefined;
  }
  if (!main.bare) main.path = found.at;
  return main;
}

/**
 * The repository as it is now, for a caller holding the lock. The listing
 * taken before the lock is kept when no worktree has been added or removed
 * since (one directory read); otherwise git lists the worktrees again. A
 * worktree created while an allocation waited for the lock is then scanned
 * like any other.
 */
export async function currentListing(
  repository: OpenedRepository,
  env: Pick<Env, "git">,
): Promise<OpenedRepository> {
  const listed = repository.listedEntries;
  if (listed !== undefined && listed === adminEntryNames(repository.commonDir)) return repository;
  return await relist(repository, env);
}

/** Lists the worktrees again, from the same worktree (or bare repository). */
export async function relist(
  repository: Repository,
  env: Pick<Env, "git">,
): Promise<OpenedRepository> {
  return await openRepositoryOrBare(repository.root, env);
}

/** What to say in a bare repository to a command that needs a worktree: where they are. */
function inBareRepository(repository: Repository): WorktreePortsError {
  const linked = repository.worktrees.filter((worktree) => !worktree.bare);
  const names = linked.slice(0, 5).map((worktree) => `"${worktree.path}"`).join(", ") +
    (linked.length > 5 ? ` and ${linked.length - 5} more` : "");
  return new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${repository.root}" is a bare repository, which has no files and so no ports of its own ` +
      (linked.length === 0
        ? `(add a worktree with "git worktree add" and run this there)`
        : `(run this in one of its worktrees: ${names})`),
  );
}

/** The entry whose path is the longest one containing `dir`: worktrees may nest. */
export function findContaining<T>(
  entries: readonly T[],
  dir: string,
  pathOf: (entry: T) => string | undefined,
): T | undefined {
  let best: T | undefined;
  let bestLength = -1;
  const target = comparablePath(dir);
  for (const entry of entries) {
    const path = pathOf(entry);
    if (path === undefined) continue;
    const candidate = comparablePath(path).replace(/\/+$/, "");
    if (
      (target === candidate || target.startsWith(candidate + "/")) &&
      candidate.length > bestLength
    ) {
      best = entry;
      bestLength = candidate.length;
    }
  }
  return best;
}

export async function realPaths(
  worktrees: readonly Worktree[],
): Promise<{ worktree: Worktree; real?: string }[]> {
  return await Promise.all(worktrees.map(async (worktree) => {
    try {
      return { worktree, real: await Deno.realPath(worktree.path) };
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      return { worktree };
    }
  }));
}

/** The current worktree's git directories, when they were read while opening it. */
export function knownGitDirs(
  repository: OpenedRepository,
): { gitDir: string; commonDir: string } | undefined {
  const { gitDir, commonDir } = repository;
  return gitDir === undefined ? undefined : { gitDir, commonDir };
}

/**
 * Refuses to write for a worktree that was moved or removed while the caller
 * waited for the lock: writing at its old place would make a stray file.
 */
export function assertStillWorktree(root: string): void {
  if (worktreeExists(root)) return;
  throw new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${root}" is not a worktree any more: it was moved or removed while this command waited ` +
      `for the lock (run it again where the worktree is now)`,
  );
}

/** Whether a listed linked worktree has lost its `.git`: the listing is out of date. */
export function hasVanishedWorktree(repository: Repository): boolean {
  return repository.worktrees.some((worktree) =>
    worktree !== repository.worktrees[0] && !worktree.bare && !worktree.prunable &&
    !worktree.locked && !worktreeExists(worktree.path)
  );
}

/**
 * Whether `dir` lies in git's own directory, which sits inside the main
 * worktree but is no part of it (`.git\\hooks` on Windows, `.GIT` where case
 * is ignored).
 */
export function isInGitDirectory(root: string, dir: string, windows = IS_WINDOWS): boolean {
  const inside = relativeInside(root, dir, windows) ?? "";
  return (windows ? /^\.git([\\/]|$)/i : /^\.git(\/|$)/).test(inside);
}
