// Environment variables no bundle key may set: those the environment depends
// on, and those that make a shell or a program run code.

/**
 * Variables that the process environment depends on: a bundle key that set
 * one would break `exec` and every shell that loads the bundle.
 */
const ENVIRONMENT_NAMES: ReadonlySet<string> = new Set([
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
]);

const ENVIRONMENT_PREFIXES: readonly string[] = ["LC_", "DENO_", "GIT_"];

/**
 * Variables that make a shell or a program run code or load it from
 * somewhere of their choosing: a port file may come from a commit, and a
 * config is committed too.
 */
const CODE_NAMES: ReadonlySet<string> = new Set([
  // Shells: run at startup or at every prompt.
  "ENV",
  "BASH_ENV",
  "PROMPT_COMMAND",
  "PS0",
  "PS1",
  "PS2",
  "PS3",
  "PS4",
  "ZDOTDIR",
  // Programs that load code named in their environment.
  "NODE_OPTIONS",
  "NODE_PATH",
  "PYTHONSTARTUP",
  "PYTHONPATH",
  "PYTHONHOME",
  "PERL5OPT",
  "PERL5LIB",
  "RUBYOPT",
  "RUBYLIB",
  "JAVA_TOOL_OPTIONS",
  "JDK_JAVA_OPTIONS",
  "_JAVA_OPTIONS",
  // Programs that other programs start.
  "EDITOR",
  "VISUAL",
  "PAGER",
]);

const CODE_PREFIXES: readonly string[] = ["LD_", "DYLD_", "NPM_CONFIG_"];

/**
 * Why no bundle key may set the variable `name`, as the end of a sentence:
 * `undefined` when it may.
 */
export function reservedEnvReason(name: string): string | undefined {
  if (CODE_NAMES.has(name) || CODE_PREFIXES.some((prefix) => name.startsWith(prefix))) {
    return "which makes a shell or a program run code of its choosing";
  }
  if (
    ENVIRONMENT_NAMES.has(name) || ENVIRONMENT_PREFIXES.some((prefix) => name.startsWith(prefix))
  ) {
    return "which commands need from the environment";
  }
  return undefined;
}

/** A variable no bundle key may set (see {@linkcode reservedEnvReason}). */
export function isReservedEnvName(name: string): boolean {
  return reservedEnvReason(name) !== undefined;
}
