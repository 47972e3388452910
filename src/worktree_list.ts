// The worktrees git lists, in both porcelain formats (`-z` from git 2.36, lines before).

import { type Environment, environmentOf } from "./environment.ts";
import { notAWorktree, WorktreePortsError } from "./errors.ts";
import { pathExists } from "./files.ts";
import type { GitRunner } from "./git.ts";
import { adminEntryOf, gitDirsOf } from "./git_dirs.ts";
import { joinPath, resolvePath } from "./paths.ts";

/** One entry of `git worktree list`. */
export interface Worktree {
  /** Directory of the worktree, as git reports it (for a bare repository, the repository itself). */
  path: string;
  /** Commit checked out, absent for a bare repository. */
  head?: string;
  /** Branch checked out, without `refs/heads/`; absent when detached or bare. */
  branch?: string;
  /** The entry is a bare repository: it has no files and no port file. */
  bare: boolean;
  /** HEAD is detached. */
  detached: boolean;
  /** The worktree is locked against pruning (git 2.31 and later report it; older git, never). */
  locked: boolean;
  /**
   * The worktree's directory is gone: git reports it from 2.31 on; with older
   * git, {@linkcode listWorktrees} checks the directory itself.
   */
  prunable: boolean;
}

/**
 * Parses the output of `git worktree list --porcelain -z` or, from git older
 * than 2.36, which lacks `-z`, of `git worktree list --porcelain`.
 *
 * @param output The raw output: NUL-terminated attributes, records separated
 * by an empty one; or the same with newlines, which is how it is read when it
 * holds no NUL.
 * @returns The worktrees in git's order: the main worktree (or bare repository) first.
 *
 * @example Usage
 * ```ts
 * import { parseWorktreeList } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const output = "worktree /repo\0HEAD abc\0branch refs/heads/main\0\0" +
 *   "worktree /repo wt\0HEAD abc\0detached\0\0";
 * const [main, linked] = parseWorktreeList(output);
 * assert.equal(main.branch, "main");
 * assert.equal(linked.path, "/repo wt");
 * assert.equal(linked.detached, true);
 * ```
 */
export function parseWorktreeList(output: string): Worktree[] {
  if (output !== "" && !output.includes("\0")) return parseWorktreeLines(output);
  const worktrees: Worktree[] = [];
  let current: Worktree | undefined;
  for (const field of output.split("\0")) {
    if (field === "") {
      current = undefined;
      continue;
    }
    const space = field.indexOf(" ");
    const name = space === -1 ? field : field.slice(0, space);
    const value = space === -1 ? "" : field.slice(space + 1);
    if (name === "worktree") {
      current = {
        path: value,
        bare: false,
        detached: false,
        locked: false,
        prunable: false,
      };
      worktrees.push(current);
    } else if (current === undefined) {
      continue;
    } else if (name === "HEAD") {
      current.head = value;
    } else if (name === "branch") {
      current.branch = value.replace(/^refs\/heads\//, "");
    } else if (name === "bare" || name === "detached" || name === "locked" || name === "prunable") {
      current[name] = true;
    }
  }
  return worktrees;
}

/** Options for {@linkcode listWorktrees}. */
export interface ListWorktreesOptions extends Pick<Environment, "git"> {
  /**
   * A directory inside the repository.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
}

/**
 * Lists every worktree of the repository that contains `cwd`, with one
 * `git worktree list --porcelain -z` call. A listing that fails while
 * another worktree is being added is tried again a few times, for about 200 ms.
 *
 * @param options The directory and the git runner.
 * @returns The worktrees in git's order: the main worktree (or bare repository) first.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` outside a git
 * repository, `GIT_FAILED` when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { listWorktrees } from "@org/worktree-ports";
 *
 * for (const worktree of await listWorktrees()) console.log(worktree.path);
 * ```
 */
export async function listWorktrees(
  options: ListWorktreesOptions = {},
): Promise<Worktree[]> {
  const cwd = options.cwd ?? Deno.cwd();
  const { git } = environmentOf(options);
  for (let attempt = 0;; attempt++) {
    try {
      return await runWorktreeList(git, cwd);
    } catch (error) {
      if (!(error instanceof WorktreePortsError) || error.code !== "GIT_FAILED") throw error;
      if (/not a git repository/i.test(error.message)) throw notAWorktree(cwd, error);
      // While "git worktree add" runs, a listing can fail on the half-made
      // entry ("failed to read .../commondir"); it is whole moments later.
      if (attempt >= LIST_RETRY_DELAYS_MS.length) throw error;
      await new Promise((resolve) => setTimeout(resolve, LIST_RETRY_DELAYS_MS[attempt]));
    }
  }
}

/** Pauses between attempts to list the worktrees: about 200 ms in all. */
const LIST_RETRY_DELAYS_MS: readonly number[] = [20, 40, 60, 80];

/**
 * Which `git worktree list` each git runner understands, learnt from its
 * first listing: `-z` (git 2.36 and later) or newline-separated lines. New
 * git is asked once per listing; old git is asked without `-z` from its
 * second listing on, whichever operation lists. It is a fact about the runner,
 * which callers bring and may share between operations, so it is kept beside
 * the runner rather than in any one operation's state.
 */
const WORKTREE_LIST_FORMATS = new WeakMap<GitRunner, "nul" | "lines">();

/** Lists the worktrees with whichever porcelain format `git` supports. */
async function runWorktreeList(git: GitRunner, cwd: string): Promise<Worktree[]> {
  if (WORKTREE_LIST_FORMATS.get(git) !== "lines") {
    try {
      const output = await git.run(["worktree", "list", "--porcelain", "-z"], cwd);
      WORKTREE_LIST_FORMATS.set(git, "nul");
      return await withSubmoduleWorktree(parseWorktreeList(output), git);
    } catch (error) {
      if (!(error instanceof WorktreePortsError && /unknown switch `z'/.test(error.message))) {
        throw error;
      }
      WORKTREE_LIST_FORMATS.set(git, "lines");
    }
  }
  const worktrees = await withSubmoduleWorktree(
    parseWorktreeList(await git.run(["worktree", "list", "--porcelain"], cwd)),
    git,
  );
  // Git reports a worktree whose directory is gone as `prunable` only from
  // 2.31 on, and a locked one as `locked` only from 2.36; before that, the
  // directory and the admin entry's `locked` file tell.
  for (const worktree of worktrees) {
    if (!worktree.bare && !worktree.prunable && !pathExists(worktree.path)) {
      worktree.locked = isLockedAway(worktrees, worktree.path);
      worktree.prunable = !worktree.locked;
    }
  }
  return worktrees;
}

/**
 * Whether git keeps a worktree whose directory is gone because it is locked
 * (`<common dir>/worktrees/<id>/locked` exists), as git does not prune it.
 */
function isLockedAway(worktrees: readonly Worktree[], path: string): boolean {
  const main = worktrees[0];
  let commonDir: string;
  try {
    commonDir = main.bare ? main.path : gitDirsOf(main.path).commonDir;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return false;
  }
  const admin = adminEntryOf(commonDir, path);
  return admin !== undefined && pathExists(joinPath(admin.dir, "locked"));
}

/**
 * Git names a submodule's main worktree by its git directory, the
 * superproject's `.git/modules/NAME`, whose `core.worktree` says where the
 * files are. A main worktree without `.git` but with a `HEAD` is such a git
 * directory; only then is git asked a second time.
 */
async function withSubmoduleWorktree(worktrees: Worktree[], git: GitRunner): Promise<Worktree[]> {
  const main = worktrees[0];
  if (
    main === undefined || main.bare || main.prunable ||
    pathExists(joinPath(main.path, ".git")) || !pathExists(joinPath(main.path, "HEAD"))
  ) {
    return worktrees;
  }
  try {
    const configured = await git.run(
      ["config", "--file", joinPath(main.path, "config"), "core.worktree"],
      main.path,
    );
    main.path = resolvePath(main.path, configured.replace(/\r?\n$/, ""));
  } catch (error) {
    // No core.worktree: git's own name for it is the best there is.
    if (!(error instanceof WorktreePortsError)) throw error;
  }
  return worktrees;
}

/**
 * Parses newline-separated porcelain. Git before 2.36 writes paths as they
 * are, so a path holding a newline continues on the next lines, up to the
 * `HEAD` or `bare` line that always follows it. A path written in double
 * quotes, C-style, as git quotes unusual names elsewhere, is unquoted: an
 * absolute path never starts with a quote.
 */
function parseWorktreeLines(output: string): Worktree[] {
  const fields: string[] = [];
  let path: string[] | undefined;
  for (const line of output.replace(/\n$/, "").split("\n")) {
    if (path !== undefined && line !== "bare" && !/^HEAD [0-9a-f]+$/.test(line)) {
      path.push(line);
      continue;
    }
    if (path !== undefined) fields.push(unquoteGitPath(path.join("\n")));
    path = line.startsWith("worktree ") ? [line] : undefined;
    if (path === undefined) fields.push(line);
  }
  if (path !== undefined) fields.push(unquoteGitPath(path.join("\n")));
  return parseWorktreeList(fields.join("\0") + "\0");
}

/** `worktree "…"` with git's C-style quoting undone; any other line as it is. */
function unquoteGitPath(line: string): string {
  const match = /^worktree "((?:[^"\\]|\\.)*)"$/s.exec(line);
  if (match === null) return line;
  const escapes: Record<string, number> = {
    a: 7,
    b: 8,
    t: 9,
    n: 10,
    v: 11,
    f: 12,
    r: 13,
    '"': 34,
    "\\": 92,
  };
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let index = 0; index < match[1].length; index++) {
    const char = match[1][index];
    if (char !== "\\") {
      bytes.push(...encoder.encode(char));
      continue;
    }
    const octal = /^[0-3][0-7]{2}/.exec(match[1].slice(index + 1));
    if (octal !== null) {
      bytes.push(parseInt(octal[0], 8));
      index += 3;
    } else {
      const next = match[1][++index];
      bytes.push(escapes[next] ?? next.charCodeAt(0));
    }
  }
  return "worktree " + new TextDecoder().decode(new Uint8Array(bytes));
}
