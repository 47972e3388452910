// allocate: gives the worktree its bundle, writes its port file and prints it.

import { allocate } from "../../allocate.ts";
import { formatPortFile } from "../../port_file.ts";
import { allocateOptions } from "../args.ts";
import { withLockNotice, writeStdout } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  const options = { ...allocateOptions(values, "allocate"), dryRun: values["dry-run"] === true };
  const allocation = await withLockNotice(options, allocate);
  for (const warning of allocation.warnings) console.error(`warning: ${warning}`);
  if (values.timings) {
    const { git, lockWait, locked, total } = allocation.timings;
    console.error(
      `timings: git ${git.toFixed(1)} ms, lock wait ${lockWait.toFixed(1)} ms, ` +
        `locked ${locked.toFixed(1)} ms, total ${total.toFixed(1)} ms`,
    );
  }
  writeStdout(formatPortFile(allocation));
  return 0;
}
