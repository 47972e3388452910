// The permission flags each command needs, asked without prompting, and what to
// say when one is missing.

import { INDEX_ENV_VARIABLES } from "../index_home.ts";
import { LISTENER_PROGRAMS } from "../listeners.ts";
import { PROBE_HOSTNAMES } from "../probe.ts";
import type { Permission, Values } from "./spec.ts";

export const ALLOCATE_PERMISSIONS: Permission[] = ["git", "read", "write", "net", "env"];

/** The machine-wide index is found through the environment; repository scope needs none of it. */
export function allocatePermissions(values: Values): Permission[] {
  return values.scope === "repository"
    ? ALLOCATE_PERMISSIONS.filter((p) => p !== "env")
    : ALLOCATE_PERMISSIONS;
}

const NET_FLAG_HOSTS = PROBE_HOSTNAMES.map((host) => host.includes(":") ? `[${host}]` : host)
  .join(",");

/** The CLI's --allow-run: git, and the programs list and check ask who listens on a port. */
export const LISTENERS_RUN_FLAG = `--allow-run=git,${LISTENER_PROGRAMS.join(",")}`;

const PERMISSION_FLAGS: Record<Permission, string> = {
  // Only git is needed; list and check also ask the system who listens on a port.
  git: LISTENERS_RUN_FLAG,
  read: "--allow-read",
  write: "--allow-write",
  // Quoted, so that the flag pastes into zsh, where `[::1]` is a glob.
  net: `--allow-net='${NET_FLAG_HOSTS}'`,
  env: `--allow-env=${INDEX_ENV_VARIABLES.join(",")}`,
};

/** How the README installs the command; the flags go between the two. */
const INSTALL_COMMAND = "deno install -g -f -n worktree-ports";

const INSTALL_MODULE = "jsr:@org/worktree-ports/cli";

/**
 * The flags to install with: all the CLI's, and for `exec`, permission to run
 * any command.
 */
export function installFlags(command: string): string {
  const flags = requiredFlags(ALLOCATE_PERMISSIONS);
  return command === "exec" ? flags.replace(PERMISSION_FLAGS.git, "--allow-run") : flags;
}

/**
 * What to do about missing permissions, in one line, or two for a command
 * run from JSR: one installed from there cannot be given flags, and has to
 * be installed again with them. A compiled one has to be compiled again.
 *
 * @param missing The flags to add.
 * @param why What needs them, in a few words.
 * @param install Every flag of the command, for reinstalling it.
 * @param mainModule Where the running program came from.
 */
export function missingPermissionMessage(
  missing: string,
  why: string,
  install: string,
  mainModule: string = Deno.mainModule,
): string {
  if (Deno.build.standalone) {
    return `Missing permission: this compiled worktree-ports lacks ${missing} (${why}); ` +
      `compile it again with "deno compile ${install} ${INSTALL_MODULE}"`;
  }
  const line = `Missing permission: run again with ${missing} (${why})`;
  if (!mainModule.startsWith("https://jsr.io/")) return line;
  return `${line}\n  installed with "deno install"? It takes no flags: reinstall it with ` +
    `${INSTALL_COMMAND} ${install} ${INSTALL_MODULE}`;
}

export function requiredFlags(permissions: readonly Permission[]): string {
  return permissions.map((permission) => PERMISSION_FLAGS[permission]).join(" ");
}

/**
 * The permissions that are not granted, asked with `Deno.permissions.query`
 * so that nothing prompts.
 */
export async function missingPermissions(
  permissions: readonly Permission[],
): Promise<Permission[]> {
  const missing: Permission[] = [];
  for (const permission of permissions) {
    const descriptors: Deno.PermissionDescriptor[] = permission === "net"
      ? PROBE_HOSTNAMES.map((host) => ({
        name: "net",
        host: host.includes(":") ? `[${host}]` : host,
      }))
      : permission === "git"
      ? [{ name: "run", command: "git" }]
      : permission === "env"
      ? INDEX_ENV_VARIABLES.map((variable) => ({ name: "env", variable }))
      : [{ name: permission }];
    for (const descriptor of descriptors) {
      if (Deno.permissions.querySync(descriptor).state !== "granted") {
        if (permission !== "git" || !(await isMissingProgram("git"))) missing.push(permission);
        break;
      }
    }
  }
  return missing;
}

/**
 * Deno reports `--allow-run=PROGRAM` as not granted when the program is not
 * on PATH, the same as when the flag is missing. Spawning it tells the two
 * apart: a missing program fails before any permission check. It is only
 * tried where Deno cannot prompt, so asking never turns into a question.
 */
export async function isMissingProgram(program: string): Promise<boolean> {
  if (Deno.stdin.isTerminal() && Deno.stderr.isTerminal()) return false;
  try {
    const child = new Deno.Command(program, { stdin: "null", stdout: "null", stderr: "null" })
      .spawn();
    child.kill();
    await child.status;
    return false;
  } catch (error) {
    return error instanceof Deno.errors.NotFound;
  }
}
