import assert from "node:assert/strict";
import { missingPermissionMessage } from "./permissions.ts";

Deno.test("missingPermissionMessage() is one line, with the reinstall command only when run from JSR", () => {
  const local = missingPermissionMessage(
    "--allow-write",
    'for "allocate"',
    "--allow-run=git --allow-read --allow-write",
    "file:///src/worktree-ports/cli.ts",
  );
  assert.equal(local, 'Missing permission: run again with --allow-write (for "allocate")');
  const fromJsr = missingPermissionMessage(
    "--allow-write",
    'for "allocate"',
    "--allow-run=git --allow-read --allow-write",
    "https://jsr.io/@org/worktree-ports/0.1.0/cli.ts",
  );
  assert.equal(
    fromJsr,
    'Missing permission: run again with --allow-write (for "allocate")\n' +
      '  installed with "deno install"? It takes no flags: reinstall it with deno install -g -f ' +
      "-n worktree-ports --allow-run=git --allow-read --allow-write jsr:@org/worktree-ports/cli",
  );
  // The flags are listed once in each line.
  for (const line of fromJsr.split("\n")) {
    assert.equal(line.split("--allow-write").length - 1, 1, line);
  }
});
