// Running git: the runner seam and its real default, Deno.Command.

import { WorktreePortsError } from "./errors.ts";

/** Runs git. Injected so that tests and embedders can replace it. */
export interface GitRunner {
  /**
   * Runs `git` with `args` in `cwd`.
   *
   * @returns Its standard output.
   * @throws {WorktreePortsError} With code `GIT_FAILED` when git cannot be
   * run or exits with an error; the message includes git's own.
   */
  run(args: readonly string[], cwd: string): Promise<string>;
}

/**
 * The real {@linkcode GitRunner}: runs `git` with `Deno.Command`. It waits
 * for git synchronously: collecting the output as streams loads machinery
 * that costs a short-lived process about 2 MB and a few milliseconds, more
 * than git itself takes. Inject an asynchronous runner where blocking the
 * event loop for one git call matters.
 */
export const denoGit: GitRunner = {
  run(args: readonly string[], cwd: string): Promise<string> {
    try {
      return Promise.resolve(runGitSync(args, cwd));
    } catch (error) {
      return Promise.reject(error);
    }
  },
};

/**
 * The dynamic loader's variables (`LD_*`, `DYLD_*`) of our environment, each
 * set to empty for git. Deno refuses to start a program with any of them set
 * unless every program may be run (`--allow-run` with no list), and CUDA,
 * conda, Nix and many editors set `LD_LIBRARY_PATH`. Reading the whole
 * environment to find them would need permission for every variable, so they
 * are learnt from Deno's refusal, which names them, and blanked from then on:
 * an empty value is what Deno allows and what the loader ignores.
 */
const blankedLoaderVariables: Record<string, string> = {};

function runGitSync(args: readonly string[], cwd: string): string {
  let output: Deno.CommandOutput;
  try {
    output = spawnGit(args, cwd);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new WorktreePortsError(
        "GIT_FAILED",
        "Cannot run git: it is not installed or not on PATH",
        { cause: error },
      );
    }
    throw error;
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr);
    throw new WorktreePortsError(
      "GIT_FAILED",
      `"git ${args.join(" ")}" failed with exit code ${output.code}: ${firstGitError(stderr)}`,
    );
  }
  return new TextDecoder().decode(output.stdout);
}

function spawnGit(args: readonly string[], cwd: string): Deno.CommandOutput {
  for (;;) {
    try {
      return new Deno.Command("git", {
        args: [...args],
        cwd,
        // Messages are matched below, so keep them untranslated.
        env: { ...blankedLoaderVariables, LC_ALL: "C" },
        stdin: "null",
      }).outputSync();
    } catch (error) {
      const names = refusedLoaderVariables(error);
      if (names === undefined || names.every((name) => name in blankedLoaderVariables)) {
        throw error;
      }
      for (const name of names) blankedLoaderVariables[name] = "";
    }
  }
}

/**
 * The variables named by Deno's refusal to start a program with loader
 * variables set, or `undefined` for any other error.
 */
export function refusedLoaderVariables(error: unknown): string[] | undefined {
  if (!(error instanceof Deno.errors.NotCapable)) return undefined;
  const match = /subprocess with (.+?) environment variables?\b/.exec(error.message);
  const names = match?.[1].split(", ");
  return names?.every((name) => /^(LD|DYLD)_/i.test(name)) ? names : undefined;
}

/**
 * The line of git's standard error that says what went wrong: the first
 * `fatal:` or `error:` line, else the first line. Git follows a bad option
 * with its whole usage text, which says nothing about the failure.
 */
function firstGitError(stderr: string): string {
  const lines = stderr.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  return lines.find((line) => /^(fatal|error):/.test(line)) ?? lines[0] ?? "(no message)";
}
