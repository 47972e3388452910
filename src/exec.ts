// Running a command with the current worktree's ports in its environment.

import type { AllocateOptions, Allocation } from "./allocate.ts";
import { loadBundle, type LoadedBundle } from "./current_bundle.ts";
import { bundleEnv } from "./env.ts";
import { IS_WINDOWS } from "./paths.ts";

/** Signals passed on to the child while it runs (Windows delivers only these two). */
const FORWARDED_SIGNALS: readonly Deno.Signal[] = IS_WINDOWS
  ? ["SIGINT", "SIGBREAK"]
  : ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

/** Signals a terminal raises from the keyboard, for every process in its foreground group. */
const KEYBOARD_SIGNALS: ReadonlySet<Deno.Signal> = new Set(["SIGINT", "SIGQUIT", "SIGBREAK"]);

/** How a command run by {@linkcode runWithPorts} ended. */
export interface RunResult {
  /** The exit code; for a child killed by a signal, 128 plus the signal's number on this system. */
  code: number;
  /** The signal that killed the child, if one did. */
  signal: Deno.Signal | null;
  /** The allocation made first, if the worktree had no port file of its own. */
  allocation?: Allocation;
}

/** Options for {@linkcode runWithPorts}: those of {@linkcode allocate}, used when allocating, and one more. */
export interface RunOptions extends AllocateOptions {
  /**
   * The bundle to run the command with, from {@linkcode loadBundle}. Without
   * it the bundle is loaded (and allocated, if need be) first. Loading it
   * yourself lets you report a new allocation before a long-running command
   * starts.
   */
  bundle?: LoadedBundle;
}

/**
 * Runs a command with the current worktree's bundle added to its environment,
 * allocating first if needed. No shell is involved: the arguments reach the
 * command exactly as given. Standard input and output pass through, and
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT received meanwhile are passed on to it,
 * except that when standard input is a terminal, SIGINT and SIGQUIT are left
 * to the terminal: the key that raised them signals the command directly, and
 * passing them on too would deliver them twice. On Windows nothing is passed
 * on: Ctrl-C and Ctrl-Break reach the command through the console it shares.
 *
 * @param command The program to run, looked up on `PATH`.
 * @param args Its arguments.
 * @param options The options of {@linkcode allocate}, used when allocating, and `bundle`.
 * @returns How the command ended.
 * @throws {Deno.errors.NotFound} When the program does not exist.
 *
 * @example Usage
 * ```ts ignore
 * import { runWithPorts } from "@org/worktree-ports";
 *
 * const { code } = await runWithPorts("npm", ["run", "dev"]);
 * Deno.exitCode = code;
 * ```
 */
export async function runWithPorts(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const bundle = options.bundle ?? await loadBundle(options);
  // Listen before spawning: a signal that arrives while the child starts up
  // would otherwise take its default action and kill us, leaving the child
  // running. A listener runs on a later turn, by when `child` is set.
  let child: Deno.ChildProcess | undefined;
  const fromKeyboard = Deno.stdin.isTerminal();
  const forwarders = FORWARDED_SIGNALS.map((signal) => {
    const forward = () => {
      if (!passesOn(signal, { windows: IS_WINDOWS, fromKeyboard })) return;
      try {
        child?.kill(signal);
      } catch {
        // The child has exited already.
      }
    };
    Deno.addSignalListener(signal, forward);
    return [signal, forward] as const;
  });
  try {
    child = new Deno.Command(command, {
      args: [...args],
      cwd: options.cwd,
      env: bundleEnv(bundle.data),
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    // For a child killed by a signal the code is already 128 plus the
    // signal's number on this system (SIGUSR1 is 10 on Linux, 30 on macOS).
    return { code: status.code, signal: status.signal, allocation: bundle.allocation };
  } finally {
    for (const [signal, forward] of forwarders) Deno.removeSignalListener(signal, forward);
  }
}

/**
 * Whether a signal received while the child runs is passed on to it. Ctrl-C
 * on a terminal reaches the whole foreground process group, the command
 * included, and a second copy makes many servers skip their graceful
 * shutdown. On Windows, Ctrl-C and Ctrl-Break reach every process on the
 * console, the child included, and Deno's `kill` there is a hard
 * termination: the child is left to stop as a console program does. The
 * signal is still listened for, so that we outlive it and report the child's
 * exit.
 */
export function passesOn(
  signal: Deno.Signal,
  { windows, fromKeyboard }: { windows: boolean; fromKeyboard: boolean },
): boolean {
  if (windows) return false;
  return !(fromKeyboard && KEYBOARD_SIGNALS.has(signal));
}
