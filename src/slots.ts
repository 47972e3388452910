// Every slot of a config, who holds it, and why a free-looking one would be skipped.

import { portsForSlot, renderBundle } from "./bundle.ts";
import { type ConfigOverrides, loadConfig } from "./config.ts";
import { type Environment, environmentOf } from "./environment.ts";
import { MachineSession } from "./machine_index.ts";
import { META_KEY, PORT_FILE_NAME } from "./names.ts";
import { joinPath, relativeInside } from "./paths.ts";
import { type PortFilePathOptions, readPortFile, realPortFilePath } from "./port_file.ts";
import { probePort } from "./probe.ts";
import { openWorktree, type Repository } from "./repository.ts";
import { scanReservations } from "./reservations.ts";
import { BROWSER_BLOCKED_PORTS } from "./usable_ports.ts";

/**
 * How a slot stands: `held`, a worktree's port file reserves one of its
 * ports; `blocked`, it holds a port browsers refuse, so it is never handed
 * out; `in-use`, a process listens on one of its ports; `permission-denied`,
 * the operating system refuses to bind one; `free`, an allocation could take
 * it now.
 */
export type SlotState = "free" | "held" | "blocked" | "in-use" | "permission-denied";

/** One row of {@linkcode listSlots}. */
export interface SlotInfo {
  /** The slot: 0 is the main worktree's. */
  slot: number;
  /** How it stands; `held` comes first, then `blocked`, then what probing found. */
  state: SlotState;
  /** Its ports and filled-in templates, as its port file would hold them. */
  bundle: Record<string, number | string>;
  /** The worktrees whose port files reserve any of its ports; more than one is a conflict. */
  holders: string[];
  /** The current worktree is one of the holders. */
  current: boolean;
  /** Its ports that browsers refuse. */
  blocked: number[];
  /** Its ports a process listens on; probed only in slots neither held nor blocked. */
  busy: number[];
  /** Its ports the operating system refuses to bind; probed as `busy` is. */
  denied: number[];
}

/** Options for {@linkcode listSlots}. */
export interface ListSlotsOptions
  extends
    ConfigOverrides,
    PortFilePathOptions,
    Pick<Environment, "git" | "probe" | "index" | "scope"> {
  /**
   * The config file; relative paths are resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
  /**
   * Probe the ports of slots that no worktree holds, to find those in use.
   *
   * @default {true}
   */
  listening?: boolean;
  /**
   * Called with each problem that did not stop the listing, such as a port
   * file that cannot be read.
   *
   * @default {undefined}
   */
  onWarning?: (warning: string) => void;
}

/**
 * Lists every slot of the current worktree's config, 0 to `slots`, with its
 * bundle, the worktrees that hold it, and why a free-looking one would be
 * skipped: a port browsers refuse, a port in use, or one the operating system
 * refuses. Useful for registering redirect URIs or tunnel hosts for a
 * bounded set of slots up front. Changes nothing and takes no lock.
 *
 * @param options Where, which config and port file, and the injected git and probe.
 * @returns One row per slot, from slot 0.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED` or `INVALID_CONFIG`.
 *
 * @example Usage
 * ```ts ignore
 * import { listSlots } from "@org/worktree-ports";
 *
 * for (const { slot, state, bundle } of await listSlots()) {
 *   console.log(slot, state, bundle);
 * }
 * ```
 */
export async function listSlots(options: ListSlotsOptions = {}): Promise<SlotInfo[]> {
  const env = environmentOf(options);
  const repository = await openWorktree(options.cwd, env);
  const config = loadConfig(repository.root, options);
  const ownPath = realPortFilePath(repository.root, options);
  const inside = relativeInside(repository.root, ownPath) ?? PORT_FILE_NAME;
  // Other repositories' worktrees hold slots too: read as allocate reads them.
  using machine = await MachineSession.open({
    index: env.index,
    scope: env.scope ?? config.scope,
    repositories: [repository.commonDir],
    worktrees: repository.worktrees.map((worktree) => worktree.path),
    own: { file: ownPath, worktree: repository.root },
    readOnly: true,
    git: env.git,
  });
  const warnings = [...machine.warnings];
  const holders = heldPorts(repository, ownPath, inside, machine, warnings);
  for (const warning of warnings) options.onWarning?.(warning);
  // A held slot shows what its holder's file says, which names its own
  // worktree and branch: rendered here, its templates would name none.
  const fileOf = new Map(machine.entries.map((entry) => [entry.worktree, entry.path]));
  for (const worktree of repository.worktrees) {
    fileOf.set(
      worktree.path,
      worktree === repository.current ? ownPath : joinPath(worktree.path, inside),
    );
  }
  const heldBundle = (held: readonly string[], ports: readonly number[]) => {
    for (const holder of held) {
      const file = readPortFile(fileOf.get(holder) ?? "");
      if (file.state !== "read" || !ports.some((port) => file.ports.includes(port))) continue;
      return Object.fromEntries(
        Object.entries(file.data).filter((entry): entry is [string, number | string] =>
          entry[0] !== META_KEY && (typeof entry[1] === "number" || typeof entry[1] === "string")
        ),
      );
    }
    return undefined;
  };
  const slots: SlotInfo[] = [];
  for (let slot = 0; slot <= config.slots; slot++) {
    const ports = Object.values(portsForSlot(config, slot));
    const held = [...new Set(ports.flatMap((port) => holders.get(port) ?? []))];
    const blocked = ports.filter((port) => BROWSER_BLOCKED_PORTS.has(port));
    const busy: number[] = [];
    const denied: number[] = [];
    if (held.length === 0 && blocked.length === 0 && options.listening !== false) {
      for (const port of ports) {
        const status = await probePort(env.probe, port);
        if (status === "in-use") busy.push(port);
        if (status === "permission-denied") denied.push(port);
      }
    }
    slots.push({
      slot,
      state: held.length > 0
        ? "held"
        : blocked.length > 0
        ? "blocked"
        : denied.length > 0
        ? "permission-denied"
        : busy.length > 0
        ? "in-use"
        : "free",
      bundle: heldBundle(held, ports) ?? renderBundle(config, slot),
      holders: held,
      current: held.includes(repository.current.path),
      blocked,
      busy,
      denied,
    });
  }
  return slots;
}

/**
 * Every port a worktree's file reserves, with the path of each worktree
 * holding it, other repositories' included. The other worktrees' files are
 * read as an allocation reads them (see {@linkcode scanReservations}), one
 * worktree at a time so that a port two of them hold names both: a damaged
 * file keeps the ports its text names, an unreadable one and a locked
 * worktree whose directory is away the ports of the copy kept in git's
 * directory, or those the index last recorded.
 */
function heldPorts(
  repository: Repository,
  ownPath: string,
  inside: string,
  machine: MachineSession,
  warnings: string[],
): Map<number, string[]> {
  const holders = new Map<number, string[]>();
  const hold = (port: number, worktree: string) =>
    holders.set(port, [...(holders.get(port) ?? []), worktree]);
  for (const worktree of repository.worktrees) {
    if (worktree.bare || worktree.prunable) continue;
    if (worktree === repository.current) {
      const file = readPortFile(ownPath);
      if (file.state === "read") { for (const port of file.ports) hold(port, worktree.path); }
      continue;
    }
    const scan = scanReservations({ ...repository, worktrees: [worktree] }, ownPath, inside, {
      recorded: (file) => machine.recorded(file),
    });
    warnings.push(...scan.warnings);
    for (const port of scan.holders.keys()) hold(port, worktree.path);
  }
  const worktreeOf = new Map(machine.entries.map((entry) => [entry.path, entry.worktree]));
  for (const [port, file] of machine.holders) hold(port, worktreeOf.get(file) ?? file);
  return holders;
}
