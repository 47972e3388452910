import assert from "node:assert/strict";
import { writeFileAtomic } from "./files.ts";

Deno.test("writeFileAtomic() replaces the file whole and leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/f.json`, "old\n");
    writeFileAtomic(`${dir}/f.json`, "new\n");
    assert.equal(await Deno.readTextFile(`${dir}/f.json`), "new\n");
    await Deno.mkdir(`${dir}/d`);
    assert.throws(() => writeFileAtomic(`${dir}/d`, "x"), /Cannot write ".*\/d"/);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["d", "f.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
