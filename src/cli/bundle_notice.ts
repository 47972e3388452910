// The worktree's bundle for show, env and exec, saying on stderr when it was
// allocated or rewritten on the way.

import type { Allocation } from "../allocate.ts";
import { loadBundle, type LoadedBundle } from "../current_bundle.ts";
import { allocateOptions } from "./args.ts";
import { withLockNotice } from "./print.ts";
import type { Values } from "./spec.ts";

/** The worktree's bundle, allocating first if it has none; a new allocation is reported on stderr. */
export async function loadReportingAllocation(
  values: Values,
  command: string,
): Promise<LoadedBundle> {
  const bundle = await withLockNotice(allocateOptions(values, command), loadBundle);
  for (const warning of bundle.warnings ?? []) console.error(`warning: ${warning}`);
  if (bundle.allocation !== undefined) {
    for (const warning of bundle.allocation.warnings) console.error(`warning: ${warning}`);
    // Of several processes that found the file outdated, the one that rewrote it says so.
    if (!bundle.outdated && !bundle.moved) {
      console.error(
        `allocated slot ${bundle.allocation.slot} to this worktree ("${bundle.allocation.path}")`,
      );
    } else if (bundle.allocation.written) {
      console.error(
        bundle.outdated ? outdatedNotice(bundle.allocation) : movedNotice(bundle.allocation),
      );
    }
  }
  return bundle;
}

/** The line that says a moved or copied port file was rewritten for this worktree. */
function movedNotice(allocation: Allocation): string {
  return `recorded this worktree's path in "${allocation.path}" (slot ${allocation.slot}` +
    (allocation.kept ? " kept)" : ")");
}

/** The line that says an outdated port file was rewritten for the current config. */
function outdatedNotice(allocation: Allocation): string {
  return `updated "${allocation.path}" to the current config (` +
    (allocation.kept
      ? `slot ${allocation.slot} kept)`
      : `moved to slot ${allocation.slot}: the new ports of its old slot are taken)`);
}
