// The machine-wide index: a per-user list of every port file, so that no two
// worktrees on the machine share a port, whichever repository they belong to.

import type { Scope } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { isPlainObject, realPathOr, writeFileAtomic } from "./files.ts";
import { worktreeExists, worktreesOnDisk } from "./git_dirs.ts";
import type { MachineIndex } from "./index_home.ts";
import { type LockOptions, lockRepository, type RepositoryLock } from "./lock.ts";
import { PORT_FILE_NAME } from "./names.ts";
import { isAbsolutePath, isInside, joinPath, relativeInside } from "./paths.ts";
import { readPortFile } from "./port_file.ts";
import { reservedPortsOfPath } from "./reservations.ts";

// Lock order, everywhere: the repository lock first, then the machine lock
// in the index folder, never the other way round (repairing every repository
// takes all their locks, in order of path, before the machine lock). A process
// holding the machine lock never waits for a repository lock, so no two
// processes can wait on each other. Both are kernel locks: a holder that dies
// releases both.

/** Name of the machine-wide index file in the index folder. */
export const INDEX_FILE_NAME = "index.json";

/** Version of the index file format. */
export const INDEX_VERSION = 1;

/** A port file is a few hundred bytes; an index entry never makes us read a large file. */
const MAX_INDEXED_FILE_BYTES = 1 << 20;

/** One port file recorded in the machine-wide index: a pointer, never the ports themselves. */
export interface IndexEntry {
  /** Absolute path of the port file. */
  path: string;
  /** Real path of its repository's common git directory. */
  repository: string;
  /** Real path of its worktree's root. */
  worktree: string;
}

/** What {@linkcode readMachineIndex} found. */
export interface IndexRead {
  /** The index file. */
  path: string;
  /** Every well-formed entry. */
  entries: IndexEntry[];
  /** The file's entries exactly as stored, well-formed or not, so that rewriting loses none. */
  raw: unknown[];
}

/**
 * Reads the machine-wide index in a folder. A missing file is an empty index.
 *
 * @param dir The index folder.
 * @returns The entries, and the file's entries as stored.
 * @throws {SyntaxError} When the file is not an index (not JSON, or not of this shape).
 * @throws {Error} When the file exists but cannot be read.
 *
 * @example Usage
 * ```ts ignore
 * import { denoMachineIndex, readMachineIndex } from "@org/worktree-ports";
 *
 * const dir = denoMachineIndex.dir();
 * if (dir) for (const entry of readMachineIndex(dir).entries) console.log(entry.path);
 * ```
 */
export function readMachineIndex(dir: string): IndexRead {
  const path = joinPath(dir, INDEX_FILE_NAME);
  let text: string;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile) throw new Error("it is not a regular file");
    if (info.size > 64 * MAX_INDEXED_FILE_BYTES) {
      throw new Error(`it is too large (${info.size} bytes)`);
    }
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { path, entries: [], raw: [] };
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot read the index "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`The index "${path}" is not valid JSON`, { cause: error });
  }
  const files = isPlainObject(value) ? (value as Record<string, unknown>).files : undefined;
  if (!Array.isArray(files)) {
    throw new SyntaxError(`The index "${path}" is not an object with a "files" array`);
  }
  const entries: IndexEntry[] = [];
  for (const item of files) {
    const entry = asIndexEntry(item);
    if (entry !== undefined) entries.push(entry);
  }
  return { path, entries, raw: files };
}

/** The index as one operation holds it: under the machine lock, or not in use. */
export interface MachineSession extends Disposable {
  /** The index is in use; `false` with repository scope or when it could not be used. */
  active: boolean;
  /** Milliseconds spent waiting for another process to release the machine lock. */
  lockWait: number;
  /** Every port another repository's recorded file reserves, and that file. */
  holders: Map<number, string>;
  /** The index's well-formed entries, as read (entries whose file is gone dropped). */
  entries: IndexEntry[];
  /** Problems met, to pass on as warnings. */
  warnings: string[];
  /**
   * Records a port file of the locked repository, or of `repository`;
   * writes the index only if it changed.
   */
  record(path: string, worktree: string, repository?: string): void;
  /** Records port files (path and worktree) of one repository at once, as `record` does. */
  recordAll(files: readonly (readonly [string, string])[], repository?: string): void;
}

/**
 * The port files that the worktrees of another repository have now, found
 * without git: the main worktree beside the common directory, and every
 * linked one through its admin entry's `gitdir`, which git keeps current
 * when a worktree moves. Each file sits where `entry`'s sat in its worktree.
 */
function portFilesOfRepository(commonDir: string, entry: IndexEntry): IndexEntry[] {
  const inside = relativeInside(entry.worktree, entry.path) ?? PORT_FILE_NAME;
  return worktreesOnDisk(commonDir).filter((worktree) => worktreeExists(worktree)).map((
    worktree,
  ) => ({
    path: joinPath(worktree, inside),
    repository: commonDir,
    worktree,
  }));
}

/** Options of {@linkcode openMachineIndex}. */
interface MachineSessionOptions {
  scope?: Scope;
  index: MachineIndex;
  lockOptions?: LockOptions;
  /** Only read: no folder is created, no lock taken, nothing recorded (for inspecting). */
  readOnly?: boolean;
  /** The port file being allocated, which never reserves anything against itself. */
  ownFile?: string;
}

/**
 * Takes the machine lock (the caller holds the repository lock already; see
 * the lock order above) and reads the index: the ports that other
 * repositories' recorded files reserve. Bad state never blocks: an index
 * that cannot be used gives a warning and an inactive session, which is
 * repository scope for this run, and nothing on disk is changed.
 */
export async function openMachineIndex(
  commonDir: string | undefined,
  options: MachineSessionOptions,
): Promise<MachineSession> {
  const warnings: string[] = [];
  const inactive = (): MachineSession => ({
    active: false,
    lockWait: 0,
    holders: new Map(),
    entries: [],
    warnings,
    record() {},
    recordAll() {},
    [Symbol.dispose]() {},
  });
  if (options.scope === "repository") return inactive();
  const fallback = options.readOnly
    ? "looking at this repository only this time"
    : "allocating for this repository only this time";
  const dir = options.index.dir();
  if (dir === undefined) {
    warnings.push(
      `No home folder for the machine-wide index (set HOME or WORKTREE_PORTS_HOME); ${fallback}`,
    );
    return inactive();
  }
  // A relative folder would give every directory an index of its own.
  if (!isAbsolutePath(dir)) {
    warnings.push(
      `The machine-wide index folder "${dir}" is not an absolute path (set WORKTREE_PORTS_HOME ` +
        `to one); ${fallback}`,
    );
    return inactive();
  }
  let lock: RepositoryLock | undefined;
  let lockWait = 0;
  try {
    if (!options.readOnly) {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const waitStart = performance.now();
      lock = await lockRepository(dir, options.lockOptions);
      lockWait = performance.now() - waitStart;
    }
  } catch (error) {
    if (
      error instanceof Deno.errors.NotCapable ||
      (error instanceof WorktreePortsError && error.code !== "LOCK_FAILED")
    ) {
      throw error;
    }
    warnings.push(
      `Cannot use the machine-wide index in "${dir}": ${(error as Error).message}; ${fallback}`,
    );
    return inactive();
  }
  let index: IndexRead;
  try {
    index = readMachineIndex(dir);
  } catch (error) {
    lock?.release();
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `${(error as Error).message}; ${fallback} (move the file away to start a new index)`,
    );
    return inactive();
  }
  const repository = commonDir === undefined ? undefined : realPathOr(commonDir);
  const kept: unknown[] = [];
  const entries: IndexEntry[] = [];
  const holders = new Map<number, string>();
  const vanished = new Map<string, IndexEntry>();
  let changed = false;
  for (const item of index.raw) {
    const entry = asIndexEntry(item);
    // This repository's own files are its worktrees', scanned as siblings;
    // they are checked (and dropped when gone) when another repository allocates.
    if (entry === undefined || entry.repository === repository || entry.path === options.ownFile) {
      kept.push(item);
      if (entry !== undefined) entries.push(entry);
      continue;
    }
    // Read the way sibling files are: never opened unless a small regular file.
    const file = readPortFile(entry.path);
    if (file.state === "missing" || (file.state === "unreadable" && file.irregular)) {
      changed = true;
      // Gone from where it was recorded: moved with its worktree, perhaps,
      // while its repository lives on. Its worktrees are looked up below.
      if (file.state === "missing") vanished.set(entry.repository, entry);
      continue;
    }
    kept.push(item);
    entries.push(entry);
    // A worktree git would call prunable reserves nothing: one stat, not a git
    // process per repository, and only for a file outside its worktree (one
    // inside shows by existing that the directory does).
    if (isInside(entry.worktree, entry.path) || worktreeExists(entry.worktree)) {
      for (const port of reservedPortsOfPath(entry.path, file, warnings)) {
        if (!holders.has(port)) holders.set(port, entry.path);
      }
    }
  }
  const recorded = new Set(entries.map((entry) => entry.path));
  for (const [other, entry] of vanished) {
    if (other === repository) continue;
    for (const found of portFilesOfRepository(other, entry)) {
      if (recorded.has(found.path)) continue;
      recorded.add(found.path);
      const file = readPortFile(found.path);
      if (file.state === "missing") continue;
      kept.push(found);
      entries.push(found);
      changed = true;
      for (const port of reservedPortsOfPath(found.path, file, warnings)) {
        if (!holders.has(port)) holders.set(port, found.path);
      }
    }
  }
  const recordAll = (files: readonly (readonly [string, string])[], of = repository) => {
    if (of === undefined || lock === undefined) return;
    const at = new Map<string, number>();
    kept.forEach((item, position) => {
      const path = asIndexEntry(item)?.path;
      if (path !== undefined) at.set(path, position);
    });
    for (const [path, worktree] of files) {
      const entry: IndexEntry = { path, repository: of, worktree };
      const position = at.get(path);
      if (position !== undefined && JSON.stringify(kept[position]) === JSON.stringify(entry)) {
        continue;
      }
      if (position === undefined) kept.push(entry);
      else kept[position] = entry;
      changed = true;
    }
    if (!changed) return;
    const path = files[0]?.[0] ?? index.path;
    try {
      // Through a symbolic link, if the user made index.json one.
      writeFileAtomic(
        realPathOr(index.path),
        JSON.stringify({ version: INDEX_VERSION, files: kept }, null, 2) + "\n",
      );
      changed = false;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      warnings.push(
        `Cannot record "${path}" in the machine-wide index: ${(error as Error).message}`,
      );
    }
  };
  const session: MachineSession = {
    active: true,
    lockWait,
    holders,
    entries,
    warnings,
    record: (path: string, worktree: string, of?: string) => recordAll([[path, worktree]], of),
    recordAll,
    [Symbol.dispose]: () => lock?.release(),
  };
  return session;
}

function asIndexEntry(item: unknown): IndexEntry | undefined {
  if (!isPlainObject(item)) return undefined;
  const { path, repository, worktree } = item as Record<string, unknown>;
  if (typeof path !== "string" || typeof repository !== "string" || typeof worktree !== "string") {
    return undefined;
  }
  // Relative paths would be read against whatever directory we run in.
  if (!isAbsolutePath(path) || !isAbsolutePath(worktree)) return undefined;
  return { path, repository, worktree };
}
