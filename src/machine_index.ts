// The machine-wide index: a per-user list of every port file, so that no two
// worktrees on the machine share a port, whichever repository they belong to.

import type { Scope } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import {
  isPlainObject,
  needsAllAccess,
  pathExists,
  realPathOr,
  removeStaleTemporaryFiles,
  writeFileAtomic,
} from "./files.ts";
import type { GitRunner } from "./git.ts";
import { gitDirsOf, worktreeExists, worktreesOnDisk } from "./git_dirs.ts";
import { homeVariablesToSet, type MachineIndex } from "./index_home.ts";
import { type LockOptions, lockRepository, type RepositoryLock } from "./lock.ts";
import { isPort, PORT_FILE_NAME } from "./names.ts";
import {
  comparablePath,
  isAbsolutePath,
  isInside,
  joinPath,
  parentOf,
  relativeInside,
  slashedPath,
} from "./paths.ts";
import { holdingOf } from "./reservations.ts";

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

/**
 * One port file recorded in the machine-wide index: a pointer to the file,
 * and the ports it held when last recorded.
 */
export interface IndexEntry {
  /** Absolute path of the port file. */
  path: string;
  /** Real path of its repository's common git directory. */
  repository: string;
  /** Real path of its worktree's root. */
  worktree: string;
  /**
   * The ports its file held when last recorded. They stay reserved while the
   * file cannot be read, is away or cannot be found, until git or the file
   * system says the worktree is gone; none for an entry written before ports
   * were recorded.
   */
  ports?: number[];
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
    // A byte-order mark, as some editors write, is no part of the JSON.
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
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
 * The port files that the worktrees of a repository have now, found without
 * git: the main worktree beside the common directory, and every linked one
 * through its admin entry's `gitdir`, which git keeps current when a worktree
 * moves. Each file sits where `entry`'s sat in its worktree.
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
  /**
   * The common directories of the repositories this operation reads as its
   * own (through git, under their locks): their files reserve nothing here.
   * The first is the one `record` records for by default.
   */
  repositories?: readonly string[];
  /** How long to wait for the machine lock, and what to do when waiting begins. */
  lockOptions?: LockOptions;
  /** Only read: no folder is created, no lock taken, nothing recorded (for inspecting). */
  readOnly?: boolean;
  /** The port file being allocated and its worktree, which never reserve anything against themselves. */
  own?: { file: string; worktree: string };
  /**
   * The worktrees git lists for `repositories`. An entry filed under one of
   * them that names none of these worktrees is read as another's.
   *
   * @default {undefined} every entry filed under them is theirs
   */
  worktrees?: readonly string[];
  /** How git is run, to ask whether a worktree Deno may not look into is still there. */
  git: GitRunner;
}

/**
 * The index as one operation holds it: read, and (unless read-only) under the
 * machine lock until disposed; or not in use, with repository scope or when
 * it could not be used.
 */
export class MachineSession implements Disposable {
  /** The index is in use; `false` with repository scope or when it could not be used. */
  readonly active: boolean;
  /** The index file, when the index is in use. */
  readonly file: string | undefined;
  /** Milliseconds spent waiting for another process to release the machine lock. */
  readonly lockWait: number;
  /** Every port another repository's recorded file holds, and that file. */
  readonly holders: Map<number, string> = new Map();
  /** The index's well-formed entries, as kept (those whose worktree is gone dropped). */
  readonly entries: IndexEntry[] = [];
  /** Problems met, to pass on as warnings. */
  readonly warnings: string[];
  /** The machine lock, when held. */
  readonly #lock: RepositoryLock | undefined;
  /** Real paths of the common directories of this operation's own repositories. */
  readonly #own: ReadonlySet<string>;
  /** The repository `record` records for by default. */
  readonly #repository: string | undefined;
  /** The file's entries as they will be written back: malformed ones kept, gone ones dropped. */
  readonly #items: unknown[] = [];
  /** The ports recorded for each file. */
  readonly #recorded = new Map<string, readonly number[]>();
  /** Kept entries whose file Deno may not open, to confirm with git, and what was said of them. */
  readonly #hidden: { entry: IndexEntry; noted: string[] }[] = [];
  /** The entries differ from the file's. */
  #changed = false;

  private constructor(
    warnings: string[],
    open?: { file: string; lock?: RepositoryLock; lockWait: number; own: string[] },
  ) {
    this.warnings = warnings;
    this.active = open !== undefined;
    this.file = open?.file;
    this.lockWait = open?.lockWait ?? 0;
    this.#lock = open?.lock;
    this.#own = new Set(open?.own);
    this.#repository = open?.own[0];
  }

  /**
   * Takes the machine lock (the caller holds the repository locks already; see
   * the lock order above) and reads the index: the ports that other
   * repositories' recorded files hold. Bad state never blocks: an index
   * that cannot be used gives a warning and an inactive session, which is
   * repository scope for this run, and nothing on disk is changed.
   */
  static async open(options: MachineSessionOptions): Promise<MachineSession> {
    const warnings: string[] = [];
    if (options.scope === "repository") return new MachineSession(warnings);
    const fallback = options.readOnly
      ? "looking at this repository only this time"
      : "allocating for this repository only this time";
    const dir = indexFolder(options.index, warnings, fallback);
    if (dir === undefined) return new MachineSession(warnings);
    const own = (options.repositories ?? []).map((commonDir) => realPathOr(commonDir));
    // Its lock would be the repository lock this process holds already.
    const realDir = realPathOr(dir);
    if (own.includes(realDir)) {
      warnings.push(
        `The machine-wide index folder "${dir}" is a repository's git directory (set ` +
          `WORKTREE_PORTS_HOME to a folder of its own); ${fallback}`,
      );
      return new MachineSession(warnings);
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
      return new MachineSession(warnings);
    }
    let index: IndexRead;
    try {
      index = readMachineIndex(dir);
      // Every write of the index happens under the lock: a temporary file
      // found by a holder of the lock belongs to no live writer.
      if (lock !== undefined) removeStaleTemporaryFiles(realPathOr(index.path));
    } catch (error) {
      lock?.release();
      if (error instanceof Deno.errors.NotCapable) throw error;
      warnings.push(
        `${(error as Error).message}; ${fallback} (move the file away to start a new index)`,
      );
      return new MachineSession(warnings);
    }
    const session = new MachineSession(warnings, { file: index.path, lock, lockWait, own });
    session.#read(index.raw, options);
    await session.#confirmHidden(options.git);
    return session;
  }

  /**
   * Reads every other repository's recorded file, as sibling files are read
   * (see {@linkcode holdingOf}), and keeps the entries whose worktree still
   * holds something. A repository whose files are gone from where they were
   * recorded has its worktrees looked up on disk, where it is now; one that
   * cannot be found yet, while another of its worktrees lives on (a
   * repository renamed but not yet repaired), keeps holding its recorded
   * ports.
   */
  #read(raw: readonly unknown[], options: MachineSessionOptions): void {
    const where = new RepositoryLookup();
    const listed = options.worktrees === undefined
      ? undefined
      : new Set(options.worktrees.map((path) => comparablePath(path)));
    // An entry filed under this operation's repository but naming none of
    // its worktrees (an orphan left by a deleted repository, or one misfiled
    // by hand) is read as another's.
    let listedReal: Set<string> | undefined;
    const isListed = (worktree: string) => {
      if (listed === undefined || listed.has(comparablePath(worktree))) return true;
      // Git may spell a worktree through a symbolic link: real paths, once.
      listedReal ??= new Set(options.worktrees!.map((path) => comparablePath(realPathOr(path))));
      return listedReal.has(comparablePath(realPathOr(worktree)));
    };
    const vanished: IndexEntry[] = [];
    const live = new Set<string>();
    for (const item of raw) {
      const entry = asIndexEntry(item);
      if (entry === undefined) {
        this.#items.push(item);
        continue;
      }
      const repository = where.of(entry);
      // This operation's own repositories are read through git, and its own
      // file never holds anything against itself.
      const own = this.#own.has(repository) && isListed(entry.worktree);
      if (own || entry.path === options.own?.file || entry.worktree === options.own?.worktree) {
        this.#keep(own ? where.healed(entry, repository) : entry);
        continue;
      }
      const noted: string[] = [];
      const holding = holdingOf({
        file: entry.path,
        worktree: entry.worktree,
        commonDir: where.exists(repository) ? repository : undefined,
        recorded: entry.ports,
      }, noted);
      // A file outside its worktree (a preview) stops holding with the worktree.
      const orphan = !isInside(entry.worktree, entry.path) && !worktreeExists(entry.worktree);
      if (holding.state === "gone" || (holding.state === "file" && orphan)) {
        vanished.push(entry);
      } else if (holding.state === "none") {
        this.#changed = true;
      } else if (holding.state === "kept" && holding.ports.length === 0) {
        // An entry no worktree of ours ever wrote (made by hand, say): once said, gone.
        this.warnings.push(
          `Dropped "${entry.path}" from the machine-wide index: it cannot be read ` +
            `(${holding.unreadable ?? "it is away"}) and nothing is known of its ports`,
        );
        this.#changed = true;
      } else if (
        holding.state === "file" && holding.read.meta === undefined && holding.ports.length === 0
      ) {
        this.warnings.push(
          `Dropped "${entry.path}" from the machine-wide index: it holds no ports, so it is no ` +
            `port file`,
        );
        this.#changed = true;
      } else {
        live.add(entry.repository);
        const kept = where.healed({ ...entry, ports: [...holding.ports] }, repository);
        this.#keep(kept, holding.ports);
        // Whether one Deno may not look at is there at all is for git to say first.
        if (holding.state === "kept" && holding.hidden) this.#hidden.push({ entry: kept, noted });
        else this.warnings.push(...noted);
      }
    }
    const recorded = new Set(this.entries.map((entry) => comparablePath(entry.path)));
    for (const entry of vanished) {
      // Where its repository is now, which another of its worktrees may have
      // told since it was met.
      const repository = where.of(entry);
      // Kept as it is, the index need not be written for it.
      if (!this.#own.has(repository) && !where.exists(repository)) {
        if (live.has(entry.repository) && (entry.ports?.length ?? 0) > 0) {
          this.#keep(entry, entry.ports);
          continue;
        }
      }
      this.#changed = true;
      if (this.#own.has(repository) || !where.exists(repository)) continue;
      for (const found of portFilesOfRepository(repository, entry)) {
        if (recorded.has(comparablePath(found.path))) continue;
        recorded.add(comparablePath(found.path));
        const holding = holdingOf(
          { file: found.path, worktree: found.worktree, commonDir: repository },
          this.warnings,
        );
        if (holding.ports.length === 0) continue;
        this.#keep({ ...found, ports: [...holding.ports] }, holding.ports);
        this.#changed = true;
      }
    }
  }

  /**
   * Asks git whether each worktree whose file Deno may not open (it opens
   * `/dev/shm`, say, only with `--allow-all`) is still there: git is not
   * bound by Deno's permissions, and a deleted one must stop holding ports.
   */
  async #confirmHidden(git: GitRunner): Promise<void> {
    for (const { entry, noted } of this.#hidden) {
      try {
        await git.run(["-C", entry.worktree, "rev-parse", "--git-dir"], parentOf(this.file!));
        this.warnings.push(...noted);
        continue;
      } catch (error) {
        if (!(error instanceof WorktreePortsError)) throw error;
      }
      const at = this.#items.indexOf(entry);
      if (at !== -1) this.#items.splice(at, 1);
      this.entries.splice(this.entries.indexOf(entry), 1);
      for (const [port, holder] of this.holders) {
        if (holder === entry.path) this.holders.delete(port);
      }
      this.#changed = true;
    }
  }

  /** Keeps an entry, and holds its ports for the caller when given. */
  #keep(entry: IndexEntry, holds?: readonly number[]): void {
    this.#items.push(entry);
    this.entries.push(entry);
    if (entry.ports !== undefined) this.#recorded.set(comparablePath(entry.path), entry.ports);
    for (const port of holds ?? []) {
      if (!this.holders.has(port)) this.holders.set(port, entry.path);
    }
  }

  /** The ports the index last recorded for a file, if it recorded any. */
  recorded(path: string): readonly number[] | undefined {
    return this.#recorded.get(comparablePath(path));
  }

  /**
   * Records a port file of the repository the session was opened for, or of
   * `repository`, with the ports it holds; writes the index only if it changed.
   */
  record(path: string, worktree: string, ports: readonly number[], repository?: string): void {
    this.recordAll([[path, worktree, ports]], repository);
  }

  /** Records port files of one repository at once, as `record` does. */
  recordAll(
    files: readonly (readonly [file: string, worktree: string, ports: readonly number[]])[],
    repository: string | undefined = this.#repository,
  ): void {
    if (repository === undefined || this.#lock === undefined || this.file === undefined) return;
    const at = new Map<string, number>();
    this.#items.forEach((item, position) => {
      const path = asIndexEntry(item)?.path;
      if (path !== undefined) at.set(comparablePath(path), position);
    });
    // One spelling of each path (C:/a/b, never C:\\a/b), as git writes them.
    for (const [path, worktree, ports] of files) {
      const entry: IndexEntry = {
        path: slashedPath(path),
        repository: slashedPath(repository),
        worktree: slashedPath(worktree),
        ports: [...ports],
      };
      const position = at.get(comparablePath(path));
      if (
        position !== undefined && JSON.stringify(this.#items[position]) === JSON.stringify(entry)
      ) {
        continue;
      }
      if (position === undefined) this.#items.push(entry);
      else this.#items[position] = entry;
      this.#recorded.set(comparablePath(path), entry.ports!);
      this.#changed = true;
    }
    this.#write(files[0]?.[0]);
  }

  /** Writes the index back when its entries changed. */
  #write(about?: string): void {
    if (!this.#changed || this.#lock === undefined || this.file === undefined) return;
    try {
      // Through a symbolic link, if the user made index.json one.
      writeFileAtomic(
        realPathOr(this.file),
        JSON.stringify({ version: INDEX_VERSION, files: this.#items }, null, 2) + "\n",
      );
      this.#changed = false;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      this.warnings.push(
        `Cannot record "${about ?? this.file}" in the machine-wide index: ${
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
 * Where the repository of an index entry is now: the real path of the common
 * directory it was recorded with while that exists, else where the `.git` of
 * any worktree recorded with it leads (a renamed repository, after
 * `git worktree repair`). Each path is resolved once.
 */
class RepositoryLookup {
  readonly #real = new Map<string, string>();
  readonly #exists = new Map<string, boolean>();
  /** Where a recorded repository went, learnt from any of its worktrees. */
  readonly #moved = new Map<string, string>();

  of(entry: IndexEntry): string {
    const known = this.#real.get(entry.repository) ?? this.#moved.get(entry.repository);
    if (known !== undefined) return known;
    if (this.exists(entry.repository)) {
      const real = realPathOr(entry.repository);
      this.#real.set(entry.repository, real);
      return real;
    }
    const followed = this.#follow(entry.worktree);
    if (followed !== undefined) this.#moved.set(entry.repository, followed);
    return followed ?? entry.repository;
  }

  /** Whether a folder exists. */
  exists(path: string): boolean {
    let exists = this.#exists.get(path);
    if (exists === undefined) this.#exists.set(path, exists = pathExists(path));
    return exists;
  }

  /** The entry with the repository it lives in now, when that differs from the recorded one. */
  healed(entry: IndexEntry, repository: string): IndexEntry {
    return entry.repository === repository ? entry : { ...entry, repository };
  }

  /** The real common directory a worktree's `.git` leads to, if it leads anywhere that exists. */
  #follow(worktree: string): string | undefined {
    try {
      const { commonDir } = gitDirsOf(worktree);
      return this.exists(commonDir) ? realPathOr(commonDir) : undefined;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
      return undefined;
    }
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
      `No home folder for the machine-wide index (${homeVariablesToSet()}); ${fallback}`,
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
  const { path, repository, worktree, ports } = item;
  if (typeof path !== "string" || typeof repository !== "string" || typeof worktree !== "string") {
    return undefined;
  }
  // Relative paths would be read against whatever directory we run in.
  if (!isAbsolutePath(path) || !isAbsolutePath(worktree)) return undefined;
  // A relative repository would be read against whatever directory we run
  // in: it is looked up through the worktree's .git instead.
  const entry: IndexEntry = {
    path,
    repository: isAbsolutePath(repository) ? repository : "",
    worktree,
  };
  if (Array.isArray(ports)) entry.ports = ports.filter(isPort);
  return entry;
}
