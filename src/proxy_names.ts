// The names the proxy gives worktrees' services,
// <service>.<worktree>.<repo>.localhost, and where a running proxy says
// which port it took.

import { isPlainObject, readRegularTextFile } from "./files.ts";
import { gitDirsOf } from "./git_dirs.ts";
import { denoMachineIndex, type MachineIndex } from "./index_home.ts";
import { baseName, joinPath, parentOf } from "./paths.ts";
import { slugOf } from "./slug.ts";

/** The port the proxy listens on unless told otherwise: above 1024, so no privileges. */
export const DEFAULT_PROXY_PORT = 1355;

/** Where a running proxy records its port and process, in the machine-wide index folder. */
export const PROXY_FILE_NAME = "proxy.json";

/** A port key as a host name's first label: `web_port` → `web`, `api_v2` → `api-v2`. */
export function serviceLabel(key: string): string {
  const bare = key.replace(/_port$/i, "") || key;
  return slugOf(bare.replaceAll("_", "-")) || "port";
}

/** A worktree as a label: its branch's slug, or its folder's when detached (as `{slug}`). */
export function worktreeLabel(branch: string | undefined, path: string): string {
  return slugOf(branch ?? "") || slugOf(baseName(path)) || "worktree";
}

/**
 * A repository as a label: the config's `name`, else the slug of its main
 * worktree's folder (of a bare repository's folder, without `.git`).
 */
export function repositoryLabel(commonDir: string, name?: string): string {
  if (name !== undefined) return name;
  const folder = baseName(commonDir) === ".git"
    ? baseName(parentOf(commonDir))
    : baseName(commonDir).replace(/\.git$/, "");
  return slugOf(folder) || "repo";
}

/** The label of the repository a worktree belongs to, for `{repo}`. */
export function repositoryLabelOf(worktree: string, name?: string): string {
  if (name !== undefined) return name;
  try {
    return repositoryLabel(gitDirsOf(worktree).commonDir);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return repositoryLabel(parentOf(worktree));
  }
}

/** A service's host name: `web.feature-login.myapp.localhost`. */
export function hostName(service: string, worktree: string, repository: string): string {
  return `${service}.${worktree}.${repository}.localhost`;
}

/** What a running proxy recorded: its port and process. */
export interface ProxyRecord {
  /** The port it listens on. */
  port: number;
  /** Its process id. */
  pid: number;
}

/** What the last proxy started recorded in the index folder, if anything. */
export function readProxyRecord(index: MachineIndex = denoMachineIndex): ProxyRecord | undefined {
  const dir = index.dir();
  if (dir === undefined) return undefined;
  try {
    const value = JSON.parse(readRegularTextFile(joinPath(dir, PROXY_FILE_NAME)));
    if (
      isPlainObject(value) && Number.isInteger(value.port) && Number.isInteger(value.pid) &&
      (value.port as number) > 0 && (value.port as number) <= 65535
    ) {
      return { port: value.port as number, pid: value.pid as number };
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  return undefined;
}

let proxyPort: number | undefined;

/**
 * The proxy's port for `{proxy_port}`: the one the last proxy started with,
 * else the default. Read once per process.
 */
export function proxyPortForTemplates(): number {
  proxyPort ??= readProxyRecord()?.port ?? DEFAULT_PROXY_PORT;
  return proxyPort;
}

/** The ports no allocation hands out: the proxy's default, and the one a proxy last took. */
export function proxyPorts(index: MachineIndex = denoMachineIndex): number[] {
  const recorded = readProxyRecord(index)?.port;
  return recorded === undefined || recorded === DEFAULT_PROXY_PORT
    ? [DEFAULT_PROXY_PORT]
    : [DEFAULT_PROXY_PORT, recorded];
}

/** `reserved`, with the proxy's ports reserved too. */
export function withProxyPorts(
  reserved: Pick<ReadonlySet<number>, "has">,
  index: MachineIndex = denoMachineIndex,
): Pick<ReadonlySet<number>, "has"> {
  const ports = proxyPorts(index);
  return { has: (port: number) => ports.includes(port) || reserved.has(port) };
}
