// What a repository remembers of its worktrees once they are gone: each
// worktree's last bundle (for prune to tear down what it ran), and the slot
// each branch held (to give it back to a new worktree of that branch).

import {
  isPlainObject,
  readRegularTextFile,
  removeStaleTemporaryFiles,
  writeFileAtomic,
} from "./files.ts";
import { isPort, PORT_FILE_NAME } from "./names.ts";
import { comparablePath, isAbsolutePath, joinPath, relativeInside } from "./paths.ts";
import { readPortFile } from "./port_file.ts";
import type { Worktree } from "./worktree_list.ts";

/** Where a repository's memory of its worktrees is kept, in its common git directory. */
export const MEMORY_FILE_NAME = "worktree-ports.memory.json";

/** The last bundle a worktree held, as allocate last wrote it. */
export interface RememberedWorktree {
  /** The worktree's root, as git reports it. */
  worktree: string;
  /** Its port file. */
  file: string;
  /** The branch it had checked out, if any. */
  branch?: string;
  /** Its slot. */
  slot: number;
  /** Its bundle: each port and template key with its value. */
  bundle: Record<string, number | string>;
  /** Its config's `on_release`, unfilled, when it had one. */
  onRelease?: string[];
  /**
   * When its slot was allocated, as its port file says: with the slot, what
   * tells the same worktree after `git worktree move` (its file moves along).
   */
  allocatedAt?: string;
}

/** The slot a branch's worktree last held. */
export interface RememberedSlot {
  /** The slot. */
  slot: number;
  /** When a worktree of the branch last held it. */
  at: string;
}

/** A repository's memory of its worktrees. */
export interface WorktreeMemory {
  /** Every worktree allocate wrote a bundle for that neither release nor prune has forgotten. */
  worktrees: RememberedWorktree[];
  /** Each branch's last slot, until another branch's worktree takes that slot. */
  branches: Record<string, RememberedSlot>;
}

/**
 * Reads a repository's memory. A missing or damaged file is an empty memory:
 * what is lost is a teardown prune cannot run and a slot not given back,
 * never a port handed out twice (the port files decide that).
 *
 * @param commonDir The repository's common git directory.
 * @returns The worktrees remembered and each branch's slot.
 *
 * @example Usage
 * ```ts ignore
 * import { readMemory } from "@org/worktree-ports";
 *
 * const { branches } = readMemory(".git");
 * for (const [branch, { slot }] of Object.entries(branches)) console.log(branch, slot);
 * ```
 */
export function readMemory(commonDir: string): WorktreeMemory {
  const memory: WorktreeMemory = { worktrees: [], branches: {} };
  let value: unknown;
  try {
    value = JSON.parse(readRegularTextFile(joinPath(commonDir, MEMORY_FILE_NAME)));
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return memory;
  }
  if (!isPlainObject(value)) return memory;
  if (Array.isArray(value.worktrees)) {
    for (const item of value.worktrees) {
      const worktree = asRememberedWorktree(item);
      if (worktree !== undefined) memory.worktrees.push(worktree);
    }
  }
  if (isPlainObject(value.branches)) {
    for (const [branch, item] of Object.entries(value.branches)) {
      if (
        isPlainObject(item) && Number.isInteger(item.slot) && (item.slot as number) >= 0 &&
        typeof item.at === "string"
      ) {
        memory.branches[branch] = { slot: item.slot as number, at: item.at };
      }
    }
  }
  return memory;
}

/**
 * Writes a repository's memory; the caller holds the repository lock, so a
 * temporary file left beside it belongs to a writer that was killed.
 */
export function writeMemory(commonDir: string, memory: WorktreeMemory): void {
  const path = joinPath(commonDir, MEMORY_FILE_NAME);
  removeStaleTemporaryFiles(path);
  writeFileAtomic(path, JSON.stringify({ version: 1, ...memory }, null, 2) + "\n");
}

/**
 * Remembers the bundle a worktree holds now, and its branch's slot, writing
 * only when that changes. Another branch that remembered this slot loses it:
 * the slot is this worktree's now. Failing to write is not an error (see
 * {@linkcode readMemory}); the caller holds the repository lock.
 *
 * @returns A warning when the memory could not be written.
 */
export function rememberWorktree(
  commonDir: string,
  worktree: RememberedWorktree,
): string | undefined {
  const memory = readMemory(commonDir);
  const before = JSON.stringify(memory);
  const key = comparablePath(worktree.worktree);
  // The same worktree, at this path or where it was before it moved.
  memory.worktrees = memory.worktrees.filter((item) =>
    comparablePath(item.worktree) !== key && !isSameAllocation(item, worktree)
  );
  memory.worktrees.push(worktree);
  const { branch, slot } = worktree;
  if (slot >= 1) {
    for (const [other, remembered] of Object.entries(memory.branches)) {
      if (remembered.slot === slot && other !== branch) delete memory.branches[other];
    }
    if (branch !== undefined && memory.branches[branch]?.slot !== slot) {
      memory.branches[branch] = { slot, at: new Date().toISOString() };
    }
  }
  if (JSON.stringify(memory) === before) return undefined;
  try {
    writeMemory(commonDir, memory);
    return undefined;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return `Cannot remember this worktree's bundle in "${
      joinPath(commonDir, MEMORY_FILE_NAME)
    }" (prune will not know it): ${(error as Error).message}`;
  }
}

/** The memory without these worktrees (each at its path, of its allocation). */
export function forgetWorktrees(
  memory: WorktreeMemory,
  forgotten: readonly RememberedWorktree[],
): WorktreeMemory {
  // By path and allocation: a worktree made again at the path meanwhile is another.
  const same = (a: RememberedWorktree, b: RememberedWorktree) =>
    comparablePath(a.worktree) === comparablePath(b.worktree) && a.allocatedAt === b.allocatedAt &&
    a.slot === b.slot;
  return {
    ...memory,
    worktrees: memory.worktrees.filter((item) => !forgotten.some((gone) => same(item, gone))),
  };
}

function asRememberedWorktree(item: unknown): RememberedWorktree | undefined {
  if (!isPlainObject(item)) return undefined;
  const { worktree, file, branch, slot, bundle, onRelease, allocatedAt } = item;
  if (
    typeof worktree !== "string" || !isAbsolutePath(worktree) || typeof file !== "string" ||
    !Number.isInteger(slot) || (slot as number) < 0 || !isPlainObject(bundle)
  ) {
    return undefined;
  }
  // A command no program can be started with is no command: an edited file's damage.
  const command = Array.isArray(onRelease) && onRelease.length > 0 &&
      onRelease.every((arg) => typeof arg === "string" && !arg.includes("\0")) &&
      onRelease[0] !== ""
    ? onRelease as string[]
    : undefined;
  const values: Record<string, number | string> = {};
  for (const [key, value] of Object.entries(bundle)) {
    if (isPort(value) || typeof value === "string") values[key] = value;
  }
  // In the order allocate writes them, so that reading and writing back changes nothing.
  return {
    worktree,
    file,
    ...(typeof branch === "string" ? { branch } : {}),
    slot: slot as number,
    bundle: values,
    ...(command === undefined ? {} : { onRelease: command }),
    ...(typeof allocatedAt === "string" ? { allocatedAt } : {}),
  };
}

/** The remembered worktrees that are gone, and those that moved, as {@linkcode goneWorktrees} tells them. */
export interface GoneWorktrees {
  /** Remembered worktrees that git no longer lists (or lists with their directory gone). */
  gone: RememberedWorktree[];
  /** Remembered worktrees that moved ("git worktree move"), with where they are now. */
  moved: Map<RememberedWorktree, string>;
}

/**
 * Which remembered worktrees are gone: git no longer lists them as there. A
 * locked worktree whose directory is away is there. One that moved took its
 * port file along, with the same slot and bundle: it moved, and is not gone.
 *
 * @param memory The repository's memory.
 * @param worktrees The worktrees git lists now.
 */
export function goneWorktrees(
  memory: WorktreeMemory,
  worktrees: readonly Worktree[],
): GoneWorktrees {
  const live = worktrees.filter((worktree) => !worktree.prunable && !worktree.bare);
  const livePaths = new Set(live.map((worktree) => comparablePath(worktree.path)));
  const found: GoneWorktrees = { gone: [], moved: new Map() };
  for (const remembered of memory.worktrees) {
    if (livePaths.has(comparablePath(remembered.worktree))) continue;
    const there = live.find((worktree) => holdsSameBundle(worktree.path, remembered));
    if (there !== undefined) found.moved.set(remembered, there.path);
    else found.gone.push(remembered);
  }
  return found;
}

/**
 * Whether a worktree's port file is the one a remembered worktree wrote: the
 * same slot, allocated at the same moment (a move keeps both, whatever its
 * templates render at the new path).
 */
function holdsSameBundle(path: string, remembered: RememberedWorktree): boolean {
  const inside = relativeInside(remembered.worktree, remembered.file) ?? PORT_FILE_NAME;
  const file = readPortFile(joinPath(path, inside));
  if (file.state !== "read" || file.meta?.slot !== remembered.slot) return false;
  if (remembered.allocatedAt !== undefined) {
    return file.meta.allocated_at === remembered.allocatedAt;
  }
  return Object.entries(remembered.bundle).every(([key, value]) => file.data[key] === value);
}

/** Two records of one allocation: the same slot, allocated at the same moment. */
function isSameAllocation(a: RememberedWorktree, b: RememberedWorktree): boolean {
  return a.allocatedAt !== undefined && a.allocatedAt === b.allocatedAt && a.slot === b.slot;
}
