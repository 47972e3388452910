// Permission to run the config's on_release, asked before it runs.

import { refusedLoaderVariables } from "../programs.ts";
import {
  installFlags,
  isMissingProgram,
  LISTENERS_RUN_FLAG,
  missingPermissionMessage,
} from "./permissions.ts";

/** Deno may not run the program `on_release` names; nothing has been changed. */
export class RunRefused extends Error {
  readonly program: string;
  readonly why: string;

  constructor(program: string, why = `the config's "on_release" runs "${program}"`) {
    super(`Deno may not run "${program}"`);
    this.program = program;
    this.why = why;
  }

  /** What to do: add the program to --allow-run, or install it. */
  async explain(): Promise<string> {
    if (await isMissingProgram(this.program)) {
      return `Cannot run the config's "on_release": no program "${this.program}"`;
    }
    return missingPermissionMessage(
      `${LISTENERS_RUN_FLAG},${this.program} (or --allow-run)`,
      this.why,
      installFlags("exec"),
    );
  }
}

/** Throws {@linkcode RunRefused} unless Deno already allows running `program` (nothing prompts). */
export function assertMayRun(program: string, why?: string): void {
  if (Deno.permissions.querySync({ name: "run", command: program }).state !== "granted") {
    throw new RunRefused(program, why);
  }
}

/**
 * Throws {@linkcode RunRefused} for the first of `programs` Deno may not run
 * and that is installed: one that is not installed fails where it is run,
 * for its worktree alone.
 */
export async function assertMayRunAll(programs: readonly string[]): Promise<void> {
  for (const program of new Set(programs)) {
    try {
      assertMayRun(program);
    } catch (error) {
      if (!(error instanceof RunRefused) || !(await isMissingProgram(program))) throw error;
    }
  }
}

/**
 * What to say when `on_release` could not be started for want of permission
 * (with nothing changed): its program is not allowed, or Deno passes the
 * loader's variables on only when every program may run. `undefined` for any
 * other error.
 */
export async function refusalMessage(error: unknown): Promise<string | undefined> {
  if (error instanceof RunRefused) return await error.explain();
  const loader = refusedLoaderVariables(error);
  if (loader === undefined) return undefined;
  return missingPermissionMessage(
    "--allow-run",
    `Deno starts the config's "on_release" with ${loader.join(", ")} set only when every ` +
      `program may be run; or unset ${loader.length === 1 ? "it" : "them"}`,
    installFlags("exec"),
  );
}
