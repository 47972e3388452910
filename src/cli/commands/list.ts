// list: every worktree's slot, ports and state.

import { inspectMachine, inspectWorktrees } from "../../inspect.ts";
import { printWarning, writeStdout } from "../print.ts";
import { formatGroups, formatTable } from "../reports.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  // The table names each holder by its short name: its command line would take one more program run.
  const options = {
    output: values.output as string | undefined,
    commandLines: Boolean(values.json),
    onWarning: printWarning,
  };
  const statuses = values.all ? await inspectMachine(options) : await inspectWorktrees(options);
  if (values.json) {
    writeStdout(JSON.stringify(statuses, null, 2) + "\n");
  } else if (values.all) {
    writeStdout(formatGroups(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  } else {
    writeStdout(formatTable(statuses, Deno.stdout.isTerminal() && !Deno.noColor));
  }
  return 0;
}
