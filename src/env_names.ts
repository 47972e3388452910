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
  // Windows, where names ignore case: the system's folders, its command
  // interpreter and what it runs, and the user's folders.
  "SYSTEMROOT",
  "WINDIR",
  "COMSPEC",
  "PATHEXT",
  "TEMP",
  "TMP",
  "USERPROFILE",
  "APPDATA",
  "LOCALAPPDATA",
]);

const ENVIRONMENT_PREFIXES: readonly string[] = ["LC_", "DENO_", "GIT_"];

/**
 * Variables that make a shell or a program run code, load it from somewhere
 * of their choosing, or change what it does with the user's files: a port
 * file may come from a commit, and a config is committed too. Whole families
 * go by prefix, since no list of single names keeps up with them.
 */
const CODE_NAMES: ReadonlySet<string> = new Set([
  // Shells: run at startup or at every prompt, or change the session.
  "ENV",
  "PS0",
  "PS1",
  "PS2",
  "PS3",
  "PS4",
  "RPS1",
  "RPS2",
  "RPROMPT",
  "ZDOTDIR",
  "FPATH",
  "INPUTRC",
  "TMOUT",
  "SHELLOPTS",
  "BASHOPTS",
  "GLOBIGNORE",
  // Programs that other programs start.
  "EDITOR",
  "VISUAL",
  "PAGER",
  "MANPAGER",
  "BROWSER",
  "SUDO_ASKPASS",
  "SSH_ASKPASS",
  // Compilers and build tools that start what they name.
  "CC",
  "CXX",
  "RUSTC_WRAPPER",
  "MAKEFLAGS",
  "GOFLAGS",
  "GOPATH",
  "GOROOT",
  "GOPROXY",
  "GOTOOLCHAIN",
  "GOENV",
]);

const CODE_PREFIXES: readonly string[] = [
  // Shells.
  "BASH_",
  "ZSH_",
  "PROMPT",
  "HIST",
  // The dynamic loader.
  "LD_",
  "DYLD_",
  // Language runtimes and their package managers.
  "NODE_",
  "NPM_",
  "YARN_",
  "PYTHON",
  "PIP_",
  "PERL",
  "RUBY",
  "GEM_",
  "BUNDLE_",
  "JAVA_",
  "_JAVA_",
  "JDK_",
  "CARGO_",
  "RUSTUP_",
  // Where programs read their configuration, keys and agents from.
  "XDG_",
  "LESS",
  "SSH_",
  "GPG",
  "GNUPG",
];

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
