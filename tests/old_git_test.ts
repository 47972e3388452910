// Git before 2.36 has no `worktree list -z`: the newline porcelain it writes
// instead, and the fallback to it. `.ci/run` runs the git-facing tests again
// on git 2.30.

import assert from "node:assert/strict";
import { denoGit, listWorktrees, parseWorktreeList, WorktreePortsError } from "../mod.ts";
import { allocateIn, TempRepo, webPorts } from "../test_util.ts";

/** A real git that answers `worktree list -z` as git 2.30 does, counting the listings. */
function gitWithoutListZ(calls: string[]) {
  return {
    async run(args: readonly string[], cwd: string): Promise<string> {
      calls.push(args.join(" "));
      if (args[0] === "worktree" && args.includes("-z")) {
        throw new WorktreePortsError(
          "GIT_FAILED",
          `"git ${args.join(" ")}" failed with exit code 129: error: unknown switch \`z'`,
        );
      }
      return await denoGit.run(args, cwd);
    },
  };
}

Deno.test("parseWorktreeList() reads the newline format of git before 2.36", async (t) => {
  const head = "HEAD 1111111111111111111111111111111111111111";
  const table: [string, string, Partial<ReturnType<typeof parseWorktreeList>[number]>[]][] = [
    [
      "every attribute",
      `worktree /srv/repo.git\nbare\n\nworktree /srv/wt\n${head}\nbranch refs/heads/x\nlocked\n\n` +
      `worktree /srv/gone\n${head}\ndetached\nprunable gitdir file points to non-existent location\n\n`,
      [
        { path: "/srv/repo.git", bare: true },
        { path: "/srv/wt", branch: "x", locked: true },
        { path: "/srv/gone", detached: true, prunable: true },
      ],
    ],
    [
      "a path written as it is, with spaces, quotes, backslashes and unicode",
      `worktree /srv/a "b" \\c ü\n${head}\ndetached\n\n`,
      [{ path: '/srv/a "b" \\c ü', detached: true }],
    ],
    [
      "a path holding newlines and an empty line, as git before 2.36 writes it",
      `worktree /srv/one\ntwo\n\nbranch x\n${head}\nbranch refs/heads/y\n\n`,
      [{ path: "/srv/one\ntwo\n\nbranch x", branch: "y" }],
    ],
    [
      "a path in git's C-style quotes: escapes and octal UTF-8 bytes",
      `worktree "/srv/a\\tb\\n\\"q\\" \\\\ \\303\\274"\n${head}\n\n`,
      [{ path: '/srv/a\tb\n"q" \\ ü' }],
    ],
    ["nothing", "", []],
  ];
  for (const [name, output, expected] of table) {
    await t.step(name, () => {
      const parsed = parseWorktreeList(output);
      assert.equal(parsed.length, expected.length);
      parsed.forEach((worktree, index) => {
        const fields = Object.keys(expected[index]) as (keyof typeof worktree)[];
        assert.deepEqual(
          Object.fromEntries(fields.map((key) => [key, worktree[key]])),
          expected[index],
        );
      });
    });
  }
});

Deno.test("listWorktrees() falls back to newline porcelain once and tells a gone directory itself", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const odd = [
    await repo.addWorktree('with space "quoted" \\ back'),
    await repo.addWorktree("new\nline"),
    await repo.addWorktree("ünïcødé €"),
  ];
  const gone = await repo.addWorktree("gone");
  await Deno.remove(gone, { recursive: true });
  const calls: string[] = [];
  const git = gitWithoutListZ(calls);
  const worktrees = await listWorktrees({ cwd: repo.root, git });
  // Git lists linked worktrees in the order of their names under .git/worktrees.
  assert.deepEqual(
    worktrees.map(({ path, prunable }) => [path, prunable]).sort(),
    [[repo.root, false], ...odd.map((path) => [path, false]), [gone, true]].sort(),
  );
  assert.deepEqual(calls, ["worktree list --porcelain -z", "worktree list --porcelain"]);
  calls.length = 0;
  await listWorktrees({ cwd: odd[1], git });
  assert.deepEqual(calls, ["worktree list --porcelain"], "the format is remembered");
  // Every worktree is found and allocated through the fallback.
  for (const [index, cwd] of odd.entries()) {
    assert.equal((await allocateIn(cwd, ports, { git, ignoreOutput: false })).slot, index + 1);
  }
});
