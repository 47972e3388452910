import assert from "node:assert/strict";
import { renameOver, writeFileAtomic } from "./files.ts";

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

Deno.test("renameOver() tries again on Windows while another process holds the file open", async (t) => {
  const heldOpen = (times: number, error: () => Error = () => accessDenied()) => {
    const calls: string[] = [];
    return {
      calls,
      rename: (from: string, to: string) => {
        calls.push(`${from}>${to}`);
        if (calls.length <= times) throw error();
      },
    };
  };
  const accessDenied = () => new Deno.errors.PermissionDenied("Access is denied. (os error 5)");
  await t.step("a file let go of a moment later is replaced", () => {
    const fake = heldOpen(2);
    renameOver("a.tmp", "a", { rename: fake.rename, windows: true });
    assert.deepEqual(fake.calls, ["a.tmp>a", "a.tmp>a", "a.tmp>a"]);
  });
  await t.step("a sharing violation is waited out too", () => {
    const fake = heldOpen(1, () => new Error("The process cannot access the file (os error 32)"));
    renameOver("a.tmp", "a", { rename: fake.rename, windows: true });
    assert.equal(fake.calls.length, 2);
  });
  await t.step("a file held for good fails after the bounded wait", () => {
    const fake = heldOpen(Infinity);
    assert.throws(
      () => renameOver("a.tmp", "a", { rename: fake.rename, windows: true, retryMs: 50 }),
      Deno.errors.PermissionDenied,
    );
    assert.ok(fake.calls.length > 1 && fake.calls.length < 10, `${fake.calls.length} tries`);
  });
  await t.step("any other error, and any error elsewhere, is let through at once", () => {
    const missing = heldOpen(1, () => new Deno.errors.NotFound("gone"));
    assert.throws(() => renameOver("a.tmp", "a", { rename: missing.rename, windows: true }));
    assert.equal(missing.calls.length, 1);
    const unix = heldOpen(1);
    assert.throws(() => renameOver("a.tmp", "a", { rename: unix.rename, windows: false }));
    assert.equal(unix.calls.length, 1);
  });
});
