// Warnings given once: a config's warnings are repeated only when they change.

import { readRegularTextFile, writeFileAtomic } from "./files.ts";
import { joinPath } from "./paths.ts";

/** Where the warnings last given for a repository's config are kept, in its common git directory. */
export const WARNED_FILE_NAME = "worktree-ports.warned";

/**
 * Those of `warnings` not given last time, and keeps `warnings` as the ones
 * given: a config that still has the same warnings is not warned about on
 * every allocation, and one whose warnings change is warned about again.
 * Losing the file only repeats a warning; failing to write it is not an error.
 */
export function unwarned(commonDir: string, warnings: readonly string[]): string[] {
  const path = joinPath(commonDir, WARNED_FILE_NAME);
  let given: string[] = [];
  try {
    given = readRegularTextFile(path).split("\n").filter(Boolean);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  const fresh = warnings.filter((warning) => !given.includes(warning));
  if (fresh.length > 0 || given.length !== warnings.length) {
    try {
      writeFileAtomic(path, warnings.map((warning) => `${warning}\n`).join(""));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
  return fresh;
}
