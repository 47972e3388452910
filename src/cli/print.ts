// What the command line prints: results on stdout, warnings and notices on stderr.

import type { AllocateOptions } from "../allocate.ts";

export function printWarning(warning: string): void {
  console.error(`warning: ${warning}`);
}

/** Writes synchronously: the first asynchronous write to a pipe costs a process milliseconds. */
export function writeStdout(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let written = 0; written < bytes.length;) {
    written += Deno.stdout.writeSync(bytes.subarray(written));
  }
}

/**
 * Runs an operation that may wait for the lock, printing a line if the wait
 * grows long: most waits last milliseconds and deserve no line at all.
 */
export async function withLockNotice<T>(
  options: AllocateOptions,
  operation: (options: AllocateOptions) => Promise<T>,
): Promise<T> {
  let notice: ReturnType<typeof setTimeout> | undefined;
  try {
    return await operation({
      ...options,
      onLockWait: (path) => {
        // The machine lock may be waited for after the repository's: one notice, for the current wait.
        if (notice !== undefined) clearTimeout(notice);
        notice = setTimeout(() => {
          console.error(`waiting for "${path}": another worktree-ports process holds the lock`);
        }, 1000);
      },
    });
  } finally {
    // Touching the timers at all costs a cold process milliseconds.
    if (notice !== undefined) clearTimeout(notice);
  }
}
