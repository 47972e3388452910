import assert from "node:assert/strict";
import { unwarned, WARNED_FILE_NAME } from "./warned.ts";

Deno.test("unwarned() gives a config's warnings once, and again when they change", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.deepEqual(unwarned(dir, []), []);
    // Nothing to remember: no file is written.
    await assert.rejects(Deno.stat(`${dir}/${WARNED_FILE_NAME}`), Deno.errors.NotFound);
    assert.deepEqual(unwarned(dir, ["a", "b"]), ["a", "b"]);
    assert.deepEqual(unwarned(dir, ["a", "b"]), []);
    assert.deepEqual(unwarned(dir, ["a", "c"]), ["c"]);
    assert.deepEqual(unwarned(dir, ["a"]), []);
    // Gone and back: said again.
    assert.deepEqual(unwarned(dir, ["a", "c"]), ["c"]);
    // A lost file only repeats them.
    await Deno.remove(`${dir}/${WARNED_FILE_NAME}`);
    assert.deepEqual(unwarned(dir, ["a", "c"]), ["a", "c"]);
    // A folder that cannot be written to: the warnings are still given.
    assert.deepEqual(unwarned(`${dir}/missing`, ["a"]), ["a"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
