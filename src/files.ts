// The one safe reader (small regular files only, never a FIFO), atomic writes,
// and what stat and realpath say of a path.

import { MAX_FILE_BYTES } from "./names.ts";
import { baseName, IS_WINDOWS, joinPath, parentOf } from "./paths.ts";

/**
 * What `stat` (or, for `link`, `lstat`) says of a path; `undefined` when it
 * cannot say (nothing there, a loop, no access, a path Deno opens only with
 * `--allow-all`). A missing permission that a flag grants is never that: it
 * is thrown.
 */
export function fileInfo(path: string, link = false): Deno.FileInfo | undefined {
  try {
    return link ? Deno.lstatSync(path) : Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
    return undefined;
  }
}

/**
 * Deno opens some paths (`/proc`, `/dev/shm` and the like) only with
 * `--allow-all`, whatever `--allow-read` grants: no flag this package asks
 * for helps there, so such a path is one it cannot read, not a permission
 * to ask for.
 */
export function needsAllAccess(error: unknown): boolean {
  return error instanceof Deno.errors.NotCapable && /requires all access/i.test(error.message);
}

/** Whether Deno refuses to look at a path without `--allow-all` (see {@linkcode needsAllAccess}). */
export function hiddenFromDeno(path: string): boolean {
  try {
    Deno.statSync(path);
    return false;
  } catch (error) {
    return needsAllAccess(error);
  }
}

export function pathExists(path: string): boolean {
  return fileInfo(path) !== undefined;
}

export function isSymlink(path: string): boolean {
  return fileInfo(path, true)?.isSymlink ?? false;
}

/**
 * Whether a parsed JSON value nests deeper than `limit`, found without
 * recursion. Text with no more brackets than that cannot, and a port file
 * has a handful, so the value is walked only when the text has many.
 */
export function nestingExceeds(text: string, value: unknown, limit: number): boolean {
  if (text.replace(/[^[{]+/g, "").length <= limit) return false;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (typeof current !== "object" || current === null) continue;
    if (depth > limit) return true;
    for (const child of Object.values(current)) stack.push([child, depth + 1]);
  }
  return false;
}

/** An operating system error's own words, without the code and the call Deno appends. */
export function osErrorText(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/ \(os error \d+\)(: \w+ '.*')?$/s, "");
}

/** The real path of `path`; `undefined` when it cannot be resolved. */
export function realPathOf(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable && !needsAllAccess(error)) throw error;
    return undefined;
  }
}

/** The real path of `path`, or `path` itself when it cannot be resolved. */
export function realPathOr(path: string): string {
  return realPathOf(path) ?? path;
}

/**
 * Writes a file atomically: a temporary file in the same directory, then a
 * rename over the target. Readers see the old file or the new one, never a
 * partial one, and a crash leaves the old file intact.
 *
 * @param path The file to write.
 * @param text The whole content.
 * @throws {Error} Naming the path when it cannot be written; no temporary file is left.
 *
 * @example Usage
 * ```ts ignore
 * import { writeFileAtomic } from "@org/worktree-ports";
 *
 * writeFileAtomic("/tmp/ports.json", '{"port": 3100}\n');
 * ```
 */
export function writeFileAtomic(path: string, text: string): void {
  const temp = temporaryFileOf(path);
  try {
    Deno.writeTextFileSync(temp, text, { createNew: true });
    renameOver(temp, path);
  } catch (error) {
    try {
      Deno.removeSync(temp);
    } catch {
      // It was never created.
    }
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
}

/** How {@linkcode renameOver} renames, and for how long it tries. */
export interface RenameOverOptions {
  /** Renames a file. */
  rename?: (from: string, to: string) => void;
  /** Whether Windows' rules apply. */
  windows?: boolean;
  /** How long to keep trying, in milliseconds. */
  retryMs?: number;
}

/**
 * Renames `from` over `to`. On Windows a file another process holds open
 * (an editor, a dev server's watcher, antivirus or the search indexer) cannot
 * be replaced until it lets go, which is usually a moment later: the rename
 * is tried again for up to a second before the error is let through.
 */
export function renameOver(from: string, to: string, options: RenameOverOptions = {}): void {
  const { rename = Deno.renameSync, windows = IS_WINDOWS, retryMs = 1000 } = options;
  const deadline = performance.now() + retryMs;
  for (let wait = 5;; wait = Math.min(wait * 2, 100)) {
    try {
      rename(from, to);
      return;
    } catch (error) {
      if (!windows || !isHeldOpen(error) || performance.now() + wait > deadline) throw error;
      // Synchronous, as every write under the lock is.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    }
  }
}

/** Windows' refusal to replace a file that is open: access denied (5) or a sharing violation (32, 33). */
function isHeldOpen(error: unknown): boolean {
  return error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.Busy ||
    /\(os error (5|32|33)\)/.test((error as Error)?.message ?? "");
}

/** A new temporary file's name beside `path`, unique per process and call. */
export function temporaryFileOf(path: string): string {
  // Web Crypto would cost a cold process milliseconds to load.
  return `${path}.${Deno.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`;
}

/** A temporary file of {@linkcode writeFileAtomic} for `name`: `<name>.<pid>-<random>.tmp`. */
function temporaryFilePattern(name: string): RegExp {
  return new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.\\d+-[0-9a-z]+\\.tmp$`);
}

/**
 * Removes what a process killed between writing a temporary file and
 * renaming it left beside `path`. Every write happens under the lock, so a
 * temporary file found by a holder of the lock belongs to no live writer.
 */
export function removeStaleTemporaryFiles(path: string): void {
  const dir = parentOf(path);
  const pattern = temporaryFilePattern(path.slice(dir.length + 1));
  let entries: Iterable<Deno.DirEntry>;
  try {
    entries = Deno.readDirSync(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return;
  }
  for (const entry of entries) {
    if (!entry.isFile || !pattern.test(entry.name)) continue;
    try {
      Deno.removeSync(joinPath(dir, entry.name));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
}

/** The real path of `path`, resolving its nearest existing ancestor. */
export function realPathOfNearest(path: string): string {
  const names: string[] = [];
  for (let current = path;;) {
    try {
      return names.reduce(joinPath, Deno.realPathSync(current));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      // Never "C:" alone, which is the drive's current directory.
      const parent = parentOf(current);
      if (parent === current || parent.length >= current.length) return path;
      names.unshift(baseName(current));
      current = parent;
    }
  }
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A file that exists but is not one this tool reads: a FIFO, a device, a huge file. */
export class FileProblem extends Error {
  /** It is no regular file at all, rather than one too large. */
  readonly irregular: boolean;
  constructor(message: string, irregular: boolean) {
    super(message);
    this.name = "FileProblem";
    this.irregular = irregular;
  }
}

/**
 * Reads a small regular text file, without its UTF-8 byte-order mark.
 * Anything else is never opened: opening a FIFO for reading blocks until a
 * writer appears, and a device may never end. A file swapped for one between
 * the `stat` and the open is not caught; Deno has no non-blocking open.
 *
 * @throws {Deno.errors.NotFound} When nothing is there (a broken symbolic link included).
 * @throws {FileProblem} When the path is not a small regular file, saying what it is.
 */
export function readRegularTextFile(path: string): string {
  const info = Deno.statSync(path);
  if (!info.isFile) throw new FileProblem(irregularFileKind(info), true);
  if (info.size > MAX_FILE_BYTES) {
    throw new FileProblem(`it is larger than ${MAX_FILE_BYTES} bytes`, false);
  }
  const text = Deno.readTextFileSync(path);
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function irregularFileKind(info: Deno.FileInfo): string {
  if (info.isDirectory) return "it is a directory";
  if (info.isFifo) return "it is a FIFO (named pipe), not a file";
  if (info.isSocket) return "it is a socket, not a file";
  if (info.isCharDevice || info.isBlockDevice) return "it is a device, not a file";
  return "it is not a regular file";
}

/** Why a file could not be read, in a few words. */
export function fileProblemOf(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.FilesystemLoop) return "it is a symbolic link loop";
  return (error as Error).message;
}
