import assert from "node:assert/strict";
import { readReservedPorts } from "./reservations.ts";
import { writeJson } from "../test_util.ts";

Deno.test("readReservedPorts() skips unreadable files with a warning and ignores missing ones", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeJson(`${dir}/good.json`, { web: 41010 });
    await Deno.writeTextFile(`${dir}/bad.json`, "{ not json");
    await Deno.mkdir(`${dir}/dir.json`);
    const reserved = readReservedPorts([
      `${dir}/good.json`,
      `${dir}/bad.json`,
      `${dir}/dir.json`,
      `${dir}/missing.json`,
    ]);
    assert.deepEqual([...reserved.holders], [[41010, `${dir}/good.json`]]);
    assert.equal(reserved.warnings.length, 2);
    assert.match(reserved.warnings[0], /bad\.json.*not valid JSON/);
    assert.match(reserved.warnings[1], /dir\.json/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
