// The proxy's routes: a host name for every port of every worktree whose port
// file the machine-wide index records, read as allocate reads port files.

import { loadConfig } from "./config.ts";
import { fileInfo, readRegularTextFile, realPathOr } from "./files.ts";
import { gitDirsOf } from "./git_dirs.ts";
import type { MachineIndex } from "./index_home.ts";
import { type IndexEntry, readMachineIndex } from "./machine_index.ts";
import { isPort } from "./names.ts";
import { comparablePath, joinPath } from "./paths.ts";
import { readPortFile } from "./port_file.ts";
import { slugOf } from "./slug.ts";
import { hostName, repositoryLabel, serviceLabel, worktreeLabel } from "./proxy_names.ts";

/** Where one host name leads. */
export interface Route {
  /** The host name: `web.feature-login.myapp.localhost`. */
  host: string;
  /** The port key. */
  key: string;
  /** The port. */
  port: number;
  /** The worktree's root. */
  worktree: string;
  /** The worktree's label in the name. */
  worktreeLabel: string;
  /** The repository's common git directory. */
  repository: string;
  /** The repository's label in the name. */
  repositoryLabel: string;
}

/** Every route, by host name, and what was left out. */
export interface RouteTable {
  /** Each host name's route. */
  routes: Map<string, Route>;
  /** Why some worktrees or the index itself gave no routes. */
  notes: string[];
}

/** A worktree's port file, read and judged, before labels are settled. */
interface Found {
  entry: IndexEntry;
  repository: string;
  ports: [string, number][];
  branch?: string;
  slot: number;
  name?: string;
}

/**
 * Reads the routes: every port file the machine-wide index records whose
 * worktree is there and whose file is its own (not stale, absent or copied),
 * each of its ports (or those its config's `hosts` names) under
 * `<service>.<worktree>.<repo>.localhost`. Two repositories with one name
 * both get a short suffix made from their git directory's path; two
 * worktrees of one repository with one label, their slot.
 *
 * @param index Where the machine-wide index lives.
 * @returns The routes, and notes on what gave none.
 */
export function readRoutes(index: MachineIndex): RouteTable {
  const notes: string[] = [];
  const dir = index.dir();
  if (dir === undefined) return { routes: new Map(), notes: ["no machine-wide index folder"] };
  let entries: IndexEntry[];
  try {
    entries = readMachineIndex(dir).entries;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return { routes: new Map(), notes: [(error as Error).message] };
  }
  const found: Found[] = [];
  for (const entry of entries) {
    if (!(fileInfo(entry.worktree)?.isDirectory ?? false)) continue;
    const file = readPortFile(entry.path);
    if (file.state !== "read" || file.meta === undefined) continue;
    // A copied file names another worktree: it is not this one's.
    if (
      comparablePath(realPathOr(file.meta.worktree)) !== comparablePath(realPathOr(entry.worktree))
    ) {
      continue;
    }
    let name: string | undefined;
    let hosts: string[] | undefined;
    let scope: string | undefined;
    try {
      ({ name, hosts, scope } = loadConfig(entry.worktree));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      notes.push(`${entry.worktree}: its config cannot be read, so all its ports are routed`);
    }
    // A repository that keeps out of the index now is not routed, whatever it left there.
    if (scope === "repository") continue;
    const ports = Object.entries(file.data).filter((pair): pair is [string, number] =>
      isPort(pair[1]) && (hosts === undefined || hosts.includes(pair[0]))
    );
    found.push({
      entry,
      repository: realPathOr(entry.repository),
      ports,
      branch: branchOf(entry.worktree),
      slot: file.meta.slot,
      name,
    });
  }
  // Labels: a repository's, with a suffix where two share one.
  const repositoryLabels = new Map<string, string>();
  for (const item of found) {
    if (!repositoryLabels.has(item.repository)) {
      repositoryLabels.set(item.repository, repositoryLabel(item.repository, item.name));
    }
  }
  const counts = new Map<string, number>();
  for (const label of repositoryLabels.values()) counts.set(label, (counts.get(label) ?? 0) + 1);
  for (const [repository, label] of repositoryLabels) {
    if (counts.get(label)! > 1) {
      repositoryLabels.set(repository, withSuffix(label, shortHash(repository)));
    }
  }
  const routes = new Map<string, Route>();
  // In order of slot, so that the worktree that keeps a contested label is the same each time.
  found.sort((a, b) => a.slot - b.slot);
  const takenLabels = new Set<string>();
  for (const item of found) {
    const repoLabel = repositoryLabels.get(item.repository)!;
    let label = worktreeLabel(item.branch, item.entry.worktree);
    // Another worktree's label already (a branch "feature/a" beside "feature-a"): its slot after it.
    if (takenLabels.has(`${repoLabel}/${label}`)) label = withSuffix(label, String(item.slot));
    while (takenLabels.has(`${repoLabel}/${label}`)) label = withSuffix(label, "x");
    takenLabels.add(`${repoLabel}/${label}`);
    // A key that is its label already ("web") keeps it before one that shortens to it ("web_port").
    const exact = (key: string) => serviceLabel(key) === slugOf(key.replaceAll("_", "-"));
    const ports = item.ports.toSorted(([a], [b]) => Number(exact(b)) - Number(exact(a)));
    for (const [portKey, port] of ports) {
      let host = hostName(serviceLabel(portKey), label, repoLabel);
      // Two keys of one worktree that make one label ("web" beside "web_port"): the key in full.
      if (routes.has(host)) host = hostName(slugOf(portKey.replaceAll("_", "-")), label, repoLabel);
      if (routes.has(host)) continue;
      routes.set(host, {
        host,
        key: portKey,
        port,
        worktree: item.entry.worktree,
        worktreeLabel: label,
        repository: item.repository,
        repositoryLabel: repoLabel,
      });
    }
  }
  return { routes, notes };
}

/** The branch a worktree has checked out, from its HEAD; none when detached. */
function branchOf(worktree: string): string | undefined {
  try {
    const head = readRegularTextFile(joinPath(gitDirsOf(worktree).gitDir, "HEAD"));
    return /^ref: refs\/heads\/(.+)$/m.exec(head)?.[1];
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return undefined;
  }
}

/** A label with a suffix, shortened so that it stays within 63 characters. */
function withSuffix(label: string, suffix: string): string {
  return `${label.slice(0, 62 - suffix.length).replace(/-+$/, "")}-${suffix}`;
}

/** Four hex digits from a path, the same on every run. */
function shortHash(text: string): string {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return (hash & 0xffff).toString(16).padStart(4, "0");
}
