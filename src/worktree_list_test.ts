import assert from "node:assert/strict";
import { WorktreePortsError } from "./errors.ts";
import { denoGit } from "./git.ts";
import { parseWorktreeList } from "./worktree_list.ts";
import { allocateIn, assertCode, TempRepo, webPorts } from "../test_util.ts";

Deno.test("parseWorktreeList() reads every attribute, including unusual paths", () => {
  const output = [
    "worktree /srv/repo.git\0bare\0",
    "worktree /srv/wt one\nwith newline ü\0HEAD 1111\0branch refs/heads/feature/x\0locked\0",
    "worktree /srv/gone\0HEAD 2222\0detached\0prunable gitdir file points to non-existent location\0",
    "",
  ].join("\0");
  assert.deepEqual(parseWorktreeList(output), [
    { path: "/srv/repo.git", bare: true, detached: false, locked: false, prunable: false },
    {
      path: "/srv/wt one\nwith newline ü",
      head: "1111",
      branch: "feature/x",
      bare: false,
      detached: false,
      locked: true,
      prunable: false,
    },
    {
      path: "/srv/gone",
      head: "2222",
      bare: false,
      detached: true,
      locked: false,
      prunable: true,
    },
  ]);
});

Deno.test("listWorktrees() tries again when a listing fails while a worktree is being added", async (t) => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const failing = (failures: number) => {
    let calls = 0;
    return {
      get calls() {
        return calls;
      },
      run(args: readonly string[], cwd: string): Promise<string> {
        if (args[0] === "worktree" && ++calls <= failures) {
          return Promise.reject(
            new WorktreePortsError(
              "GIT_FAILED",
              `"git worktree list --porcelain -z" failed with exit code 128: fatal: failed to read ${repo.root}/.git/worktrees/wt1/commondir: Success`,
            ),
          );
        }
        return denoGit.run(args, cwd);
      },
    };
  };
  await t.step("one failure: the allocation goes through", async () => {
    const git = failing(1);
    const allocation = await allocateIn(a, ports, { git });
    assert.equal(allocation.slot, 1);
    // Git before 2.36 takes one more call, to learn that it lacks -z.
    assert.ok(git.calls === 2 || git.calls === 3, `${git.calls} calls`);
  });
  await t.step("failures that last: git's error, after a few tries", async () => {
    const git = failing(Infinity);
    await assert.rejects(allocateIn(a, ports, { git }), assertCode("GIT_FAILED"));
    assert.ok(git.calls > 2 && git.calls < 10, `${git.calls} calls`);
  });
  await t.step("not a repository: no second try", async () => {
    const outside = await Deno.makeTempDir();
    try {
      let calls = 0;
      const git = {
        run(args: readonly string[], cwd: string) {
          calls++;
          return denoGit.run(args, cwd);
        },
      };
      await assert.rejects(allocateIn(outside, ports, { git }), assertCode("NOT_A_WORKTREE"));
      assert.equal(calls, 1);
    } finally {
      await Deno.remove(outside);
    }
  });
});
