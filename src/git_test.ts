import assert from "node:assert/strict";
import { denoGit } from "./git.ts";
import { assertCode, TempRepo } from "../test_util.ts";

Deno.test("a git error is the command and git's first error line, never its usage text", async () => {
  await using repo = await TempRepo.create();
  await assert.rejects(
    denoGit.run(["worktree", "list", "--no-such-option"], repo.root),
    (error: unknown) => {
      assertCode("GIT_FAILED")(error);
      assert.equal(
        (error as Error).message,
        `"git worktree list --no-such-option" failed with exit code 129: error: unknown option \`no-such-option'`,
      );
      return true;
    },
  );
});
