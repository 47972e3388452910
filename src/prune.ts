// Pruning what worktrees removed without `release` left behind: their
// on_release is run with the bundle they last held, and they are forgotten.

import { type Env, type Environment, environmentOf } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { fileInfo, realPathOr } from "./files.ts";
import { findHolders, type PortHolder, type StartedScan, startScan } from "./holders.ts";
import { openIndexedRepositories } from "./inspect.ts";
import { lockRepository } from "./lock.ts";
import { isPort, PORT_FILE_NAME } from "./names.ts";
import {
  howItEnded,
  lockTeardown,
  type OnReleaseCommand,
  onReleaseCommand,
  type OnReleaseResult,
  runOnRelease,
  showCommand,
} from "./on_release.ts";
import { comparablePath, IS_WINDOWS, joinPath } from "./paths.ts";
import { readPortFile } from "./port_file.ts";
import { runProgram } from "./programs.ts";
import { type OpenedRepository, openRepositoryOrBare } from "./repository.ts";
import {
  forgetWorktrees,
  goneWorktrees,
  readMemory,
  type RememberedWorktree,
  type WorktreeMemory,
  writeMemory,
} from "./worktree_memory.ts";

/** Options for {@linkcode pruneWorktrees}. */
export interface PruneOptions extends Environment {
  /**
   * The directory to start from.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
  /**
   * Prune every repository the machine-wide index knows, not only the one around `cwd`.
   *
   * @default {false}
   */
  all?: boolean;
  /**
   * Change nothing: only say what would run, be forgotten and be ended.
   *
   * @default {false}
   */
  dryRun?: boolean;
  /**
   * End (SIGTERM; `taskkill` on Windows) the processes still listening on a
   * pruned worktree's ports, unless they run in a worktree that is there.
   *
   * @default {false}
   */
  kill?: boolean;
  /**
   * Forget gone worktrees without running their `on_release` (one that can
   * never succeed, say).
   *
   * @default {false}
   */
  skipOnRelease?: boolean;
  /**
   * Called with every `on_release` about to run, before the first runs: a
   * throw stops the pruning with nothing run (a missing permission, say).
   *
   * @default {undefined}
   */
  beforeRunning?: (runs: readonly OnReleaseCommand[]) => void | Promise<void>;
  /**
   * Also forget the slot each branch last held.
   *
   * @default {false}
   */
  forget?: boolean;
  /**
   * How long to wait for another allocation to release a repository's lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * Called with a gone worktree's `on_release`, filled in, just before it runs.
   *
   * @default {undefined}
   */
  onRun?: (run: OnReleaseCommand, worktree: RememberedWorktree) => void;
}

/** A process still listening on a port of a gone worktree. */
export interface LingeringListener {
  /** The port's key in the worktree's bundle. */
  key: string;
  /** The port. */
  port: number;
  /** Who listens on it. */
  holder: PortHolder;
}

/** One worktree {@linkcode pruneWorktrees} found gone. */
export interface PrunedWorktree extends Omit<RememberedWorktree, "onRelease"> {
  /** Its repository's common git directory. */
  repository: string;
  /** Its `on_release`, filled in, and (unless a dry run) how it ended. */
  onRelease?: OnReleaseCommand & Partial<OnReleaseResult>;
  /** Why its `on_release` failed, when it did: it is kept, to prune again. */
  failed?: string;
  /** It was forgotten (or, for a dry run, would be). */
  forgotten: boolean;
  /** Processes still listening on its ports. */
  listeners: LingeringListener[];
  /** The process ids ended, with `kill`. */
  killed: number[];
}

/** What {@linkcode pruneWorktrees} found and did. */
export interface Pruned {
  /** Every gone worktree, of every repository looked at. */
  worktrees: PrunedWorktree[];
  /** The branches whose slot was forgotten, with `forget`. */
  forgottenBranches: string[];
  /** Problems that did not stop the pruning. */
  warnings: string[];
}

/**
 * Finds the worktrees that are gone (removed, or deleted, without
 * `release`) but that allocate remembered, and for each runs the
 * `on_release` its config had, filled in with the bundle it last held, from
 * the directory of its repository's main worktree (a bare repository's own
 * directory); then forgets it. One whose `on_release` fails is kept. A
 * worktree git still lists is not gone, a locked one whose directory is away
 * included; one that moved is remembered where it is now.
 *
 * @param options Where, `all`, `dryRun`, `kill`, `forget`, and the injected git, index and listeners.
 * @returns Every gone worktree found, and what was done.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED` or `LOCK_TIMEOUT`.
 *
 * @example Usage
 * ```ts ignore
 * import { pruneWorktrees } from "@org/worktree-ports";
 *
 * for (const gone of (await pruneWorktrees({ dryRun: true })).worktrees) {
 *   console.log(gone.worktree, gone.onRelease?.command);
 * }
 * ```
 */
export async function pruneWorktrees(options: PruneOptions = {}): Promise<Pruned> {
  const env = environmentOf(options);
  const scan = startScan(env.listeners, true);
  const warnings: string[] = [];
  const repositories = options.all
    ? (await openIndexedRepositories(options.cwd, env, warnings)).repositories
    : [await openRepositoryOrBare(options.cwd, env)];
  const pruned: Pruned = { worktrees: [], forgottenBranches: [], warnings };
  const plans = repositories.map((repository) => planPrune(repository, options));
  const runs = plans.flatMap((plan) => plan.gone.flatMap((item) => item.run ?? []));
  if (!options.dryRun && runs.length > 0) await options.beforeRunning?.(runs);
  for (const plan of plans) await pruneRepository(plan, scan, options, env, pruned);
  return pruned;
}

/** What pruning one repository is to do. */
interface PrunePlan {
  repository: OpenedRepository;
  memory: WorktreeMemory;
  gone: { remembered: RememberedWorktree; run?: OnReleaseCommand }[];
  moved: Map<RememberedWorktree, string>;
}

function planPrune(repository: OpenedRepository, options: PruneOptions): PrunePlan {
  const memory = readMemory(repository.commonDir);
  const { gone, moved } = goneWorktrees(memory, repository.worktrees);
  const main = repository.worktrees[0];
  const cwd = main !== undefined && !main.bare && fileInfo(main.path)?.isDirectory
    ? main.path
    : repository.commonDir;
  return {
    repository,
    memory,
    moved,
    gone: gone.map((remembered) => ({
      remembered,
      run: remembered.onRelease === undefined || options.skipOnRelease
        ? undefined
        : onReleaseCommand(
          remembered.onRelease,
          remembered.bundle,
          remembered.slot,
          { path: remembered.worktree, branch: remembered.branch },
          cwd,
        ),
    })),
  };
}

async function pruneRepository(
  { repository, memory, gone, moved }: PrunePlan,
  scan: StartedScan,
  options: PruneOptions,
  env: Pick<Env, "listeners">,
  pruned: Pruned,
): Promise<void> {
  const { commonDir } = repository;
  const live = repository.worktrees.filter((worktree) => !worktree.prunable && !worktree.bare);
  // The ports live worktrees' files hold now: what listens there is theirs, never ended.
  const liveHeld = new Set(
    live.flatMap((worktree) => {
      const file = readPortFile(joinPath(worktree.path, PORT_FILE_NAME));
      return file.state === "read" ? file.ports : [];
    }),
  );
  using _teardown = !options.dryRun && gone.some((item) => item.run !== undefined)
    ? await lockTeardown(commonDir)
    : undefined;
  // What another prune forgot while this one waited is not run again.
  const still = options.dryRun ? undefined : readMemory(commonDir);
  const forget: RememberedWorktree[] = [];
  for (const { remembered, run } of gone) {
    if (
      still !== undefined &&
      forgetWorktrees(still, [remembered]).worktrees.length === still.worktrees.length
    ) {
      continue;
    }
    const { onRelease: _, ...record } = remembered;
    const result: PrunedWorktree = {
      ...record,
      repository: realPathOr(commonDir),
      forgotten: false,
      listeners: (await lingering(remembered, live.map((worktree) => worktree.path), scan, env))
        .filter(({ port }) => !liveHeld.has(port)),
      killed: [],
    };
    pruned.worktrees.push(result);
    if (run !== undefined) {
      result.onRelease = run;
      if (!options.dryRun) {
        options.onRun?.(run, remembered);
        try {
          const ended = await runOnRelease(run);
          result.onRelease = { ...run, ...ended };
          if (ended.code !== 0) {
            result.failed = `"on_release" (${showCommand(run.command)}) ${howItEnded(ended)}`;
          }
        } catch (error) {
          if (!(error instanceof WorktreePortsError)) throw error;
          result.failed = error.message;
        }
      }
    }
    if (result.failed !== undefined) continue;
    result.forgotten = true;
    forget.push(remembered);
    if (options.kill && !options.dryRun) {
      result.killed = await endProcesses(result.listeners, pruned.warnings);
    }
  }
  const forgottenBranches = options.forget ? Object.keys(memory.branches) : [];
  pruned.forgottenBranches.push(...forgottenBranches);
  if (options.dryRun || (forget.length === 0 && moved.size === 0 && !forgottenBranches.length)) {
    return;
  }
  // Read again under the lock: an allocation may have remembered more meanwhile.
  using _lock = await lockRepository(commonDir, { timeoutMs: options.lockTimeoutMs });
  const now = readMemory(commonDir);
  const kept: WorktreeMemory = forgetWorktrees(now, forget);
  for (const [remembered, path] of moved) {
    const entry = kept.worktrees.find((item) =>
      comparablePath(item.worktree) === comparablePath(remembered.worktree)
    );
    if (entry !== undefined) entry.worktree = path;
  }
  if (options.forget) kept.branches = {};
  try {
    writeMemory(commonDir, kept);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    pruned.warnings.push(`Cannot write "${commonDir}"'s memory: ${(error as Error).message}`);
  }
}

/** The processes listening on a gone worktree's ports now. */
async function lingering(
  remembered: RememberedWorktree,
  worktrees: readonly string[],
  scan: StartedScan,
  env: Pick<Env, "listeners">,
): Promise<LingeringListener[]> {
  const ports = Object.entries(remembered.bundle).filter((entry): entry is [string, number] =>
    isPort(entry[1])
  );
  const found = await findHolders(scan, {
    ports: ports.map(([, port]) => port),
    worktrees,
    lookup: env.listeners,
  });
  return ports.flatMap(([key, port]) =>
    (found.holders.get(port) ?? []).map((holder) => ({ key, port, holder }))
  );
}

/**
 * Ends the lingering processes that run in no worktree that is there (a
 * worktree's own server on a port its bundle holds now is its own), with
 * `kill`, which Deno may run as one program (`Deno.kill` takes permission to
 * run every program). Returns the ids ended.
 */
async function endProcesses(
  listeners: readonly LingeringListener[],
  warnings: string[],
): Promise<number[]> {
  const pids = [
    ...new Set(
      listeners.filter(({ holder }) => holder.pid !== undefined && !holder.worktree)
        .map(({ holder }) => holder.pid!),
    ),
  ];
  const ended: number[] = [];
  for (const pid of pids) {
    const [program, args] = IS_WINDOWS
      ? ["taskkill", ["/PID", String(pid)]]
      : ["kill", ["-TERM", String(pid)]];
    try {
      const output = await runProgram(program, { args, stdout: "null", stderr: "piped" });
      if (output.success) ended.push(pid);
      else {
        warnings.push(
          `Cannot end process ${pid}: ${new TextDecoder().decode(output.stderr).trim()}`,
        );
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      warnings.push(`Cannot end process ${pid}: ${(error as Error).message}`);
    }
  }
  return ended;
}
