// Keeping port files out of git: rules in `info/exclude`, and a warning for a tracked file.

import {
  fileProblemOf,
  readRegularTextFile,
  realPathOr,
  removeStaleTemporaryFiles,
  writeFileAtomic,
} from "./files.ts";
import type { GitRunner } from "./git.ts";
import { IS_WINDOWS, joinPath } from "./paths.ts";
import type { Repository } from "./repository.ts";

/**
 * Warns when git tracks the port file: a committed port file gives every new
 * worktree the same bundle. Asked only when the file replaced one this tool
 * did not write for this worktree, which git may have checked out.
 */
export async function warnIfTracked(
  git: GitRunner,
  repository: Repository,
  inside: string,
  warnings: string[],
): Promise<void> {
  // Literal: a name with "*" or "?" is that file, not a pattern matching others.
  const output = await git.run(
    ["ls-files", "-z", "--cached", "--", `:(literal)${inside}`],
    repository.root,
  );
  if (output === "") return;
  warnings.push(
    `"${joinPath(repository.root, inside)}" is tracked by git: every new worktree checks out ` +
      `the same ports. Untrack it with "git rm --cached ${inside}" and commit`,
  );
}

/**
 * Makes git ignore a port file and its temporary files, with two rules in
 * `info/exclude` in the common git directory: they apply to every worktree
 * and never touch a tracked `.gitignore`. The caller holds the lock. Missing
 * rules are added atomically (a full disk leaves the old file whole, and the
 * next allocation tries again), through a symbolic link if the file is one.
 * Returns the rules it added.
 */
export function excludeFromGit(
  commonDir: string,
  patterns: readonly string[],
  warnings: string[],
): string[] {
  const lines = readExcludes(commonDir, warnings);
  if (lines === undefined) return [];
  const added = patterns.filter((pattern) => !lines.includes(pattern));
  if (added.length === 0) return [];
  const dir = joinPath(commonDir, "info");
  const link = joinPath(dir, "exclude");
  try {
    Deno.mkdirSync(dir, { recursive: true });
    const path = realPathOr(link);
    removeStaleTemporaryFiles(path);
    const text = lines.join("\n");
    const separator = text === "" || text.endsWith("\n") ? "" : "\n";
    writeFileAtomic(path, `${text}${separator}${added.join("\n")}\n`);
    return added;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot add the port file to "${link}" (${(error as Error).message}), so it may show in ` +
        `"git status"; the next allocation tries again`,
    );
    return [];
  }
}

/**
 * The lines of `info/exclude` in the common git directory; none when it does
 * not exist, and `undefined`, with a warning, when it cannot be read.
 */
function readExcludes(commonDir: string, warnings: string[]): string[] | undefined {
  const path = joinPath(commonDir, "info/exclude");
  try {
    return readRegularTextFile(path).split(/\r?\n/);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot read "${path}" (${fileProblemOf(error)}), so the port file may show in "git status"`,
    );
    return undefined;
  }
}

/**
 * The gitignore patterns that match exactly one path relative to the worktree
 * root, and the temporary files written beside it.
 */
export function excludePatterns(inside: string): [string, string] {
  const slashed = IS_WINDOWS ? inside.replaceAll("\\", "/") : inside;
  const escaped = "/" + slashed.replace(/[\\*?[\]]/g, "\\$&");
  return [escaped.replace(/ $/, "\\ "), `${escaped}.*.tmp`];
}
