// list: every worktree's slot, ports and state.

import { inspectMachine, inspectWorktrees } from "../../inspect.ts";
import { printWarning, writeStdout } from "../print.ts";
import { gitDirsOf } from "../../git_dirs.ts";
import type { WorktreeStatus } from "../../inspect.ts";
import { readMemory } from "../../worktree_memory.ts";
import { realPathOr } from "../../files.ts";
import { denoMachineIndex } from "../../index_home.ts";
import { runningProxyPort } from "../../proxy.ts";
import { readRoutes } from "../../proxy_routes.ts";
import { formatGroups, formatRemembered, formatTable } from "../reports.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  // The table names each holder by its short name: its command line would take one more program run.
  const options = {
    output: values.output as string | undefined,
    commandLines: Boolean(values.json),
    onWarning: printWarning,
  };
  const statuses = values.all ? await inspectMachine(options) : await inspectWorktrees(options);
  const urls = proxyUrls(statuses);
  if (values.json) {
    const rows = statuses.map((status) =>
      urls.has(status) ? { ...status, urls: urls.get(status) } : status
    );
    writeStdout(JSON.stringify(rows, null, 2) + "\n");
  } else if (values.all) {
    writeStdout(formatGroups(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  } else {
    writeStdout(formatTable(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  }
  if (!values.json) {
    writeStdout(formatRemembered(rememberedSlots(statuses)) + formatUrls(urls));
  }
  return 0;
}

/** Each worktree's URLs through the proxy, by port key, when a proxy is running. */
function proxyUrls(
  statuses: readonly WorktreeStatus[],
): Map<WorktreeStatus, Record<string, string>> {
  const found = new Map<WorktreeStatus, Record<string, string>>();
  const port = runningProxyPort(denoMachineIndex);
  if (port === undefined) return found;
  const routes = [...readRoutes(denoMachineIndex).routes.values()];
  for (const status of statuses) {
    const real = realPathOr(status.path);
    for (const route of routes) {
      if (realPathOr(route.worktree) !== real || status.ports[route.key] !== route.port) continue;
      found.set(status, { ...found.get(status), [route.key]: `http://${route.host}:${port}/` });
    }
  }
  return found;
}

function formatUrls(urls: Map<WorktreeStatus, Record<string, string>>): string {
  if (urls.size === 0) return "";
  return "\nthrough the proxy:\n" +
    [...urls].flatMap(([status, byKey]) =>
      Object.entries(byKey).map(([key, url]) => `  ${url}  ${key} of ${status.path}\n`)
    ).join("");
}

/** The slots remembered for branches that no worktree listed has checked out. */
function rememberedSlots(statuses: readonly WorktreeStatus[]): { branch: string; slot: number }[] {
  const current = statuses.find((status) => status.current);
  const commonDirs = new Set(statuses.flatMap((status) => status.repository ?? []));
  if (commonDirs.size === 0 && current !== undefined) {
    try {
      commonDirs.add(gitDirsOf(current.path).commonDir);
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
  const checkedOut = new Set(
    statuses.filter((status) => status.state !== "gone").flatMap((status) => status.branch ?? []),
  );
  return [...commonDirs].flatMap((commonDir) =>
    Object.entries(readMemory(commonDir).branches)
      .filter(([branch]) => !checkedOut.has(branch))
      .map(([branch, { slot }]) => ({ branch, slot }))
  );
}
