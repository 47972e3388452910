// Env files: the bundle in dotenv form, written beside the port file for the
// tools that read one (compose, node --env-file, Vite, python-dotenv).

import { bundleEnv, formatEnv } from "./env.ts";
import { clip, WorktreePortsError } from "./errors.ts";
import { fileProblemOf, readRegularTextFile, writeFileAtomic } from "./files.ts";
import { joinPath, parentOf } from "./paths.ts";

/**
 * The first line of every env file this tool writes. A file that starts
 * otherwise is someone else's, and is never replaced or removed.
 */
export const ENV_FILE_HEADER =
  "# Written by worktree-ports from this worktree's port file; do not edit (it is rewritten)";

/** An env file of a worktree: where it is, and its path from the worktree root. */
export interface EnvFile {
  path: string;
  inside: string;
}

/** The env files a config names, for the worktree at `root`. */
export function envFilesOf(root: string, names: readonly string[] | undefined): EnvFile[] {
  return (names ?? []).map((inside) => ({ path: joinPath(root, inside), inside }));
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

/** How `check` describes an env file that is someone else's; `check --fix` cannot repair it. */
export const FOREIGN_ENV_FILE = "is a file this tool did not write";

/** What is at an env file's path now. */
export type EnvFileState =
  | { state: "missing" | "empty" }
  | { state: "ours"; text: string }
  | { state: "foreign"; reason: string };

/** Reads what is at an env file's path: nothing, a file this tool wrote, or someone else's. */
export function readEnvFile(path: string): EnvFileState {
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

/**
 * Writes each env file whose text differs from `text`; returns whether any
 * was written. The caller holds the lock and has checked that none is
 * someone else's.
 */
export function writeEnvFiles(files: readonly EnvFile[], text: string): boolean {
  let written = false;
  for (const file of files) {
    const found = readEnvFile(file.path);
    if (found.state === "ours" && found.text === text) continue;
    Deno.mkdirSync(parentOf(file.path), { recursive: true });
    writeFileAtomic(file.path, text);
    written = true;
  }
  return written;
}

/** The env files that are missing or differ from `text`. */
export function staleEnvFiles(files: readonly EnvFile[], text: string): EnvFile[] {
  return files.filter((file) => {
    const found = readEnvFile(file.path);
    return found.state !== "ours" || found.text !== text;
  });
}

/** Removes the env files this tool wrote; returns those removed. */
export function removeEnvFiles(files: readonly EnvFile[]): string[] {
  const removed: string[] = [];
  for (const file of files) {
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
