// Environment variables no bundle key may set.

/**
 * Variables that the process environment depends on: a bundle key that set
 * one would break `exec` and every shell that loads the bundle.
 */
const RESERVED_ENV_NAMES: ReadonlySet<string> = new Set([
  "PATH",
  "HOME",
  "SHELL",
  "USER",
  "PWD",
  "LANG",
  "TERM",
  "TMPDIR",
  // Shells give these a meaning of their own, or refuse to set them.
  "IFS",
  "UID",
  "EUID",
  "PPID",
  "SHLVL",
  "OLDPWD",
  "CDPATH",
  "ENV",
  "BASH_ENV",
]);

const RESERVED_ENV_PREFIXES: readonly string[] = ["LC_", "DENO_", "GIT_", "LD_", "DYLD_"];

/** A variable the environment depends on, which no bundle key may set. */
export function isReservedEnvName(name: string): boolean {
  return RESERVED_ENV_NAMES.has(name) ||
    RESERVED_ENV_PREFIXES.some((prefix) => name.startsWith(prefix));
}
