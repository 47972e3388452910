import assert from "node:assert/strict";
import { homeVariablesToSet, machineIndexDir } from "./index_home.ts";

Deno.test("machineIndexDir() follows WORKTREE_PORTS_HOME, XDG_STATE_HOME, HOME and LOCALAPPDATA", async (t) => {
  const cases: [string, Record<string, string>, typeof Deno.build.os, string | undefined][] = [
    ["WORKTREE_PORTS_HOME wins", { WORKTREE_PORTS_HOME: "/x", HOME: "/h" }, "linux", "/x"],
    ["XDG_STATE_HOME next", { XDG_STATE_HOME: "/s", HOME: "/h" }, "linux", "/s/worktree-ports"],
    [
      "a relative XDG_STATE_HOME is ignored",
      { XDG_STATE_HOME: "s", HOME: "/h" },
      "linux",
      "/h/.local/state/worktree-ports",
    ],
    ["HOME on macOS", { HOME: "/Users/a" }, "darwin", "/Users/a/.local/state/worktree-ports"],
    ["nothing set", {}, "linux", undefined],
    ["an empty HOME", { HOME: "" }, "linux", undefined],
    [
      "LOCALAPPDATA on Windows",
      { LOCALAPPDATA: "C:\\Users\\a\\AppData\\Local", HOME: "/h" },
      "windows",
      "C:\\Users\\a\\AppData\\Local\\worktree-ports",
    ],
    ["no LOCALAPPDATA on Windows", { HOME: "/h" }, "windows", undefined],
  ];
  for (const [name, env, os, expected] of cases) {
    await t.step(name, () => {
      assert.equal(machineIndexDir((variable) => env[variable], os), expected);
    });
  }
});

Deno.test("homeVariablesToSet() names the variables each system reads the index folder from", () => {
  assert.equal(homeVariablesToSet("windows"), "set LOCALAPPDATA or WORKTREE_PORTS_HOME");
  assert.equal(homeVariablesToSet("linux"), "set HOME or WORKTREE_PORTS_HOME");
  assert.equal(homeVariablesToSet("darwin"), "set HOME or WORKTREE_PORTS_HOME");
});
