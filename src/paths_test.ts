import assert from "node:assert/strict";
import {
  comparablePath,
  isAbsolutePath,
  parentOf,
  relativeInside,
  resolvePath,
  rootOf,
  slashedPath,
} from "./paths.ts";

Deno.test("path helpers on Unix", () => {
  assert.equal(resolvePath("/repo/app", "../x/./ports.json", false), "/repo/x/ports.json");
  assert.equal(resolvePath("/repo", "/a//b/", false), "/a/b");
  assert.equal(resolvePath("/", "../..", false), "/");
  assert.equal(parentOf("/a/b", false), "/a");
  assert.equal(parentOf("/a", false), "/");
  assert.equal(parentOf("/", false), "/");
  // A backslash is part of a name on Unix.
  assert.equal(relativeInside("/repo", "/repo/a\\b", false), "a\\b");
  assert.equal(relativeInside("/repo", "/repository/x", false), undefined);
  assert.equal(isAbsolutePath("C:\\x", false), false);
  assert.equal(slashedPath("a\\b", false), "a\\b");
});

Deno.test("path helpers under Windows' rules keep UNC roots and drive roots", async (t) => {
  await t.step("a UNC path keeps its leading slashes and its share", () => {
    assert.equal(rootOf("//server/share/repo", true), "//server/share/");
    assert.equal(rootOf("\\\\wsl.localhost\\Ubuntu\\home", true), "\\\\wsl.localhost\\Ubuntu\\");
    assert.equal(resolvePath("//server/share/repo", ".git/../x", true), "//server/share/repo/x");
    assert.equal(
      resolvePath("C:\\work", "\\\\wsl.localhost\\Ubuntu\\home\\me\\.git", true),
      "//wsl.localhost/Ubuntu/home/me/.git",
    );
    assert.equal(resolvePath("//server/share/repo", "../../..", true), "//server/share");
    assert.equal(parentOf("//server/share/repo", true), "//server/share/");
    assert.equal(isAbsolutePath("\\\\server\\share\\x", true), true);
  });
  await t.step("a drive's root keeps its slash, since C: alone is a current directory", () => {
    assert.equal(parentOf("C:\\x", true), "C:\\");
    assert.equal(parentOf("C:/x/y", true), "C:/x");
    assert.equal(resolvePath("C:\\x", "..", true), "C:/");
    assert.equal(resolvePath("C:\\a\\b", "..\\c\\ports.json", true), "C:/a/c/ports.json");
    assert.equal(resolvePath("C:\\a", "D:\\b", true), "D:/b");
    assert.equal(isAbsolutePath("C:x", true), false);
  });
  await t.step("long paths keep the root after their prefix", () => {
    assert.equal(rootOf("\\\\?\\C:\\a", true), "\\\\?\\C:\\");
    assert.equal(resolvePath("C:\\", "\\\\?\\C:\\a\\..\\b", true), "\\\\?\\C:\\b");
  });
  await t.step(".git\\hooks lies inside .git", () => {
    assert.equal(relativeInside("C:/repo", "C:\\repo\\.git\\hooks", true), ".git\\hooks");
    assert.equal(relativeInside("c:\\Repo", "C:/repo/.git", true), ".git");
  });
  await t.step("both spellings of one file compare, and are kept, as one", () => {
    assert.equal(comparablePath("C:\\a/b", true), comparablePath("C:/a/b", true));
    assert.equal(slashedPath("C:\\a/b", true), "C:/a/b");
  });
});
