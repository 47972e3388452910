// The state of every worktree's port file, in one repository or on the whole machine.

import type { ConfigOverrides, LoadConfigOptions } from "./config.ts";
import {
  ENV_FILE_IN_THE_WAY,
  type EnvFile,
  envFileText,
  FOREIGN_ENV_FILE,
  NOT_WRITTEN_HERE,
  placeEnvFiles,
  readEnvFile,
  staleEnvFiles,
} from "./env_file.ts";
import { type Env, type Environment, environmentOf } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { fileInfo, hiddenFromDeno, realPathOr } from "./files.ts";
import { worktreeExists, worktreesOnDisk } from "./git_dirs.ts";
import { findHolders, type PortHolder, type StartedScan, startScan } from "./holders.ts";
import { readKeptCopy } from "./kept_copy.ts";
import { goneWorktrees, readMemory } from "./worktree_memory.ts";
import type { ListenerLookup } from "./listeners.ts";
import { MachineSession } from "./machine_index.ts";
import { isPort, PORT_FILE_NAME } from "./names.ts";
import { comparablePath, joinPath, relativeInside } from "./paths.ts";
import {
  expectedBundle,
  isOutdated,
  judgingConfig,
  namesOtherWorktree,
  type PortFilePathOptions,
  readPortFile,
  realPortFilePath,
} from "./port_file.ts";
import { type PortProbe, probePort } from "./probe.ts";
import {
  type OpenedRepository,
  openRepositoryOrBare,
  openWorktree,
  type Repository,
} from "./repository.ts";

/** Marks the ports that other repositories' recorded files hold as conflicts with those worktrees. */
function markOtherRepositories(
  statuses: readonly InspectedStatus[],
  machine: Pick<MachineSession, "holders" | "entries">,
): void {
  if (machine.holders.size === 0) return;
  const entries = new Map(machine.entries.map((entry) => [entry.path, entry]));
  for (const status of statuses) {
    const shared = new Map<string, number[]>();
    for (const port of status.reserved) {
      const holder = machine.holders.get(port);
      if (holder !== undefined) shared.set(holder, [...(shared.get(holder) ?? []), port]);
    }
    for (const [holder, ports] of shared) {
      const entry = entries.get(holder)!;
      status.conflicts.push({ worktree: entry.worktree, ports, repository: entry.repository });
      markDuplicate(status);
    }
  }
}

/**
 * A file that shares ports is `duplicate` when nothing else is wrong with it;
 * one that is outdated, invalid or absent keeps that state, which says more
 * (an absent worktree cannot be moved), and its conflicts are listed all the
 * same.
 */
function markDuplicate(status: WorktreeStatus): void {
  if (status.state === "ok") status.state = "duplicate";
}

/**
 * Records on each status every other status it shares reserved ports with:
 * within one repository, or with `across`, between worktrees of different
 * repositories, each conflict then naming the other's repository. Foreign and
 * unreadable files reserve nothing here, so they are reported as such, not as
 * duplicates: a copied file shares its origin's ports by definition.
 */
function addConflicts(statuses: readonly InspectedStatus[], across: boolean): void {
  const holders = new Map<number, number[]>();
  statuses.forEach((status, index) => {
    for (const port of status.reserved) holders.set(port, [...(holders.get(port) ?? []), index]);
  });
  statuses.forEach((status, index) => {
    const shared = new Map<number, number[]>();
    for (const port of status.reserved) {
      for (const other of holders.get(port)!) {
        const pairs = across ? statuses[other].repository !== status.repository : other !== index;
        if (pairs) shared.set(other, [...(shared.get(other) ?? []), port]);
      }
    }
    for (const [other, ports] of shared) {
      const { path, repository } = statuses[other];
      status.conflicts.push(
        across ? { worktree: path, ports, repository } : { worktree: path, ports },
      );
    }
    if (shared.size > 0) markDuplicate(status);
  });
}

/**
 * The repository around `cwd` (if any) and every other repository with a
 * worktree recorded in the index, each opened through one of its worktrees
 * that still exists. Git runs once per repository: this is for `--all`,
 * not for allocating.
 */
export async function openIndexedRepositories(
  cwd: string | undefined,
  env: Pick<Env, "git" | "index">,
  warnings: string[],
): Promise<{ repositories: OpenedRepository[]; here: boolean }> {
  const repositories: OpenedRepository[] = [];
  try {
    repositories.push(await openWorktree(cwd, env));
  } catch (error) {
    if (!(error instanceof WorktreePortsError && error.code === "NOT_A_WORKTREE")) throw error;
  }
  using machine = await MachineSession.open({ index: env.index, readOnly: true, git: env.git });
  warnings.push(...machine.warnings);
  const here = repositories.length > 0;
  const seen = new Set(repositories.map((repository) => realPathOr(repository.commonDir)));
  const groups = new Map<string, string[]>();
  for (const entry of machine.entries) {
    if (seen.has(entry.repository)) continue;
    groups.set(entry.repository, [...(groups.get(entry.repository) ?? []), entry.worktree]);
  }
  for (const key of [...groups.keys()].sort()) {
    let problem: string | undefined;
    // Its recorded worktrees first, then any it has on disk (the main one
    // beside its git directory, say, when the recorded ones are away).
    const candidates = new Set([...groups.get(key)!, ...worktreesOnDisk(key)]);
    for (const worktree of candidates) {
      if (!worktreeExists(worktree)) continue;
      try {
        const repository = await openWorktree(worktree, env);
        // Entries may name a repository by a path it had before it moved:
        // opened, it may be one already open, whose lock is already held.
        const real = realPathOr(repository.commonDir);
        if (!seen.has(real)) repositories.push(repository);
        seen.add(real);
        problem = undefined;
        break;
      } catch (error) {
        if (!(error instanceof WorktreePortsError)) throw error;
        problem = error.message;
      }
    }
    if (problem === undefined && !seen.has(key) && hiddenFromDeno(key)) {
      problem = "Deno looks into it only with --allow-all";
    }
    if (problem !== undefined) {
      warnings.push(`Skipped the indexed repository "${key}": ${problem}`);
    }
  }
  return { repositories, here };
}

/** Every worktree of every repository given, with the conflicts between them. */
export async function inspectAll(
  { repositories, here }: { repositories: readonly Repository[]; here: boolean },
  options: InspectOptions,
  env: Pick<Env, "probe">,
): Promise<InspectedStatus[]> {
  const all: InspectedStatus[] = [];
  for (const [index, repository] of repositories.entries()) {
    // The first repository is the one around `cwd`, when there is one; a
    // custom output path belongs to it.
    const isHere = here && index === 0;
    const statuses = await inspectRepository(repository, {
      ...options,
      output: isHere ? options.output : undefined,
      listening: false,
    }, env);
    const key = realPathOr(repository.commonDir);
    for (const status of statuses) {
      all.push({ ...status, current: status.current && isHere, repository: key });
    }
  }
  addConflicts(all, true);
  if (options.listening !== false) {
    for (const status of all) await probeListening(status, env.probe);
  }
  return all;
}

/**
 * How a worktree's port file stands: `ok`; `none`, no file; `duplicate`, it
 * shares a port with another worktree; `foreign`, the file names another
 * live worktree (it was copied; a file naming a path that is no worktree any
 * more moved with its worktree, and is its own); `unreadable`; `invalid`, it
 * holds numbers that are not ports; `stale`, git reports the worktree's
 * directory as gone (it reserves nothing); `absent`, a locked worktree whose
 * directory is away (it keeps the ports of its last written file, when a copy
 * of it is known); `outdated`, its keys or values are not what the worktree's
 * config renders for its slot now; `held`, a process of another worktree, or
 * of none, listens on one of its ports; `gone`, a worktree removed without
 * `release`, whose last bundle is remembered for `prune` (it reserves
 * nothing).
 */
export type WorktreeState =
  | "ok"
  | "none"
  | "duplicate"
  | "foreign"
  | "unreadable"
  | "invalid"
  | "stale"
  | "absent"
  | "outdated"
  | "held"
  | "gone";

/** Ports that one worktree shares with another. */
export interface PortConflict {
  /** The other worktree's path. */
  worktree: string;
  /** The ports both reserve. */
  ports: number[];
  /** When the other worktree belongs to another repository: that repository's shared git directory. */
  repository?: string;
}

/** One row of {@linkcode inspectWorktrees}. */
export interface WorktreeStatus {
  /** The worktree's path, as git reports it. */
  path: string;
  /** The branch checked out, if any. */
  branch?: string;
  /** It is the main worktree. */
  primary: boolean;
  /** It is the worktree the inspection ran from. */
  current: boolean;
  /** How its port file stands. */
  state: WorktreeState;
  /** Its port file. */
  file: string;
  /** The slot the file records, if it records one. */
  slot?: number;
  /** Each top-level key of the file whose value is a port. */
  ports: Record<string, number>;
  /** For each key of `ports`, whether something listens on that port now. */
  listening: Record<string, boolean>;
  /**
   * For each key of `ports` that something listens on: who, as far as the
   * system tells.
   */
  holders: Record<string, PortHolder[]>;
  /** When the file's slot was allocated, if the file says. */
  allocatedAt?: string;
  /** For `duplicate`: every other worktree it shares ports with. */
  conflicts: PortConflict[];
  /** For `foreign`: the worktree the file names; for `unreadable`, `invalid`, `absent`, `gone` and `stale`: why, or what is left to do. */
  detail?: string;
  /** The shared git directory of its repository, in {@linkcode inspectMachine}'s results. */
  repository?: string;
}

/** Options for {@linkcode inspectWorktrees}. */
export interface InspectOptions extends PortFilePathOptions, ConfigOverrides, Environment {
  /**
   * The config file each worktree's file is compared with, to tell an
   * outdated one; relative paths are resolved against each worktree's root.
   *
   * @default {undefined} `worktree-ports.config.json` in each worktree's root, if present
   */
  config?: string;
  /**
   * Probe every port to report whether it is listening now.
   *
   * @default {true}
   */
  listening?: boolean;
  /**
   * Ask the system which processes listen on the ports, and where they run;
   * a worktree whose port a process of another worktree, or of none, holds is
   * `held`.
   *
   * @default {true}
   */
  holders?: boolean;
  /**
   * Ask also for each holder's whole command line, which takes one more
   * program run; without it, a holder's `command` is its short name.
   *
   * @default {true}
   */
  commandLines?: boolean;
  /**
   * Add a `gone` row for each worktree removed without `release` whose last
   * bundle is remembered (see {@linkcode pruneWorktrees}).
   *
   * @default {true}
   */
  gone?: boolean;
  /**
   * Called with each problem that did not stop the inspection, such as an
   * unreadable machine-wide index.
   *
   * @default {undefined}
   */
  onWarning?: (warning: string) => void;
}

/**
 * Reports every worktree of the repository: its port file's state, slot and
 * ports, which of them are listening now, and the ports it shares with
 * others. Changes nothing. Works from a bare repository's directory too.
 *
 * @param options Where, which port file, and the injected git and probe.
 * @returns One status per worktree, in git's order (bare repositories are left out).
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` or `GIT_FAILED`.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectWorktrees } from "@org/worktree-ports";
 *
 * for (const status of await inspectWorktrees()) {
 *   console.log(status.path, status.state, status.ports);
 * }
 * ```
 */
export async function inspectWorktrees(
  options: InspectOptions = {},
): Promise<WorktreeStatus[]> {
  const env = environmentOf(options);
  const scan = scanListeners(options, env);
  const repository = await openRepositoryOrBare(options.cwd, env);
  if (scan !== undefined && options.listening !== false) await scan.listed;
  const statuses = await inspectRepository(repository, options, env);
  using machine = await MachineSession.open({
    scope: env.scope,
    index: env.index,
    repositories: [repository.commonDir],
    worktrees: repository.worktrees.map((worktree) => worktree.path),
    readOnly: true,
    git: env.git,
  });
  for (const warning of machine.warnings) options.onWarning?.(warning);
  markOtherRepositories(statuses, machine);
  if (scan !== undefined) {
    const worktrees = [
      ...placeableWorktrees(repository),
      ...machine.entries.map((entry) => entry.worktree),
    ];
    await addHolders(statuses, worktrees, scan, env.listeners, options);
  }
  if (options.gone !== false) statuses.push(...goneStatuses(repository, statuses));
  return statuses.map(({ reserved: _, ...status }) => status);
}

/**
 * Reports every worktree on the machine: those of the repository around
 * `cwd` (if any) and of every repository with a port file recorded in the
 * machine-wide index, grouped by repository, each status naming its
 * repository. Ports shared across repositories are conflicts, as within one.
 * Changes nothing.
 *
 * @param options Where, the injected git, probe and index, and a warning callback.
 * @returns One status per worktree, the current repository's first.
 * @throws {WorktreePortsError} With code `GIT_FAILED` when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectMachine } from "@org/worktree-ports";
 *
 * for (const status of await inspectMachine()) {
 *   console.log(status.repository, status.path, status.state);
 * }
 * ```
 */
export async function inspectMachine(options: InspectOptions = {}): Promise<WorktreeStatus[]> {
  const env = environmentOf(options);
  const scan = scanListeners(options, env);
  const warnings: string[] = [];
  const found = await openIndexedRepositories(options.cwd, env, warnings);
  for (const warning of warnings) options.onWarning?.(warning);
  if (scan !== undefined && options.listening !== false) await scan.listed;
  const statuses = await inspectAll(found, options, env);
  if (scan !== undefined) {
    const worktrees = found.repositories.flatMap(placeableWorktrees);
    await addHolders(statuses, worktrees, scan, env.listeners, options);
  }
  if (options.gone !== false) {
    for (const repository of found.repositories) {
      const key = realPathOr(repository.commonDir);
      statuses.push(
        ...goneStatuses(repository, statuses).map((status) => ({ ...status, repository: key })),
      );
    }
  }
  return statuses.map(({ reserved: _, ...status }) => status);
}

/** A row for each worktree of the repository removed without `release`, whose last bundle is remembered. */
function goneStatuses(
  repository: Repository,
  statuses: readonly WorktreeStatus[],
): InspectedStatus[] {
  // One git still lists (its folder deleted) has its row already, as stale.
  const listed = new Set(repository.worktrees.map((worktree) => comparablePath(worktree.path)));
  const { gone } = goneWorktrees(readMemory(repository.commonDir), repository.worktrees);
  for (const item of gone) {
    const stale = statuses.find((status) =>
      status.state === "stale" && comparablePath(status.path) === comparablePath(item.worktree)
    );
    if (stale !== undefined && item.onRelease !== undefined) {
      stale.detail = "directory gone; its on_release has not run";
    }
  }
  return gone.filter((item) => !listed.has(comparablePath(item.worktree))).map((gone) => {
    const ports: Record<string, number> = {};
    for (const [key, value] of Object.entries(gone.bundle)) {
      if (isPort(value)) ports[key] = value;
    }
    return {
      path: gone.worktree,
      ...(gone.branch === undefined ? {} : { branch: gone.branch }),
      primary: false,
      current: false,
      state: "gone" as const,
      file: gone.file,
      slot: gone.slot,
      ports,
      listening: {},
      holders: {},
      conflicts: [],
      detail: gone.onRelease === undefined
        ? "removed without release"
        : "removed without release; its on_release has not run",
      reserved: [],
    };
  });
}

/** A status with every port its file reserves, read liberally (URL ports included). */
export type InspectedStatus = WorktreeStatus & { reserved: number[] };

/**
 * What is wrong with the first env file the worktree's config names that does
 * not hold the port file's bundle, if one does not.
 */
function staleEnvFileOf(
  root: string,
  portFile: string,
  data: Record<string, unknown>,
  options: LoadConfigOptions,
): string | undefined {
  let config;
  try {
    config = judgingConfig(root, options);
  } catch (error) {
    if (error instanceof WorktreePortsError) return undefined;
    throw error;
  }
  if (config?.envFiles === undefined || relativeInside(root, portFile) === undefined) {
    return undefined;
  }
  let files: EnvFile[];
  try {
    files = placeEnvFiles(realPathOr(root), config.envFiles, portFile);
  } catch (error) {
    // One allocate refuses to write, which check --fix cannot write either.
    if (error instanceof WorktreePortsError) return error.message;
    throw error;
  }
  if (files.length === 0) return undefined;
  let text: string;
  try {
    text = envFileText(data, files[0]);
  } catch (error) {
    // A value no dotenv reader keeps exact: allocate says so.
    if (error instanceof WorktreePortsError) return undefined;
    throw error;
  }
  const [stale] = staleEnvFiles(files, text);
  if (stale === undefined) return undefined;
  const found = readEnvFile(stale.path);
  return found.state === "missing"
    ? `env file "${stale.path}" is missing`
    : found.state === "foreign"
    ? `env file "${stale.path}" ${
      found.reason === NOT_WRITTEN_HERE ? FOREIGN_ENV_FILE : `cannot be replaced: ${found.reason}`
    } (${ENV_FILE_IN_THE_WAY})`
    : `env file "${stale.path}" does not hold the port file's bundle`;
}

/** The statuses of one repository's worktrees, with the conflicts among them. */
export async function inspectRepository(
  repository: Repository,
  options: Omit<InspectOptions, keyof Environment>,
  env: Pick<Env, "probe">,
): Promise<InspectedStatus[]> {
  const ownPath = realPortFilePath(repository.root, options);
  const inside = relativeInside(repository.root, ownPath) ?? PORT_FILE_NAME;
  const worktrees = repository.worktrees.filter((worktree) => !worktree.bare);
  const statuses = await Promise.all(worktrees.map(async (worktree) => {
    const current = worktree === repository.current;
    const status: WorktreeStatus = {
      path: worktree.path,
      branch: worktree.branch,
      primary: worktree === repository.worktrees[0],
      current,
      state: "ok",
      file: current ? ownPath : joinPath(worktree.path, inside),
      ports: {},
      listening: {},
      holders: {},
      conflicts: [],
    };
    if (worktree.prunable) return { ...status, state: "stale" as const, reserved: [] };
    let file = readPortFile(status.file);
    if (file.state === "missing" && !current && !(fileInfo(worktree.path)?.isDirectory ?? false)) {
      if (!worktree.locked) return { ...status, state: "stale" as const, reserved: [] };
      file = readKeptCopy(repository.commonDir, worktree.path);
      if (file.state !== "read") {
        const detail = "locked, directory absent; its ports are unknown";
        return { ...status, state: "absent" as const, detail, reserved: [] };
      }
      for (const [key, value] of Object.entries(file.data)) {
        if (isPort(value)) status.ports[key] = value;
      }
      status.slot = file.meta?.slot;
      const detail = "locked, directory absent; holds the ports of its last written file";
      return { ...status, state: "absent" as const, detail, reserved: file.ports };
    }
    if (file.state === "missing") return { ...status, state: "none" as const, reserved: [] };
    if (file.state === "unreadable") {
      return { ...status, state: "unreadable" as const, detail: file.reason, reserved: [] };
    }
    for (const [key, value] of Object.entries(file.data)) {
      if (isPort(value)) status.ports[key] = value;
    }
    status.slot = file.meta?.slot;
    status.allocatedAt = file.meta?.allocated_at || undefined;
    if (
      file.meta && !(await isSameDirectory(file.meta.worktree, worktree.path)) &&
      namesOtherWorktree(file.meta.worktree, worktree, repository.worktrees)
    ) {
      return { ...status, state: "foreign" as const, detail: file.meta.worktree, reserved: [] };
    }
    if (file.invalid !== undefined) {
      return {
        ...status,
        state: "invalid" as const,
        detail: file.invalid.join("; "),
        reserved: file.ports,
      };
    }
    if (
      file.meta && isOutdated(file.data, expectedBundle(worktree, file.meta.slot, options))
    ) {
      return { ...status, state: "outdated" as const, reserved: file.ports };
    }
    const staleEnvFile = file.meta &&
      staleEnvFileOf(worktree.path, status.file, file.data, options);
    if (staleEnvFile) {
      return { ...status, state: "outdated" as const, detail: staleEnvFile, reserved: file.ports };
    }
    return { ...status, reserved: file.ports };
  }));

  addConflicts(statuses, false);

  if (options.listening !== false) {
    for (const status of statuses) await probeListening(status, env.probe);
  }
  return statuses;
}

/**
 * Asks the system for its listeners now, when the options want holders, so
 * that the answer comes while git runs and the files are read.
 */
export function scanListeners(
  options: Pick<InspectOptions, "holders" | "commandLines">,
  env: Pick<Env, "listeners">,
): StartedScan | undefined {
  return options.holders === false ? undefined : startScan(env.listeners, options.commandLines);
}

/**
 * The worktrees a listening process may belong to: a bare repository's own
 * directory is no worktree, and a process running there belongs to none.
 */
export function placeableWorktrees(repository: Pick<Repository, "worktrees">): string[] {
  return repository.worktrees.filter((worktree) => !worktree.bare).map((worktree) => worktree.path);
}

/**
 * Fills in who holds each status's ports, and marks `held` each status that
 * is otherwise `ok` and has a port a process of another worktree, or of none,
 * listens on. Says, through `onWarning`, when the system could not be asked
 * and that matters: some port is listening, or listening was not probed.
 */
export async function addHolders(
  statuses: readonly WorktreeStatus[],
  worktrees: readonly string[],
  scan: StartedScan,
  lookup: Pick<ListenerLookup, "containers">,
  options: Pick<InspectOptions, "listening" | "onWarning">,
): Promise<void> {
  const inUse = new Set<number>();
  for (const status of statuses) {
    for (const [key, port] of Object.entries(status.ports)) {
      if (status.listening[key]) inUse.add(port);
    }
  }
  const ports = statuses.flatMap((status) => Object.values(status.ports));
  const found = await findHolders(scan, { ports, worktrees, lookup, inUse });
  for (const status of statuses) {
    for (const [key, port] of Object.entries(status.ports)) {
      const holders = found.holders.get(port) ??
        (found.unknown !== undefined && status.listening[key]
          ? [{ unknown: found.unknown }]
          : undefined);
      if (holders !== undefined) status.holders[key] = holders;
    }
    if (status.state === "ok" && strayHolders(status).length > 0) status.state = "held";
  }
  if (found.unknown !== undefined && (options.listening === false || inUse.size > 0)) {
    options.onWarning?.(`Cannot tell which processes listen on the ports: ${found.unknown}`);
  }
}

/** A port of a worktree that a process of another worktree, or of none, listens on. */
export interface StrayHolder {
  /** The port's key. */
  key: string;
  /** The port. */
  port: number;
  /** Who listens on it. */
  holder: PortHolder;
}

/**
 * The holders of a status's ports that run outside its worktree: in another
 * worktree, or in none. One whose place is unknown is not counted, nor one
 * of a worktree that shares that port with it (a conflict, which says more).
 *
 * @param status A status from {@linkcode inspectWorktrees}.
 * @returns Each stray holder, with the port's key and number.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectWorktrees, strayHolders } from "@org/worktree-ports";
 *
 * for (const status of await inspectWorktrees()) {
 *   for (const { key, port, holder } of strayHolders(status)) {
 *     console.log(`${holder.pid} holds ${key} ${port} of ${status.path}`);
 *   }
 * }
 * ```
 */
export function strayHolders(status: WorktreeStatus): StrayHolder[] {
  return Object.entries(status.holders).flatMap(([key, holders]) => {
    const port = status.ports[key];
    // A worktree that shares the port is a conflict, which says more.
    const sharing = (worktree: string) =>
      status.conflicts.some((conflict) =>
        conflict.worktree === worktree && conflict.ports.includes(port)
      );
    return holders.filter((holder) =>
      holder.worktree !== undefined && holder.worktree !== status.path &&
      (holder.worktree === null || !sharing(holder.worktree))
    ).map((holder) => ({ key, port, holder }));
  });
}

/** Fills in which of a status's ports something listens on now. */
export async function probeListening(status: WorktreeStatus, probe: PortProbe): Promise<void> {
  for (const [key, port] of Object.entries(status.ports)) {
    status.listening[key] = (await probePort(probe, port)) === "in-use";
  }
}

/** Compares two spellings of a directory, resolving symbolic links only when they differ. */
async function isSameDirectory(a: string, b: string): Promise<boolean> {
  if (comparablePath(a) === comparablePath(b)) return true;
  const real = async (path: string) => {
    try {
      return comparablePath(await Deno.realPath(path));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      return undefined;
    }
  };
  const [realA, realB] = await Promise.all([real(a), real(b)]);
  return realA !== undefined && realA === realB;
}
