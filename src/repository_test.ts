import assert from "node:assert/strict";
import { isInGitDirectory, openRepository } from "./repository.ts";
import { assertCode, run, TempRepo, testWhere } from "../test_util.ts";

Deno.test("openRepository() finds the worktree from a subdirectory with one git call", async () => {
  await using repo = await TempRepo.create();
  const linked = await repo.addWorktree("linked one ü");
  await Deno.mkdir(`${linked}/src/deep`, { recursive: true });
  const calls: string[][] = [];
  const repository = await openRepository({
    cwd: `${linked}/src/deep`,
    git: {
      async run(args, cwd) {
        calls.push([...args]);
        return (await run("git", args, { cwd })).stdout;
      },
    },
  });
  assert.equal(repository.root, linked);
  assert.equal(repository.primary, false);
  assert.equal(repository.commonDir, `${repo.root}/.git`);
  assert.deepEqual(calls, [["worktree", "list", "--porcelain", "-z"]]);
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "openRepository() finds the worktree when git spells its path through a symlink",
  async () => {
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    await Deno.symlink(repo.base, `${repo.base}-link`);
    try {
      // Git records real paths today; a path given through a link must still match.
      const linked = {
        async run(args: readonly string[], cwd: string) {
          const output = (await run("git", args, { cwd })).stdout;
          return output.replaceAll(`worktree ${repo.base}/`, `worktree ${repo.base}-link/`);
        },
      };
      const repository = await openRepository({ cwd: a, git: linked });
      assert.equal(repository.current.path, `${repo.base}-link/wt0`);
      assert.equal(repository.root, a);
    } finally {
      await Deno.remove(`${repo.base}-link`);
    }
  },
);

Deno.test("openRepository() rejects a directory outside any repository", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(openRepository({ cwd: dir }), (error: unknown) => {
      assertCode("NOT_A_WORKTREE")(error);
      assert.match((error as Error).message, /is not inside a git worktree/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("isInGitDirectory() finds git's own directory in either slash, and any case on Windows", () => {
  assert.equal(isInGitDirectory("/repo", "/repo/.git/hooks", false), true);
  assert.equal(isInGitDirectory("/repo", "/repo/.github", false), false);
  assert.equal(isInGitDirectory("/repo", "/repo/app", false), false);
  assert.equal(isInGitDirectory("C:/repo", "C:\\repo\\.git\\hooks", true), true);
  assert.equal(isInGitDirectory("C:/repo", "c:\\Repo\\.GIT", true), true);
  assert.equal(isInGitDirectory("C:/repo", "C:\\repo\\.github", true), false);
});
