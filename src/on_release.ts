// A worktree's on_release: the config's teardown command, filled in with the
// bundle the worktree held, run before its ports are freed.

import { fillPlaceholders } from "./bundle.ts";
import { bundleEnv } from "./env.ts";
import { WorktreePortsError } from "./errors.ts";
import { pathExists } from "./files.ts";
import { lockRepository, type RepositoryLock } from "./lock.ts";
import type { Worktree } from "./worktree_list.ts";

/** The command `release` or `prune` runs for one worktree, and where. */
export interface OnReleaseCommand {
  /** The program and its arguments, filled in. */
  command: string[];
  /** Where it runs. */
  cwd: string;
  /** The variables added to its environment: the bundle's, as `exec` gives them. */
  env: Record<string, string>;
}

/** How an `on_release` command ended. */
export interface OnReleaseResult {
  /** Its exit code (128 plus the signal's number when a signal ended it). */
  code: number;
  /** The signal that ended it, if one did. */
  signal: Deno.Signal | null;
}

/**
 * The `on_release` of a config, filled in for one worktree's bundle.
 *
 * @param onRelease The config's `on_release`, unfilled.
 * @param bundle The bundle the worktree holds, or last held.
 * @param slot Its slot.
 * @param worktree Its path and branch, for `{name}`, `{branch}` and `{slug}`.
 * @param cwd Where the command runs.
 */
export function onReleaseCommand(
  onRelease: readonly string[],
  bundle: Readonly<Record<string, number | string>>,
  slot: number,
  worktree: Pick<Worktree, "path" | "branch">,
  cwd: string,
): OnReleaseCommand {
  return {
    command: onRelease.map((arg) => fillPlaceholders(arg, bundle, slot, worktree)),
    cwd,
    env: bundleEnv(bundle),
  };
}

/**
 * The lock `release` and `prune` hold while an `on_release` runs, in the
 * common git directory: not the allocation lock, which a teardown would hold
 * for as long as it takes; one teardown at a time, so that two runs do not
 * tear one worktree down twice.
 */
export const TEARDOWN_LOCK_NAME = "worktree-ports.teardown.lock";

/**
 * Takes the teardown lock without waiting.
 *
 * @throws {WorktreePortsError} With code `LOCK_TIMEOUT` when another `release` or `prune` holds it.
 */
export async function lockTeardown(commonDir: string): Promise<RepositoryLock> {
  try {
    return await lockRepository(commonDir, { name: TEARDOWN_LOCK_NAME, timeoutMs: 0 });
  } catch (error) {
    if (error instanceof WorktreePortsError && error.code === "LOCK_TIMEOUT") {
      throw new WorktreePortsError(
        "LOCK_TIMEOUT",
        `Another "worktree-ports release" or "prune" of this repository is running an ` +
          `"on_release" now; run this again once it is done`,
        { cause: error },
      );
    }
    throw error;
  }
}

/** How an `on_release` ended, in words: `failed with exit code 3`, `was ended by SIGKILL`. */
export function howItEnded(result: OnReleaseResult): string {
  return result.signal !== null
    ? `was ended by ${result.signal}`
    : `failed with exit code ${result.code}`;
}

/**
 * Runs an `on_release` command and waits for it. No shell is involved. What
 * it prints goes to standard error, both streams, so that standard output
 * keeps only what the command run reports.
 *
 * @throws {WorktreePortsError} With code `ON_RELEASE_FAILED` when the program does not exist.
 * @throws {Deno.errors.NotCapable} When Deno may not run it.
 */
export async function runOnRelease(run: OnReleaseCommand): Promise<OnReleaseResult> {
  const [program, ...args] = run.command;
  try {
    const child = new Deno.Command(program, {
      args,
      cwd: run.cwd,
      env: run.env,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    await child.stdout.pipeTo(
      new WritableStream({
        write(chunk) {
          for (let done = 0; done < chunk.length;) {
            done += Deno.stderr.writeSync(chunk.subarray(done));
          }
        },
      }),
    );
    const status = await child.status;
    return { code: status.code, signal: status.signal };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new WorktreePortsError(
        "ON_RELEASE_FAILED",
        pathExists(run.cwd)
          ? `Cannot run the config's "on_release": no program "${program}"`
          : `Cannot run the config's "on_release": the directory "${run.cwd}" is gone`,
        { cause: error },
      );
    }
    throw error;
  }
}

/**
 * A command as one line to show: each argument quoted where a shell would
 * need it, and one holding a line break or other control character in JSON
 * form, so that the command stays on one line.
 */
export function showCommand(command: readonly string[]): string {
  return command.map((arg) =>
    /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)
      ? arg
      : /\p{Cc}/u.test(arg)
      ? JSON.stringify(arg)
      : `'${arg.replaceAll("'", `'\\''`)}'`
  ).join(" ");
}
