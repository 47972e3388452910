// The port file: reading it whatever wrote it, formatting it, and judging whose it is
// and whether the config has changed under it.

import { renderBundle } from "./bundle.ts";
import { loadConfig, type LoadConfigOptions, type PortsConfig } from "./config.ts";
import { quoted, WorktreePortsError } from "./errors.ts";
import {
  FileProblem,
  fileProblemOf,
  isPlainObject,
  needsAllAccess,
  nestingExceeds,
  readRegularTextFile,
  realPathOf,
  realPathOfNearest,
} from "./files.ts";
import {
  CONFIG_FILE_NAME,
  isPort,
  MAX_NESTING,
  MAX_PORT,
  META_KEY,
  PORT_FILE_NAME,
  PORT_FILE_VERSION,
} from "./names.ts";
import { baseName, comparablePath, joinPath, parentOf, resolvePath, slashedPath } from "./paths.ts";
import type { Repository } from "./repository.ts";
import type { Worktree } from "./worktree_list.ts";

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
  /** The env files written with it, relative to the worktree root; absent when none are. */
  env_files?: string[];
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
    /** Why, e.g. "not valid JSON" or "it is a FIFO (named pipe), not a file". */
    reason: string;
    /** It is no regular file at all: a directory, FIFO, socket or device. */
    irregular?: boolean;
    /**
     * Deno may not open it with this run's permissions: it opens some paths
     * (`/proc`, `/dev/shm`) only with `--allow-all`. It may be there or not.
     */
    hidden?: boolean;
    /** The ports recovered from its text: every `"key": integer` pair that is a port. */
    ports: number[];
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
    /** Each top-level number that is not a port, e.g. `"web" is too large to be a number`. */
    invalid?: string[];
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
    text = readRegularTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { state: "missing" };
    // A file Deno opens only with --allow-all (under /proc or /dev/shm) may
    // be a port file all the same: one this run cannot read, not one gone.
    if (needsAllAccess(error)) {
      return {
        state: "unreadable",
        reason: "Deno reads it only with --allow-all",
        ports: [],
        hidden: true,
      };
    }
    if (error instanceof Deno.errors.NotCapable) throw error;
    const irregular = error instanceof FileProblem && error.irregular;
    return { state: "unreadable", reason: fileProblemOf(error), ports: [], irregular };
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return { state: "unreadable", reason: "not valid JSON", ports: recoverPorts(text) };
  }
  if (!isPlainObject(data)) {
    return { state: "unreadable", reason: "not a JSON object", ports: recoverPorts(text) };
  }
  if (nestingExceeds(text, data, MAX_NESTING)) {
    return {
      state: "unreadable",
      reason: `nested more than ${MAX_NESTING} levels deep`,
      ports: recoverPorts(text),
    };
  }
  const record = data as Record<string, unknown>;
  const notPorts = Object.entries(record).filter(([, value]) =>
    typeof value === "number" && !isPort(value)
  ).map(([key, value]) => `${quoted(key)} is ${describeNumber(value as number)}`);
  return {
    state: "read",
    data: record,
    ports: reservedPortsOf(record),
    meta: metaOf(record[META_KEY]),
    ...(notPorts.length > 0 ? { invalid: notPorts } : {}),
  };
}

/**
 * The ports named in text that is not valid JSON, read liberally: every
 * `"key": integer` pair with an integer from 1 to 65535, except the
 * metadata's `slot` and `version`. A damaged file still holds its worktree's
 * ports.
 */
function recoverPorts(text: string): number[] {
  const ports = new Set<number>();
  const pairs = text.matchAll(/"((?:[^"\\\n]|\\.)*)"\s*:\s*(\d{1,5})(?![\d.eE])/g);
  for (const [, key, digits] of pairs) {
    const port = Number(digits);
    // The metadata's own numbers are not ports.
    if (isPort(port) && key !== "slot" && key !== "version") ports.add(port);
  }
  return [...ports];
}

/** A number for a message: JSON turns `1e400` into `Infinity`, which is too large. */
function describeNumber(value: number): string {
  if (!Number.isFinite(value)) return "too large to be a number";
  return Number.isInteger(value)
    ? `${value}, not a port (1 to ${MAX_PORT})`
    : `${value}, not a port`;
}

function metaOf(value: unknown): PortFileMeta | undefined {
  if (!isPlainObject(value)) return undefined;
  const meta = value as Record<string, unknown>;
  if (!Number.isInteger(meta.slot) || typeof meta.worktree !== "string") {
    return undefined;
  }
  const envFiles = Array.isArray(meta.env_files)
    ? meta.env_files.filter((name): name is string => typeof name === "string")
    : [];
  return {
    version: Number.isInteger(meta.version) ? meta.version as number : PORT_FILE_VERSION,
    slot: meta.slot as number,
    worktree: meta.worktree,
    allocated_at: typeof meta.allocated_at === "string" ? meta.allocated_at : "",
    ...(envFiles.length > 0 ? { env_files: envFiles } : {}),
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

/** What a port file records: a bundle, and the metadata of its slot. */
export interface PortFileContents {
  /** The slot: 0 for the main worktree, 1 or more for linked ones. */
  slot: number;
  /** The ports and filled-in templates, as written at the top level of the file. */
  bundle: Record<string, number | string>;
  /** Real path of the worktree root. */
  worktree: string;
  /** When the worktree first got this slot (ISO 8601). */
  allocatedAt: string;
  /**
   * The env files written with the port file, relative to the worktree root,
   * as the config's `env_file` names them; recorded so that one the config
   * stops naming is removed.
   */
  envFiles?: string[];
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
export function formatPortFile(allocation: PortFileContents): string {
  return JSON.stringify(portFileData(allocation), null, 2) + "\n";
}

/** The top-level values of a port file: the bundle, then the metadata. */
export function portFileData(allocation: PortFileContents): Record<string, unknown> {
  const meta: PortFileMeta = {
    version: PORT_FILE_VERSION,
    slot: allocation.slot,
    worktree: allocation.worktree,
    allocated_at: allocation.allocatedAt,
    ...(allocation.envFiles?.length ? { env_files: allocation.envFiles } : {}),
  };
  return { ...allocation.bundle, [META_KEY]: meta };
}

/**
 * The file was written for another worktree (it was copied); `root` is this
 * worktree's real path. Given the repository, a file whose recorded worktree
 * is no live worktree of it is not foreign: it moved with its worktree.
 */
export function isForeign(
  file: PortFileRead,
  root: string,
  repository?: Pick<Repository, "current" | "worktrees">,
): boolean {
  return file.state === "read" && file.meta !== undefined && file.meta.worktree !== root &&
    (repository === undefined ||
      namesOtherWorktree(file.meta.worktree, repository.current, repository.worktrees));
}

/**
 * Whether a port file's recorded worktree is another live worktree of the
 * repository, from which the file was copied. A recorded path that is no
 * worktree at all was left behind by `git worktree move`: the file moved with
 * its worktree and is still its own, to be rewritten with the new path.
 */
export function namesOtherWorktree(
  recorded: string,
  self: Worktree,
  worktrees: readonly Worktree[],
): boolean {
  const live = worktrees.filter((worktree) =>
    worktree !== self && !worktree.bare && !worktree.prunable
  );
  const target = comparablePath(recorded);
  if (live.some((worktree) => comparablePath(worktree.path) === target)) return true;
  // Git may spell a path through a symbolic link; only a path that exists can be one.
  const real = (path: string) => {
    const resolved = realPathOf(path);
    return resolved === undefined ? undefined : comparablePath(resolved);
  };
  const recordedReal = real(recorded);
  return recordedReal !== undefined &&
    live.some((worktree) => real(worktree.path) === recordedReal);
}

/**
 * What a worktree's config renders for a slot now, or `undefined` when the
 * config cannot be loaded: that error is for whoever allocates there.
 */
export function expectedBundle(
  worktree: Pick<Worktree, "path" | "branch">,
  slot: number,
  options: LoadConfigOptions,
): Record<string, number | string> | undefined {
  try {
    const config = judgingConfig(worktree.path, options);
    return config && renderBundle(config, slot, { worktree });
  } catch (error) {
    if (error instanceof WorktreePortsError) return undefined;
    throw error;
  }
}

/**
 * The config a port file is judged against: none when the worktree has no
 * config file and no overrides are given. A file allocated with overrides
 * alone (`--port` flags) is not outdated just because a later call gives none.
 */
export function judgingConfig(root: string, options: LoadConfigOptions): PortsConfig | undefined {
  const overridden = options.config !== undefined || options.ports !== undefined ||
    options.stride !== undefined || options.slots !== undefined;
  if (!overridden) {
    try {
      Deno.statSync(joinPath(root, CONFIG_FILE_NAME));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
  return loadConfig(root, options);
}

/** {@linkcode isOutdated} against {@linkcode judgingConfig}; config errors are thrown. */
export function isOutdatedFor(
  repository: Repository,
  data: Record<string, unknown>,
  slot: number,
  options: LoadConfigOptions,
): boolean {
  const config = judgingConfig(repository.root, options);
  return config !== undefined &&
    isOutdated(data, renderBundle(config, slot, { worktree: repository.current }));
}

/** A file's keys or values differ from the bundle its config renders now (order aside). */
export function isOutdated(
  data: Record<string, unknown>,
  bundle: Record<string, number | string> | undefined,
): boolean {
  if (bundle === undefined) return false;
  const keys = Object.keys(data).filter((key) => key !== META_KEY);
  return keys.length !== Object.keys(bundle).length ||
    keys.some((key) => !Object.hasOwn(bundle, key) || bundle[key] !== data[key]);
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

/**
 * {@linkcode portFilePath} with its directory spelled by its real path, as
 * every judgement of the file needs it: an output reached through a symlinked
 * folder (macOS's `/tmp` and `/var/folders` are such links) lies in the
 * worktree all the same. The file's own name is kept, so that a port file
 * that is itself a link is replaced, never followed.
 */
export function realPortFilePath(root: string, options: PortFilePathOptions = {}): string {
  const path = portFilePath(root, options);
  if (options.output === undefined) return path;
  const dir = parentOf(path);
  const realDir = realPathOfNearest(dir);
  return realDir === dir ? path : slashedPath(joinPath(realDir, baseName(path)));
}
