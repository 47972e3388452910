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

export { type ErrorCode, WorktreePortsError } from "./src/errors.ts";
export {
  CONFIG_FILE_NAME,
  DEFAULT_LOCK_TIMEOUT_MS,
  type EnvFormat,
  LOCK_FILE_NAME,
  PORT_FILE_NAME,
  PORT_FILE_VERSION,
} from "./src/names.ts";
export { writeFileAtomic } from "./src/files.ts";
export {
  denoProbe,
  isPortFree,
  type IsPortFreeOptions,
  type PortProbe,
  type PortStatus,
  portStatus,
  PROBE_HOSTNAMES,
} from "./src/probe.ts";
export {
  type ConfigOverrides,
  DEFAULT_CONFIG,
  loadConfig,
  type LoadConfigOptions,
  type OverrideNames,
  parseConfig,
  type ParseConfigOptions,
  type PortsConfig,
} from "./src/config.ts";
export { type Environment, type Scope } from "./src/environment.ts";
export { portsForSlot, renderBundle, type RenderBundleOptions } from "./src/bundle.ts";
export { slugOf } from "./src/slug.ts";
export { denoGit, type GitRunner } from "./src/git.ts";
export {
  listWorktrees,
  type ListWorktreesOptions,
  parseWorktreeList,
  type Worktree,
} from "./src/worktree_list.ts";
export { openRepository, type Repository } from "./src/repository.ts";
export { type LockOptions, lockRepository, type RepositoryLock } from "./src/lock.ts";
export {
  formatPortFile,
  type PortFileContents,
  type PortFileMeta,
  portFilePath,
  type PortFilePathOptions,
  type PortFileRead,
  readPortFile,
  reservedPortsOf,
} from "./src/port_file.ts";
export {
  BROWSER_BLOCKED_PORTS,
  configWarnings,
  type ConfigWarningsOptions,
  ephemeralPortRange,
  type PortRange,
} from "./src/usable_ports.ts";
export { readReservedPorts, type ReservedPorts } from "./src/reservations.ts";
export { chooseSlot, type ChooseSlotOptions, type SlotChoice } from "./src/choose_slot.ts";
export {
  denoMachineIndex,
  INDEX_ENV_VARIABLES,
  type MachineIndex,
  machineIndexAt,
  machineIndexDir,
} from "./src/index_home.ts";
export {
  INDEX_FILE_NAME,
  INDEX_VERSION,
  type IndexEntry,
  type IndexRead,
  readMachineIndex,
} from "./src/machine_index.ts";
export {
  allocate,
  type AllocateOptions,
  type Allocation,
  type AllocationTimings,
} from "./src/allocate.ts";
export {
  inspectMachine,
  type InspectOptions,
  inspectWorktrees,
  type PortConflict,
  type StrayHolder,
  strayHolders,
  type WorktreeState,
  type WorktreeStatus,
} from "./src/inspect.ts";
export { listSlots, type ListSlotsOptions, type SlotInfo, type SlotState } from "./src/slots.ts";
export { fixMachine, type FixOptions, fixWorktrees, type Move } from "./src/fix.ts";
export { type Release, type ReleaseOptions, releasePorts } from "./src/release.ts";
export { type OnReleaseCommand, type OnReleaseResult } from "./src/on_release.ts";
export {
  type LingeringListener,
  type Pruned,
  type PrunedWorktree,
  type PruneOptions,
  pruneWorktrees,
} from "./src/prune.ts";
export {
  MEMORY_FILE_NAME,
  readMemory,
  type RememberedSlot,
  type RememberedWorktree,
  type WorktreeMemory,
} from "./src/worktree_memory.ts";
export {
  type Container,
  denoListeners,
  type Listener,
  LISTENER_PROGRAMS,
  type ListenerLookup,
  type SystemAnswer,
} from "./src/listeners.ts";
export { type PortHolder } from "./src/holders.ts";
export { type ProxyOptions, runningProxyPort, serveProxy } from "./src/proxy.ts";
export { readRoutes, type Route, type RouteTable } from "./src/proxy_routes.ts";
export {
  DEFAULT_PROXY_PORT,
  hostName,
  PROXY_FILE_NAME,
  type ProxyRecord,
  readProxyRecord,
} from "./src/proxy_names.ts";
export { bundleEnv, type BundleEnvOptions, formatEnv } from "./src/env.ts";
export {
  type CurrentBundle,
  loadBundle,
  type LoadedBundle,
  readBundle,
  type ReadBundleOptions,
} from "./src/current_bundle.ts";
export { type RunOptions, type RunResult, runWithPorts } from "./src/exec.ts";

// `deno run jsr:@org/worktree-ports allocate` runs this module, the package's
// root, as the program: it behaves exactly as the command line. The CLI is
// loaded only then, and without a top-level await, so that importing this
// module stays free of side effects and `cli.ts` (which imports this module)
// finds it fully evaluated.
if (import.meta.main) {
  import("./cli.ts").then(async ({ main }) => Deno.exit(await main(Deno.args)));
}
