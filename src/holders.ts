// Who holds a worktree's ports: the system's listeners, each placed in the
// worktree its working directory lies in.

import { realPathOr } from "./files.ts";
import type { Container, Listener, ListenerLookup, SystemAnswer } from "./listeners.ts";
import { baseName, comparablePath, IS_WINDOWS, relativeInside } from "./paths.ts";

/** A process, or a container, listening on a port. */
export interface PortHolder {
  /** The process's id, when the system tells. */
  pid?: number;
  /**
   * Its command line; its short name alone when command lines were not asked
   * for, or the system gives no more.
   */
  command?: string;
  /** Its working directory, when the system tells. */
  cwd?: string;
  /**
   * The worktree its working directory (for a compose container, the
   * directory compose ran in) lies in; `null` when outside every worktree
   * known; left out when that is unknown.
   */
  worktree?: string | null;
  /** For a container's published port: the container's name. */
  container?: string;
  /** For a container started by compose: its project. */
  composeProject?: string;
  /** What the system could not tell, and why. */
  unknown?: string;
}

/** Who holds each port asked about, and what could not be asked. */
export interface HoldersFound {
  /** The holders of each port something was found listening on. */
  holders: Map<number, PortHolder[]>;
  /** Why the system could not be asked at all, if it could not. */
  unknown?: string;
}

/** Every listener the system shows, with where its process runs. */
export interface ListenerScan {
  /** Every process listening on a TCP port, per port. */
  listeners: Listener[];
  /** The working directory of each of those processes, where the system tells. */
  workingDirectories: Map<number, string>;
  /** The command line of each of those processes, when asked for and the system tells. */
  commandLines: Map<number, string>;
}

/** A scan of the system's listeners, started before the ports of interest are known. */
export interface StartedScan {
  /**
   * Settles once the listeners are listed. Awaiting it before a stretch of
   * work that never yields (probing every port) lets the description of their
   * processes run during that work instead of after it.
   */
  listed: Promise<unknown>;
  /** Every listener, with where its process runs. */
  answer: Promise<SystemAnswer<ListenerScan>>;
}

/**
 * Asks the system for every listener and where each listening process runs
 * (and, with `commandLines`, what it runs), all of them: it is started before
 * the ports of interest are known, so that it runs while git runs and the
 * files are read. Few processes listen.
 */
export function startScan(
  lookup: Pick<ListenerLookup, "listeners" | "workingDirectories" | "commandLines">,
  commandLines = true,
): StartedScan {
  const listed = lookup.listeners();
  const answer = listed.then(async (answer): Promise<SystemAnswer<ListenerScan>> => {
    if ("unknown" in answer) return answer;
    const pids = [...new Set(answer.found.map((listener) => listener.pid))];
    const none = Promise.resolve(new Map<number, string>());
    const [workingDirectories, commands] = await Promise.all([
      pids.length === 0 ? none : lookup.workingDirectories(pids),
      pids.length === 0 || !commandLines ? none : lookup.commandLines(pids),
    ]);
    return { found: { listeners: answer.found, workingDirectories, commandLines: commands } };
  });
  // Nothing may be left to reject unheard when the work around it fails first.
  listed.catch(() => {});
  answer.catch(() => {});
  return { listed, answer };
}

/** Programs that stand for a container's published port, on Linux, rootless docker and macOS. */
const CONTAINER_PROXIES = ["docker-proxy", "rootlessport", "com.docker.backend", "vpnkit-bridge"];

/** What is said of a port in use whose holder the system did not show. */
export const HIDDEN_HOLDER =
  "not shown to this user: another user's process, or a container's proxy";

/** What {@linkcode findHolders} is to find, and with what. */
export interface FindHoldersOptions {
  /** The ports to describe. */
  ports: Iterable<number>;
  /** The worktrees processes may belong to, as git spells them. */
  worktrees: readonly string[];
  /** Names containers. */
  lookup: Pick<ListenerLookup, "containers">;
  /** Ports known to be listening, from probing. */
  inUse?: ReadonlySet<number>;
}

/**
 * Finds who holds the ports: the processes `scan` found listening on them,
 * each placed in the deepest worktree that holds its working directory. A
 * port known to be in use that no listener was found on has a hidden holder
 * (docker names it, when it is a container's).
 */
export async function findHolders(
  scan: StartedScan,
  options: FindHoldersOptions,
): Promise<HoldersFound> {
  const { ports, worktrees, lookup, inUse = new Set() } = options;
  const wanted = new Set(ports);
  const answer = await scan.answer;
  if ("unknown" in answer) return { holders: new Map(), unknown: answer.unknown };
  const { workingDirectories, commandLines } = answer.found;
  const listeners = answer.found.listeners.filter((listener) => wanted.has(listener.port));
  const unseen = [...inUse].filter((port) =>
    wanted.has(port) && !listeners.some((listener) => listener.port === port)
  );
  const proxied = listeners.some((listener) => CONTAINER_PROXIES.includes(listener.name ?? ""));
  const containers = proxied || unseen.length > 0 ? await lookup.containers() : undefined;
  const place = worktreePlacer(worktrees);
  const byPort = new Map<number, Container>();
  if (containers !== undefined && "found" in containers) {
    for (const container of containers.found) {
      for (const port of container.ports) byPort.set(port, container);
    }
  }
  const holders = new Map<number, PortHolder[]>();
  const add = (port: number, holder: PortHolder) =>
    holders.set(port, [...(holders.get(port) ?? []), holder]);
  for (const listener of listeners) {
    const command = commandLines.get(listener.pid) ?? listener.name;
    const cwd = workingDirectories.get(listener.pid);
    const proxy = CONTAINER_PROXIES.includes(listener.name ?? "");
    const container = proxy ? byPort.get(listener.port) : undefined;
    if (container !== undefined) {
      add(listener.port, { pid: listener.pid, command, ...ofContainer(container, place) });
      continue;
    }
    const holder: PortHolder = { pid: listener.pid, command };
    if (cwd !== undefined) {
      holder.cwd = cwd;
      // A container's proxy runs from "/": where it runs says nothing of whose it is.
      if (!proxy) holder.worktree = place(cwd);
    }
    add(listener.port, holder);
  }
  for (const port of unseen) {
    const container = byPort.get(port);
    add(port, container === undefined ? { unknown: HIDDEN_HOLDER } : ofContainer(container, place));
  }
  return { holders };
}

function ofContainer(container: Container, place: (path: string) => string | null): PortHolder {
  return {
    container: container.name,
    composeProject: container.project,
    ...(container.workingDir === undefined ? {} : { worktree: place(container.workingDir) }),
  };
}

/**
 * Places a path in the deepest worktree holding it (worktrees may nest), by
 * real paths, as the system reports working directories; `null` for none.
 */
function worktreePlacer(worktrees: readonly string[]): (path: string) => string | null {
  let real: [string, string][] | undefined;
  return (path) => {
    real ??= worktrees.map((worktree) => [realPathOr(worktree), worktree]);
    let best: [string, string] | undefined;
    for (const entry of real) {
      const inside = comparablePath(entry[0]) === comparablePath(path) ||
        relativeInside(entry[0], path) !== undefined;
      if (inside && (best === undefined || entry[0].length > best[0].length)) best = entry;
    }
    return best?.[1] ?? null;
  };
}

/** A holder in a few words: `python3 4242`, `container myapp-web-1`, `unknown`. */
export function holderName(holder: PortHolder): string {
  if (holder.container !== undefined) return `container ${holder.container}`;
  if (holder.pid === undefined) return "unknown";
  // The program's name: the first word of its command line, without its folder.
  const first = holder.command?.split(/\s+/)[0] ?? "";
  const program = (IS_WINDOWS ? baseName(first) : first.split("/").at(-1)) || "process";
  return `${program} ${holder.pid}`;
}

/** Where a holder runs: `outside every worktree`, `in worktree "…"`, or `in an unknown place`. */
export function holderPlace(holder: PortHolder): string {
  if (holder.worktree === null) return "outside every worktree";
  if (holder.worktree === undefined) return "in an unknown place";
  // Quoted with escapes where it holds a line break, so that the line stays one line.
  const path = holder.worktree;
  return `of the worktree ${/\p{Cc}/u.test(path) ? JSON.stringify(path) : `"${path}"`}`;
}
