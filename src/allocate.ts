// Allocating a worktree's bundle and writing its port file.

import { portsForSlot, renderBundle } from "./bundle.ts";
import { chooseSlot } from "./choose_slot.ts";
import { type ConfigOverrides, loadConfig, type PortsConfig } from "./config.ts";
import {
  abandonEnvFiles,
  assertEnvFilesReplaceable,
  commitEnvFiles,
  type EnvFile,
  envFileText,
  placeEnvFiles,
  readEnvFile,
  removeEnvFiles,
  stageEnvFiles,
} from "./env_file.ts";
import { type Env, type Environment, environmentOf } from "./environment.ts";
import { listPorts, quoted, WorktreePortsError } from "./errors.ts";
import { removeStaleTemporaryFiles, writeFileAtomic } from "./files.ts";
import { excludeFromGit, excludePatterns, warnIfTracked } from "./git_ignore.ts";
import { keepCopy, keptCopyPath } from "./kept_copy.ts";
import { lockRepository } from "./lock.ts";
import { MachineSession } from "./machine_index.ts";
import { MAX_FILE_BYTES, META_KEY, PORT_FILE_NAME } from "./names.ts";
import { assertNotDirectory, assertOwnOutput, assertReplaceableOutput } from "./output.ts";
import { joinPath, parentOf, relativeInside } from "./paths.ts";
import {
  formatPortFile,
  isForeign,
  type PortFileContents,
  type PortFileMeta,
  type PortFileRead,
  readPortFile,
  realPortFilePath,
  reservedPortsOf,
} from "./port_file.ts";
import { type PortProbe, probePort } from "./probe.ts";
import {
  assertStillWorktree,
  knownGitDirs,
  type OpenedRepository,
  openWorktree,
  type Repository,
} from "./repository.ts";
import { scanCurrentReservations, withOtherRepositories } from "./reservations.ts";
import { withProxyPorts } from "./proxy_names.ts";
import { BROWSER_BLOCKED_PORTS, configWarnings } from "./usable_ports.ts";
import { unwarned } from "./warned.ts";
import type { Worktree } from "./worktree_list.ts";
import { readMemory, rememberWorktree } from "./worktree_memory.ts";

/**
 * Says why a main worktree is off slot 0 (a worktree of another repository
 * holds a base port), or, when it keeps slot 0, who else holds its ports:
 * a main worktree whose file is at slot 0 keeps it, so a clash there is
 * reported rather than moved.
 */
function warnAboutMainWorktree(
  allocation: Pick<Allocation, "slot" | "bundle" | "warnings" | "kept">,
  config: PortsConfig,
  siblings: ReadonlyMap<number, string>,
  others: ReadonlyMap<number, string>,
): void {
  if (allocation.slot !== 0) {
    if (allocation.kept) return;
    const held = Object.entries(portsForSlot(config, 0)).filter(([, port]) => others.has(port));
    if (held.length === 0) return;
    allocation.warnings.push(
      `Slot 0 of this main worktree is held by another repository (${
        held.map(([key, port]) => `${port} ("${key}") by "${others.get(port)}"`).join(", ")
      }); it takes slot ${allocation.slot} instead`,
    );
    return;
  }
  for (const [key, port] of Object.entries(allocation.bundle)) {
    // A linked worktree on a base port: its config (another branch's) differs.
    const sibling = typeof port === "number" ? siblings.get(port) : undefined;
    if (sibling !== undefined) {
      allocation.warnings.push(
        `Port ${port} ("${key}") of this main worktree is also held by "${sibling}"; the main ` +
          `worktree keeps its base ports (run "worktree-ports check --fix" to move the other one)`,
      );
      continue;
    }
    const holder = typeof port === "number" ? others.get(port) : undefined;
    if (holder === undefined) continue;
    allocation.warnings.push(
      `Port ${port} ("${key}") of this main worktree is also held by "${holder}" of another ` +
        `repository; the main worktree keeps its base ports (run "worktree-ports check --fix ` +
        `--all" to move the one allocated later)`,
    );
  }
}

/** Options for {@linkcode allocate}. */
export interface AllocateOptions extends ConfigOverrides, Environment {
  /**
   * A directory inside the worktree to allocate for.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
  /**
   * The port file to write; relative paths are resolved against `cwd`.
   * Sibling worktrees' files are read at the same path relative to their root.
   *
   * @default {undefined} `.worktree-ports.json` in the worktree root
   */
  output?: string;
  /**
   * Do not count the ports in the output file itself as reserved, so that
   * rewriting a worktree's own file never blocks its own bundle.
   *
   * @default {true}
   */
  excludeOutput?: boolean;
  /**
   * The config file; relative paths are resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
  /**
   * Choose a slot afresh even when the current one could be kept.
   *
   * @default {false}
   */
  force?: boolean;
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * Called with the lock's path when another process holds it and waiting begins.
   *
   * @default {undefined}
   */
  onLockWait?: (path: string) => void;
  /**
   * After writing a port file inside the worktree, make sure git ignores it:
   * when no ignore rule covers it, its path is added to `info/exclude` in the
   * common git directory. A port file tracked by git gets a warning.
   *
   * @default {true}
   */
  ignoreOutput?: boolean;
  /**
   * Choose the slot exactly as a real allocation would, under the lock with
   * the same scan and probes, and write nothing: no port file, no exclude
   * rule, no entry in the machine-wide index. The result is what would be
   * written, with `written` `false`; a real allocation made next, with
   * nothing changed meanwhile, gets the same slot and bundle.
   *
   * @default {false}
   */
  dryRun?: boolean;
}

/** The result of {@linkcode allocate}. */
export interface Allocation extends PortFileContents {
  /** The port file. */
  path: string;
  /** The worktree kept the slot it already had. */
  kept: boolean;
  /** The file was written; `false` when it already held exactly this allocation. */
  written: boolean;
  /** Problems that did not stop the allocation, such as an unreadable sibling file. */
  warnings: string[];
  /** Where the time went, for diagnosing slow or contended allocations. */
  timings: AllocationTimings;
}

/** Milliseconds spent in each stage of {@linkcode allocate}. */
export interface AllocationTimings {
  /** Asking git for the worktrees and finding this one. */
  git: number;
  /** Waiting for other processes to release the locks (the repository's, then the machine's). */
  lockWait: number;
  /** Holding the locks: the scan, the choice and the write. */
  locked: number;
  /** The whole allocation. */
  total: number;
}

/**
 * Allocates the current worktree's bundle of ports and writes its port file.
 *
 * Git is asked once for the worktrees; then, under the repository lock, the
 * sibling worktrees' port files are scanned, a slot is chosen and the file is
 * written atomically. Allocating again returns the same bundle. With
 * `dryRun`, the same choice is made and nothing is written.
 *
 * @param options Where, which config, and the injected git and probe.
 * @returns The allocation that was written.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`; `INVALID_OUTPUT` when
 * `output` is inside another worktree, or names an existing file that is no
 * port file (not a JSON object of ports and strings, or not a regular file).
 * @throws {Error} When the port file cannot be written; nothing is changed then.
 *
 * @example Usage
 * ```ts ignore
 * import { allocate } from "@org/worktree-ports";
 *
 * const { slot, bundle, path } = await allocate({ ports: { web: 3000, api: 9000 } });
 * console.log(`slot ${slot}: web on ${bundle.web}, written to ${path}`);
 * ```
 */
export async function allocate(options: AllocateOptions = {}): Promise<Allocation> {
  const start = performance.now();
  const env = environmentOf(options);
  const repository = await openWorktree(options.cwd, env);
  return await allocateIn(repository, options, env, start);
}

/**
 * {@linkcode allocate} in a repository already opened; `start` is when the
 * operation began, for its timings.
 */
export async function allocateIn(
  repository: OpenedRepository,
  options: AllocateOptions,
  env: Env,
  start: number,
): Promise<Allocation> {
  const gitDone = performance.now();
  const plan = await planAllocation(repository, options);
  // Env files this tool has not written yet: one git tracks is said once, when first written.
  const envFilesBefore = new Set(
    options.dryRun
      ? []
      : plan.envFiles.filter((file) => readEnvFile(file.path).state !== "ours").map((file) =>
        file.path
      ),
  );
  const { allocation, previous, lockWait, locked } = await allocateLocked(
    repository,
    plan,
    options,
    env,
  );
  const { config, inside } = plan;
  // Said once for a config: every new worktree would repeat them otherwise.
  const warnings = configWarnings(config);
  allocation.warnings.push(
    ...(options.dryRun ? warnings : unwarned(repository.commonDir, warnings)),
  );
  warnMovedOffBlocked(previous, repository.root, allocation.slot, allocation.warnings);
  const ownBefore = previous.state === "read" &&
    !isForeign(previous, repository.root, repository);
  if (repository.primary && !ownBefore && allocation.slot === 0) {
    await warnBusyBase(config, env.probe, allocation.warnings);
  }
  // A file this tool did not write for this worktree may be one git checked out.
  const checkedOut = allocation.written && previous.state !== "missing" &&
    !(ownBefore && previous.state === "read" && previous.meta !== undefined);
  if (inside !== undefined && options.ignoreOutput !== false && checkedOut) {
    await warnIfTracked(env.git, repository, inside, allocation.warnings);
  }
  // An env file written where there was none of this tool's may be one git tracks.
  if (options.ignoreOutput !== false) {
    for (const file of plan.envFiles) {
      if (!envFilesBefore.has(file.path)) continue;
      const tracked = await env.git.run(
        ["ls-files", "-z", "--cached", "--", `:(literal)${file.inside}`],
        repository.root,
      );
      if (tracked === "") continue;
      allocation.warnings.push(
        `The env file "${file.path}" is tracked by git, so every write of it shows in ` +
          `"git status": untrack it with "git rm --cached ${file.inside}" and commit`,
      );
    }
  }
  const total = performance.now() - start;
  return { ...allocation, timings: { git: gitDone - start, lockWait, locked, total } };
}

/** What an allocation knows before it takes the lock. */
interface AllocationPlan {
  /** The port file. */
  path: string;
  /** The port file relative to the worktree root; `undefined` for one outside it. */
  inside: string | undefined;
  /** The worktree's config, overrides applied. */
  config: PortsConfig;
  /** Where git's directory keeps a copy of the file, for a linked worktree's usual file. */
  keptCopy: string | undefined;
  /** The env files the config names. */
  envFiles: EnvFile[];
}

/**
 * Reads and checks everything that can be known before the lock, so that the
 * critical section is only the scan, the choice and the write.
 */
async function planAllocation(
  repository: OpenedRepository,
  options: AllocateOptions,
): Promise<AllocationPlan> {
  const path = realPortFilePath(repository.root, options);
  const inside = relativeInside(repository.root, path);
  if (options.output !== undefined) {
    await assertOwnOutput(repository, path, inside);
    assertReplaceableOutput(path);
  }
  const config = loadConfig(repository.root, options);
  assertNotDirectory(path);
  const keptCopy = !repository.primary && inside === PORT_FILE_NAME
    ? keptCopyPath(repository.root, knownGitDirs(repository))
    : undefined;
  // Env files go with the worktree's own port file, not with one written
  // elsewhere (a preview outside every worktree).
  const envFiles = inside === undefined
    ? []
    : placeEnvFiles(repository.root, config.envFiles, path);
  for (const file of envFiles) assertNotDirectory(file.path);
  assertEnvFilesReplaceable(envFiles);
  // A value no dotenv quoting keeps exact fails here, before the lock: only
  // the ports change with the slot, and they are digits.
  if (envFiles.length > 0) {
    envFileText(renderBundle(config, 0, { worktree: repository.current }), envFiles[0]);
  }
  return { path, inside, config, keptCopy, envFiles };
}

/**
 * The critical section, under the repository lock and then the machine lock:
 * the other worktrees' reservations are scanned, a slot is chosen, the file
 * is written and recorded in the index.
 */
async function allocateLocked(
  repository: OpenedRepository,
  { path, inside, config, keptCopy, envFiles }: AllocationPlan,
  options: AllocateOptions,
  env: Env,
): Promise<{
  allocation: Omit<Allocation, "timings">;
  /** The worktree's own file as it was before. */
  previous: PortFileRead;
  lockWait: number;
  locked: number;
}> {
  const lockOptions = { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait };
  const waitStart = performance.now();
  using _lock = await lockRepository(repository.commonDir, lockOptions);
  const lockedStart = performance.now();
  using machine = await MachineSession.open({
    scope: env.scope ?? config.scope,
    index: env.index,
    repositories: [repository.commonDir],
    worktrees: repository.worktrees.map((worktree) => worktree.path),
    lockOptions,
    own: { file: path, worktree: repository.root },
    git: env.git,
  });
  const reserved = await scanCurrentReservations(repository, env, path, inside, {
    excludeOutput: options.excludeOutput,
    recorded: (file) => machine.recorded(file),
  });
  assertStillWorktree(repository.root);
  if (!options.dryRun) {
    removeStaleTemporaryFiles(path);
    if (keptCopy !== undefined) removeStaleTemporaryFiles(keptCopy);
  }
  // The rules go in before the file, so that a process killed in between
  // leaves nothing for "git status" to show; and the file is recorded in the
  // index before it is written, so that one killed in between leaves no file
  // other repositories do not know of (an entry whose file never appears is
  // dropped). Every file of this repository is recorded, its siblings'
  // included: one written before the index existed, or with it lost, must
  // hold its ports for other repositories too.
  const ruleWarnings: string[] = [];
  const ignore = inside !== undefined && options.ignoreOutput !== false;
  const beforeWrite = (allocation: Omit<Allocation, "timings">) => {
    const ignored = [
      ...(ignore ? [inside!] : []),
      ...(options.ignoreOutput !== false ? envFiles.map((file) => file.inside) : []),
    ];
    if (ignored.length > 0) {
      const added = excludeFromGit(
        repository.commonDir,
        ignored.flatMap(excludePatterns),
        ruleWarnings,
      );
      // A rule names the path in every worktree: one that holds a file of
      // its own there has it hidden from git from now on.
      for (const file of envFiles) {
        if (!added.includes(excludePatterns(file.inside)[0])) continue;
        for (const worktree of reserved.repository.worktrees) {
          const theirs = joinPath(worktree.path, file.inside);
          if (worktree.bare || readEnvFile(theirs).state !== "foreign") continue;
          ruleWarnings.push(
            `"${theirs}" is not this tool's, and git now ignores it, as it does every worktree's ` +
              `"${file.inside}" (the config's "env_file" names it): "git worktree remove" would ` +
              `delete it without asking; rename it, or name another file in "env_file"`,
          );
        }
      }
    }
    machine.recordAll([
      [path, repository.root, reservedPortsOf(allocation.bundle)],
      ...reserved.files,
    ]);
    // What prune tears down once the worktree is gone, and its branch's slot.
    if (inside !== undefined) {
      const warning = rememberWorktree(repository.commonDir, {
        worktree: repository.current.path,
        file: path,
        branch: repository.current.branch,
        slot: allocation.slot,
        bundle: allocation.bundle,
        ...(config.onRelease === undefined ? {} : { onRelease: config.onRelease }),
        allocatedAt: allocation.allocatedAt,
      });
      if (warning !== undefined) ruleWarnings.push(warning);
    }
  };
  const previous = readPortFile(path);
  // A worktree without a file of its own may take its branch's old slot back.
  const branch = repository.current.branch;
  const remembered = repository.primary || branch === undefined || previous.state === "read"
    ? undefined
    : readMemory(repository.commonDir).branches[branch]?.slot;
  const allocation = await allocateSlot(
    {
      root: repository.root,
      path,
      primary: repository.primary,
      keptCopy,
      envFiles,
      repository: reserved.repository,
      worktree: repository.current,
    },
    config,
    previous,
    withProxyPorts(withOtherRepositories(reserved.holders, machine.holders), env.index),
    {
      force: options.force,
      probe: env.probe,
      othersHold: machine.holders,
      dryRun: options.dryRun,
      makeParent: inside !== undefined,
      remembered,
      beforeWrite,
    },
  );
  if (repository.primary) {
    warnAboutMainWorktree(allocation, config, reserved.holders, machine.holders);
  }
  allocation.warnings.unshift(...reserved.warnings, ...machine.warnings, ...ruleWarnings);
  return {
    allocation,
    previous,
    lockWait: lockedStart - waitStart + machine.lockWait,
    locked: performance.now() - lockedStart - machine.lockWait,
  };
}

/** Says why a worktree's own file, from before bad ports were skipped, loses its slot. */
function warnMovedOffBlocked(
  previous: PortFileRead,
  root: string,
  slot: number,
  warnings: string[],
): void {
  if (previous.state !== "read" || previous.meta === undefined || isForeign(previous, root)) {
    return;
  }
  const refused = previous.ports.filter((port) => BROWSER_BLOCKED_PORTS.has(port));
  if (previous.meta.slot === slot || refused.length === 0) return;
  warnings.push(
    `This worktree's bundle at slot ${previous.meta.slot} holds ${listPorts(refused)}, ` +
      `a port browsers refuse to connect to; it gets slot ${slot} instead`,
  );
}

/**
 * The main worktree takes slot 0 without probing, since its own services may
 * be listening there. Before it has a port file of its own, though, whatever
 * listens on a base port is someone else, and its services will clash with it.
 */
async function warnBusyBase(
  config: PortsConfig,
  probe: PortProbe,
  warnings: string[],
): Promise<void> {
  const busy: string[] = [];
  for (const [key, port] of Object.entries(portsForSlot(config, 0))) {
    if ((await probePort(probe, port)) === "in-use") busy.push(`${port} ("${key}")`);
  }
  if (busy.length === 0) return;
  warnings.push(
    `${busy.length === 1 ? "Port" : "Ports"} ${busy.join(", ")} of slot 0 ${
      busy.length === 1 ? "is" : "are"
    } already in use, but the main worktree, which always gets slot 0, had no port file of its ` +
      `own, so the listener is not one of its services (stop that process, or change the base port)`,
  );
}

/**
 * Where a port file goes: its worktree's root, its path, whether it is the
 * main worktree, and where git's directory for the worktree keeps a copy.
 */
interface Target {
  root: string;
  path: string;
  primary: boolean;
  keptCopy?: string;
  /** Its repository, to tell a moved worktree's file from a copied one. */
  repository?: Pick<Repository, "current" | "worktrees">;
  /** The worktree, for the placeholders of templates. */
  worktree: Pick<Worktree, "path" | "branch">;
  /** The env files written with the port file. */
  envFiles?: readonly EnvFile[];
}

/**
 * Chooses and writes the slot of one worktree. The caller holds the lock and
 * has read the worktree's own file and the other worktrees' reservations.
 */
export async function allocateSlot(
  target: Target,
  config: PortsConfig,
  own: PortFileRead,
  reserved: Pick<ReadonlySet<number>, "has">,
  options: Pick<AllocateOptions, "force" | "dryRun"> & {
    probe: PortProbe;
    /** The ports worktrees of other repositories hold, which move a main worktree off slot 0. */
    othersHold?: Pick<ReadonlySet<number>, "has">;
    makeParent?: boolean;
    /** The slot the worktree's branch held before, if any. */
    remembered?: number;
    /** Called before the file is written, whether or not it changes; never for a dry run. */
    beforeWrite?: (allocation: Omit<Allocation, "timings">) => void;
  },
): Promise<Omit<Allocation, "timings">> {
  const warnings: string[] = [];
  const current = ownMeta(own, target, warnings, options.dryRun);
  const choice = await chooseSlot(config, reserved, {
    current: current?.slot,
    force: options.force,
    primary: target.primary,
    remembered: options.remembered,
    othersHold: options.othersHold,
    probe: options.probe,
  });
  warnLostMovedSlot(current, target, choice.slot, warnings);
  if (options.force && current !== undefined && current.slot !== choice.slot) {
    warnings.push(
      await forcedMove(config, current.slot, choice.slot, reserved, options.probe),
    );
  }
  const allocation: Omit<Allocation, "timings"> = {
    slot: choice.slot,
    bundle: renderBundle(config, choice.slot, { worktree: target.worktree }),
    worktree: target.root,
    path: target.path,
    allocatedAt: current?.slot === choice.slot && current.allocated_at
      ? current.allocated_at
      : new Date().toISOString(),
    kept: choice.kept,
    written: false,
    warnings,
  };
  const envFiles = target.envFiles ?? [];
  if (envFiles.length > 0) allocation.envFiles = envFiles.map((file) => file.inside);
  const text = formatPortFile(allocation);
  // A file larger than the reader takes would reserve nothing for the others.
  if (text.length > MAX_FILE_BYTES / 4 && new TextEncoder().encode(text).length > MAX_FILE_BYTES) {
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Invalid config: its templates render a port file larger than ${MAX_FILE_BYTES} bytes, ` +
        `which no worktree could read back (shorten the templates)`,
    );
  }
  // Everything that can refuse comes before the first write, so that a
  // refusal changes nothing: a value no dotenv quoting keeps exact, and a
  // file at an env file's path that this tool did not write.
  const envText = envFiles.length === 0 ? undefined : envFileText(allocation.bundle, envFiles[0]);
  if (!options.dryRun) assertEnvFilesReplaceable(envFiles);
  // Called whether or not the file changes: a file kept as it was may still
  // lack what a failed run did not finish (the ignore rules).
  if (!options.dryRun) options.beforeWrite?.(allocation);
  // Staged after the ignore rules, so that a process killed now leaves nothing
  // git shows, and before the port file, so that what fails, fails first.
  const staged = envText === undefined || options.dryRun ? [] : stageEnvFiles(envFiles, envText);
  if (
    !options.dryRun && (own.state !== "read" || JSON.stringify(own.data, null, 2) + "\n" !== text)
  ) {
    if (own.state === "read") warnDroppedKeys(own.data, allocation, warnings);
    try {
      if (options.makeParent) Deno.mkdirSync(parentOf(target.path), { recursive: true });
      writeFileAtomic(target.path, text);
    } catch (error) {
      abandonEnvFiles(staged);
      throw error;
    }
    allocation.written = true;
  }
  if (target.keptCopy !== undefined && !options.dryRun) {
    keepCopy(target.keptCopy, text, allocation.written, warnings);
  }
  // After the port file, which is what reserves the ports: an env file is a copy of it.
  commitEnvFiles(staged);
  // Those the config no longer names are removed, so that no tool goes on
  // reading ports from them: the file recorded which it wrote.
  const dropped = (current?.env_files ?? []).filter((name) => !allocation.envFiles?.includes(name));
  if (dropped.length > 0 && !options.dryRun) {
    try {
      removeEnvFiles(placeEnvFiles(target.root, dropped, target.path));
    } catch (error) {
      // One a link now leads elsewhere is not this worktree's to remove.
      if (!(error instanceof WorktreePortsError)) throw error;
    }
  }
  return allocation;
}

/** Why `--force` moved a worktree, and from which slot to which. */
async function forcedMove(
  config: PortsConfig,
  from: number,
  to: number,
  reserved: Pick<ReadonlySet<number>, "has">,
  probe: PortProbe,
): Promise<string> {
  const moved = `--force moved this worktree from slot ${from} to slot ${to}`;
  if (to < from) return `${moved}, the lowest slot free now`;
  if (from > config.slots) return `${moved}: slot ${from} is beyond "slots" (${config.slots})`;
  for (const [key, port] of Object.entries(portsForSlot(config, from))) {
    if (reserved.has(port)) {
      return `${moved}: port ${port} ("${key}") of slot ${from} is another worktree's`;
    }
    if (BROWSER_BLOCKED_PORTS.has(port)) {
      return `${moved}: browsers refuse port ${port} ("${key}") of slot ${from}`;
    }
  }
  for (const [key, port] of Object.entries(portsForSlot(config, from))) {
    const status = await probePort(probe, port);
    if (status !== "free") {
      return `${moved}: port ${port} ("${key}") of slot ${from} is ${
        status === "in-use" ? "in use" : "refused by the operating system"
      }`;
    }
  }
  return moved;
}

/**
 * A file that names a path that is no worktree now moved with its worktree,
 * or was copied from a removed one; when its slot is held by another
 * worktree, it was the copy, and this worktree gets another slot.
 */
function warnLostMovedSlot(
  current: PortFileMeta | undefined,
  target: Target,
  slot: number,
  warnings: string[],
): void {
  if (current === undefined || current.worktree === target.root || current.slot === slot) return;
  warnings.push(
    `"${target.path}" was written for "${current.worktree}", which is no worktree now ` +
      `(copied from a removed worktree?), and its slot ${current.slot} is another worktree's; ` +
      `this worktree gets slot ${slot} instead`,
  );
}

/** Warns about keys of the old file that the new one no longer has: someone put them there. */
export function warnDroppedKeys(
  old: Record<string, unknown>,
  allocation: Pick<Allocation, "bundle" | "path">,
  warnings: string[],
): void {
  const dropped = Object.keys(old).filter((key) =>
    key !== META_KEY && !Object.hasOwn(allocation.bundle, key)
  );
  if (dropped.length === 0) return;
  warnings.push(
    `Rewriting "${allocation.path}" dropped ${dropped.map(quoted).join(", ")}, ` +
      `which the config does not produce (add them to the config's "ports" or "templates" to keep them)`,
  );
}

/** The metadata of the worktree's own file, if the file is really its own. */
function ownMeta(
  own: PortFileRead,
  target: Target,
  warnings: string[],
  dryRun = false,
): PortFileMeta | undefined {
  if (own.state === "unreadable") {
    warnings.push(
      `This worktree's port file "${target.path}" is unusable (${own.reason}); ${
        dryRun ? "allocate would replace it" : "replacing it"
      } with a fresh allocation`,
    );
    return undefined;
  }
  if (own.state !== "read" || own.meta === undefined) return undefined;
  if (isForeign(own, target.root, target.repository)) {
    warnings.push(
      `"${target.path}" was written for the worktree "${own.meta.worktree}" (copied?); ${
        dryRun ? "allocate would allocate" : "allocating"
      } a fresh bundle for this one`,
    );
    return undefined;
  }
  return own.meta;
}
