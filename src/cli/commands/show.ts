// show: prints the worktree's bundle, or one value of it.

import { readBundle } from "../../current_bundle.ts";
import { quoted } from "../../errors.ts";
import { loadReportingAllocation } from "../bundle_notice.ts";
import { ALLOCATE_PERMISSIONS, missingPermissions, requiredFlags } from "../permissions.ts";
import { writeStdout } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values, positionals: string[]): Promise<number> {
  const bundle = await readBundle({
    output: values.output as string | undefined,
    config: values.config as string | undefined,
  });
  if (bundle === undefined) {
    console.error(`error: This worktree has no ports yet (run "worktree-ports allocate")`);
    return 1;
  }
  if (bundle.outdated) {
    // Rewriting is what allocate does, and needs what it needs.
    const missing = await missingPermissions(ALLOCATE_PERMISSIONS);
    if (missing.length > 0) {
      console.error(
        `error: Missing permission: run again with ${requiredFlags(missing)} ("show" rewrites ` +
          `"${bundle.path}", which the config has changed under, and needs ${
            requiredFlags(ALLOCATE_PERMISSIONS)
          } for that)`,
      );
      return 2;
    }
    bundle.data = (await loadReportingAllocation(values, "show")).data;
  }
  if (bundle.foreign) {
    console.error(
      `warning: "${bundle.path}" was written for another worktree (copied?); run "worktree-ports allocate" to get this worktree's own ports`,
    );
  }
  // A rewritten file was checked against the other worktrees on the way.
  if (bundle.moved && !bundle.outdated) {
    console.error(
      `warning: "${bundle.path}" was written for "${
        (bundle.data.worktree_ports as { worktree: string }).worktree
      }", which is no worktree now (moved with its worktree, or copied from a removed one); ` +
        `run "worktree-ports allocate" to record this worktree's path and check its ports ` +
        `against the other worktrees`,
    );
  }
  const [key] = positionals;
  if (key === undefined) {
    writeStdout(JSON.stringify(bundle.data, null, 2) + "\n");
    return 0;
  }
  if (!Object.hasOwn(bundle.data, key)) {
    const keys = Object.keys(bundle.data).filter((name) => name !== "worktree_ports");
    console.error(
      `error: "${bundle.path}" has no key ${quoted(key)} (it has: ${keys.map(quoted).join(", ")})`,
    );
    return 1;
  }
  const value = bundle.data[key];
  writeStdout((typeof value === "string" ? value : JSON.stringify(value)) + "\n");
  return 0;
}
