import assert from "node:assert/strict";
import { editDistance, nearest } from "./suggest.ts";

Deno.test("nearest() names the valid word a typo most likely meant, and nothing when none is near", () => {
  const commands = ["allocate", "show", "env", "exec", "list", "slots", "check", "release", "help"];
  assert.equal(nearest("alocate", commands), "allocate");
  assert.equal(nearest("lsit", commands), "list");
  assert.equal(nearest("CHECK", commands), "check");
  assert.equal(nearest("relase", commands), "release");
  assert.equal(nearest("deploy", commands), undefined);
  assert.equal(nearest("--ouptut", ["--output", "--port", "--force"]), "--output");
  assert.equal(nearest("-x", ["-h"]), undefined, "too short to guess from");
  assert.equal(editDistance("ab", "ba"), 1, "a swap is one edit");
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("kitten", "sitting"), 3);
});
