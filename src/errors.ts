// The error callers catch, and how messages quote what users give.

/** Machine-readable reason carried by {@linkcode WorktreePortsError}. */
export type ErrorCode =
  | "NO_FREE_SLOT"
  | "LOCK_TIMEOUT"
  | "LOCK_FAILED"
  | "NOT_A_WORKTREE"
  | "GIT_FAILED"
  | "INVALID_CONFIG"
  | "INVALID_OUTPUT"
  | "ON_RELEASE_FAILED"
  | "PORT_TAKEN";

/**
 * The error callers are expected to catch: every slot taken, the lock not
 * acquired in time or not openable, not inside a git worktree, git failing, a
 * bad config, an output path inside another worktree or holding a file
 * that is no port file, the config's `on_release` failing, or the proxy's
 * port taken.
 *
 * @example Usage
 * ```ts ignore
 * import { allocate, WorktreePortsError } from "@org/worktree-ports";
 *
 * try {
 *   await allocate();
 * } catch (error) {
 *   if (error instanceof WorktreePortsError && error.code === "NO_FREE_SLOT") {
 *     console.error("every slot is taken");
 *   } else {
 *     throw error;
 *   }
 * }
 * ```
 */
export class WorktreePortsError extends Error {
  /** Why the operation failed. */
  readonly code: ErrorCode;

  /**
   * Creates an error with a code and a message that says what to do.
   *
   * @param code Why the operation failed.
   * @param message What went wrong and how to fix it.
   * @param options The underlying `cause`, if any.
   */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WorktreePortsError";
    this.code = code;
  }
}

/** A value for an error message: its JSON, cut to about 200 characters. */
export function quoteValue(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return clip(text);
}

/** Text for an error message, cut to about 200 characters: a message must stay readable. */
export function clip(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}… (${text.length} characters)` : text;
}

/**
 * A key or path for a message, in double quotes; JSON-escaped when it holds
 * control characters, which would otherwise reach the terminal raw (a key
 * read from a port file, or a path, can hold anything).
 */
export function quoted(key: string): string {
  return /\p{Cc}/u.test(key) ? JSON.stringify(key) : `"${key}"`;
}

export function notAWorktree(dir: string, cause?: unknown): WorktreePortsError {
  return new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${dir}" is not inside a git worktree (run this inside a git repository's working tree)`,
    { cause },
  );
}

/** Ports for a message: the first few, then how many more. */
export function listPorts(ports: readonly number[]): string {
  const shown = ports.slice(0, 5).join(", ");
  return ports.length > 5 ? `${shown} and ${ports.length - 5} more` : shown;
}
