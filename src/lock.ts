// The repository lock: a kernel file lock in the common git directory.

import { WorktreePortsError } from "./errors.ts";
import { isSymlink, osErrorText } from "./files.ts";
import { DEFAULT_LOCK_TIMEOUT_MS, LOCK_FILE_NAME } from "./names.ts";
import { joinPath, parentOf } from "./paths.ts";

/** Options for {@linkcode lockRepository}. */
export interface LockOptions {
  /**
   * The lock file's name in the common git directory: another name is
   * another lock.
   *
   * @default {LOCK_FILE_NAME}
   */
  name?: string;
  /**
   * How long to wait for another holder before giving up, in milliseconds.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  timeoutMs?: number;
  /**
   * Called once, with the lock's path, when another process holds the lock
   * and waiting begins.
   *
   * @default {undefined}
   */
  onWait?: (path: string) => void;
}

/** A held repository lock. Released by `release()` or at the end of a `using` block. */
export interface RepositoryLock extends Disposable {
  /** The lock file. */
  readonly path: string;
  /** Releases the lock; calling it again does nothing. */
  release(): void;
}

/**
 * Takes the exclusive lock shared by every worktree of a repository: a kernel
 * file lock on `worktree-ports.lock` in the common git directory, so a holder
 * that dies releases it and no stale lock is ever left behind.
 *
 * @param commonDir The repository's common git directory.
 * @param options How long to wait, and a callback for when waiting begins.
 * @returns The held lock.
 * @throws {WorktreePortsError} With code `LOCK_TIMEOUT` when it stays held past the timeout,
 * `LOCK_FAILED` when the lock file cannot be opened (a directory in its place, say).
 * @throws {RangeError} When the timeout is negative or not a number.
 *
 * @example Usage
 * ```ts ignore
 * import { lockRepository, openRepository } from "@org/worktree-ports";
 *
 * const { commonDir } = await openRepository();
 * using lock = await lockRepository(commonDir, { timeoutMs: 2000 });
 * console.log("holding", lock.path);
 * ```
 */
export async function lockRepository(
  commonDir: string,
  options: LockOptions = {},
): Promise<RepositoryLock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!(timeoutMs >= 0)) {
    throw new RangeError(`Lock timeout must be 0 or more milliseconds, got ${timeoutMs}`);
  }
  const path = joinPath(commonDir, options.name ?? LOCK_FILE_NAME);
  const file = openLockFile(path);
  try {
    if (!file.tryLockSync(true)) {
      options.onWait?.(path);
      const deadline = performance.now() + timeoutMs;
      let pause = 1;
      // Polling keeps the wait cancellable; the holders' critical section is
      // a few milliseconds, so short pauses hand the lock over quickly.
      while (!file.tryLockSync(true)) {
        const left = deadline - performance.now();
        if (left <= 0) {
          throw new WorktreePortsError(
            "LOCK_TIMEOUT",
            `Timed out after ${timeoutMs / 1000} s waiting for the lock "${path}" ` +
              `(another worktree-ports process holds it; it is released when that process exits)`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
        pause = Math.min(pause * 2, 16);
      }
    }
  } catch (error) {
    file.close();
    throw error;
  }
  let held = true;
  const release = () => {
    if (held) {
      held = false;
      file.close();
    }
  };
  return { path, release, [Symbol.dispose]: release };
}

/**
 * Opens (creating it if need be) the lock file. What stands in its place is
 * named in one line with the fix, rather than as the operating system's
 * error: a directory, a symbolic link loop, a file this user may not open.
 */
function openLockFile(path: string): Deno.FsFile {
  try {
    return Deno.openSync(path, { read: true, write: true, create: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const recreate = "worktree-ports creates the lock again as an empty file";
    const reason = error instanceof Deno.errors.IsADirectory
      ? `it is a directory (remove it; ${recreate})`
      : error instanceof Deno.errors.FilesystemLoop
      ? `it is a symbolic link loop (remove the link; ${recreate})`
      : error instanceof Deno.errors.NotFound && isSymlink(path)
      ? `it is a symbolic link to a folder that does not exist (remove the link; ${recreate})`
      : error instanceof Deno.errors.PermissionDenied
      ? `permission denied (make it, and the folder "${
        parentOf(path)
      }", readable and writable by this user)`
      : `${osErrorText(error)} (remove or repair it; ${recreate})`;
    throw new WorktreePortsError("LOCK_FAILED", `Cannot open the lock "${path}": ${reason}`, {
      cause: error,
    });
  }
}
