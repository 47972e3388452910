// The side effects every operation goes through (git, port probes, the
// system's listeners and the machine-wide index's home) as one interface, with the real defaults.

import { denoGit, type GitRunner } from "./git.ts";
import { denoMachineIndex, type MachineIndex } from "./index_home.ts";
import { denoListeners, type ListenerLookup } from "./listeners.ts";
import { denoProbe, type PortProbe } from "./probe.ts";

/**
 * How far an operation looks for ports held by others: `machine`, every
 * port file recorded in the machine-wide index as well as the repository's
 * own worktrees; `repository`, only the repository's own worktrees.
 */
export type Scope = "machine" | "repository";

/** Every {@linkcode Scope}. */
export const SCOPES: readonly Scope[] = ["machine", "repository"];

/**
 * What an operation reaches outside the process through, each part
 * replaceable so that tests and embedders can run it against fakes or
 * folders of their own. The options of every operation extend it, or the
 * part of it the operation uses.
 */
export interface Environment {
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
  /**
   * How the system is asked which processes listen on ports.
   *
   * @default {denoListeners}
   */
  listeners?: ListenerLookup;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
  /**
   * `machine` also looks at the port files of other repositories recorded in
   * the machine-wide index; `repository` at this repository's worktrees only.
   *
   * @default {"machine"} (for an allocation, unless the config says `"scope": "repository"`)
   */
  scope?: Scope;
}

/** An {@linkcode Environment} with its defaults filled in; `scope` stays as given. */
export type Env = Required<Omit<Environment, "scope">> & Pick<Environment, "scope">;

/** Fills in the real defaults of what `options` leaves out. */
export function environmentOf(options: Environment): Env {
  return {
    git: options.git ?? denoGit,
    probe: options.probe ?? denoProbe,
    listeners: options.listeners ?? denoListeners,
    index: options.index ?? denoMachineIndex,
    scope: options.scope,
  };
}
