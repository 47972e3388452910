// env: prints the worktree's ports as environment variables.

import { bundleEnv, formatEnv } from "../../env.ts";
import { ENV_FORMATS, type EnvFormat } from "../../names.ts";
import { UsageError } from "../args.ts";
import { loadReportingAllocation } from "../bundle_notice.ts";
import { printWarning, writeStdout } from "../print.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  const format = (values.format ?? "shell") as EnvFormat;
  if (!ENV_FORMATS.includes(format)) {
    throw new UsageError(
      `Option "--format" must be shell, dotenv, json, fish or powershell, got "${format}"`,
      "env",
    );
  }
  const bundle = await loadReportingAllocation(values, "env");
  writeStdout(formatEnv(bundleEnv(bundle.data, { onWarning: printWarning }), format));
  return 0;
}
