import assert from "node:assert/strict";
import { chooseSlot } from "./choose_slot.ts";
import { parseConfig } from "./config.ts";
import type { PortProbe } from "./probe.ts";
import { assertCode } from "../test_util.ts";

Deno.test("chooseSlot() picks by the rules", async (t) => {
  const config = parseConfig({ ports: { web: 1000, api: 2000 }, stride: 10, slots: 5 });
  const allFree = { isFree: () => true };
  const cases: [string, Set<number>, Parameters<typeof chooseSlot>[2], number, boolean][] = [
    ["the main worktree always gets slot 0", new Set([1000]), { primary: true }, 0, false],
    ["a fresh worktree gets slot 1", new Set(), {}, 1, false],
    ["any reserved port of a slot skips it", new Set([2010, 1020]), {}, 3, false],
    ["the current slot is kept without probing", new Set(), { current: 4 }, 4, true],
    ["a current slot that a sibling reserves moves", new Set([2040]), { current: 4 }, 1, false],
    ["a current slot out of range moves", new Set(), { current: 9 }, 1, false],
    ["force chooses afresh", new Set(), { current: 4, force: true }, 1, false],
  ];
  for (const [name, reserved, options, slot, kept] of cases) {
    await t.step(name, async () => {
      const probe = {
        isFree: () => {
          assert.ok(!kept, "a kept slot must not be probed");
          return true;
        },
      };
      assert.deepEqual(await chooseSlot(config, reserved, { probe, ...options }), { slot, kept });
    });
  }
  await t.step("a busy port skips its slot", async () => {
    const probe = { isFree: (port: number) => port !== 2010 };
    assert.deepEqual(await chooseSlot(config, new Set(), { probe }), { slot: 2, kept: false });
  });
  await t.step("no slot left is NO_FREE_SLOT, saying how many and why", async () => {
    const reserved = new Set([1010, 1020, 1030]);
    const probe = { isFree: (port: number) => port < 1040 };
    await assert.rejects(chooseSlot(config, reserved, { probe }), (error: unknown) => {
      assertCode("NO_FREE_SLOT")(error);
      assert.match(
        (error as Error).message,
        /all 5 slots are taken \(3 reserved by other worktrees, 2 in use by other processes/,
      );
      return true;
    });
  });
  await t.step("slot 0 is never given to a linked worktree", async () => {
    const choice = await chooseSlot(config, new Set(), { probe: allFree, current: 0 });
    assert.deepEqual(choice, { slot: 1, kept: false });
  });
});

Deno.test("chooseSlot() never hands out or keeps a slot holding a port browsers refuse", async (t) => {
  // The default config reaches 6000 at slot 30.
  const config = parseConfig(undefined);
  const allFree = { isFree: () => true };
  const below = new Set(Array.from({ length: 29 }, (_, index) => 3100 + index * 100));
  await t.step("slot 30 (6000) is skipped for the lowest free slot after it", async () => {
    assert.deepEqual(await chooseSlot(config, below, { probe: allFree }), {
      slot: 31,
      kept: false,
    });
  });
  await t.step("a current slot on 6000 moves", async () => {
    const choice = await chooseSlot(config, new Set(), { probe: allFree, current: 30 });
    assert.deepEqual(choice, { slot: 1, kept: false });
  });
  await t.step("the main worktree still gets slot 0", async () => {
    const x11 = parseConfig({ ports: { web: 6000 } });
    assert.deepEqual(await chooseSlot(x11, new Set(), { primary: true }), { slot: 0, kept: false });
  });
  await t.step(
    "a config whose every slot is refused is NO_FREE_SLOT naming the ports",
    async () => {
      const irc = parseConfig({ ports: { web: 6665 }, stride: 1, slots: 4 });
      await assert.rejects(chooseSlot(irc, new Set(), { probe: allFree }), (error: unknown) => {
        assertCode("NO_FREE_SLOT")(error);
        assert.match(
          (error as Error).message,
          /all 4 slots are taken \(0 reserved by other worktrees, 0 in use by other processes, 4 holding a port browsers refuse: 6666, 6667, 6668, 6669;/,
        );
        return true;
      });
    },
  );
});

Deno.test("chooseSlot() skips a slot whose port the OS refuses, and says so when none is left", async (t) => {
  const config = parseConfig({ ports: { web: 1000, api: 2000 }, stride: 10, slots: 3 });
  await t.step("a denied port skips its slot like a busy one", async () => {
    const probe: PortProbe = {
      isFree: (port) => port !== 2010,
      status: (port) => port === 2010 ? "permission-denied" : "free",
    };
    assert.deepEqual(await chooseSlot(config, new Set(), { probe }), { slot: 2, kept: false });
  });
  await t.step("no slot left gives the reason and the ports", async () => {
    const probe: PortProbe = {
      isFree: () => false,
      status: (port) => port < 1020 ? "in-use" : "permission-denied",
    };
    await assert.rejects(chooseSlot(config, new Set(), { probe }), (error: unknown) => {
      assertCode("NO_FREE_SLOT")(error);
      assert.match(
        (error as Error).message,
        /all 3 slots are taken \(0 reserved by other worktrees, 1 in use by other processes, 2 refused by the operating system: permission denied binding 1020, 1030, as for a port below 1024 without privileges/,
      );
      return true;
    });
  });
  await t.step("a probe that only says free or not counts a refused port as in use", async () => {
    const probe = { isFree: () => false };
    await assert.rejects(
      chooseSlot(config, new Set(), { probe }),
      /0 reserved by other worktrees, 3 in use by other processes;/,
    );
  });
});
