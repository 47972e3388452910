// Fixing what inspection finds: one worktree of each conflicting pair moves.

import { allocateSlot, warnDroppedKeys } from "./allocate.ts";
import { portsForSlot } from "./bundle.ts";
import { type ConfigOverrides, loadConfig } from "./config.ts";
import { assertEnvFilesReplaceable, type EnvFile, placeEnvFiles } from "./env_file.ts";
import { type Env, type Environment, environmentOf } from "./environment.ts";
import { realPathOr } from "./files.ts";
import { gitDirsOf } from "./git_dirs.ts";
import { excludeFromGit, excludePatterns } from "./git_ignore.ts";
import { holderName, holderPlace } from "./holders.ts";
import {
  addHolders,
  inspectAll,
  type InspectedStatus,
  type InspectOptions,
  inspectRepository,
  openIndexedRepositories,
  placeableWorktrees,
  probeListening,
  scanListeners,
  strayHolders,
  type WorktreeStatus,
} from "./inspect.ts";
import { keptCopyPath } from "./kept_copy.ts";
import { proxyPorts } from "./proxy_names.ts";
import { lockRepository, type RepositoryLock } from "./lock.ts";
import { MachineSession } from "./machine_index.ts";
import { PORT_FILE_NAME } from "./names.ts";
import { assertNotDirectory } from "./output.ts";
import { relativeInside } from "./paths.ts";
import { type PortFilePathOptions, readPortFile, reservedPortsOf } from "./port_file.ts";
import type { PortProbe } from "./probe.ts";
import { currentListing, hasVanishedWorktree, openRepositoryOrBare, relist } from "./repository.ts";

/** Options for {@linkcode fixWorktrees}. */
export interface FixOptions
  extends ConfigOverrides, PortFilePathOptions, Environment, Pick<InspectOptions, "holders"> {
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * Called with the lock's path when another process holds it and waiting begins.
   *
   * @default {undefined}
   */
  onLockWait?: (path: string) => void;
}

/** One worktree moved by {@linkcode fixWorktrees} or {@linkcode fixMachine}. */
export interface Move {
  /** The worktree's path, as git reports it. */
  worktree: string;
  /**
   * Why it moved; `outdated` and `invalid` files are rewritten for the same
   * slot unless its new ports collide.
   */
  reason: "duplicate" | "foreign" | "unreadable" | "invalid" | "outdated" | "held";
  /** For `held`: which port, and who holds it. */
  detail?: string;
  /** Its ports before (empty for an unreadable file). */
  from: Record<string, number>;
  /** The slot it was given. */
  slot: number;
  /** Its ports now. */
  to: Record<string, number>;
  /**
   * Problems that did not stop the move, such as keys of the old file (added
   * by hand) that the rewritten file no longer has.
   */
  warnings: string[];
}

/**
 * Repairs what {@linkcode inspectWorktrees} finds, under the same lock as
 * {@linkcode allocate}. Of two worktrees that share ports, the one whose
 * services are not listening moves; when neither or both are, the one
 * allocated later moves. A worktree whose port a process of another
 * worktree, or of none, listens on moves to a free slot. Foreign,
 * unreadable and invalid files are reallocated for their own worktree.
 * Running it again changes nothing.
 * Works from a bare repository's directory too.
 *
 * A worktree serves when a process running in it listens on one of its
 * ports (see {@linkcode InspectOptions.holders}), or, where the system does
 * not tell, when something listens on a port it holds alone.
 *
 * @param options Where, config overrides, the lock timeout, and the injected git and probe.
 * @returns Every move made, in git's order of worktrees.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
 *
 * @example Usage
 * ```ts ignore
 * import { fixWorktrees } from "@org/worktree-ports";
 *
 * for (const move of await fixWorktrees()) {
 *   console.log(move.worktree, move.from, "->", move.to);
 * }
 * ```
 */
export async function fixWorktrees(options: FixOptions = {}): Promise<Move[]> {
  const env = environmentOf(options);
  const scan = scanListeners({ ...options, commandLines: false }, env);
  const listed = await openRepositoryOrBare(options.cwd, env);
  using _lock = await lockRepository(listed.commonDir, {
    timeoutMs: options.lockTimeoutMs,
    onWait: options.onLockWait,
  });
  using machine = await MachineSession.open({
    scope: env.scope,
    index: env.index,
    repositories: [listed.commonDir],
    worktrees: listed.worktrees.map((worktree) => worktree.path),
    lockOptions: { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait },
    git: env.git,
  });
  let repository = await currentListing(listed, env);
  if (hasVanishedWorktree(repository)) repository = await relist(listed, env);
  // Only the worktrees of a conflicting pair are probed, so the lock is held
  // for reading the files, not for binding every port of every worktree.
  const statuses = await inspectRepository(repository, { ...options, listening: false }, env);
  if (scan !== undefined) {
    const worktrees = [
      ...placeableWorktrees(repository),
      ...machine.entries.map((entry) => entry.worktree),
    ];
    await addHolders(statuses, worktrees, scan, env.listeners, { listening: true });
  }
  return await fixStatuses(statuses, machine, options, env);
}

/**
 * Moves one worktree of each conflicting pair, and every foreign or
 * unreadable file, avoiding the ports the others keep and those that the
 * machine-wide index says other repositories hold. The caller holds the locks.
 */
async function fixStatuses(
  statuses: readonly InspectedStatus[],
  machine: Pick<MachineSession, "holders" | "record">,
  options: FixOptions,
  env: Pick<Env, "probe" | "index">,
): Promise<Move[]> {
  const movers = new Map<WorktreeStatus, Move["reason"]>();
  for (const status of statuses) {
    // A stray on its port moves it whatever else is wrong with its file:
    // rewritten for the same slot, it would still be held. The main worktree
    // keeps slot 0 whoever listens there: check names the process instead.
    if (isMovablyHeld(status)) {
      movers.set(status, "held");
    } else if (
      status.state === "foreign" || status.state === "unreadable" ||
      status.state === "invalid" || status.state === "outdated"
    ) {
      movers.set(status, status.state);
    }
  }
  for (const status of statuses) {
    for (const conflict of status.conflicts) {
      const other = statuses.find((candidate) => candidate.path === conflict.worktree)!;
      if (movers.has(status) || movers.has(other)) continue;
      // An absent worktree cannot be written to: of two, neither moves. A
      // main worktree stays before a linked one; of two main worktrees (of
      // two repositories), the one allocated later moves.
      const absent = (candidate: WorktreeStatus) => candidate.state === "absent";
      if (absent(status) && absent(other)) continue;
      const mover = absent(status)
        ? other
        : absent(other)
        ? status
        : status.primary && other.primary
        ? await laterAllocated(status, other)
        : status.primary
        ? other
        : other.primary
        ? status
        : await chooseMover(status, other, env.probe);
      movers.set(mover, "duplicate");
    }
  }

  // A file that cannot be written changes nothing, rather than leaving the
  // index with ports that no file holds.
  // The env files of each worktree to repair, checked before any is written:
  // where they go, and that none is someone else's.
  const envFilesOfMover = new Map<WorktreeStatus, EnvFile[]>();
  for (const status of movers.keys()) {
    assertNotDirectory(status.file);
    const root = realPathOr(status.path);
    const envFiles = relativeInside(root, realPathOr(status.file)) === undefined
      ? []
      : placeEnvFiles(root, loadConfig(root, options).envFiles, status.file);
    for (const file of envFiles) assertNotDirectory(file.path);
    assertEnvFilesReplaceable(envFiles);
    envFilesOfMover.set(status, envFiles);
  }
  const reserved = new Set<number>(machine.holders.keys());
  // The proxy's port is never handed out, whether or not it runs now.
  for (const port of proxyPorts(env.index)) reserved.add(port);
  // What each repository's worktrees keep: a main worktree leaves slot 0
  // only for another repository, never for a sibling.
  const kept = new Map<string | undefined, Set<number>>();
  const keep = (repository: string | undefined, ports: Iterable<number>) => {
    const set = kept.get(repository) ?? new Set<number>();
    kept.set(repository, set);
    for (const port of ports) {
      set.add(port);
      reserved.add(port);
    }
  };
  for (const status of statuses) {
    if (!movers.has(status)) keep(status.repository, status.reserved);
  }
  const othersHold = (repository: string | undefined) => ({
    has: (port: number) =>
      machine.holders.has(port) ||
      [...kept].some(([other, ports]) => other !== repository && ports.has(port)),
  });
  const moves: Move[] = [];
  for (const [status, reason] of movers) {
    const root = await Deno.realPath(status.path);
    const config = loadConfig(root, options);
    const keptCopy = !status.primary && relativeInside(status.path, status.file) === PORT_FILE_NAME
      ? keptCopyPath(root)
      : undefined;
    // An outdated or invalid file keeps its slot unless the ports its config gives it now collide.
    const outdated = reason === "outdated" || reason === "invalid";
    const old = readPortFile(status.file);
    const envFiles = envFilesOfMover.get(status) ?? [];
    const allocation = await allocateSlot(
      { root, path: status.file, primary: status.primary, keptCopy, worktree: status, envFiles },
      config,
      outdated ? old : { state: "missing" },
      reserved,
      {
        force: !outdated,
        probe: env.probe,
        othersHold: othersHold(status.repository),
        // Recorded before it is written, as allocate records; its env files
        // are kept out of git first, as allocate keeps them.
        beforeWrite: (allocation) => {
          if (envFiles.length > 0) {
            excludeFromGit(
              gitDirsOf(root).commonDir,
              envFiles.flatMap((file) => excludePatterns(file.inside)),
              allocation.warnings,
            );
          }
          machine.record(
            status.file,
            root,
            reservedPortsOf(allocation.bundle),
            status.repository,
          );
        },
      },
    );
    // allocateSlot warns about the keys it drops only from a file it was given.
    if (!outdated && old.state === "read" && allocation.written) {
      warnDroppedKeys(old.data, allocation, allocation.warnings);
    }
    const to = portsForSlot(config, allocation.slot);
    keep(status.repository, Object.values(to));
    moves.push({
      worktree: status.path,
      reason,
      ...(reason === "held" ? { detail: heldDetail(status) } : {}),
      from: status.ports,
      slot: allocation.slot,
      to,
      warnings: allocation.warnings,
    });
  }
  return moves;
}

/**
 * Whether a stray process holds a worktree's port, and moving the worktree
 * helps: not the main worktree, which keeps slot 0, nor an absent one.
 */
export function isMovablyHeld(status: WorktreeStatus): boolean {
  return !status.primary && status.state !== "absent" && strayHolders(status).length > 0;
}

/** Which of a held worktree's ports are held, and by whom: `web_port 3100 by python3 4242 outside every worktree`. */
function heldDetail(status: WorktreeStatus): string {
  return strayHolders(status).map(({ key, port, holder }) =>
    `${key} ${port} by ${holderName(holder)} ${holderPlace(holder)}`
  ).join("; ");
}

/** Of two worktrees that share ports, the one that should move. */
async function chooseMover(
  a: WorktreeStatus,
  b: WorktreeStatus,
  probe: PortProbe,
): Promise<WorktreeStatus> {
  for (const status of [a, b]) {
    if (Object.keys(status.listening).length === 0) await probeListening(status, probe);
  }
  // A process of the worktree itself on any of its ports says it serves; a
  // port only it holds, that something listens on, says so too.
  const serves = (status: WorktreeStatus, other: WorktreeStatus) =>
    Object.values(status.holders).some((holders) =>
      holders.some((holder) => holder.worktree === status.path)
    ) ||
    Object.entries(status.ports).some(([key, port]) =>
      status.listening[key] && !Object.values(other.ports).includes(port)
    );
  const aServes = serves(a, b);
  if (aServes !== serves(b, a)) return aServes ? b : a;
  return await laterAllocated(a, b);
}

/** Of two worktrees, the one whose slot was allocated later. */
async function laterAllocated(a: WorktreeStatus, b: WorktreeStatus): Promise<WorktreeStatus> {
  const [aTime, bTime] = await Promise.all([allocationTime(a), allocationTime(b)]);
  return aTime > bTime ? a : b;
}

/** When a file's slot was allocated: its metadata, or the file's modification time for older files. */
async function allocationTime(status: WorktreeStatus): Promise<number> {
  if (status.allocatedAt !== undefined) return Date.parse(status.allocatedAt) || 0;
  try {
    return (await Deno.stat(status.file)).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Repairs what {@linkcode inspectMachine} finds, by the rules of
 * {@linkcode fixWorktrees}, across every repository in the machine-wide
 * index. The main worktrees of two repositories that share base ports cannot
 * move, and are left for the user. Every repository lock is taken, in order
 * of path, then the machine lock.
 *
 * @param options Where, config overrides (applied to every repository), the lock timeout, and the injected git, probe and index.
 * @returns Every move made.
 * @throws {WorktreePortsError} With code `GIT_FAILED`, `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
 *
 * @example Usage
 * ```ts ignore
 * import { fixMachine } from "@org/worktree-ports";
 *
 * for (const move of await fixMachine()) console.log(move.worktree, "->", move.to);
 * ```
 */
export async function fixMachine(options: FixOptions = {}): Promise<Move[]> {
  const env = environmentOf(options);
  const scan = scanListeners({ ...options, commandLines: false }, env);
  // What opening them finds is said again by the inspection that follows a fix.
  const found = await openIndexedRepositories(options.cwd, env, []);
  const lockOptions = { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait };
  const ordered = found.repositories.map((repository) => realPathOr(repository.commonDir)).sort();
  const locks: RepositoryLock[] = [];
  try {
    for (const commonDir of ordered) locks.push(await lockRepository(commonDir, lockOptions));
    // Every repository found is fixed here, under its lock: its files hold
    // nothing against the others through the index.
    using machine = await MachineSession.open({
      index: env.index,
      repositories: ordered,
      worktrees: found.repositories.flatMap((repository) =>
        repository.worktrees.map((worktree) => worktree.path)
      ),
      lockOptions,
      git: env.git,
    });
    const statuses = await inspectAll(found, { ...options, listening: false }, env);
    if (scan !== undefined) {
      const worktrees = found.repositories.flatMap(placeableWorktrees);
      await addHolders(statuses, worktrees, scan, env.listeners, { listening: true });
    }
    return await fixStatuses(statuses, machine, options, env);
  } finally {
    for (const lock of locks.reverse()) lock.release();
  }
}
