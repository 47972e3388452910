// exec: runs a command with the worktree's ports in its environment.

import { bundleEnv } from "../../env.ts";
import { runWithPorts } from "../../exec.ts";
import { refusedLoaderVariables } from "../../programs.ts";
import { UsageError } from "../args.ts";
import { loadReportingAllocation } from "../bundle_notice.ts";
import { installFlags, isMissingProgram, missingPermissionMessage } from "../permissions.ts";
import { printWarning } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values, positionals: string[]): Promise<number> {
  const [command, ...args] = positionals;
  if (command === undefined) {
    throw new UsageError(`Missing the command to run`, "exec");
  }
  const { state } = await Deno.permissions.query({ name: "run", command });
  if (state !== "granted" && !(await isMissingProgram(command))) {
    console.error(
      "error: " + missingPermissionMessage(
        `--allow-run=git,${command} (or --allow-run)`,
        `"exec" runs the command`,
        installFlags("exec"),
      ),
    );
    return 2;
  }
  // Loaded first, so that a new allocation is reported before the command
  // starts rather than after it ends.
  const bundle = await loadReportingAllocation(values, "exec");
  // runWithPorts leaves out the same keys; say which before the command starts.
  bundleEnv(bundle.data, { onWarning: printWarning });
  let result;
  try {
    result = await runWithPorts(command, args, { bundle });
  } catch (error) {
    const loader = refusedLoaderVariables(error);
    if (loader !== undefined) {
      // The command gets the environment as it is, these included: only
      // permission to run every program lets Deno pass them on.
      console.error(
        "error: " + missingPermissionMessage(
          "--allow-run",
          `Deno starts "${command}" with ${loader.join(", ")} set only when every program ` +
            `may be run; or unset ${loader.length === 1 ? "it" : "them"}`,
          installFlags("exec"),
        ),
      );
      return 2;
    }
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    console.error(`error: Cannot run "${command}": no such program`);
    return 127;
  }
  return result.code;
}
