// Which ports the other worktrees of a repository hold.

import type { Env } from "./environment.ts";
import { worktreeExists } from "./git_dirs.ts";
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
    const ports = reservedPortsOfPath(path, readPortFile(path), warnings);
    for (const port of ports) {
      if (!holders.has(port)) holders.set(port, path);
    }
  }
  return { holders, warnings };
}

/**
 * The ports another worktree's file reserves. A damaged file keeps the ports
 * its text still names; one that cannot be read at all reserves what
 * `fallback` knows of it (the copy kept in git's directory), and is named in
 * a warning either way, with the fix.
 */
export function reservedPortsOfPath(
  path: string,
  file: PortFileRead,
  warnings: string[],
  fallback?: () => PortFileRead,
): number[] {
  if (file.state === "read") return file.ports;
  if (file.state === "missing") return [];
  let ports = file.ports;
  let source = ports.length > 0 ? `reserving the ports its text names (${ports.join(", ")})` : "";
  if (ports.length === 0) {
    const kept = fallback?.();
    if (kept?.state === "read" && kept.ports.length > 0) {
      ports = kept.ports;
      source = `reserving the ports it held when last written (${ports.join(", ")})`;
    }
  }
  const fix = file.reason === "permission denied"
    ? `make it readable ("chmod u+r ${path}")`
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
  options: { excludeOutput?: boolean },
): Promise<ReservedPorts & { repository: Repository; files: [string, string][] }> {
  let listed = await currentListing(repository, env);
  let scan = scanReservations(listed, path, inside, options);
  if (scan.gone) {
    listed = await relist(repository, env);
    scan = scanReservations(listed, path, inside, options);
  }
  return { ...scan, repository: listed };
}

/** The ports reserved by the other worktrees' files, and whether a listed directory is gone. */
export function scanReservations(
  repository: Repository,
  path: string,
  inside: string | undefined,
  options: { excludeOutput?: boolean },
): ReservedPorts & { gone: boolean; files: [string, string][] } {
  const holders = new Map<number, string>();
  const warnings: string[] = [];
  const files: [string, string][] = [];
  let gone = false;
  const reserve = (file: string, ports: readonly number[]) => {
    for (const port of ports) if (!holders.has(port)) holders.set(port, file);
  };
  for (const worktree of repository.worktrees) {
    if (worktree === repository.current || worktree.bare || worktree.prunable) continue;
    const file = joinPath(worktree.path, inside ?? PORT_FILE_NAME);
    const read = readPortFile(file);
    const kept = () => readKeptCopy(repository.commonDir, worktree.path);
    if (read.state === "missing") {
      // A directory without its .git is not the worktree any more: moved,
      // with a new directory made at the old place.
      if (worktreeExists(worktree.path)) continue;
      // Git keeps a locked worktree whose directory is away (removable media):
      // it still holds the ports it had when last written.
      if (worktree.locked) {
        const copy = kept();
        if (copy.state === "read") reserve(file, copy.ports);
      } else {
        gone = true;
      }
      continue;
    }
    reserve(file, reservedPortsOfPath(file, read, warnings, kept));
    files.push([file, worktree.path]);
  }
  // An output outside every worktree (a preview) must not get a bundle any
  // worktree holds, this one's own included.
  if (inside === undefined) {
    const usual = joinPath(repository.root, PORT_FILE_NAME);
    reserve(usual, reservedPortsOfPath(usual, readPortFile(usual), warnings));
  }
  if (options.excludeOutput === false) {
    reserve(path, reservedPortsOfPath(path, readPortFile(path), warnings));
  }
  return { holders, warnings, gone, files };
}
