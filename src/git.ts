// Running git: the runner seam and its real default, Deno.Command.

import { WorktreePortsError } from "./errors.ts";
import { runProgramSync } from "./programs.ts";

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

function runGitSync(args: readonly string[], cwd: string): string {
  let output: Deno.CommandOutput;
  try {
    // Messages are matched below, so keep them untranslated.
    output = runProgramSync("git", { args: [...args], cwd, env: { LC_ALL: "C" } });
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

/**
 * The line of git's standard error that says what went wrong: the first
 * `fatal:` or `error:` line, else the first line. Git follows a bad option
 * with its whole usage text, which says nothing about the failure.
 */
function firstGitError(stderr: string): string {
  const lines = stderr.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  return lines.find((line) => /^(fatal|error):/.test(line)) ?? lines[0] ?? "(no message)";
}
