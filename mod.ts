/**
 * Gives every git worktree of a repository its own bundle of ports, even when
 * many worktrees allocate at the same instant.
 *
 * Slot `k` shifts every base port by `k * stride`. The primary worktree owns
 * slot 0; linked worktrees get the lowest slot that no sibling worktree's
 * `.worktree-ports.json` reserves and whose ports are free on loopback. The
 * scan, the choice and the write happen under one lock shared by all
 * worktrees of the repository, so simultaneous allocations never collide.
 * Every port file written is recorded in a per-user, machine-wide index, and
 * the ports of other repositories' recorded files are reserved too, so no two
 * worktrees on the machine share a port, whichever repository they belong to.
 *
 * ```ts
 * import { allocate, machineIndexAt } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const index = await Deno.makeTempDir();
 * await new Deno.Command("git", { args: ["init", "-q", dir] }).output();
 * try {
 *   const allocation = await allocate({
 *     cwd: dir,
 *     ports: { web_port: 3000, api_port: 9000 },
 *     // The machine-wide index; by default it is kept in the user's home.
 *     index: machineIndexAt(index),
 *   });
 *   // The main worktree owns slot 0, the base ports; linked worktrees get 1, 2, ...
 *   assert.equal(allocation.slot, 0);
 *   assert.deepEqual(allocation.bundle, { web_port: 3000, api_port: 9000 });
 *   assert.equal(allocation.path, `${await Deno.realPath(dir)}/.worktree-ports.json`);
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 *   await Deno.remove(index, { recursive: true });
 * }
 * ```
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Machine-readable reason carried by {@linkcode WorktreePortsError}. */
export type ErrorCode =
  | "NO_FREE_SLOT"
  | "LOCK_TIMEOUT"
  | "NOT_A_WORKTREE"
  | "GIT_FAILED"
  | "INVALID_CONFIG";

/**
 * The error callers are expected to catch: every slot taken, the lock not
 * acquired in time, not inside a git worktree, git failing, or a bad config.
 *
 * @example Usage
 * ```ts ignore
 * import { allocate, WorktreePortsError } from "@org/worktree-ports";
 *
 * try {
 *   await allocate();
 * } catch (error) {
 *   if (error instanceof WorktreePortsError && error.code === "NO_FREE_SLOT") {
 *     console.error("every slot is taken");
 *   } else {
 *     throw error;
 *   }
 * }
 * ```
 */
export class WorktreePortsError extends Error {
  /** Why the operation failed. */
  readonly code: ErrorCode;

  /**
   * Creates an error with a code and a message that says what to do.
   *
   * @param code Why the operation failed.
   * @param message What went wrong and how to fix it.
   * @param options The underlying `cause`, if any.
   */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WorktreePortsError";
    this.code = code;
  }
}

// ---------------------------------------------------------------------------
// Names and defaults
// ---------------------------------------------------------------------------

/** Name of the port file written at the root of each worktree. */
export const PORT_FILE_NAME = ".worktree-ports.json";
/** Name of the optional config file at the root of a worktree. */
export const CONFIG_FILE_NAME = "worktree-ports.config.json";
/** Name of the lock file in the repository's common git directory. */
export const LOCK_FILE_NAME = "worktree-ports.lock";
/** Version of the `worktree_ports` metadata written into port files. */
export const PORT_FILE_VERSION = 1;
/** How long {@linkcode allocate} waits for the lock by default. */
export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;
/**
 * Addresses a port must be bindable on to count as free. `::1` is skipped on
 * hosts without IPv6 loopback.
 */
export const PROBE_HOSTNAMES: readonly string[] = ["127.0.0.1", "::1", "0.0.0.0"];

/** The config used when a worktree has no config file. */
export const DEFAULT_CONFIG: Readonly<PortsConfig> = Object.freeze({
  ports: Object.freeze({ port: 3000 }),
  templates: Object.freeze({}),
  stride: 100,
  slots: 50,
});

const IS_WINDOWS = Deno.build.os === "windows";
const KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PLACEHOLDER_PATTERN = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const META_KEY = "worktree_ports";
const MAX_PORT = 65535;

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/** Which ports a repository's worktrees share out, and how. */
export interface PortsConfig {
  /** Base port of each key: the ports of slot 0, the primary worktree. */
  ports: Record<string, number>;
  /** Extra values written beside the ports, with `{key}` replaced by that port. */
  templates: Record<string, string>;
  /** Distance between the ports of one slot and the next. */
  stride: number;
  /** How many slots linked worktrees can take: slots 1 to `slots`. */
  slots: number;
  /** `repository` keeps this repository's allocations out of the machine-wide index. */
  scope?: Scope;
}

/** Values that replace those of the config file, as the CLI's flags do. */
export interface ConfigOverrides {
  /**
   * Replaces the config's `ports` entirely.
   *
   * @default {undefined}
   */
  ports?: Record<string, number>;
  /**
   * Replaces the config's `stride`.
   *
   * @default {undefined}
   */
  stride?: number;
  /**
   * Replaces the config's `slots`.
   *
   * @default {undefined}
   */
  slots?: number;
}

/** Options for {@linkcode parseConfig}. */
export interface ParseConfigOptions extends ConfigOverrides {
  /**
   * Where the value came from, named in error messages, e.g. a quoted path.
   *
   * @default {undefined}
   */
  source?: string;
}

/**
 * Validates a parsed config value, applies overrides and fills in defaults.
 *
 * Every problem is caught here, before anything is written: unknown keys,
 * non-integer or out-of-range numbers, an empty `ports`, a template naming a
 * missing key, a port of any slot outside 1..65535, and two (key, slot) pairs
 * that land on the same port.
 *
 * @param value The parsed JSON of a config file, or `undefined` for none.
 * @param options Overrides and the name of the source for messages.
 * @returns The complete, validated config.
 * @throws {WorktreePortsError} With code `INVALID_CONFIG`, naming the problem.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { web_port: 3000 } }, { stride: 10 });
 * assert.deepEqual(config, {
 *   ports: { web_port: 3000 },
 *   templates: {},
 *   stride: 10,
 *   slots: 50,
 * });
 * ```
 */
export function parseConfig(
  value: unknown,
  options: ParseConfigOptions = {},
): PortsConfig {
  const fail = (problem: string): never => {
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Invalid config${options.source ? ` ${options.source}` : ""}: ${problem}`,
    );
  };
  const raw = value ?? {};
  if (!isPlainObject(raw)) fail("it must be a JSON object");
  const record = raw as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!["ports", "templates", "stride", "slots", "scope"].includes(key)) {
      fail(
        `unknown key "${key}" (expected "ports", "templates", "stride", "slots" or "scope")`,
      );
    }
  }

  const ports = options.ports ??
    (record.ports === undefined ? { ...DEFAULT_CONFIG.ports } : record.ports);
  if (!isPlainObject(ports)) fail(`"ports" must be an object of key to base port`);
  const portEntries = Object.entries(ports as Record<string, unknown>);
  if (portEntries.length === 0) fail(`"ports" must name at least one port`);
  for (const [key, base] of portEntries) {
    checkKey(key, "ports", fail);
    checkInteger(base, `port "${key}"`, 1, MAX_PORT, fail);
  }

  const templates = record.templates ?? {};
  if (!isPlainObject(templates)) {
    fail(`"templates" must be an object of key to string`);
  }
  for (const [key, template] of Object.entries(templates as object)) {
    checkKey(key, "templates", fail);
    if (Object.hasOwn(ports as object, key)) {
      fail(`template "${key}" has the same name as a port`);
    }
    if (typeof template !== "string") {
      fail(`template "${key}" must be a string`);
    }
    for (const [, name] of (template as string).matchAll(PLACEHOLDER_PATTERN)) {
      if (!Object.hasOwn(ports as object, name)) {
        fail(`template "${key}" names "{${name}}", which is not in "ports"`);
      }
    }
  }

  const stride = options.stride ?? record.stride ?? DEFAULT_CONFIG.stride;
  checkInteger(stride, `"stride"`, 1, MAX_PORT, fail);
  const slots = options.slots ?? record.slots ?? DEFAULT_CONFIG.slots;
  checkInteger(slots, `"slots"`, 1, MAX_PORT, fail);

  const config: PortsConfig = {
    ports: ports as Record<string, number>,
    templates: templates as Record<string, string>,
    stride: stride as number,
    slots: slots as number,
  };
  checkSlotPorts(config, fail);
  if (record.scope !== undefined) config.scope = parseScope(record.scope, fail);
  return config;
}

function parseScope(value: unknown, fail: (p: string) => never): Scope {
  if (value !== "machine" && value !== "repository") {
    fail(`"scope" must be "machine" or "repository", got ${JSON.stringify(value)}`);
  }
  return value as Scope;
}

function checkKey(key: string, section: string, fail: (p: string) => never) {
  if (!KEY_PATTERN.test(key)) {
    fail(
      `key "${key}" in "${section}" must match ${KEY_PATTERN.source} (letters, digits, underscores)`,
    );
  }
  if (key === META_KEY) {
    fail(`"${META_KEY}" is reserved for the port file's own metadata`);
  }
}

function checkInteger(
  value: unknown,
  name: string,
  min: number,
  max: number,
  fail: (p: string) => never,
) {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    fail(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
}

/**
 * Every port of every slot must exist and belong to exactly one (key, slot).
 * Both follow from the base ports without listing the slots: a key's highest
 * port is at the last slot, and two keys collide exactly when their bases are
 * a whole number of strides apart, no more than `slots` strides.
 */
function checkSlotPorts(config: PortsConfig, fail: (p: string) => never) {
  const { stride, slots } = config;
  const entries = Object.entries(config.ports);
  let highest: [string, number] | undefined;
  for (const [key, base] of entries) {
    const slot = Math.ceil((MAX_PORT + 1 - base) / stride);
    if (slot <= slots && (highest === undefined || slot < highest[1])) highest = [key, slot];
  }
  if (highest) {
    const [key, slot] = highest;
    fail(
      `port "${key}" at slot ${slot} would be ${
        config.ports[key] + slot * stride
      }, above ${MAX_PORT} (lower "slots", "stride" or the base port)`,
    );
  }
  let first: { low: string; high: string; slot: number; port: number } | undefined;
  entries.forEach(([keyA, baseA], index) => {
    for (const [keyB, baseB] of entries.slice(index + 1)) {
      const distance = Math.abs(baseA - baseB);
      const slot = distance / stride;
      if (distance % stride !== 0 || slot > slots || (first && first.slot <= slot)) continue;
      // The key with the lower base climbs onto the other's base port.
      const [low, high] = baseA < baseB ? [keyA, keyB] : [keyB, keyA];
      first = { low, high, slot, port: Math.max(baseA, baseB) };
    }
  });
  if (first) {
    fail(
      `port "${first.low}" at slot ${first.slot} and port "${first.high}" at slot 0 both land on ${first.port} (change "stride" or a base port so the ranges do not overlap)`,
    );
  }
}

/** Options for {@linkcode loadConfig}. */
export interface LoadConfigOptions extends ConfigOverrides {
  /**
   * Path of the config file. When given, the file must exist; relative paths
   * are resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
}

/**
 * Reads and validates the config of a worktree.
 *
 * @param root The worktree root, where `worktree-ports.config.json` is looked for.
 * @param options A config path and overrides.
 * @returns The validated config; the defaults when there is no config file.
 * @throws {WorktreePortsError} With code `INVALID_CONFIG` when the file is
 * missing (if named), not JSON, or not valid.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@org/worktree-ports";
 *
 * const config = loadConfig("/path/to/worktree", { stride: 10 });
 * console.log(config.ports);
 * ```
 */
export function loadConfig(root: string, options: LoadConfigOptions = {}): PortsConfig {
  const path = options.config === undefined
    ? joinPath(root, CONFIG_FILE_NAME)
    : resolvePath(root, options.config);
  let text: string | undefined;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound) || options.config !== undefined) {
      throw asConfigError(error, path);
    }
  }
  let value: unknown;
  if (text !== undefined) {
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new WorktreePortsError(
        "INVALID_CONFIG",
        `Invalid config "${path}": not valid JSON (${(error as Error).message})`,
        { cause: error },
      );
    }
  }
  return parseConfig(value, {
    ...options,
    source: text === undefined ? undefined : `"${path}"`,
  });
}

function asConfigError(error: unknown, path: string): unknown {
  if (error instanceof Deno.errors.NotCapable) return error;
  const reason = error instanceof Deno.errors.NotFound
    ? "the file does not exist"
    : (error as Error).message;
  return new WorktreePortsError(
    "INVALID_CONFIG",
    `Cannot read config "${path}": ${reason}`,
    { cause: error },
  );
}

/**
 * The port of every key at one slot: `base + slot * stride`.
 *
 * @param config The config to read base ports and stride from.
 * @param slot The slot: 0 for the primary worktree.
 * @returns Each key with its port, in config order.
 *
 * @example Usage
 * ```ts
 * import { parseConfig, portsForSlot } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { web: 3000, db: 5432 } });
 * assert.deepEqual(portsForSlot(config, 2), { web: 3200, db: 5632 });
 * ```
 */
export function portsForSlot(
  config: Pick<PortsConfig, "ports" | "stride">,
  slot: number,
): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const [key, base] of Object.entries(config.ports)) {
    ports[key] = base + slot * config.stride;
  }
  return ports;
}

/**
 * The full bundle of a slot: its ports, then the templates filled from them.
 *
 * @param config The config to render.
 * @param slot The slot to render.
 * @returns Each port key and template key with its value, in config order.
 *
 * @example Usage
 * ```ts
 * import { parseConfig, renderBundle } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({
 *   ports: { api: 8000 },
 *   templates: { api_url: "http://127.0.0.1:{api}" },
 * });
 * assert.deepEqual(renderBundle(config, 1), {
 *   api: 8100,
 *   api_url: "http://127.0.0.1:8100",
 * });
 * ```
 */
export function renderBundle(
  config: PortsConfig,
  slot: number,
): Record<string, number | string> {
  const ports = portsForSlot(config, slot);
  const bundle: Record<string, number | string> = { ...ports };
  for (const [key, template] of Object.entries(config.templates)) {
    bundle[key] = template.replace(
      PLACEHOLDER_PATTERN,
      (_, name: string) => String(ports[name]),
    );
  }
  return bundle;
}

// ---------------------------------------------------------------------------
// Worktrees
// ---------------------------------------------------------------------------

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
    output = new Deno.Command("git", {
      args: [...args],
      cwd,
      // Messages are matched below, so keep them untranslated.
      env: { LC_ALL: "C" },
      stdin: "null",
    }).outputSync();
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
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new WorktreePortsError(
      "GIT_FAILED",
      `"git ${args.join(" ")}" failed with exit code ${output.code}: ${stderr}`,
    );
  }
  return new TextDecoder().decode(output.stdout);
}

/** One entry of `git worktree list`. */
export interface Worktree {
  /** Directory of the worktree, as git reports it (for a bare repository, the repository itself). */
  path: string;
  /** Commit checked out, absent for a bare repository. */
  head?: string;
  /** Branch checked out, without `refs/heads/`; absent when detached or bare. */
  branch?: string;
  /** The entry is a bare repository: it has no files and no port file. */
  bare: boolean;
  /** HEAD is detached. */
  detached: boolean;
  /** The worktree is locked against pruning. */
  locked: boolean;
  /** Git reports the worktree's directory as gone. */
  prunable: boolean;
}

/**
 * Parses the output of `git worktree list --porcelain -z`.
 *
 * @param output The raw output: NUL-terminated attributes, records separated by an empty one.
 * @returns The worktrees in git's order: the main worktree (or bare repository) first.
 *
 * @example Usage
 * ```ts
 * import { parseWorktreeList } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const output = "worktree /repo\0HEAD abc\0branch refs/heads/main\0\0" +
 *   "worktree /repo wt\0HEAD abc\0detached\0\0";
 * const [main, linked] = parseWorktreeList(output);
 * assert.equal(main.branch, "main");
 * assert.equal(linked.path, "/repo wt");
 * assert.equal(linked.detached, true);
 * ```
 */
export function parseWorktreeList(output: string): Worktree[] {
  const worktrees: Worktree[] = [];
  let current: Worktree | undefined;
  for (const field of output.split("\0")) {
    if (field === "") {
      current = undefined;
      continue;
    }
    const space = field.indexOf(" ");
    const name = space === -1 ? field : field.slice(0, space);
    const value = space === -1 ? "" : field.slice(space + 1);
    if (name === "worktree") {
      current = {
        path: value,
        bare: false,
        detached: false,
        locked: false,
        prunable: false,
      };
      worktrees.push(current);
    } else if (current === undefined) {
      continue;
    } else if (name === "HEAD") {
      current.head = value;
    } else if (name === "branch") {
      current.branch = value.replace(/^refs\/heads\//, "");
    } else if (name === "bare" || name === "detached" || name === "locked" || name === "prunable") {
      current[name] = true;
    }
  }
  return worktrees;
}

/** Options for {@linkcode listWorktrees}. */
export interface ListWorktreesOptions {
  /**
   * A directory inside the repository.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
}

/**
 * Lists every worktree of the repository that contains `cwd`, with one
 * `git worktree list --porcelain -z` call.
 *
 * @param options The directory and the git runner.
 * @returns The worktrees in git's order: the main worktree (or bare repository) first.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` outside a git
 * repository, `GIT_FAILED` when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { listWorktrees } from "@org/worktree-ports";
 *
 * for (const worktree of await listWorktrees()) console.log(worktree.path);
 * ```
 */
export async function listWorktrees(
  options: ListWorktreesOptions = {},
): Promise<Worktree[]> {
  const cwd = options.cwd ?? Deno.cwd();
  const git = options.git ?? denoGit;
  try {
    return parseWorktreeList(
      await git.run(["worktree", "list", "--porcelain", "-z"], cwd),
    );
  } catch (error) {
    if (
      error instanceof WorktreePortsError && error.code === "GIT_FAILED" &&
      /not a git repository/i.test(error.message)
    ) {
      throw notAWorktree(cwd, error);
    }
    throw error;
  }
}

function notAWorktree(dir: string, cause?: unknown): WorktreePortsError {
  return new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${dir}" is not inside a git worktree (run this inside a git repository's working tree)`,
    { cause },
  );
}

/** The repository around a directory, as {@linkcode openRepository} finds it. */
export interface Repository {
  /** Every worktree of the repository, the main one (or the bare repository) first. */
  worktrees: Worktree[];
  /** The worktree containing the directory. */
  current: Worktree;
  /** The real path of the current worktree's root. */
  root: string;
  /** The current worktree is the main worktree, which owns slot 0. */
  primary: boolean;
  /** The git directory shared by all worktrees, where the lock lives. */
  commonDir: string;
}

/**
 * Finds the worktree containing a directory, its siblings and the shared git
 * directory, with a single git call.
 *
 * @param options The directory and the git runner.
 * @returns The repository as seen from that directory.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` when the directory
 * is not inside a worktree (including inside a bare repository), `GIT_FAILED`
 * when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { openRepository } from "@org/worktree-ports";
 *
 * const repository = await openRepository();
 * console.log(repository.root, repository.primary);
 * ```
 */
export async function openRepository(
  options: ListWorktreesOptions = {},
): Promise<Repository> {
  const git = options.git ?? denoGit;
  const start = options.cwd ?? Deno.cwd();
  let dir: string;
  try {
    dir = Deno.realPathSync(start);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw notAWorktree(start, error);
  }
  const worktrees = await listWorktrees({ cwd: dir, git });
  const current = findContaining(worktrees, dir, (w) => w.path) ??
    findContaining(await realPaths(worktrees), dir, (w) => w.real)?.worktree;
  if (current === undefined || current.bare) throw notAWorktree(dir);
  const root = Deno.realPathSync(current.path);
  // Git's own directory sits inside the main worktree but is not part of it.
  if (/^\.git(\/|$)/.test(relativeInside(root, dir) ?? "")) throw notAWorktree(dir);
  return {
    worktrees,
    current,
    root,
    primary: current === worktrees[0],
    commonDir: await findCommonDir(root, git),
  };
}

/** The entry whose path is the longest one containing `dir`: worktrees may nest. */
function findContaining<T>(
  entries: readonly T[],
  dir: string,
  pathOf: (entry: T) => string | undefined,
): T | undefined {
  let best: T | undefined;
  let bestLength = -1;
  const target = comparablePath(dir);
  for (const entry of entries) {
    const path = pathOf(entry);
    if (path === undefined) continue;
    const candidate = comparablePath(path).replace(/\/+$/, "");
    if (
      (target === candidate || target.startsWith(candidate + "/")) &&
      candidate.length > bestLength
    ) {
      best = entry;
      bestLength = candidate.length;
    }
  }
  return best;
}

async function realPaths(
  worktrees: readonly Worktree[],
): Promise<{ worktree: Worktree; real?: string }[]> {
  return await Promise.all(worktrees.map(async (worktree) => {
    try {
      return { worktree, real: await Deno.realPath(worktree.path) };
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      return { worktree };
    }
  }));
}

/**
 * Follows `.git` the way git does (a directory, or a file saying `gitdir:`,
 * then the `commondir` file of a linked worktree) so that finding the lock
 * costs no second git process. Falls back to asking git.
 */
async function findCommonDir(root: string, git: GitRunner): Promise<string> {
  try {
    const dotGit = joinPath(root, ".git");
    let gitDir = dotGit;
    if (Deno.statSync(dotGit).isFile) {
      const text = Deno.readTextFileSync(dotGit);
      if (!text.startsWith("gitdir: ")) throw new SyntaxError(`Unexpected "${dotGit}"`);
      gitDir = resolvePath(root, text.slice("gitdir: ".length).replace(/\r?\n$/, ""));
    }
    try {
      const common = Deno.readTextFileSync(joinPath(gitDir, "commondir"));
      return resolvePath(gitDir, common.replace(/\r?\n$/, ""));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return gitDir;
      throw error;
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const output = await git.run(["rev-parse", "--git-common-dir"], root);
    return resolvePath(root, output.replace(/\r?\n$/, ""));
  }
}

// ---------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------

/** The `worktree_ports` metadata that this tool writes into a port file. */
export interface PortFileMeta {
  /** Format version. */
  version: number;
  /** The slot the bundle belongs to. */
  slot: number;
  /** Real path of the worktree the file was written for. */
  worktree: string;
  /** When the slot was first given to that worktree (ISO 8601). */
  allocated_at: string;
}

/** What {@linkcode readPortFile} found at a path. */
export type PortFileRead =
  | {
    /** There is no file. */
    state: "missing";
  }
  | {
    /** The file exists but cannot be used. */
    state: "unreadable";
    /** Why, e.g. "not valid JSON". */
    reason: string;
  }
  | {
    /** The file was read. */
    state: "read";
    /** Its top-level values. */
    data: Record<string, unknown>;
    /** The ports it reserves, per {@linkcode reservedPortsOf}. */
    ports: number[];
    /** Its metadata, when this tool (or a compatible one) wrote it. */
    meta?: PortFileMeta;
  };

/**
 * Reads one port file, whatever tool wrote it.
 *
 * @param path The file to read.
 * @returns Whether it is missing, unreadable (with the reason), or its values and reserved ports.
 * @throws {Deno.errors.NotCapable} When read permission is missing: that is never "unreadable".
 *
 * @example Usage
 * ```ts ignore
 * import { readPortFile } from "@org/worktree-ports";
 *
 * const file = readPortFile("/path/to/worktree/.worktree-ports.json");
 * if (file.state === "read") console.log(file.ports);
 * ```
 */
export function readPortFile(path: string): PortFileRead {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { state: "missing" };
    if (error instanceof Deno.errors.NotCapable) throw error;
    return { state: "unreadable", reason: (error as Error).message };
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return { state: "unreadable", reason: "not valid JSON" };
  }
  if (!isPlainObject(data)) {
    return { state: "unreadable", reason: "not a JSON object" };
  }
  const record = data as Record<string, unknown>;
  return {
    state: "read",
    data: record,
    ports: reservedPortsOf(record),
    meta: metaOf(record[META_KEY]),
  };
}

function metaOf(value: unknown): PortFileMeta | undefined {
  if (!isPlainObject(value)) return undefined;
  const meta = value as Record<string, unknown>;
  if (!Number.isInteger(meta.slot) || typeof meta.worktree !== "string") {
    return undefined;
  }
  return {
    version: Number.isInteger(meta.version) ? meta.version as number : PORT_FILE_VERSION,
    slot: meta.slot as number,
    worktree: meta.worktree,
    allocated_at: typeof meta.allocated_at === "string" ? meta.allocated_at : "",
  };
}

/**
 * The ports a port file reserves, read liberally so that files written by
 * older tools count: every top-level integer from 1 to 65535, and the explicit
 * port of every top-level string that parses as a URL.
 *
 * @param data A parsed port file.
 * @returns The reserved ports, without duplicates, in file order.
 *
 * @example Usage
 * ```ts
 * import { reservedPortsOf } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const ports = reservedPortsOf({
 *   cloud_port: 8100,
 *   cloud_url: "http://127.0.0.1:8101",
 *   name: "not a port",
 * });
 * assert.deepEqual(ports, [8100, 8101]);
 * ```
 */
export function reservedPortsOf(data: Record<string, unknown>): number[] {
  const ports = new Set<number>();
  for (const value of Object.values(data)) {
    if (Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_PORT) {
      ports.add(value as number);
    } else if (typeof value === "string" && value.includes(":")) {
      const port = URL.parse(value)?.port;
      if (port) ports.add(Number(port));
    }
  }
  return [...ports];
}

/** The ports that other worktrees' files reserve. */
export interface ReservedPorts {
  /** Each reserved port and the file that reserves it. */
  holders: Map<number, string>;
  /** One line for each file that exists but could not be read. */
  warnings: string[];
}

/**
 * Reads the ports reserved by a set of port files. Missing files reserve
 * nothing; unreadable ones are skipped with a warning, never an error.
 *
 * @param paths The port files to read.
 * @returns Every reserved port with a file that holds it, and the warnings.
 *
 * @example Usage
 * ```ts ignore
 * import { readReservedPorts } from "@org/worktree-ports";
 *
 * const reserved = readReservedPorts(["/repo-wt1/.worktree-ports.json"]);
 * console.log(reserved.holders.has(3100));
 * ```
 */
export function readReservedPorts(paths: readonly string[]): ReservedPorts {
  const files = paths.map(readPortFile);
  const holders = new Map<number, string>();
  const warnings: string[] = [];
  files.forEach((file, index) => {
    if (file.state === "unreadable") {
      warnings.push(`Skipped port file "${paths[index]}": ${file.reason}`);
    } else if (file.state === "read") {
      for (const port of file.ports) {
        if (!holders.has(port)) holders.set(port, paths[index]);
      }
    }
  });
  return { holders, warnings };
}

// ---------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------

/** Tells whether a port is free. Injected so that tests can replace it. */
export interface PortProbe {
  /**
   * Checks one port.
   *
   * @returns `true` when no process listens on it.
   */
  isFree(port: number): boolean | Promise<boolean>;
}

/** Options for {@linkcode isPortFree}. */
export interface IsPortFreeOptions {
  /**
   * The addresses to bind. An address the host lacks does not count.
   *
   * @default {PROBE_HOSTNAMES}
   */
  hostnames?: readonly string[];
}

/**
 * Tells whether a TCP port is free by binding it on each address and
 * releasing it at once.
 *
 * @param port The port to probe.
 * @param options The addresses to bind.
 * @returns `false` when any address has the port in use.
 * @throws {Deno.errors.NotCapable} When net permission for an address is missing.
 *
 * @example Usage
 * ```ts ignore
 * import { isPortFree } from "@org/worktree-ports";
 *
 * console.log(isPortFree(3000));
 * ```
 */
export function isPortFree(port: number, options: IsPortFreeOptions = {}): boolean {
  for (const hostname of options.hostnames ?? PROBE_HOSTNAMES) {
    try {
      Deno.listen({ hostname, port }).close();
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse) return false;
      // An address this host lacks (no IPv6 loopback, or no IPv6 at all) is
      // not applicable rather than busy.
      if (
        error instanceof Deno.errors.AddrNotAvailable ||
        (error as { code?: string }).code === "EAFNOSUPPORT"
      ) continue;
      throw error;
    }
  }
  return true;
}

/** The real {@linkcode PortProbe}: {@linkcode isPortFree} with `Deno.listen`. */
export const denoProbe: PortProbe = {
  isFree(port: number): boolean {
    return isPortFree(port);
  },
};

// ---------------------------------------------------------------------------
// The lock
// ---------------------------------------------------------------------------

/** Options for {@linkcode lockRepository}. */
export interface LockOptions {
  /**
   * How long to wait for another holder before giving up, in milliseconds.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  timeoutMs?: number;
  /**
   * Called once, with the lock's path, when another process holds the lock
   * and waiting begins.
   *
   * @default {undefined}
   */
  onWait?: (path: string) => void;
}

/** A held repository lock. Released by `release()` or at the end of a `using` block. */
export interface RepositoryLock extends Disposable {
  /** The lock file. */
  readonly path: string;
  /** Releases the lock; calling it again does nothing. */
  release(): void;
}

/**
 * Takes the exclusive lock shared by every worktree of a repository: a kernel
 * file lock on `worktree-ports.lock` in the common git directory, so a holder
 * that dies releases it and no stale lock is ever left behind.
 *
 * @param commonDir The repository's common git directory.
 * @param options How long to wait, and a callback for when waiting begins.
 * @returns The held lock.
 * @throws {WorktreePortsError} With code `LOCK_TIMEOUT` when it stays held past the timeout.
 * @throws {RangeError} When the timeout is negative or not a number.
 *
 * @example Usage
 * ```ts ignore
 * import { lockRepository, openRepository } from "@org/worktree-ports";
 *
 * const { commonDir } = await openRepository();
 * using lock = await lockRepository(commonDir, { timeoutMs: 2000 });
 * console.log("holding", lock.path);
 * ```
 */
export async function lockRepository(
  commonDir: string,
  options: LockOptions = {},
): Promise<RepositoryLock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!(timeoutMs >= 0)) {
    throw new RangeError(`Lock timeout must be 0 or more milliseconds, got ${timeoutMs}`);
  }
  const path = joinPath(commonDir, LOCK_FILE_NAME);
  const file = Deno.openSync(path, { read: true, write: true, create: true });
  try {
    if (!file.tryLockSync(true)) {
      options.onWait?.(path);
      const deadline = performance.now() + timeoutMs;
      let pause = 1;
      // Polling keeps the wait cancellable; the holders' critical section is
      // a few milliseconds, so short pauses hand the lock over quickly.
      while (!file.tryLockSync(true)) {
        const left = deadline - performance.now();
        if (left <= 0) {
          throw new WorktreePortsError(
            "LOCK_TIMEOUT",
            `Timed out after ${timeoutMs / 1000} s waiting for the lock "${path}" ` +
              `(another worktree-ports process holds it; it is released when that process exits)`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
        pause = Math.min(pause * 2, 16);
      }
    }
  } catch (error) {
    file.close();
    throw error;
  }
  let held = true;
  const release = () => {
    if (held) {
      held = false;
      file.close();
    }
  };
  return { path, release, [Symbol.dispose]: release };
}

// ---------------------------------------------------------------------------
// The machine-wide index
// ---------------------------------------------------------------------------

// Lock order, everywhere: the repository lock first, then the machine lock
// in the index folder, never the other way round (repairing every repository
// takes all their locks, in order of path, before the machine lock). A process
// holding the machine lock never waits for a repository lock, so no two
// processes can wait on each other. Both are kernel locks: a holder that dies
// releases both.

/** Name of the machine-wide index file in the index folder. */
export const INDEX_FILE_NAME = "index.json";
/** Version of the index file format. */
export const INDEX_VERSION = 1;
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
/** A port file is a few hundred bytes; an index entry never makes us read a large file. */
const MAX_INDEXED_FILE_BYTES = 1 << 20;

/**
 * How far an allocation looks for ports held by others: `machine`, every
 * port file recorded in the machine-wide index as well as the repository's
 * own worktrees; `repository`, only the repository's own worktrees.
 */
export type Scope = "machine" | "repository";

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
  const home = getEnv("WORKTREE_PORTS_HOME");
  if (home) return home;
  if (os === "windows") {
    const local = getEnv("LOCALAPPDATA");
    return local ? `${local.replace(/[\\/]+$/, "")}\\worktree-ports` : undefined;
  }
  // The XDG spec ignores a relative XDG_STATE_HOME.
  const state = getEnv("XDG_STATE_HOME");
  if (state && state.startsWith("/")) return joinPath(state, "worktree-ports");
  const user = getEnv("HOME");
  return user ? joinPath(user, ".local/state/worktree-ports") : undefined;
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

/** One port file recorded in the machine-wide index: a pointer, never the ports themselves. */
export interface IndexEntry {
  /** Absolute path of the port file. */
  path: string;
  /** Real path of its repository's common git directory. */
  repository: string;
  /** Real path of its worktree's root. */
  worktree: string;
}

/** What {@linkcode readMachineIndex} found. */
export interface IndexRead {
  /** The index file. */
  path: string;
  /** Every well-formed entry. */
  entries: IndexEntry[];
  /** The file's entries exactly as stored, well-formed or not, so that rewriting loses none. */
  raw: unknown[];
}

/**
 * Reads the machine-wide index in a folder. A missing file is an empty index.
 *
 * @param dir The index folder.
 * @returns The entries, and the file's entries as stored.
 * @throws {SyntaxError} When the file is not an index (not JSON, or not of this shape).
 * @throws {Error} When the file exists but cannot be read.
 *
 * @example Usage
 * ```ts ignore
 * import { denoMachineIndex, readMachineIndex } from "@org/worktree-ports";
 *
 * const dir = denoMachineIndex.dir();
 * if (dir) for (const entry of readMachineIndex(dir).entries) console.log(entry.path);
 * ```
 */
export function readMachineIndex(dir: string): IndexRead {
  const path = joinPath(dir, INDEX_FILE_NAME);
  let text: string;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile) throw new Error("it is not a regular file");
    if (info.size > 64 * MAX_INDEXED_FILE_BYTES) {
      throw new Error(`it is too large (${info.size} bytes)`);
    }
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { path, entries: [], raw: [] };
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot read the index "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`The index "${path}" is not valid JSON`, { cause: error });
  }
  const files = isPlainObject(value) ? (value as Record<string, unknown>).files : undefined;
  if (!Array.isArray(files)) {
    throw new SyntaxError(`The index "${path}" is not an object with a "files" array`);
  }
  const entries: IndexEntry[] = [];
  for (const item of files) {
    const entry = asIndexEntry(item);
    if (entry !== undefined) entries.push(entry);
  }
  return { path, entries, raw: files };
}

/** The index as one operation holds it: under the machine lock, or not in use. */
interface MachineSession extends Disposable {
  /** The index is in use; `false` with repository scope or when it could not be used. */
  active: boolean;
  /** Milliseconds spent waiting for another process to release the machine lock. */
  lockWait: number;
  /** Every port another repository's recorded file reserves, and that file. */
  holders: Map<number, string>;
  /** The index's well-formed entries, as read (entries whose file is gone dropped). */
  entries: IndexEntry[];
  /** Problems met, to pass on as warnings. */
  warnings: string[];
  /**
   * Records a port file of the locked repository, or of `repository`;
   * writes the index only if it changed.
   */
  record(path: string, worktree: string, repository?: string): void;
}

/** Options of {@linkcode openMachineIndex}. */
interface MachineSessionOptions {
  scope?: Scope;
  index?: MachineIndex;
  lockOptions?: LockOptions;
  /** Only read: no folder is created, no lock taken, nothing recorded (for inspecting). */
  readOnly?: boolean;
  /** The port file being allocated, which never reserves anything against itself. */
  ownFile?: string;
}

/**
 * Takes the machine lock (the caller holds the repository lock already; see
 * the lock order above) and reads the index: the ports that other
 * repositories' recorded files reserve. Bad state never blocks: an index
 * that cannot be used gives a warning and an inactive session, which is
 * repository scope for this run, and nothing on disk is changed.
 */
async function openMachineIndex(
  commonDir: string | undefined,
  options: MachineSessionOptions,
): Promise<MachineSession> {
  const warnings: string[] = [];
  const inactive = (): MachineSession => ({
    active: false,
    lockWait: 0,
    holders: new Map(),
    entries: [],
    warnings,
    record() {},
    [Symbol.dispose]() {},
  });
  if (options.scope === "repository") return inactive();
  const fallback = options.readOnly
    ? "looking at this repository only this time"
    : "allocating for this repository only this time";
  const dir = (options.index ?? denoMachineIndex).dir();
  if (dir === undefined) {
    warnings.push(
      `No home folder for the machine-wide index (set HOME or WORKTREE_PORTS_HOME); ${fallback}`,
    );
    return inactive();
  }
  // A relative folder would give every directory an index of its own.
  if (!isAbsolutePath(dir)) {
    warnings.push(
      `The machine-wide index folder "${dir}" is not an absolute path (set WORKTREE_PORTS_HOME ` +
        `to one); ${fallback}`,
    );
    return inactive();
  }
  let lock: RepositoryLock | undefined;
  let lockWait = 0;
  try {
    if (!options.readOnly) {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const waitStart = performance.now();
      lock = await lockRepository(dir, options.lockOptions);
      lockWait = performance.now() - waitStart;
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof WorktreePortsError) throw error;
    warnings.push(
      `Cannot use the machine-wide index in "${dir}": ${(error as Error).message}; ${fallback}`,
    );
    return inactive();
  }
  let index: IndexRead;
  try {
    index = readMachineIndex(dir);
  } catch (error) {
    lock?.release();
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `${(error as Error).message}; ${fallback} (move the file away to start a new index)`,
    );
    return inactive();
  }
  const repository = commonDir === undefined ? undefined : realPathOr(commonDir);
  const kept: unknown[] = [];
  const entries: IndexEntry[] = [];
  const scanned: string[] = [];
  let changed = false;
  for (const item of index.raw) {
    const entry = asIndexEntry(item);
    // This repository's own files are its worktrees', scanned as siblings;
    // they are checked (and dropped when gone) when another repository allocates.
    if (entry === undefined || entry.repository === repository || entry.path === options.ownFile) {
      kept.push(item);
      if (entry !== undefined) entries.push(entry);
      continue;
    }
    const usable = checkIndexedFile(entry, warnings);
    if (usable === "gone") {
      changed = true;
      continue;
    }
    kept.push(item);
    entries.push(entry);
    if (usable && (isInside(entry.worktree, entry.path) || worktreeExists(entry.worktree))) {
      scanned.push(entry.path);
    }
  }
  const reserved = readReservedPorts(scanned);
  warnings.push(...reserved.warnings);
  const session: MachineSession = {
    active: true,
    lockWait,
    holders: reserved.holders,
    entries,
    warnings,
    record(path: string, worktree: string, of = repository) {
      if (of === undefined || lock === undefined) return;
      const entry: IndexEntry = { path, repository: of, worktree };
      const at = kept.findIndex((item) => asIndexEntry(item)?.path === path);
      const same = at !== -1 && JSON.stringify(kept[at]) === JSON.stringify(entry);
      if (same && !changed) return;
      if (at === -1) kept.push(entry);
      else kept[at] = entry;
      try {
        // Through a symbolic link, if the user made index.json one.
        writeFileAtomic(
          realPathOr(index.path),
          JSON.stringify({ version: INDEX_VERSION, files: kept }, null, 2) + "\n",
        );
        changed = false;
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw error;
        warnings.push(
          `Cannot record "${path}" in the machine-wide index: ${(error as Error).message}`,
        );
      }
    },
    [Symbol.dispose]: () => lock?.release(),
  };
  return session;
}

function asIndexEntry(item: unknown): IndexEntry | undefined {
  if (!isPlainObject(item)) return undefined;
  const { path, repository, worktree } = item as Record<string, unknown>;
  if (typeof path !== "string" || typeof repository !== "string" || typeof worktree !== "string") {
    return undefined;
  }
  // Relative paths would be read against whatever directory we run in.
  if (!isAbsolutePath(path) || !isAbsolutePath(worktree)) return undefined;
  return { path, repository, worktree };
}

/**
 * Whether an indexed port file can be read: `gone` (the entry is dropped),
 * `true`, or `false` with a warning. It is checked before it is opened, so
 * that an entry pointing at a FIFO or a huge file cannot hang or flood us.
 */
function checkIndexedFile(entry: IndexEntry, warnings: string[]): boolean | "gone" {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(entry.path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "gone";
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(`Skipped port file "${entry.path}": ${(error as Error).message}`);
    return false;
  }
  if (!info.isFile) return "gone";
  if (info.size > MAX_INDEXED_FILE_BYTES) {
    warnings.push(
      `Skipped port file "${entry.path}": too large to be a port file (${info.size} bytes)`,
    );
    return false;
  }
  return true;
}

/**
 * A worktree whose `.git` is gone is one git reports as prunable: its file
 * reserves nothing. Checked with one stat rather than a git process per
 * repository, which would cost every allocation milliseconds per repository,
 * and only for files outside their worktree: a file that still exists inside
 * it shows that the directory does.
 */
function worktreeExists(worktree: string): boolean {
  try {
    Deno.statSync(joinPath(worktree, ".git"));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return false;
  }
}

/** This repository's reservations and other repositories', as one set for {@linkcode chooseSlot}. */
function withOtherRepositories(
  own: ReadonlyMap<number, string>,
  others: ReadonlyMap<number, string>,
): Pick<ReadonlySet<number>, "has"> {
  if (others.size === 0) return own;
  return { has: (port: number) => own.has(port) || others.has(port) };
}

/**
 * The main worktree keeps slot 0 whatever other repositories hold, so a
 * clash there is reported rather than moved.
 */
function warnAboutMainWorktree(
  allocation: Pick<Allocation, "slot" | "bundle" | "warnings">,
  others: ReadonlyMap<number, string>,
): void {
  if (allocation.slot !== 0) return;
  for (const [key, port] of Object.entries(allocation.bundle)) {
    const holder = typeof port === "number" ? others.get(port) : undefined;
    if (holder === undefined) continue;
    allocation.warnings.push(
      `Port ${port} ("${key}") of this main worktree is also held by "${holder}" of another ` +
        `repository; the main worktree keeps its base ports (change the base ports of one ` +
        `repository, or see "worktree-ports check --all")`,
    );
  }
}

/** Marks the ports that other repositories' recorded files hold as conflicts with those worktrees. */
function markOtherRepositories(
  statuses: readonly InspectedStatus[],
  machine: Pick<MachineSession, "holders" | "entries">,
): void {
  if (machine.holders.size === 0) return;
  const entries = new Map(machine.entries.map((entry) => [entry.path, entry]));
  for (const status of statuses) {
    const shared = new Map<string, number[]>();
    for (const port of status.reserved) {
      const holder = machine.holders.get(port);
      if (holder !== undefined) shared.set(holder, [...(shared.get(holder) ?? []), port]);
    }
    for (const [holder, ports] of shared) {
      const entry = entries.get(holder)!;
      status.conflicts.push({ worktree: entry.worktree, ports, repository: entry.repository });
      status.state = "duplicate";
    }
  }
}

/** Adds the conflicts between worktrees of different repositories. */
function addCrossRepositoryConflicts(statuses: readonly InspectedStatus[]): void {
  const holders = new Map<number, number[]>();
  statuses.forEach((status, index) => {
    for (const port of status.reserved) holders.set(port, [...(holders.get(port) ?? []), index]);
  });
  for (const status of statuses) {
    const shared = new Map<number, number[]>();
    for (const port of status.reserved) {
      for (const other of holders.get(port)!) {
        if (statuses[other].repository !== status.repository) {
          shared.set(other, [...(shared.get(other) ?? []), port]);
        }
      }
    }
    for (const [other, ports] of shared) {
      const { path, repository } = statuses[other];
      status.conflicts.push({ worktree: path, ports, repository });
      status.state = "duplicate";
    }
  }
}

/**
 * The repository around `cwd` (if any) and every other repository with a
 * worktree recorded in the index, each opened through one of its worktrees
 * that still exists. Git runs once per repository: this is for `--all`,
 * not for allocating.
 */
async function openIndexedRepositories(
  options: Pick<InspectOptions, "cwd" | "git" | "index" | "onWarning">,
): Promise<{ repositories: Repository[]; here: boolean }> {
  const repositories: Repository[] = [];
  try {
    repositories.push(await openRepository({ cwd: options.cwd, git: options.git }));
  } catch (error) {
    if (!(error instanceof WorktreePortsError && error.code === "NOT_A_WORKTREE")) throw error;
  }
  using machine = await openMachineIndex(undefined, { index: options.index, readOnly: true });
  for (const warning of machine.warnings) options.onWarning?.(warning);
  const seen = new Set(repositories.map((repository) => realPathOr(repository.commonDir)));
  const groups = new Map<string, string[]>();
  for (const entry of machine.entries) {
    if (seen.has(entry.repository)) continue;
    groups.set(entry.repository, [...(groups.get(entry.repository) ?? []), entry.worktree]);
  }
  for (const key of [...groups.keys()].sort()) {
    for (const worktree of groups.get(key)!) {
      if (!worktreeExists(worktree)) continue;
      try {
        repositories.push(await openRepository({ cwd: worktree, git: options.git }));
        break;
      } catch (error) {
        if (!(error instanceof WorktreePortsError)) throw error;
      }
    }
  }
  return { repositories, here: seen.size > 0 };
}

/** Every worktree of every repository given, with the conflicts between them. */
async function inspectAll(
  { repositories, here }: { repositories: readonly Repository[]; here: boolean },
  options: InspectOptions,
): Promise<InspectedStatus[]> {
  const all: InspectedStatus[] = [];
  for (const [index, repository] of repositories.entries()) {
    // The first repository is the one around `cwd`, when there is one; a
    // custom output path belongs to it.
    const isHere = here && index === 0;
    const statuses = await inspectRepository(repository, {
      ...options,
      output: isHere ? options.output : undefined,
      listening: false,
    });
    const key = realPathOr(repository.commonDir);
    for (const status of statuses) {
      all.push({ ...status, current: status.current && isHere, repository: key });
    }
  }
  addCrossRepositoryConflicts(all);
  if (options.listening !== false) {
    for (const status of all) await probeListening(status, options.probe ?? denoProbe);
  }
  return all;
}

function isInside(dir: string, path: string): boolean {
  return relativeInside(dir, path) !== undefined;
}

function realPathOr(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return path;
  }
}

// ---------------------------------------------------------------------------
// Choosing a slot
// ---------------------------------------------------------------------------

/** Options for {@linkcode chooseSlot}. */
export interface ChooseSlotOptions {
  /**
   * The slot the worktree holds now, from its own port file.
   *
   * @default {undefined}
   */
  current?: number;
  /**
   * Choose afresh even when the current slot could be kept.
   *
   * @default {false}
   */
  force?: boolean;
  /**
   * The worktree is the main worktree, which always gets slot 0.
   *
   * @default {false}
   */
  primary?: boolean;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
}

/** The slot {@linkcode chooseSlot} picked. */
export interface SlotChoice {
  /** The slot. */
  slot: number;
  /** It is the worktree's current slot, kept without probing. */
  kept: boolean;
}

/**
 * Picks a worktree's slot. The main worktree gets slot 0. A linked worktree
 * keeps its current slot when it is in range and no sibling reserves any of
 * its ports (without probing: its own services may be listening); otherwise
 * it gets the lowest slot from 1 whose ports are all unreserved and free.
 *
 * @param config The config that defines the slots.
 * @param reserved The ports that other worktrees reserve.
 * @param options The current slot, `force`, `primary` and the probe.
 * @returns The slot and whether it was kept.
 * @throws {WorktreePortsError} With code `NO_FREE_SLOT` when every slot is reserved or busy.
 *
 * @example Usage
 * ```ts
 * import { chooseSlot, parseConfig } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { web: 3000 } });
 * const reserved = new Set([3100]);
 * const probe = { isFree: (port: number) => port !== 3200 };
 * const choice = await chooseSlot(config, reserved, { probe });
 * assert.deepEqual(choice, { slot: 3, kept: false });
 * ```
 */
export async function chooseSlot(
  config: PortsConfig,
  reserved: Pick<ReadonlySet<number>, "has">,
  options: ChooseSlotOptions = {},
): Promise<SlotChoice> {
  if (options.primary) return { slot: 0, kept: options.current === 0 };
  const bases = Object.values(config.ports);
  const isReserved = (slot: number) =>
    bases.some((base) => reserved.has(base + slot * config.stride));
  const { current } = options;
  if (
    !options.force && current !== undefined && current >= 1 &&
    current <= config.slots && !isReserved(current)
  ) {
    return { slot: current, kept: true };
  }
  const probe = options.probe ?? denoProbe;
  let busy = 0;
  for (let slot = 1; slot <= config.slots; slot++) {
    if (isReserved(slot)) continue;
    if (await allFree(probe, Object.values(portsForSlot(config, slot)))) {
      return { slot, kept: false };
    }
    busy++;
  }
  throw new WorktreePortsError(
    "NO_FREE_SLOT",
    `Cannot allocate ports: all ${config.slots} slots are taken ` +
      `(${config.slots - busy} reserved by other worktrees, ${busy} in use by other processes; ` +
      `run "worktree-ports list" to see who holds them, or raise "slots")`,
  );
}

async function allFree(probe: PortProbe, ports: readonly number[]): Promise<boolean> {
  for (const port of ports) {
    if (!(await probe.isFree(port))) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Writing the file
// ---------------------------------------------------------------------------

/**
 * Writes a file atomically: a temporary file in the same directory, then a
 * rename over the target. Readers see the old file or the new one, never a
 * partial one, and a crash leaves the old file intact.
 *
 * @param path The file to write.
 * @param text The whole content.
 * @throws {Error} Naming the path when it cannot be written; no temporary file is left.
 *
 * @example Usage
 * ```ts ignore
 * import { writeFileAtomic } from "@org/worktree-ports";
 *
 * writeFileAtomic("/tmp/ports.json", '{"port": 3100}\n');
 * ```
 */
export function writeFileAtomic(path: string, text: string): void {
  // Unique per process and call; Web Crypto would cost a cold process milliseconds to load.
  const temp = `${path}.${Deno.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`;
  try {
    Deno.writeTextFileSync(temp, text, { createNew: true });
    Deno.renameSync(temp, path);
  } catch (error) {
    try {
      Deno.removeSync(temp);
    } catch {
      // It was never created.
    }
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The text of a port file: the bundle flat at the top level, so existing
 * readers keep finding their keys, then the `worktree_ports` metadata.
 *
 * @param allocation The bundle and its metadata.
 * @returns Pretty-printed JSON ending with a newline.
 *
 * @example Usage
 * ```ts
 * import { formatPortFile } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const text = formatPortFile({
 *   bundle: { port: 3100 },
 *   slot: 1,
 *   worktree: "/repo-feature",
 *   allocatedAt: "2026-01-01T00:00:00.000Z",
 * });
 * assert.equal(JSON.parse(text).worktree_ports.slot, 1);
 * ```
 */
export function formatPortFile(
  allocation: Pick<Allocation, "bundle" | "slot" | "worktree" | "allocatedAt">,
): string {
  return JSON.stringify(portFileData(allocation), null, 2) + "\n";
}

/** The top-level values of a port file: the bundle, then the metadata. */
function portFileData(
  allocation: Pick<Allocation, "bundle" | "slot" | "worktree" | "allocatedAt">,
): Record<string, unknown> {
  const meta: PortFileMeta = {
    version: PORT_FILE_VERSION,
    slot: allocation.slot,
    worktree: allocation.worktree,
    allocated_at: allocation.allocatedAt,
  };
  return { ...allocation.bundle, [META_KEY]: meta };
}

/** The file was written for another worktree (it was copied); `root` is this worktree's real path. */
function isForeign(file: PortFileRead, root: string): boolean {
  return file.state === "read" && file.meta !== undefined && file.meta.worktree !== root;
}

// ---------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------

/** Options for {@linkcode allocate}. */
export interface AllocateOptions extends ConfigOverrides {
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
   * `machine` also reserves the ports of every other repository's port file
   * recorded in the machine-wide index, and records this one there;
   * `repository` looks at this repository's worktrees only.
   *
   * @default {"machine"} unless the config says `"scope": "repository"`
   */
  scope?: Scope;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
}

/** The result of {@linkcode allocate}. */
export interface Allocation {
  /** The slot: 0 for the main worktree, 1 or more for linked ones. */
  slot: number;
  /** The ports and filled-in templates, as written at the top level of the file. */
  bundle: Record<string, number | string>;
  /** Real path of the worktree root. */
  worktree: string;
  /** The port file. */
  path: string;
  /** When the worktree first got this slot (ISO 8601). */
  allocatedAt: string;
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
 * written atomically. Allocating again returns the same bundle.
 *
 * @param options Where, which config, and the injected git and probe.
 * @returns The allocation that was written.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
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
  const git = options.git ?? denoGit;
  const repository = await openRepository({ cwd: options.cwd, git });
  return await allocateIn(repository, options, git, start);
}

async function allocateIn(
  repository: Repository,
  options: AllocateOptions,
  git: GitRunner,
  start: number,
): Promise<Allocation> {
  const gitDone = performance.now();
  const path = portFilePath(repository.root, options);
  const inside = relativeInside(repository.root, path);
  // Everything that can be known before the lock is read before it, so the
  // critical section is only the scan, the choice and the write.
  const config = loadConfig(repository.root, options);
  assertNotDirectory(path);
  const scanned = siblingPortFiles(repository, inside ?? PORT_FILE_NAME);
  if (options.excludeOutput === false) scanned.push(path);
  const lockOptions = { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait };

  let allocation: Omit<Allocation, "timings">;
  let previous: PortFileRead;
  let lockWait: number;
  let locked: number;
  {
    const waitStart = performance.now();
    using _lock = await lockRepository(repository.commonDir, lockOptions);
    const lockedStart = performance.now();
    lockWait = lockedStart - waitStart;
    using machine = await openMachineIndex(repository.commonDir, {
      scope: options.scope ?? config.scope,
      index: options.index,
      lockOptions,
      ownFile: path,
    });
    lockWait += machine.lockWait;
    const own = readPortFile(path);
    const reserved = readReservedPorts(scanned);
    allocation = await allocateSlot(
      { root: repository.root, path, primary: repository.primary },
      config,
      own,
      withOtherRepositories(reserved.holders, machine.holders),
      { force: options.force, probe: options.probe },
    );
    machine.record(path, repository.root);
    warnAboutMainWorktree(allocation, machine.holders);
    allocation.warnings.unshift(...reserved.warnings, ...machine.warnings);
    previous = own;
    locked = performance.now() - lockedStart - machine.lockWait;
  }
  // A worktree's own file was dealt with when it was first written; a new,
  // copied or corrupt one is checked now, outside the critical section.
  const replacedOwnFile = previous.state === "read" && previous.meta !== undefined &&
    !isForeign(previous, repository.root);
  if (
    allocation.written && !replacedOwnFile && inside !== undefined && options.ignoreOutput !== false
  ) {
    await keepOutOfGit(git, repository, inside, {
      isNew: previous.state === "missing",
      lockOptions,
      warnings: allocation.warnings,
    });
  }
  const total = performance.now() - start;
  return { ...allocation, timings: { git: gitDone - start, lockWait, locked, total } };
}

/** Where a port file goes: its worktree's root, its path, and whether it is the main worktree. */
interface Target {
  root: string;
  path: string;
  primary: boolean;
}

/**
 * Chooses and writes the slot of one worktree. The caller holds the lock and
 * has read the worktree's own file and the other worktrees' reservations.
 */
async function allocateSlot(
  target: Target,
  config: PortsConfig,
  own: PortFileRead,
  reserved: Pick<ReadonlySet<number>, "has">,
  options: Pick<AllocateOptions, "force" | "probe">,
): Promise<Omit<Allocation, "timings">> {
  const warnings: string[] = [];
  const current = ownMeta(own, target, warnings);
  const choice = await chooseSlot(config, reserved, {
    current: current?.slot,
    force: options.force,
    primary: target.primary,
    probe: options.probe,
  });
  const allocation: Omit<Allocation, "timings"> = {
    slot: choice.slot,
    bundle: renderBundle(config, choice.slot),
    worktree: target.root,
    path: target.path,
    allocatedAt: current?.slot === choice.slot && current.allocated_at
      ? current.allocated_at
      : new Date().toISOString(),
    kept: choice.kept,
    written: false,
    warnings,
  };
  const text = formatPortFile(allocation);
  if (own.state !== "read" || JSON.stringify(own.data, null, 2) + "\n" !== text) {
    writeFileAtomic(target.path, text);
    allocation.written = true;
  }
  return allocation;
}

/** The metadata of the worktree's own file, if the file is really its own. */
function ownMeta(
  own: PortFileRead,
  target: Target,
  warnings: string[],
): PortFileMeta | undefined {
  if (own.state === "unreadable") {
    warnings.push(
      `This worktree's port file "${target.path}" is unusable (${own.reason}); replacing it with a fresh allocation`,
    );
    return undefined;
  }
  if (own.state !== "read" || own.meta === undefined) return undefined;
  if (isForeign(own, target.root)) {
    warnings.push(
      `"${target.path}" was written for the worktree "${own.meta.worktree}" (copied?); allocating a fresh bundle for this one`,
    );
    return undefined;
  }
  return own.meta;
}

// ---------------------------------------------------------------------------
// Keeping the file out of git
// ---------------------------------------------------------------------------

/**
 * Makes git ignore a port file that was just written. One `git ls-files`
 * call answers both questions, with the same ignore rules as
 * `git check-ignore`: `H` marks a tracked file, `?` an untracked one that no
 * rule ignores, and no output an ignored one. A file that did not exist
 * before cannot be tracked, so when the exclude rule is already in place
 * there is nothing to ask.
 */
async function keepOutOfGit(
  git: GitRunner,
  repository: Repository,
  inside: string,
  { isNew, lockOptions, warnings }: {
    isNew: boolean;
    lockOptions: LockOptions;
    warnings: string[];
  },
): Promise<void> {
  if (isNew && readExcludes(repository.commonDir).includes(excludePattern(inside))) return;
  const output = await git.run(
    ["ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard", "--", inside],
    repository.root,
  );
  if (output.startsWith("H ")) {
    warnings.push(
      `"${joinPath(repository.root, inside)}" is tracked by git: every new worktree checks out ` +
        `the same ports. Untrack it with "git rm --cached ${inside}" and commit`,
    );
  } else if (output !== "") {
    using _lock = await lockRepository(repository.commonDir, lockOptions);
    excludeFromGit(repository.commonDir, inside);
  }
}

/**
 * Appends the port file's pattern to `info/exclude` in the common git
 * directory, once (the caller holds the lock): it applies to every worktree
 * and never touches a tracked `.gitignore`.
 */
function excludeFromGit(commonDir: string, inside: string): void {
  const pattern = excludePattern(inside);
  const lines = readExcludes(commonDir);
  if (lines.includes(pattern)) return;
  const dir = joinPath(commonDir, "info");
  Deno.mkdirSync(dir, { recursive: true });
  const separator = lines.length === 0 || lines.at(-1) === "" ? "" : "\n";
  Deno.writeTextFileSync(joinPath(dir, "exclude"), `${separator}${pattern}\n`, { append: true });
}

/** The lines of `info/exclude` in the common git directory; none when it does not exist. */
function readExcludes(commonDir: string): string[] {
  try {
    return Deno.readTextFileSync(joinPath(commonDir, "info/exclude")).split(/\r?\n/);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** The gitignore pattern that matches exactly one path relative to the worktree root. */
function excludePattern(inside: string): string {
  const slashed = IS_WINDOWS ? inside.replaceAll("\\", "/") : inside;
  return "/" + slashed.replace(/[\\*?[\]]/g, "\\$&").replace(/ $/, "\\ ");
}

/** Options for {@linkcode portFilePath}. */
export interface PortFilePathOptions {
  /**
   * An explicit port file, resolved against `cwd` when relative.
   *
   * @default {undefined}
   */
  output?: string;
  /**
   * The directory relative outputs are resolved against.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
}

/**
 * Where a worktree's port file lives.
 *
 * @param root The worktree root.
 * @param options An explicit output path and the directory it is relative to.
 * @returns The absolute path of the port file.
 *
 * @example Usage
 * ```ts
 * import { portFilePath } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(portFilePath("/repo"), "/repo/.worktree-ports.json");
 * assert.equal(portFilePath("/repo", { output: "ports.json", cwd: "/repo/app" }), "/repo/app/ports.json");
 * ```
 */
export function portFilePath(root: string, options: PortFilePathOptions = {}): string {
  if (options.output === undefined) return joinPath(root, PORT_FILE_NAME);
  return resolvePath(options.cwd ?? Deno.cwd(), options.output);
}

/** The port files of every other worktree, at the same place relative to their roots. */
function siblingPortFiles(repository: Repository, inside: string): string[] {
  const files: string[] = [];
  for (const worktree of repository.worktrees) {
    if (worktree === repository.current || worktree.bare || worktree.prunable) continue;
    files.push(joinPath(worktree.path, inside));
  }
  return files;
}

function assertNotDirectory(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
  if (info.isDirectory) {
    throw new Error(`Cannot write "${path}": it is a directory`);
  }
}

/** Options for {@linkcode readBundle}. */
export interface ReadBundleOptions extends PortFilePathOptions {
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
}

/** The current worktree's port file, as {@linkcode readBundle} found it. */
export interface CurrentBundle {
  /** The port file. */
  path: string;
  /** Its top-level values, exactly as stored. */
  data: Record<string, unknown>;
  /** The file names another worktree: it was copied, and its ports are not this worktree's. */
  foreign: boolean;
}

/**
 * Reads the current worktree's port file without changing anything.
 *
 * @param options Where, which output file, and the git runner.
 * @returns The file's values, or `undefined` when there is no file yet.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` or `GIT_FAILED`.
 * @throws {Error} When the file exists but cannot be read or parsed.
 *
 * @example Usage
 * ```ts ignore
 * import { readBundle } from "@org/worktree-ports";
 *
 * const bundle = await readBundle();
 * console.log(bundle?.data.port);
 * ```
 */
export async function readBundle(
  options: ReadBundleOptions = {},
): Promise<CurrentBundle | undefined> {
  const repository = await openRepository({ cwd: options.cwd, git: options.git });
  const path = portFilePath(repository.root, options);
  const file = readPortFile(path);
  if (file.state === "missing") return undefined;
  if (file.state === "unreadable") {
    throw new Error(
      `Cannot read "${path}": ${file.reason} (run "worktree-ports allocate" to replace it)`,
    );
  }
  return {
    path,
    data: file.data,
    foreign: isForeign(file, repository.root),
  };
}

// ---------------------------------------------------------------------------
// The state of every worktree
// ---------------------------------------------------------------------------

/**
 * How a worktree's port file stands: `ok`; `none`, no file; `duplicate`, it
 * shares a port with another worktree; `foreign`, the file names another
 * worktree (it was copied); `unreadable`; `stale`, git reports the worktree's
 * directory as gone (it reserves nothing).
 */
export type WorktreeState = "ok" | "none" | "duplicate" | "foreign" | "unreadable" | "stale";

/** Ports that one worktree shares with another. */
export interface PortConflict {
  /** The other worktree's path. */
  worktree: string;
  /** The ports both reserve. */
  ports: number[];
  /** When the other worktree belongs to another repository: that repository's shared git directory. */
  repository?: string;
}

/** One row of {@linkcode inspectWorktrees}. */
export interface WorktreeStatus {
  /** The worktree's path, as git reports it. */
  path: string;
  /** The branch checked out, if any. */
  branch?: string;
  /** It is the main worktree. */
  primary: boolean;
  /** It is the worktree the inspection ran from. */
  current: boolean;
  /** How its port file stands. */
  state: WorktreeState;
  /** Its port file. */
  file: string;
  /** The slot the file records, if it records one. */
  slot?: number;
  /** Each top-level key of the file whose value is a port. */
  ports: Record<string, number>;
  /** For each key of `ports`, whether something listens on that port now. */
  listening: Record<string, boolean>;
  /** When the file's slot was allocated, if the file says. */
  allocatedAt?: string;
  /** For `duplicate`: every other worktree it shares ports with. */
  conflicts: PortConflict[];
  /** For `foreign`: the worktree the file names; for `unreadable`: why. */
  detail?: string;
  /** The shared git directory of its repository, in {@linkcode inspectMachine}'s results. */
  repository?: string;
}

/** Options for {@linkcode inspectWorktrees}. */
export interface InspectOptions extends PortFilePathOptions {
  /**
   * Probe every port to report whether it is listening now.
   *
   * @default {true}
   */
  listening?: boolean;
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
   * `machine` also looks at other repositories' port files recorded in the
   * machine-wide index; `repository` at this repository's worktrees only.
   *
   * @default {"machine"}
   */
  scope?: Scope;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
  /**
   * Called with each problem that did not stop the inspection, such as an
   * unreadable machine-wide index.
   *
   * @default {undefined}
   */
  onWarning?: (warning: string) => void;
}

/**
 * Reports every worktree of the repository: its port file's state, slot and
 * ports, which of them are listening now, and the ports it shares with
 * others. Changes nothing.
 *
 * @param options Where, which port file, and the injected git and probe.
 * @returns One status per worktree, in git's order (bare repositories are left out).
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` or `GIT_FAILED`.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectWorktrees } from "@org/worktree-ports";
 *
 * for (const status of await inspectWorktrees()) {
 *   console.log(status.path, status.state, status.ports);
 * }
 * ```
 */
export async function inspectWorktrees(
  options: InspectOptions = {},
): Promise<WorktreeStatus[]> {
  const repository = await openRepository({ cwd: options.cwd, git: options.git });
  const statuses = await inspectRepository(repository, options);
  using machine = await openMachineIndex(repository.commonDir, { ...options, readOnly: true });
  for (const warning of machine.warnings) options.onWarning?.(warning);
  markOtherRepositories(statuses, machine);
  return statuses.map(({ reserved: _, ...status }) => status);
}

/**
 * Reports every worktree on the machine: those of the repository around
 * `cwd` (if any) and of every repository with a port file recorded in the
 * machine-wide index, grouped by repository, each status naming its
 * repository. Ports shared across repositories are conflicts, as within one.
 * Changes nothing.
 *
 * @param options Where, the injected git, probe and index, and a warning callback.
 * @returns One status per worktree, the current repository's first.
 * @throws {WorktreePortsError} With code `GIT_FAILED` when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectMachine } from "@org/worktree-ports";
 *
 * for (const status of await inspectMachine()) {
 *   console.log(status.repository, status.path, status.state);
 * }
 * ```
 */
export async function inspectMachine(options: InspectOptions = {}): Promise<WorktreeStatus[]> {
  const statuses = await inspectAll(await openIndexedRepositories(options), options);
  return statuses.map(({ reserved: _, ...status }) => status);
}

/** A status with every port its file reserves, read liberally (URL ports included). */
type InspectedStatus = WorktreeStatus & { reserved: number[] };

async function inspectRepository(
  repository: Repository,
  options: InspectOptions,
): Promise<InspectedStatus[]> {
  const ownPath = portFilePath(repository.root, options);
  const inside = relativeInside(repository.root, ownPath) ?? PORT_FILE_NAME;
  const probe = options.probe ?? denoProbe;
  const worktrees = repository.worktrees.filter((worktree) => !worktree.bare);
  const statuses = await Promise.all(worktrees.map(async (worktree) => {
    const current = worktree === repository.current;
    const status: WorktreeStatus = {
      path: worktree.path,
      branch: worktree.branch,
      primary: worktree === repository.worktrees[0],
      current,
      state: "ok",
      file: current ? ownPath : joinPath(worktree.path, inside),
      ports: {},
      listening: {},
      conflicts: [],
    };
    if (worktree.prunable) return { ...status, state: "stale" as const, reserved: [] };
    const file = readPortFile(status.file);
    if (file.state === "missing") return { ...status, state: "none" as const, reserved: [] };
    if (file.state === "unreadable") {
      return { ...status, state: "unreadable" as const, detail: file.reason, reserved: [] };
    }
    for (const [key, value] of Object.entries(file.data)) {
      if (isPort(value)) status.ports[key] = value;
    }
    status.slot = file.meta?.slot;
    status.allocatedAt = file.meta?.allocated_at || undefined;
    if (file.meta && !(await isSameDirectory(file.meta.worktree, worktree.path))) {
      return { ...status, state: "foreign" as const, detail: file.meta.worktree, reserved: [] };
    }
    return { ...status, reserved: file.ports };
  }));

  // Foreign and unreadable files are reported as such, not as duplicates:
  // a copied file shares its origin's ports by definition.
  const holders = new Map<number, number[]>();
  statuses.forEach((status, index) => {
    for (const port of status.reserved) holders.set(port, [...(holders.get(port) ?? []), index]);
  });
  statuses.forEach((status, index) => {
    const shared = new Map<number, number[]>();
    for (const port of status.reserved) {
      for (const other of holders.get(port)!) {
        if (other !== index) shared.set(other, [...(shared.get(other) ?? []), port]);
      }
    }
    for (const [other, ports] of shared) {
      status.conflicts.push({ worktree: statuses[other].path, ports });
    }
    if (status.conflicts.length > 0) status.state = "duplicate";
  });

  if (options.listening !== false) {
    for (const status of statuses) await probeListening(status, probe);
  }
  return statuses;
}

/** Fills in which of a status's ports something listens on now. */
async function probeListening(status: WorktreeStatus, probe: PortProbe): Promise<void> {
  for (const [key, port] of Object.entries(status.ports)) {
    status.listening[key] = !(await probe.isFree(port));
  }
}

function isPort(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_PORT;
}

/** Compares two spellings of a directory, resolving symbolic links only when they differ. */
async function isSameDirectory(a: string, b: string): Promise<boolean> {
  if (comparablePath(a) === comparablePath(b)) return true;
  const real = async (path: string) => {
    try {
      return comparablePath(await Deno.realPath(path));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      return undefined;
    }
  };
  const [realA, realB] = await Promise.all([real(a), real(b)]);
  return realA !== undefined && realA === realB;
}

// ---------------------------------------------------------------------------
// Repairing
// ---------------------------------------------------------------------------

/** Options for {@linkcode fixWorktrees}. */
export interface FixOptions extends ConfigOverrides, PortFilePathOptions {
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
   * `machine` also looks at other repositories' port files recorded in the
   * machine-wide index; `repository` at this repository's worktrees only.
   *
   * @default {"machine"}
   */
  scope?: Scope;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
}

/** One worktree moved by {@linkcode fixWorktrees} or {@linkcode fixMachine}. */
export interface Move {
  /** The worktree's path, as git reports it. */
  worktree: string;
  /** Why it moved. */
  reason: "duplicate" | "foreign" | "unreadable";
  /** Its ports before (empty for an unreadable file). */
  from: Record<string, number>;
  /** The slot it was given. */
  slot: number;
  /** Its ports now. */
  to: Record<string, number>;
}

/**
 * Repairs what {@linkcode inspectWorktrees} finds, under the same lock as
 * {@linkcode allocate}. Of two worktrees that share ports, the one whose
 * services are not listening moves; when neither or both are, the one
 * allocated later moves. Foreign and unreadable files are reallocated for
 * their own worktree. Running it again changes nothing.
 *
 * A port both files hold cannot tell whose service listens on it (finding
 * the owning process needs `/proc`, which Deno opens only with
 * `--allow-all`), so only the ports a worktree holds alone count as its
 * services listening.
 *
 * @param options Where, config overrides, the lock timeout, and the injected git and probe.
 * @returns Every move made, in git's order of worktrees.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
 *
 * @example Usage
 * ```ts ignore
 * import { fixWorktrees } from "@org/worktree-ports";
 *
 * for (const move of await fixWorktrees()) {
 *   console.log(move.worktree, move.from, "->", move.to);
 * }
 * ```
 */
export async function fixWorktrees(options: FixOptions = {}): Promise<Move[]> {
  const repository = await openRepository({ cwd: options.cwd, git: options.git });
  using _lock = await lockRepository(repository.commonDir, {
    timeoutMs: options.lockTimeoutMs,
    onWait: options.onLockWait,
  });
  using machine = await openMachineIndex(repository.commonDir, {
    scope: options.scope,
    index: options.index,
    lockOptions: { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait },
  });
  // Only the worktrees of a conflicting pair are probed, so the lock is held
  // for reading the files, not for binding every port of every worktree.
  const statuses = await inspectRepository(repository, { ...options, listening: false });
  return await repairStatuses(statuses, machine, options);
}

/**
 * Moves one worktree of each conflicting pair, and every foreign or
 * unreadable file, avoiding the ports the others keep and those that the
 * machine-wide index says other repositories hold. The caller holds the locks.
 */
async function repairStatuses(
  statuses: readonly InspectedStatus[],
  machine: Pick<MachineSession, "holders" | "record">,
  options: FixOptions,
): Promise<Move[]> {
  const probe = options.probe ?? denoProbe;
  const movers = new Map<WorktreeStatus, Move["reason"]>();
  for (const status of statuses) {
    if (status.state === "foreign" || status.state === "unreadable") {
      movers.set(status, status.state);
    }
  }
  for (const status of statuses) {
    for (const conflict of status.conflicts) {
      const other = statuses.find((candidate) => candidate.path === conflict.worktree)!;
      if (movers.has(status) || movers.has(other)) continue;
      // Main worktrees (of two repositories, here) keep slot 0: of such a pair, neither moves.
      if (status.primary && other.primary) continue;
      const mover = status.primary
        ? other
        : other.primary
        ? status
        : await chooseMover(status, other, probe);
      movers.set(mover, "duplicate");
    }
  }

  const reserved = new Set<number>(machine.holders.keys());
  for (const status of statuses) {
    if (!movers.has(status)) { for (const port of status.reserved) reserved.add(port); }
  }
  const moves: Move[] = [];
  for (const [status, reason] of movers) {
    const root = await Deno.realPath(status.path);
    const config = loadConfig(root, options);
    const allocation = await allocateSlot(
      { root, path: status.file, primary: status.primary },
      config,
      { state: "missing" },
      reserved,
      { force: true, probe: options.probe },
    );
    const to = portsForSlot(config, allocation.slot);
    machine.record(status.file, root, status.repository);
    for (const port of Object.values(to)) reserved.add(port);
    moves.push({ worktree: status.path, reason, from: status.ports, slot: allocation.slot, to });
  }
  return moves;
}

/** Of two worktrees that share ports, the one that should move. */
async function chooseMover(
  a: WorktreeStatus,
  b: WorktreeStatus,
  probe: PortProbe,
): Promise<WorktreeStatus> {
  for (const status of [a, b]) {
    if (Object.keys(status.listening).length === 0) await probeListening(status, probe);
  }
  const listensAlone = (status: WorktreeStatus, other: WorktreeStatus) =>
    Object.entries(status.ports).some(([key, port]) =>
      status.listening[key] && !Object.values(other.ports).includes(port)
    );
  const aListens = listensAlone(a, b);
  if (aListens !== listensAlone(b, a)) return aListens ? b : a;
  const [aTime, bTime] = await Promise.all([allocationTime(a), allocationTime(b)]);
  return aTime > bTime ? a : b;
}

/** When a file's slot was allocated: its metadata, or the file's modification time for older files. */
async function allocationTime(status: WorktreeStatus): Promise<number> {
  if (status.allocatedAt !== undefined) return Date.parse(status.allocatedAt) || 0;
  try {
    return (await Deno.stat(status.file)).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Repairs what {@linkcode inspectMachine} finds, by the rules of
 * {@linkcode fixWorktrees}, across every repository in the machine-wide
 * index. The main worktrees of two repositories that share base ports cannot
 * move, and are left for the user. Every repository lock is taken, in order
 * of path, then the machine lock.
 *
 * @param options Where, config overrides (applied to every repository), the lock timeout, and the injected git, probe and index.
 * @returns Every move made.
 * @throws {WorktreePortsError} With code `GIT_FAILED`, `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
 *
 * @example Usage
 * ```ts ignore
 * import { fixMachine } from "@org/worktree-ports";
 *
 * for (const move of await fixMachine()) console.log(move.worktree, "->", move.to);
 * ```
 */
export async function fixMachine(options: FixOptions = {}): Promise<Move[]> {
  const found = await openIndexedRepositories(options);
  const lockOptions = { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait };
  const ordered = found.repositories.map((repository) => realPathOr(repository.commonDir)).sort();
  const locks: RepositoryLock[] = [];
  try {
    for (const commonDir of ordered) locks.push(await lockRepository(commonDir, lockOptions));
    using machine = await openMachineIndex(undefined, { index: options.index, lockOptions });
    const statuses = await inspectAll(found, { ...options, listening: false });
    return await repairStatuses(statuses, machine, options);
  } finally {
    for (const lock of locks.reverse()) lock.release();
  }
}

// ---------------------------------------------------------------------------
// Releasing
// ---------------------------------------------------------------------------

/** Options for {@linkcode releasePorts}. */
export interface ReleaseOptions extends PortFilePathOptions {
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
}

/** What {@linkcode releasePorts} did. */
export interface Release {
  /** The port file. */
  path: string;
  /** The file existed and was deleted. */
  released: boolean;
}

/**
 * Deletes the current worktree's port file under the lock, so that its slot
 * is free for the next allocation. A missing file is not an error.
 *
 * @param options Where, which port file, the lock timeout and the git runner.
 * @returns The path and whether a file was deleted.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED` or `LOCK_TIMEOUT`.
 *
 * @example Usage
 * ```ts ignore
 * import { releasePorts } from "@org/worktree-ports";
 *
 * const { released, path } = await releasePorts();
 * console.log(released ? `deleted ${path}` : "nothing to release");
 * ```
 */
export async function releasePorts(options: ReleaseOptions = {}): Promise<Release> {
  const repository = await openRepository({ cwd: options.cwd, git: options.git });
  const path = portFilePath(repository.root, options);
  assertNotDirectory(path);
  using _lock = await lockRepository(repository.commonDir, { timeoutMs: options.lockTimeoutMs });
  try {
    await Deno.remove(path);
    return { path, released: true };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { path, released: false };
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Environment variables
// ---------------------------------------------------------------------------

/** How {@linkcode formatEnv} writes variables. */
export type EnvFormat = "shell" | "dotenv" | "json";

/**
 * A bundle's values as environment variables: each key upper-cased
 * (`cloud_port` becomes `CLOUD_PORT`). Only keys that are valid variable
 * names with number or string values are kept; the metadata is left out.
 *
 * @param bundle The top-level values of a port file.
 * @returns Variable names and their values as strings.
 *
 * @example Usage
 * ```ts
 * import { bundleEnv } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   bundleEnv({ web_port: 3100, web_url: "http://127.0.0.1:3100", worktree_ports: {} }),
 *   { WEB_PORT: "3100", WEB_URL: "http://127.0.0.1:3100" },
 * );
 * ```
 */
export function bundleEnv(bundle: Record<string, unknown>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(bundle)) {
    if (key === META_KEY || !KEY_PATTERN.test(key)) continue;
    if (typeof value === "number" || typeof value === "string") {
      env[key.toUpperCase()] = String(value);
    }
  }
  return env;
}

/**
 * Writes environment variables for a shell, a dotenv file or JSON.
 *
 * `shell` prints `export NAME='value'` lines that are safe to `eval`: every
 * value is single-quoted, so no value can run a command. `dotenv` prints
 * `NAME=value` lines that `docker compose --env-file` and direnv's `dotenv`
 * read, quoting values that need it. `json` prints one object.
 *
 * @param env Variable names and values.
 * @param format The output format.
 * @returns The text, ending with a newline.
 * @throws {TypeError} When the format is unknown.
 *
 * @example Usage
 * ```ts
 * import { formatEnv } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatEnv({ NAME: "it's" }, "shell"), "export NAME='it'\\''s'\n");
 * assert.equal(formatEnv({ PORT: "3100" }, "dotenv"), "PORT=3100\n");
 * ```
 */
export function formatEnv(env: Record<string, string>, format: EnvFormat): string {
  const entries = Object.entries(env);
  switch (format) {
    case "shell":
      return entries.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join("");
    case "dotenv":
      return entries.map(([name, value]) => `${name}=${dotenvQuote(value)}\n`).join("");
    case "json":
      return JSON.stringify(env, null, 2) + "\n";
    default:
      throw new TypeError(
        `Unknown env format "${format}" (expected "shell", "dotenv" or "json")`,
      );
  }
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Values of plain characters go bare. Others are single-quoted, which both
 * docker compose and direnv take literally, with no interpolation; a value
 * holding a single quote or a newline is double-quoted with escapes instead.
 */
function dotenvQuote(value: string): string {
  if (/^[\w.:/@+,=-]*$/.test(value)) return value;
  if (!/['\n\r]/.test(value)) return `'${value}'`;
  return `"${value.replace(/[\\"$`]/g, "\\$&").replaceAll("\n", "\\n").replaceAll("\r", "\\r")}"`;
}

/** The current worktree's bundle, as {@linkcode loadBundle} found or made it. */
export interface LoadedBundle {
  /** The port file. */
  path: string;
  /** The bundle's top-level values. */
  data: Record<string, unknown>;
  /** The allocation made because the worktree had no port file of its own, if one was made. */
  allocation?: Allocation;
}

/**
 * The current worktree's bundle: its own port file when it has one,
 * otherwise a fresh allocation (a missing, unreadable or copied file).
 *
 * @param options The same options as {@linkcode allocate}, used when allocating.
 * @returns The bundle's values, and the allocation if one was made.
 * @throws {WorktreePortsError} As {@linkcode allocate} does, when it allocates.
 *
 * @example Usage
 * ```ts ignore
 * import { bundleEnv, loadBundle } from "@org/worktree-ports";
 *
 * const { data } = await loadBundle();
 * console.log(bundleEnv(data));
 * ```
 */
export async function loadBundle(options: AllocateOptions = {}): Promise<LoadedBundle> {
  const start = performance.now();
  const git = options.git ?? denoGit;
  const repository = await openRepository({ cwd: options.cwd, git });
  const path = portFilePath(repository.root, options);
  const file = readPortFile(path);
  if (file.state === "read" && !isForeign(file, repository.root)) {
    return { path, data: file.data };
  }
  const allocation = await allocateIn(repository, options, git, start);
  return { path, data: portFileData(allocation), allocation };
}

// ---------------------------------------------------------------------------
// Running a command with the ports
// ---------------------------------------------------------------------------

/** Signals passed on to the child while it runs (Windows delivers only these two). */
const FORWARDED_SIGNALS: readonly Deno.Signal[] = IS_WINDOWS
  ? ["SIGINT", "SIGBREAK"]
  : ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

/** Signals a terminal raises from the keyboard, for every process in its foreground group. */
const KEYBOARD_SIGNALS: ReadonlySet<Deno.Signal> = new Set(["SIGINT", "SIGQUIT", "SIGBREAK"]);

/** How a command run by {@linkcode runWithPorts} ended. */
export interface RunResult {
  /** The exit code; for a child killed by a signal, 128 plus the signal's number. */
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
 * passing them on too would deliver them twice.
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
  // Ctrl-C on a terminal reaches the whole foreground process group, the
  // command included; a second copy makes many servers skip their graceful
  // shutdown. Such a signal is still listened for, so that we outlive it.
  const fromKeyboard = Deno.stdin.isTerminal();
  const forwarders = FORWARDED_SIGNALS.map((signal) => {
    const forward = () => {
      if (fromKeyboard && KEYBOARD_SIGNALS.has(signal)) return;
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
    const code = status.signal === null ? status.code : 128 + (SIGNAL_NUMBERS[status.signal] ?? 0);
    return { code, signal: status.signal, allocation: bundle.allocation };
  } finally {
    for (const [signal, forward] of forwarders) Deno.removeSignalListener(signal, forward);
  }
}

/** The POSIX signal numbers that are the same on Linux and macOS. */
const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

function isPlainObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// Paths are joined by hand: importing node:path would load Deno's Node
// compatibility layer, which costs every run several megabytes of memory.

function comparablePath(path: string): string {
  return IS_WINDOWS ? path.replaceAll("\\", "/").toLowerCase() : path;
}

function isAbsolutePath(path: string): boolean {
  return path.startsWith("/") || (IS_WINDOWS && /^([A-Za-z]:)?[\\/]/.test(path));
}

function joinPath(dir: string, name: string): string {
  return /[\\/]$/.test(dir) ? dir + name : `${dir}/${name}`;
}

function resolvePath(base: string, path: string): string {
  const joined = isAbsolutePath(path) ? path : joinPath(base, path);
  const parts: string[] = [];
  for (const part of joined.split(/[\\/]+/)) {
    if (part === "..") {
      if (parts.length > 1) parts.pop();
    } else if (part !== "." && (part !== "" || parts.length === 0)) {
      parts.push(part);
    }
  }
  return parts.join("/") || "/";
}

/** `path` relative to `dir` when it lies inside it, else `undefined`. */
function relativeInside(dir: string, path: string): string | undefined {
  const prefix = comparablePath(dir).replace(/\/+$/, "") + "/";
  return comparablePath(path).startsWith(prefix) ? path.slice(prefix.length) : undefined;
}
