// Env files: the bundle in dotenv form, written beside the port file for the
// tools that read one (compose, node --env-file, Vite, python-dotenv).

import { bundleEnv, formatEnv } from "./env.ts";
import { clip, WorktreePortsError } from "./errors.ts";
import {
  fileInfo,
  fileProblemOf,
  pathExists,
  readRegularTextFile,
  realPathOfNearest,
  removeStaleTemporaryFiles,
  renameOver,
  temporaryFileOf,
} from "./files.ts";
import { CONFIG_FILE_NAME } from "./names.ts";
import {
  baseName,
  comparablePath,
  joinPath,
  parentOf,
  relativeInside,
  slashedPath,
} from "./paths.ts";

/**
 * The first line of every env file this tool writes. A file that starts
 * otherwise is someone else's, and is never replaced or removed.
 */
export const ENV_FILE_HEADER =
  "# Written by worktree-ports from this worktree's port file; do not edit (it is rewritten)";

/** The longest name an env file may have: 255 bytes less its temporary file's suffix. */
const MAX_NAME_BYTES = 230;

/** An env file of a worktree: where it is, and its path from the worktree root. */
export interface EnvFile {
  path: string;
  inside: string;
}

/** The env files a config names, for the worktree at `root`, as the config spells them. */
export function envFilesOf(root: string, names: readonly string[] | undefined): EnvFile[] {
  return (names ?? []).map((inside) => ({ path: joinPath(root, inside), inside }));
}

/**
 * Where a worktree's env files really go: each folder by its real path, which
 * must be the worktree root (`root`, a real path) or inside it, and neither in
 * git's directory nor in a worktree or repository nested in this one; the
 * file may not be the port file or the config. Each comes back spelled by its
 * real path, which is what git sees and what its ignore rule must name.
 *
 * @throws {WorktreePortsError} With code `INVALID_OUTPUT`, naming the file and why.
 */
export function placeEnvFiles(
  root: string,
  names: readonly string[] | undefined,
  portFile: string,
): EnvFile[] {
  const port = comparablePath(realPathOfNearest(portFile));
  return envFilesOf(root, names).map((file) => {
    const refuse = (why: string): never => {
      throw new WorktreePortsError(
        "INVALID_OUTPUT",
        `Cannot write the env file "${file.path}" that the config's "env_file" names: ${why}`,
      );
    };
    // Spelled as the root is (forward slashes on Windows), and compared blind to case there.
    const folder = slashedPath(realPathOfNearest(parentOf(file.path)));
    const atRoot = (dir: string) => comparablePath(dir) === comparablePath(root);
    const within = atRoot(folder) ? "" : relativeInside(root, folder);
    if (within === undefined) {
      refuse(`a symbolic link on its way leads out of the worktree, to "${folder}"`);
    }
    if (/^\.git(\/|\\|$)/i.test(within!)) refuse("it is inside git's own directory");
    for (let dir = folder; !atRoot(dir) && dir !== parentOf(dir); dir = parentOf(dir)) {
      if (pathExists(joinPath(dir, ".git"))) {
        refuse(`it is inside "${dir}", a worktree or repository of its own`);
      }
    }
    const name = baseName(file.path);
    // File systems take 255 bytes to a name, and the temporary file beside
    // it adds ".<pid>-<random>.tmp".
    if (new TextEncoder().encode(name).length > MAX_NAME_BYTES) {
      refuse(
        `its name is longer than ${MAX_NAME_BYTES} bytes, which leaves no room for the ` +
          `temporary file written beside it`,
      );
    }
    const placed = { path: joinPath(folder, name), inside: within ? `${within}/${name}` : name };
    if (comparablePath(placed.path) === port) refuse("it is the port file");
    if (placed.inside === CONFIG_FILE_NAME) refuse("it is the config");
    return placed;
  });
}

/**
 * The text of an env file for a bundle: the header, then what `env --format
 * dotenv` prints.
 *
 * @throws {WorktreePortsError} With code `INVALID_CONFIG`, naming the variable,
 * when a value cannot be written so that every dotenv reader gets it exactly.
 */
export function envFileText(bundle: Record<string, unknown>, file: EnvFile): string {
  try {
    return `${ENV_FILE_HEADER}\n${formatEnv(bundleEnv(bundle), "dotenv")}`;
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Cannot write the env file "${file.path}": ${
        error.message.replace(/ \(use [^)]*\)$/, "")
      } (change the value, or leave the file out of "env_file")`,
      { cause: error },
    );
  }
}

/** Why a file at an env file's path is someone else's, when it could be read. */
export const NOT_WRITTEN_HERE = "this tool did not write it";

/** How every refusal to write an env file starts; `check --fix` cannot repair one. */
export const UNWRITABLE_ENV_FILE = "Cannot write the env file";

/** How `check` describes an env file that is someone else's. */
export const FOREIGN_ENV_FILE = "is a file this tool did not write";

/** What `check` says to do about a file in an env file's place, which `check --fix` cannot move. */
export const ENV_FILE_IN_THE_WAY = 'remove it, or name another file in "env_file"';

/** What is at an env file's path now. */
export type EnvFileState =
  | { state: "missing" | "empty" }
  | { state: "ours"; text: string }
  | { state: "foreign"; reason: string };

/** Reads what is at an env file's path: nothing, a file this tool wrote, or someone else's. */
export function readEnvFile(path: string): EnvFileState {
  // A link is someone's way of putting the file elsewhere: never followed, never replaced.
  if (fileInfo(path, true)?.isSymlink) return { state: "foreign", reason: "it is a symbolic link" };
  let text: string;
  try {
    text = readRegularTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { state: "missing" };
    if (error instanceof Deno.errors.NotCapable) throw error;
    return { state: "foreign", reason: fileProblemOf(error) };
  }
  // An empty file, as `mktemp` or `touch` makes, holds nothing to lose.
  if (text === "") return { state: "empty" };
  if (text.startsWith(`${ENV_FILE_HEADER}\n`)) return { state: "ours", text };
  return { state: "foreign", reason: NOT_WRITTEN_HERE };
}

/**
 * Refuses to go on when an env file's path holds a file this tool did not
 * write: a user's own `.env.local` is never replaced.
 *
 * @throws {WorktreePortsError} With code `INVALID_OUTPUT`.
 */
export function assertEnvFilesReplaceable(files: readonly EnvFile[]): void {
  for (const file of files) {
    const found = readEnvFile(file.path);
    if (found.state !== "foreign") continue;
    throw new WorktreePortsError(
      "INVALID_OUTPUT",
      `Cannot write the env file "${file.path}" that the config's "env_file" names: ${found.reason}, ` +
        `and writing would replace it (rename "${
          clip(file.inside)
        }" in "env_file", or remove the ` +
        `file first)`,
    );
  }
}

/** An env file written to its temporary file, to be put in place. */
export interface StagedEnvFile {
  path: string;
  temp: string;
}

/**
 * Writes, beside each env file whose text differs from `text`, a temporary
 * file holding it, so that whatever can fail (a folder that cannot be made, a
 * name too long, a full disk) fails before the port file is written. The
 * caller holds the lock, has checked that none is someone else's, and puts
 * them in place with {@linkcode commitEnvFiles} once the port file is written.
 *
 * @throws {Error} Naming the env file; no temporary file is left.
 */
export function stageEnvFiles(files: readonly EnvFile[], text: string): StagedEnvFile[] {
  const staged: StagedEnvFile[] = [];
  for (const file of files) {
    removeStaleTemporaryFiles(file.path);
    const found = readEnvFile(file.path);
    if (found.state === "ours" && found.text === text) continue;
    const temp = temporaryFileOf(file.path);
    try {
      Deno.mkdirSync(parentOf(file.path), { recursive: true });
      Deno.writeTextFileSync(temp, text, { createNew: true });
    } catch (error) {
      abandonEnvFiles(staged);
      try {
        Deno.removeSync(temp);
      } catch {
        // It was never created.
      }
      if (error instanceof Deno.errors.NotCapable) throw error;
      throw new Error(
        `Cannot write the env file "${file.path}": ${(error as Error).message}`,
        { cause: error },
      );
    }
    staged.push({ path: file.path, temp });
  }
  return staged;
}

/** Puts staged env files in place. */
export function commitEnvFiles(staged: readonly StagedEnvFile[]): void {
  for (const { path, temp } of staged) {
    try {
      renameOver(temp, path);
    } catch (error) {
      abandonEnvFiles(staged);
      if (error instanceof Deno.errors.NotCapable) throw error;
      throw new Error(`Cannot write the env file "${path}": ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}

/** Removes the temporary files of staged env files that were not put in place. */
export function abandonEnvFiles(staged: readonly StagedEnvFile[]): void {
  for (const { temp } of staged) {
    try {
      Deno.removeSync(temp);
    } catch {
      // Already put in place, or never there.
    }
  }
}

/** The env files that are missing or differ from `text`. */
export function staleEnvFiles(files: readonly EnvFile[], text: string): EnvFile[] {
  return files.filter((file) => {
    const found = readEnvFile(file.path);
    return found.state !== "ours" || found.text !== text;
  });
}

/** Removes the env files this tool wrote, and their stale temporary files; returns those removed. */
export function removeEnvFiles(files: readonly EnvFile[]): string[] {
  const removed: string[] = [];
  for (const file of files) {
    removeStaleTemporaryFiles(file.path);
    if (readEnvFile(file.path).state !== "ours") continue;
    try {
      Deno.removeSync(file.path);
      removed.push(file.path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return removed;
}
