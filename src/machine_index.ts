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
import { type PortFileRead, readPortFile } from "./port_file.ts";
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

/** Options of {@linkcode MachineSession.open}. */
export interface MachineSessionOptions {
  /** Where the index lives. */
  index: MachineIndex;
  /** `repository` opens no index: the session is inactive. */
  scope?: Scope;
  /** How long to wait for the machine lock, and what to do when waiting begins. */
  lockOptions?: LockOptions;
  /** Only read: no folder is created, no lock taken, nothing recorded (for inspecting). */
  readOnly?: boolean;
  /** The port file being allocated, which never reserves anything against itself. */
  ownFile?: string;
}

/**
 * The index as one operation holds it: read, and (unless read-only) under the
 * machine lock until disposed; or not in use, with repository scope or when
 * it could not be used.
 */
export class MachineSession implements Disposable {
  /** The index is in use; `false` with repository scope or when it could not be used. */
  readonly active: boolean;
  /** Milliseconds spent waiting for another process to release the machine lock. */
  readonly lockWait: number;
  /** Every port another repository's recorded file reserves, and that file. */
  readonly holders: Map<number, string> = new Map();
  /** The index's well-formed entries, as read (entries whose file is gone dropped). */
  readonly entries: IndexEntry[] = [];
  /** Problems met, to pass on as warnings. */
  readonly warnings: string[];
  /** The index file, when the index is in use. */
  readonly #file: string | undefined;
  /** The machine lock, when held. */
  readonly #lock: RepositoryLock | undefined;
  /** Real path of the repository the session was opened for, whose files `record` records. */
  readonly #repository: string | undefined;
  /** The file's entries as they will be written back: malformed ones kept, gone ones dropped. */
  readonly #items: unknown[] = [];
  /** The entries differ from the file's. */
  #changed = false;

  private constructor(
    warnings: string[],
    open?: { file: string; lock?: RepositoryLock; lockWait: number; repository?: string },
  ) {
    this.warnings = warnings;
    this.active = open !== undefined;
    this.lockWait = open?.lockWait ?? 0;
    this.#file = open?.file;
    this.#lock = open?.lock;
    this.#repository = open?.repository;
  }

  /**
   * Takes the machine lock (the caller holds the repository lock already; see
   * the lock order above) and reads the index: the ports that other
   * repositories' recorded files reserve. Bad state never blocks: an index
   * that cannot be used gives a warning and an inactive session, which is
   * repository scope for this run, and nothing on disk is changed.
   *
   * @param commonDir The common directory of the repository it is opened for, if any.
   */
  static async open(
    commonDir: string | undefined,
    options: MachineSessionOptions,
  ): Promise<MachineSession> {
    const warnings: string[] = [];
    if (options.scope === "repository") return new MachineSession(warnings);
    const fallback = options.readOnly
      ? "looking at this repository only this time"
      : "allocating for this repository only this time";
    const dir = indexFolder(options.index, warnings, fallback);
    if (dir === undefined) return new MachineSession(warnings);
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
      return new MachineSession(warnings);
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
      return new MachineSession(warnings);
    }
    const repository = commonDir === undefined ? undefined : realPathOr(commonDir);
    const session = new MachineSession(warnings, { file: index.path, lock, lockWait, repository });
    session.#read(index.raw, options.ownFile);
    return session;
  }

  /**
   * Reads every other repository's recorded file, as sibling files are read,
   * and keeps the entries whose file is still there; a repository whose file
   * is gone from where it was recorded has its worktrees looked up on disk.
   */
  #read(raw: readonly unknown[], ownFile: string | undefined): void {
    const vanished = new Map<string, IndexEntry>();
    for (const item of raw) {
      const entry = asIndexEntry(item);
      // This repository's own files are its worktrees', scanned as siblings;
      // they are checked (and dropped when gone) when another repository allocates.
      if (entry === undefined || entry.repository === this.#repository || entry.path === ownFile) {
        this.#items.push(item);
        if (entry !== undefined) this.entries.push(entry);
        continue;
      }
      // Read the way sibling files are: never opened unless a small regular file.
      const file = readPortFile(entry.path);
      if (file.state === "missing" || (file.state === "unreadable" && file.irregular)) {
        this.#changed = true;
        // Gone from where it was recorded: moved with its worktree, perhaps,
        // while its repository lives on. Its worktrees are looked up below.
        if (file.state === "missing") vanished.set(entry.repository, entry);
        continue;
      }
      this.#items.push(item);
      this.entries.push(entry);
      // A worktree git would call prunable reserves nothing: one stat, not a git
      // process per repository, and only for a file outside its worktree (one
      // inside shows by existing that the directory does).
      if (isInside(entry.worktree, entry.path) || worktreeExists(entry.worktree)) {
        this.#reserve(entry.path, file);
      }
    }
    const recorded = new Set(this.entries.map((entry) => entry.path));
    for (const [other, entry] of vanished) {
      if (other === this.#repository) continue;
      for (const found of portFilesOfRepository(other, entry)) {
        if (recorded.has(found.path)) continue;
        recorded.add(found.path);
        const file = readPortFile(found.path);
        if (file.state === "missing") continue;
        this.#items.push(found);
        this.entries.push(found);
        this.#changed = true;
        this.#reserve(found.path, file);
      }
    }
  }

  /** Holds the ports a recorded file reserves, the first holder of each kept. */
  #reserve(path: string, file: PortFileRead): void {
    for (const port of reservedPortsOfPath(path, file, this.warnings)) {
      if (!this.holders.has(port)) this.holders.set(port, path);
    }
  }

  /**
   * Records a port file of the repository the session was opened for, or of
   * `repository`; writes the index only if it changed.
   */
  record(path: string, worktree: string, repository?: string): void {
    this.recordAll([[path, worktree]], repository);
  }

  /** Records port files (path and worktree) of one repository at once, as `record` does. */
  recordAll(
    files: readonly (readonly [string, string])[],
    repository: string | undefined = this.#repository,
  ): void {
    if (repository === undefined || this.#lock === undefined || this.#file === undefined) return;
    const at = new Map<string, number>();
    this.#items.forEach((item, position) => {
      const path = asIndexEntry(item)?.path;
      if (path !== undefined) at.set(path, position);
    });
    for (const [path, worktree] of files) {
      const entry: IndexEntry = { path, repository, worktree };
      const position = at.get(path);
      if (
        position !== undefined && JSON.stringify(this.#items[position]) === JSON.stringify(entry)
      ) {
        continue;
      }
      if (position === undefined) this.#items.push(entry);
      else this.#items[position] = entry;
      this.#changed = true;
    }
    if (!this.#changed) return;
    try {
      // Through a symbolic link, if the user made index.json one.
      writeFileAtomic(
        realPathOr(this.#file),
        JSON.stringify({ version: INDEX_VERSION, files: this.#items }, null, 2) + "\n",
      );
      this.#changed = false;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      this.warnings.push(
        `Cannot record "${files[0]?.[0] ?? this.#file}" in the machine-wide index: ${
          (error as Error).message
        }`,
      );
    }
  }

  /** Releases the machine lock, if held. */
  [Symbol.dispose](): void {
    this.#lock?.release();
  }
}

/**
 * The index folder, or `undefined` with a warning when there is none to use:
 * no home, or a relative path, which would give every directory an index of
 * its own.
 */
function indexFolder(
  index: MachineIndex,
  warnings: string[],
  fallback: string,
): string | undefined {
  const dir = index.dir();
  if (dir === undefined) {
    warnings.push(
      `No home folder for the machine-wide index (set HOME or WORKTREE_PORTS_HOME); ${fallback}`,
    );
    return undefined;
  }
  if (!isAbsolutePath(dir)) {
    warnings.push(
      `The machine-wide index folder "${dir}" is not an absolute path (set WORKTREE_PORTS_HOME ` +
        `to one); ${fallback}`,
    );
    return undefined;
  }
  return dir;
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
