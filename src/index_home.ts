// Where the machine-wide index lives: the seam, its real default read from
// the environment, and a fixed folder for tests and embedders.

import { joinPath } from "./paths.ts";

/**
 * The environment variables the default index location is read from, and
 * the only ones this package reads.
 */
export const INDEX_ENV_VARIABLES: readonly string[] = [
  "WORKTREE_PORTS_HOME",
  "XDG_STATE_HOME",
  "HOME",
  "LOCALAPPDATA",
];

/**
 * Where the machine-wide index lives. Injected like {@linkcode GitRunner}
 * and {@linkcode PortProbe}, so that library users and tests can keep it in
 * a folder of their own.
 */
export interface MachineIndex {
  /**
   * The folder holding the index file and the machine lock.
   *
   * @returns The folder, or `undefined` when there is no home to keep it in.
   */
  dir(): string | undefined;
}

/**
 * Where the index folder goes, given how to read environment variables:
 * `$WORKTREE_PORTS_HOME` if set, else `$XDG_STATE_HOME/worktree-ports`, else
 * `~/.local/state/worktree-ports` (`%LOCALAPPDATA%\worktree-ports` on Windows).
 *
 * @param getEnv Reads one variable; `undefined` when it is not set.
 * @param os The operating system, as in `Deno.build.os`.
 * @returns The folder, or `undefined` when none of the variables says where home is.
 *
 * @example Usage
 * ```ts
 * import { machineIndexDir } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const env: Record<string, string> = { HOME: "/home/ada" };
 * assert.equal(
 *   machineIndexDir((name) => env[name], "linux"),
 *   "/home/ada/.local/state/worktree-ports",
 * );
 * ```
 */
export function machineIndexDir(
  getEnv: (name: string) => string | undefined,
  os: typeof Deno.build.os = Deno.build.os,
): string | undefined {
  return machineIndexHome(getEnv, os)?.dir;
}

/**
 * {@linkcode machineIndexDir}, and the variable that decided it: two
 * environments that differ in it (a terminal and an editor's hook, say) keep
 * two indexes, which know nothing of each other.
 */
export function machineIndexHome(
  getEnv: (name: string) => string | undefined,
  os: typeof Deno.build.os = Deno.build.os,
): { dir: string; from: string } | undefined {
  const home = getEnv("WORKTREE_PORTS_HOME");
  if (home) return { dir: home, from: "WORKTREE_PORTS_HOME" };
  if (os === "windows") {
    const local = getEnv("LOCALAPPDATA");
    return local
      ? { dir: `${local.replace(/[\\/]+$/, "")}\\worktree-ports`, from: "LOCALAPPDATA" }
      : undefined;
  }
  // The XDG spec ignores a relative XDG_STATE_HOME.
  const state = getEnv("XDG_STATE_HOME");
  if (state && state.startsWith("/")) {
    return { dir: joinPath(state, "worktree-ports"), from: "XDG_STATE_HOME" };
  }
  const user = getEnv("HOME");
  return user ? { dir: joinPath(user, ".local/state/worktree-ports"), from: "HOME" } : undefined;
}

/**
 * The real {@linkcode MachineIndex}: {@linkcode machineIndexDir} with the
 * process's environment. Reading it needs `--allow-env` for the variables in
 * {@linkcode INDEX_ENV_VARIABLES}.
 */
export const denoMachineIndex: MachineIndex = {
  dir(): string | undefined {
    return machineIndexDir((name) => Deno.env.get(name), Deno.build.os);
  },
};

/**
 * A {@linkcode MachineIndex} kept in a given folder, for tests and for tools
 * that keep their own state.
 *
 * @param dir The folder; it is created when first needed.
 * @returns The index.
 *
 * @example Usage
 * ```ts
 * import { machineIndexAt } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(machineIndexAt("/tmp/ports-index").dir(), "/tmp/ports-index");
 * ```
 */
export function machineIndexAt(dir: string): MachineIndex {
  return { dir: () => dir };
}

/** The variables to set when no index folder is found, as the system reads them. */
export function homeVariablesToSet(os: typeof Deno.build.os = Deno.build.os): string {
  return os === "windows"
    ? "set LOCALAPPDATA or WORKTREE_PORTS_HOME"
    : "set HOME or WORKTREE_PORTS_HOME";
}
