import assert from "node:assert/strict";
import { lockRepository } from "./lock.ts";
import { assertCode } from "../test_util.ts";

Deno.test("lockRepository() excludes a second holder until the first releases", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await lockRepository(dir);
    let waitedOn: string | undefined;
    await assert.rejects(
      lockRepository(dir, { timeoutMs: 50, onWait: (path) => (waitedOn = path) }),
      assertCode("LOCK_TIMEOUT"),
    );
    assert.equal(waitedOn, `${dir}/worktree-ports.lock`);
    const second = lockRepository(dir, { timeoutMs: 5000 });
    setTimeout(() => first.release(), 50);
    (await second).release();
    first.release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lockRepository() rejects a negative timeout", async () => {
  await assert.rejects(lockRepository("/nonexistent", { timeoutMs: -1 }), RangeError);
});
