// Which ports the other worktrees hold: every other worktree, of this
// repository or of any other, read one way, with the same fallbacks.

import type { Env } from "./environment.ts";
import { pathExists } from "./files.ts";
import { adminEntryOf, worktreeExists } from "./git_dirs.ts";
import { readKeptCopy } from "./kept_copy.ts";
import { PORT_FILE_NAME } from "./names.ts";
import { joinPath } from "./paths.ts";
import { type PortFileRead, readPortFile } from "./port_file.ts";
import { currentListing, relist, type Repository } from "./repository.ts";

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
  const holders = new Map<number, string>();
  const warnings: string[] = [];
  for (const path of paths) {
    const file = readPortFile(path);
    const ports = file.state === "missing" ? [] : unreadableFallback(path, file, [], warnings);
    for (const port of ports) {
      if (!holders.has(port)) holders.set(port, path);
    }
  }
  return { holders, warnings };
}

/** Another worktree, as whoever reads its ports knows it. */
export interface OtherWorktree {
  /** Its port file, where it should be. */
  file: string;
  /** Its root, as last known. */
  worktree: string;
  /** Its repository's common git directory, when known. */
  commonDir?: string;
  /**
   * Git keeps it while its directory is away (`git worktree lock`). Worked out
   * from its admin entry when not given.
   */
  locked?: boolean;
  /** The ports the machine-wide index last recorded for its file. */
  recorded?: readonly number[];
}

/**
 * What another worktree holds: `file`, the ports of its file; `kept`, the
 * ports it held when last written, for a file that cannot be read or a locked
 * worktree whose directory is away; `none`, nothing, for a worktree that is
 * there without a file; `gone`, nothing, for a path that is no worktree now
 * (removed, or moved: its repository knows where).
 */
export type Holding =
  | { state: "file"; ports: number[]; read: Extract<PortFileRead, { state: "read" }> }
  | { state: "kept"; ports: number[]; unreadable?: string; hidden?: boolean }
  | { state: "none" | "gone"; ports: readonly [] };

/**
 * What another worktree holds, read the same way whatever its repository. A
 * file that cannot be read keeps the ports its text still names, else those
 * of the copy kept in git's directory, else those the index last recorded;
 * a file we may not read is never taken for a file that is gone. A locked
 * worktree whose directory is away holds what it held when last written.
 */
export function holdingOf(other: OtherWorktree, warnings: string[]): Holding {
  const file = readPortFile(other.file);
  if (file.state === "read") return { state: "file", ports: file.ports, read: file };
  if (file.state === "unreadable") {
    const kept = other.commonDir === undefined
      ? undefined
      : () => readKeptCopy(other.commonDir!, other.worktree);
    return {
      state: "kept",
      ports: unreadableFallback(other.file, file, other.recorded ?? [], warnings, kept),
      unreadable: file.reason,
      hidden: file.hidden,
    };
  }
  // A directory with its .git is the worktree, without a file; one without
  // it is no worktree there any more, unless git keeps it locked.
  if (worktreeExists(other.worktree)) return { state: "none", ports: [] };
  if (other.commonDir !== undefined && isLocked(other)) {
    const copy = readKeptCopy(other.commonDir, other.worktree);
    const ports = copy.state === "read" && copy.ports.length > 0
      ? copy.ports
      : [...other.recorded ?? []];
    return { state: "kept", ports };
  }
  return { state: "gone", ports: [] };
}

/** Git keeps the worktree locked: its admin entry holds a `locked` file. */
function isLocked(other: OtherWorktree): boolean {
  if (other.locked !== undefined) return other.locked;
  const admin = adminEntryOf(other.commonDir!, other.worktree);
  return admin !== undefined && pathExists(joinPath(admin.dir, "locked"));
}

/**
 * The ports an unreadable file still reserves, named in a warning with the
 * fix: those its text names, else those of `kept` (the copy in git's
 * directory), else `recorded` (the index's).
 */
function unreadableFallback(
  path: string,
  file: Extract<PortFileRead, { state: "unreadable" | "read" }>,
  recorded: readonly number[],
  warnings: string[],
  kept?: () => PortFileRead,
): number[] {
  if (file.state === "read") return file.ports;
  let ports = file.ports;
  let source = ports.length > 0 ? `reserving the ports its text names (${ports.join(", ")})` : "";
  if (ports.length === 0) {
    const copy = kept?.();
    if (copy?.state === "read" && copy.ports.length > 0) {
      ports = copy.ports;
    } else if (recorded.length > 0) {
      ports = [...recorded];
    }
    if (ports.length > 0) {
      source = `reserving the ports it held when last written (${ports.join(", ")})`;
    }
  }
  const fix = file.reason === "permission denied"
    ? `make it readable ("chmod u+r ${path}")`
    : file.reason === "it is a directory"
    ? `remove the directory, then run "worktree-ports allocate" in its worktree`
    : `run "worktree-ports allocate" in its worktree to rewrite it`;
  warnings.push(
    `Port file "${path}" is unreadable (${file.reason}); ` +
      `${source || "its ports are not reserved"}; to fix, ${fix}`,
  );
  return ports;
}

/** This repository's reservations and other repositories', as one set for {@linkcode chooseSlot}. */
export function withOtherRepositories(
  own: ReadonlyMap<number, string>,
  others: ReadonlyMap<number, string>,
): Pick<ReadonlySet<number>, "has"> {
  if (others.size === 0) return own;
  return { has: (port: number) => own.has(port) || others.has(port) };
}

/** A port file of this repository and its worktree, with the ports it holds, to record in the index. */
export type HeldFile = readonly [file: string, worktree: string, ports: readonly number[]];

/** What the scan of the other worktrees found. */
export interface Scan extends ReservedPorts {
  /** A listed worktree's directory is gone: the listing is out of date. */
  gone: boolean;
  /** Every other worktree's file that holds ports, to record in the index. */
  files: HeldFile[];
}

/**
 * Reads, under the lock, the ports every other worktree reserves. The
 * listing is made current first (see {@linkcode currentListing}); a listed
 * worktree whose directory has gone since means it was moved or replaced, and
 * git is asked again once.
 */
export async function scanCurrentReservations(
  repository: Repository,
  env: Pick<Env, "git">,
  path: string,
  inside: string | undefined,
  options: ScanOptions,
): Promise<Scan & { repository: Repository }> {
  let listed = await currentListing(repository, env);
  let scan = scanReservations(listed, path, inside, options);
  if (scan.gone) {
    listed = await relist(repository, env);
    scan = scanReservations(listed, path, inside, options);
  }
  return { ...scan, repository: listed };
}

/** Options of {@linkcode scanReservations}. */
export interface ScanOptions {
  /** Count the output file's own ports as reserved too. */
  excludeOutput?: boolean;
  /** The ports the machine-wide index last recorded for a file, if it did. */
  recorded?: (file: string) => readonly number[] | undefined;
}

/** The ports reserved by the other worktrees' files, and whether a listed directory is gone. */
export function scanReservations(
  repository: Repository,
  path: string,
  inside: string | undefined,
  options: ScanOptions,
): Scan {
  const holders = new Map<number, string>();
  const warnings: string[] = [];
  const files: HeldFile[] = [];
  let gone = false;
  const reserve = (file: string, ports: readonly number[]) => {
    for (const port of ports) if (!holders.has(port)) holders.set(port, file);
  };
  for (const worktree of repository.worktrees) {
    if (worktree === repository.current || worktree.bare || worktree.prunable) continue;
    const file = joinPath(worktree.path, inside ?? PORT_FILE_NAME);
    const holding = holdingOf({
      file,
      worktree: worktree.path,
      commonDir: repository.commonDir,
      locked: worktree.locked,
      recorded: options.recorded?.(file),
    }, warnings);
    if (holding.state === "gone") gone = true;
    reserve(file, holding.ports);
    if (holding.state === "file" || (holding.state === "kept" && pathExists(file))) {
      files.push([file, worktree.path, holding.ports]);
    }
  }
  // An output outside every worktree (a preview) must not get a bundle any
  // worktree holds, this one's own included.
  const own = (file: string) => {
    const read = readPortFile(file);
    if (read.state !== "missing") {
      reserve(file, unreadableFallback(file, read, options.recorded?.(file) ?? [], warnings));
    }
  };
  if (inside === undefined) own(joinPath(repository.root, PORT_FILE_NAME));
  if (options.excludeOutput === false) own(path);
  return { holders, warnings, gone, files };
}
