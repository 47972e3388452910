// slots: every slot of the config, who holds it, and why one is skipped.

import { listSlots } from "../../slots.ts";
import { allocateOptions } from "../args.ts";
import { printWarning, writeStdout } from "../print.ts";
import { formatSlots } from "../reports.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  const slots = await listSlots({ ...allocateOptions(values, "slots"), onWarning: printWarning });
  if (values.json) {
    writeStdout(JSON.stringify(slots, null, 2) + "\n");
  } else {
    writeStdout(formatSlots(slots));
  }
  return 0;
}
