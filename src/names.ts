// File names, formats and limits shared by every module.

/** Name of the port file written at the root of each worktree. */
export const PORT_FILE_NAME = ".worktree-ports.json";

/** Name of the optional config file at the root of a worktree. */
export const CONFIG_FILE_NAME = "worktree-ports.config.json";

/** Name of the lock file in the repository's common git directory. */
export const LOCK_FILE_NAME = "worktree-ports.lock";

/** Version of the `worktree_ports` metadata written into port files. */
export const PORT_FILE_VERSION = 1;

/** How long {@linkcode allocate} waits for the lock by default. */
export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;

/** A key of a config or port file: what can become an environment variable's name. */
export const KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The key of a port file's own metadata. */
export const META_KEY = "worktree_ports";

/** The highest TCP port. */
export const MAX_PORT = 65535;

/** Port files and configs are a few hundred bytes; a larger file is not one. */
export const MAX_FILE_BYTES = 1 << 20;

/** Deeper JSON than this is not a port file, and would overflow the stack when printed. */
export const MAX_NESTING = 64;

/** An integer from 1 to 65535. */
export function isPort(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_PORT;
}

/** How `formatEnv` writes variables. */
export type EnvFormat = "shell" | "dotenv" | "json" | "fish" | "powershell";

/** Every {@linkcode EnvFormat}. */
export const ENV_FORMATS: readonly EnvFormat[] = ["shell", "dotenv", "json", "fish", "powershell"];
