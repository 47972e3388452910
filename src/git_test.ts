import assert from "node:assert/strict";
import { denoGit } from "./git.ts";
import { refusedLoaderVariables } from "./programs.ts";
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

Deno.test("refusedLoaderVariables() reads the names from Deno's refusal, and nothing else", () => {
  const refusal = (names: string) =>
    new Deno.errors.NotCapable(
      `Requires --allow-run permissions to spawn subprocess with ${names}. Alternatively, ` +
        "spawn with the environment variable unset.",
    );
  assert.deepEqual(
    refusedLoaderVariables(refusal("LD_LIBRARY_PATH environment variable")),
    ["LD_LIBRARY_PATH"],
  );
  assert.deepEqual(
    refusedLoaderVariables(refusal("LD_PRELOAD, dyld_insert_libraries environment variables")),
    ["LD_PRELOAD", "dyld_insert_libraries"],
  );
  // Any other refusal is passed on as it is.
  assert.equal(refusedLoaderVariables(refusal("PATH environment variable")), undefined);
  assert.equal(
    refusedLoaderVariables(new Deno.errors.NotCapable('Requires run access to "git"')),
    undefined,
  );
  assert.equal(refusedLoaderVariables(new Error("LD_PRELOAD environment variable")), undefined);
});
