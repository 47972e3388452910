// show: prints the worktree's bundle, or one value of it: what env and exec
// give, and never another worktree's ports.

import { readStanding } from "../../current_bundle.ts";
import { quoted } from "../../errors.ts";
import { loadReportingAllocation } from "../bundle_notice.ts";
import {
  ALLOCATE_PERMISSIONS,
  installFlags,
  missingPermissionMessage,
  missingPermissions,
  requiredFlags,
} from "../permissions.ts";
import { printWarning, writeStdout } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values, positionals: string[]): Promise<number> {
  const { path, standing, file, hasConfig } = await readStanding({
    output: values.output as string | undefined,
    config: values.config as string | undefined,
  });
  let data: Record<string, unknown>;
  if (standing.state === "current") {
    for (const warning of standing.warnings) printWarning(warning);
    data = standing.data;
  } else if (
    standing.state === "outdated" || standing.state === "invalid" ||
    (standing.state === "moved" && hasConfig)
  ) {
    // Rewriting is what allocate does, and needs what it needs.
    const missing = await missingPermissions(ALLOCATE_PERMISSIONS);
    if (missing.length > 0) {
      console.error(
        "error: " + missingPermissionMessage(
          requiredFlags(missing),
          `"show" rewrites "${path}", ${
            standing.state === "moved"
              ? "which names a path that is no worktree now"
              : "which the config has changed under"
          }, as "allocate" would`,
          installFlags("show"),
        ),
      );
      return 2;
    }
    data = (await loadReportingAllocation(values, "show")).data;
  } else {
    // Only an allocation makes this worktree's bundle; show never prints
    // ports that may be another worktree's.
    const recorded = file.state === "read" ? file.meta?.worktree : undefined;
    const allocate = `run "worktree-ports allocate", or "env" or "exec", which allocate first`;
    const why = {
      none: `This worktree has no ports yet (${allocate})`,
      foreign: `"${path}" was written for the worktree "${recorded}" (copied?): its ports are ` +
        `not this worktree's (${allocate})`,
      moved: `"${path}" was written for "${recorded}", which is no worktree now (moved with ` +
        `its worktree, or copied from a removed one), and with no config it cannot be checked ` +
        `here (${allocate}, with the --port flags it was allocated with)`,
      unowned: `"${path}" has no worktree-ports metadata (committed, or written by another ` +
        `tool), so it is not this worktree's bundle (${allocate}, to replace it)`,
      unreadable: `Cannot read "${path}": ${
        file.state === "unreadable" ? file.reason : "unreadable"
      } (${allocate}, to replace it)`,
    }[standing.state];
    console.error(`error: ${why}`);
    return 1;
  }
  const [key] = positionals;
  if (key === undefined) {
    writeStdout(JSON.stringify(data, null, 2) + "\n");
    return 0;
  }
  if (!Object.hasOwn(data, key) || key === "worktree_ports") {
    const keys = Object.keys(data).filter((name) => name !== "worktree_ports");
    console.error(
      `error: "${path}" has no key ${quoted(key)} (it has: ${keys.map(quoted).join(", ")})`,
    );
    return 1;
  }
  const value = data[key];
  writeStdout((typeof value === "string" ? value : JSON.stringify(value)) + "\n");
  return 0;
}
