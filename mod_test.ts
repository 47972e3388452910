import assert from "node:assert/strict";
import {
  allocate,
  BROWSER_BLOCKED_PORTS,
  bundleEnv,
  chooseSlot,
  configWarnings,
  denoGit,
  type EnvFormat,
  ephemeralPortRange,
  fixWorktrees,
  formatEnv,
  inspectWorktrees,
  isPortFree,
  listSlots,
  listWorktrees,
  lockRepository,
  machineIndexAt,
  machineIndexDir,
  openRepository,
  parseConfig,
  parseWorktreeList,
  type PortProbe,
  portStatus,
  readReservedPorts,
  renderBundle,
  reservedPortsOf,
  runWithPorts,
  slugOf,
  WorktreePortsError,
  writeFileAtomic,
} from "./mod.ts";
import {
  allocateIn,
  assertCode,
  copyPackage,
  dotenvReaders,
  forEachLoopback,
  git,
  pickPorts,
  readJson,
  run,
  snapshot,
  TempRepo,
  TEST_HOME,
  UNPRIVILEGED,
  webPorts,
  writeJson,
} from "./test_util.ts";

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/** One step per case: parseConfig() refuses the value with INVALID_CONFIG and a matching message. */
async function assertConfigErrors(
  t: Deno.TestContext,
  cases: readonly (readonly [string, unknown, RegExp])[],
): Promise<void> {
  for (const [name, value, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseConfig(value), (error: unknown) => {
        assertCode("INVALID_CONFIG")(error);
        assert.match((error as Error).message, message);
        return true;
      });
    });
  }
}

Deno.test("parseConfig() fills in the defaults when there is no config", () => {
  assert.deepEqual(parseConfig(undefined), {
    ports: { port: 3000 },
    templates: {},
    stride: 100,
    slots: 50,
  });
});

Deno.test("parseConfig() lets overrides add ports and replace stride and slots", () => {
  const config = parseConfig(
    { ports: { a: 1000, b: 2000 }, stride: 5, slots: 3 },
    { ports: { c: 9000, b: 3000 }, stride: 7, slots: 4 },
  );
  assert.deepEqual(config, {
    ports: { a: 1000, b: 3000, c: 9000 },
    templates: {},
    stride: 7,
    slots: 4,
  });
});

Deno.test("parseConfig() rejects each invalid config with a message naming the problem", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ["a non-object", [1, 2], /must be a JSON object/],
    ["an unknown key", { ports: { a: 1000 }, strides: 10 }, /unknown key "strides"/],
    ["an empty ports", { ports: {} }, /at least one port/],
    ["ports that is not an object", { ports: [3000] }, /"ports" must be an object/],
    ["a key that cannot be an env name", { ports: { "web-port": 3000 } }, /key "web-port"/],
    ["the reserved metadata key", { ports: { worktree_ports: 3000 } }, /reserved/],
    ["a non-integer port", { ports: { web: 3000.5 } }, /port "web" must be an integer/],
    ["a string port", { ports: { web: "3000" } }, /port "web" must be an integer/],
    ["port 0", { ports: { web: 0 } }, /from 1 to 65535, got 0/],
    ["a port above 65535", { ports: { web: 70000 } }, /got 70000/],
    ["a zero stride", { ports: { web: 3000 }, stride: 0 }, /"stride" must be an integer/],
    ["a negative slots", { ports: { web: 3000 }, slots: -1 }, /"slots" must be an integer/],
    ["a fractional slots", { ports: { web: 3000 }, slots: 1.5 }, /"slots" must be an integer/],
    [
      "a template naming a missing key",
      { ports: { web: 3000 }, templates: { url: "http://x:{api}" } },
      /template "url" names "\{api\}", which is neither in "ports" nor one of "\{slot\}"/,
    ],
    [
      "a template named like a port",
      { ports: { web: 3000 }, templates: { web: "x" } },
      /same name as a port/,
    ],
    ["a non-string template", { ports: { web: 3000 }, templates: { url: 1 } }, /must be a string/],
    [
      "a slot beyond port 65535",
      { ports: { web: 60000 }, stride: 100, slots: 60 },
      /port "web" at slot 56 would be 65600/,
    ],
    [
      "two keys landing on the same port",
      { ports: { cloud_port: 8000, web_port: 3000 }, stride: 100, slots: 50 },
      /port "web_port" at slot 50 and port "cloud_port" at slot 0 both land on 8000/,
    ],
    [
      "two keys with the same base",
      { ports: { a: 3000, b: 3000 } },
      /port "b" at slot 0 and port "a" at slot 0 both land on 3000/,
    ],
  ];
  await assertConfigErrors(t, cases);
});

Deno.test("parseConfig() finds exactly the configs that listing every slot would reject", () => {
  // The check is arithmetic; this compares it with the obvious enumeration.
  let seed = 7;
  const random = (max: number) => (seed = (seed * 48271) % 2147483647) % max;
  const outcomes = { valid: 0, invalid: 0 };
  for (let trial = 0; trial < 2000; trial++) {
    const stride = 1 + random(40);
    const slots = 1 + random(30);
    const ports: Record<string, number> = {};
    const keys = 1 + random(4);
    for (let key = 0; key < keys; key++) ports[`k${key}`] = 64000 + random(1500);
    const seen = new Set<number>();
    let valid = true;
    for (let slot = 0; slot <= slots && valid; slot++) {
      for (const base of Object.values(ports)) {
        const port = base + slot * stride;
        if (port > 65535 || seen.has(port)) valid = false;
        seen.add(port);
      }
    }
    const config = { ports, stride, slots };
    if (valid) {
      parseConfig(config);
    } else {
      assert.throws(
        () => parseConfig(config),
        assertCode("INVALID_CONFIG"),
        JSON.stringify(config),
      );
    }
    outcomes[valid ? "valid" : "invalid"]++;
  }
  // Both kinds were really tried.
  assert.ok(outcomes.valid > 200 && outcomes.invalid > 200, JSON.stringify(outcomes));
});

// ---------------------------------------------------------------------------
// Worktrees
// ---------------------------------------------------------------------------

Deno.test("parseWorktreeList() reads every attribute, including unusual paths", () => {
  const output = [
    "worktree /srv/repo.git\0bare\0",
    "worktree /srv/wt one\nwith newline ü\0HEAD 1111\0branch refs/heads/feature/x\0locked\0",
    "worktree /srv/gone\0HEAD 2222\0detached\0prunable gitdir file points to non-existent location\0",
    "",
  ].join("\0");
  assert.deepEqual(parseWorktreeList(output), [
    { path: "/srv/repo.git", bare: true, detached: false, locked: false, prunable: false },
    {
      path: "/srv/wt one\nwith newline ü",
      head: "1111",
      branch: "feature/x",
      bare: false,
      detached: false,
      locked: true,
      prunable: false,
    },
    {
      path: "/srv/gone",
      head: "2222",
      bare: false,
      detached: true,
      locked: false,
      prunable: true,
    },
  ]);
});

Deno.test("openRepository() finds the worktree from a subdirectory with one git call", async () => {
  await using repo = await TempRepo.create();
  const linked = await repo.addWorktree("linked one ü");
  await Deno.mkdir(`${linked}/src/deep`, { recursive: true });
  const calls: string[][] = [];
  const repository = await openRepository({
    cwd: `${linked}/src/deep`,
    git: {
      async run(args, cwd) {
        calls.push([...args]);
        return (await run("git", args, { cwd })).stdout;
      },
    },
  });
  assert.equal(repository.root, linked);
  assert.equal(repository.primary, false);
  assert.equal(repository.commonDir, `${repo.root}/.git`);
  assert.deepEqual(calls, [["worktree", "list", "--porcelain", "-z"]]);
});

Deno.test("openRepository() finds the worktree when git spells its path through a symlink", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.symlink(repo.base, `${repo.base}-link`);
  try {
    // Git records real paths today; a path given through a link must still match.
    const linked = {
      async run(args: readonly string[], cwd: string) {
        const output = (await run("git", args, { cwd })).stdout;
        return output.replaceAll(`worktree ${repo.base}/`, `worktree ${repo.base}-link/`);
      },
    };
    const repository = await openRepository({ cwd: a, git: linked });
    assert.equal(repository.current.path, `${repo.base}-link/wt0`);
    assert.equal(repository.root, a);
  } finally {
    await Deno.remove(`${repo.base}-link`);
  }
});

Deno.test("openRepository() rejects a directory outside any repository", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(openRepository({ cwd: dir }), (error: unknown) => {
      assertCode("NOT_A_WORKTREE")(error);
      assert.match((error as Error).message, /is not inside a git worktree/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------

Deno.test("reservedPortsOf() reads top-level integers and URL ports only", () => {
  assert.deepEqual(
    reservedPortsOf({
      cloud_port: 8100,
      cloud_url: "http://127.0.0.1:8101/path",
      plain_url: "http://127.0.0.1/",
      db: "postgres://u:p@localhost:5532/db",
      big: 70000,
      zero: 0,
      fraction: 3.5,
      name: "web:app",
      nested: { port: 9999 },
      list: [9998],
      worktree_ports: { slot: 1, version: 1 },
    }),
    [8100, 8101, 5532],
  );
});

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

// ---------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------

Deno.test("isPortFree() sees a listener on each loopback address", async (t) => {
  await forEachLoopback(t, (hostname) => {
    using listener = Deno.listen({ hostname, port: 0 });
    const { port } = listener.addr as Deno.NetAddr;
    assert.equal(isPortFree(port), false);
    listener.close();
    assert.equal(isPortFree(port), true);
  });
});

// ---------------------------------------------------------------------------
// Choosing a slot
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// The lock
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Allocation, on real repositories
// ---------------------------------------------------------------------------

Deno.test("allocate() gives the main worktree slot 0 and linked worktrees 1 and up", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  // The main worktree has no file yet: slot 0 is still not handed out.
  assert.equal((await allocateIn(a, ports)).slot, 1);
  assert.equal((await allocateIn(b, ports)).slot, 2);
  const main = await allocateIn(repo.root, ports);
  assert.equal(main.slot, 0);
  assert.deepEqual(main.bundle, { web: ports.base.web });
});

Deno.test("allocate() skips a slot that a sibling worktree's file reserves, even when nothing listens", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await allocateIn(a, ports);
  assert.equal(
    isPortFree(first.bundle.web as number),
    true,
    "nothing listens on the sibling's port",
  );
  const second = await allocateIn(b, ports);
  assert.equal(first.slot, 1);
  assert.equal(second.slot, 2);
});

Deno.test("allocate() does not let the current output file block rewriting the same bundle", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const first = await allocateIn(a, ports);
  const again = await allocateIn(a, ports, { force: true });
  assert.equal(again.slot, first.slot);
  // The option is what makes the difference: counting the file as reserved moves the bundle.
  const blocked = await allocateIn(a, ports, { force: true, excludeOutput: false });
  assert.notEqual(blocked.slot, first.slot);
});

Deno.test("allocate() with an output path reads siblings at the same place in their worktree", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  for (const dir of [a, b]) await Deno.mkdir(`${dir}/config`);
  const first = await allocateIn(a, ports, { output: "config/ports.json" });
  const second = await allocateIn(b, ports, { output: "config/ports.json" });
  assert.equal(first.path, `${a}/config/ports.json`);
  assert.deepEqual([first.slot, second.slot], [1, 2]);
  await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
  assert.equal(
    await git(a, "status", "--porcelain"),
    "",
    "the custom path is excluded from git too",
  );
});

Deno.test("allocate() honours a sibling file in the older flat format", async () => {
  await using repo = await TempRepo.create();
  const [old, fresh] = await repo.addWorktrees("wt", 2);
  const ports = pickPorts(["cloud_port", "web_port", "db_port"], { stride: 100, slots: 40 });
  const [slot1, slot2] = [ports.at(1), ports.at(2)];
  await writeJson(`${old}/.worktree-ports.json`, {
    ...slot1,
    cloud_url: `http://127.0.0.1:${slot1.cloud_port}`,
  });
  await writeJson(`${fresh}/worktree-ports.config.json`, {
    ...ports.config(),
    templates: { cloud_url: "http://127.0.0.1:{cloud_port}" },
  });
  const allocation = await allocate({ cwd: fresh });
  assert.equal(allocation.slot, 2);
  assert.deepEqual(allocation.bundle, {
    ...slot2,
    cloud_url: `http://127.0.0.1:${slot2.cloud_port}`,
  });
  const file = await readJson(`${fresh}/.worktree-ports.json`);
  assert.deepEqual(Object.keys(file), [
    "cloud_port",
    "web_port",
    "db_port",
    "cloud_url",
    "worktree_ports",
  ]);
  assert.deepEqual(
    { ...(file.worktree_ports as object), allocated_at: "" },
    { version: 1, slot: 2, worktree: fresh, allocated_at: "" },
  );
});

Deno.test("allocate() is idempotent, also while the worktree's own service listens", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const first = await allocateIn(a, ports);
  assert.equal(first.written, true);
  const before = await Deno.readTextFile(first.path);
  using _service = Deno.listen({ hostname: "127.0.0.1", port: first.bundle.web as number });
  const second = await allocateIn(a, ports);
  assert.deepEqual(
    { slot: second.slot, bundle: second.bundle, kept: second.kept, written: second.written },
    { slot: first.slot, bundle: first.bundle, kept: true, written: false },
  );
  assert.equal(await Deno.readTextFile(first.path), before);
});

Deno.test("allocate() skips a slot whose port has a listener on each loopback address", async (t) => {
  const ports = webPorts();
  await forEachLoopback(t, async (hostname) => {
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    using _other = Deno.listen({ hostname, port: ports.at(1).web });
    const allocation = await allocateIn(a, ports);
    assert.equal(allocation.slot, 2);
  });
});

Deno.test("allocate() treats a copied port file as not this worktree's own", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocateIn(a, ports);
  await Deno.copyFile(`${a}/.worktree-ports.json`, `${b}/.worktree-ports.json`);
  const allocation = await allocateIn(b, ports);
  assert.equal(allocation.slot, 2);
  assert.match(allocation.warnings.join("\n"), /was written for the worktree ".*wt0"/);
  assert.equal(
    ((await readJson(`${b}/.worktree-ports.json`)).worktree_ports as { worktree: string }).worktree,
    b,
  );
});

Deno.test("allocate() replaces a corrupt own file and skips a corrupt sibling file, with warnings", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await Deno.writeTextFile(`${a}/.worktree-ports.json`, "{ broken");
  await Deno.writeTextFile(`${b}/.worktree-ports.json`, "[1, 2");
  // The picked ports lie below the ephemeral range, which would add a warning of its own.
  const allocation = await allocateIn(b, ports);
  assert.equal(allocation.slot, 1);
  assert.equal(allocation.warnings.length, 2);
  assert.match(
    allocation.warnings[0],
    /Port file ".*wt0\/\.worktree-ports\.json" is unreadable \(not valid JSON\); its ports are not reserved/,
  );
  assert.match(
    allocation.warnings[1],
    /This worktree's port file .* is unusable \(not valid JSON\)/,
  );
  assert.equal(((await readJson(allocation.path)).worktree_ports as { slot: number }).slot, 1);
});

Deno.test("allocate() keeps nothing reserved for a worktree whose directory is gone", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocateIn(a, ports);
  await Deno.remove(a, { recursive: true });
  const listed = await listWorktrees({ cwd: repo.root });
  assert.equal(listed.find((worktree) => worktree.path === a)?.prunable, true);
  assert.equal((await allocateIn(b, ports)).slot, 1);
});

Deno.test("allocate() works in the linked worktrees of a bare repository", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create({ bare: true });
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await allocateIn(a, ports)).slot, 1);
  assert.equal((await allocateIn(b, ports)).slot, 2);
  await assert.rejects(allocateIn(repo.root, ports), assertCode("NOT_A_WORKTREE"));
});

Deno.test("allocate() handles worktree paths with spaces, newlines and unicode", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const odd = await repo.addWorktree("wt ü\nline two");
  const allocation = await allocateIn(odd, ports);
  assert.equal(allocation.slot, 1);
  assert.equal(allocation.path, `${odd}/.worktree-ports.json`);
  assert.equal(
    ((await readJson(allocation.path)).worktree_ports as { worktree: string }).worktree,
    odd,
  );
});

Deno.test("allocate() changes nothing when the config is invalid", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await writeJson(`${a}/worktree-ports.config.json`, { ports: { web: 3000 }, slots: 0 });
  const before = await snapshot(repo.base);
  await assert.rejects(allocate({ cwd: a }), assertCode("INVALID_CONFIG"));
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("allocate() asks git once, however many worktrees there are", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const worktrees = await repo.addWorktrees("wt", 6);
  const calls: string[] = [];
  const git = {
    async run(args: readonly string[], cwd: string) {
      calls.push(args.join(" "));
      return (await run("git", args, { cwd })).stdout;
    },
  };
  // The ignore rules go in without asking git, the first allocation's included.
  await allocateIn(worktrees[0], ports, { git });
  assert.deepEqual(calls, ["worktree list --porcelain -z"], "the first allocation");
  for (const cwd of worktrees.slice(1)) {
    calls.length = 0;
    await allocateIn(cwd, ports, { git });
    assert.deepEqual(calls, ["worktree list --porcelain -z"], "a fresh worktree");
    calls.length = 0;
    await allocateIn(cwd, ports, { git });
    assert.deepEqual(calls, ["worktree list --porcelain -z"], "a worktree keeping its slot");
  }
});

Deno.test("allocate() gives distinct bundles to simultaneous allocations in one process", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const worktrees = await repo.addWorktrees("wt", 24);
  // A probe that yields makes every scan overlap: without the lock they would
  // all see the same free slot.
  const probe = {
    isFree: async (port: number) => {
      await new Promise((resolve) => setTimeout(resolve, 2));
      return isPortFree(port);
    },
  };
  const allocations = await Promise.all(worktrees.map((cwd) => allocateIn(cwd, ports, { probe })));
  const slots = allocations.map((allocation) => allocation.slot);
  assert.equal(new Set(slots).size, worktrees.length, `slots: ${slots}`);
  assert.ok(!slots.includes(0));
});

// ---------------------------------------------------------------------------
// Environment, git ignore, inspection and repair
// ---------------------------------------------------------------------------

Deno.test("bundleEnv() upper-cases keys and keeps only scalar values with valid names", () => {
  assert.deepEqual(
    bundleEnv({
      cloud_port: 8100,
      cloud_url: "http://127.0.0.1:8100",
      "web-port": 3100,
      nested: { a: 1 },
      flag: true,
      worktree_ports: { slot: 1 },
    }),
    { CLOUD_PORT: "8100", CLOUD_URL: "http://127.0.0.1:8100" },
  );
});

Deno.test("runWithPorts() runs the command with a bundle it is given, without loading one", async () => {
  // Outside any repository: loading a bundle here would fail.
  const dir = await Deno.makeTempDir();
  try {
    const { code, allocation } = await runWithPorts(
      "bash",
      ["-c", 'test "$WEB_PORT" = 3100 && test "$PWD" = "$1"', "script", await Deno.realPath(dir)],
      { cwd: dir, bundle: { path: `${dir}/.worktree-ports.json`, data: { web_port: 3100 } } },
    );
    assert.equal(code, 0);
    assert.equal(allocation, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("formatEnv() quotes each format so values stay literal", async (t) => {
  const env = { PORT: "3100", URL: "http://127.0.0.1:3100/a?b=c", ODD: `it's $(id) "q"` };
  await t.step("shell", () => {
    assert.equal(
      formatEnv(env, "shell"),
      `export PORT='3100'\nexport URL='http://127.0.0.1:3100/a?b=c'\nexport ODD='it'\\''s $(id) "q"'\n`,
    );
  });
  await t.step("dotenv", () => {
    const { ODD: _, ...rest } = env;
    assert.equal(
      formatEnv({ ...rest, SPACE: "a b", QUOTE: "it's", DIR: "C:\\x", END: "x\\" }, "dotenv"),
      `PORT=3100\nURL='http://127.0.0.1:3100/a?b=c'\nSPACE='a b'\nQUOTE="it's"\nDIR='C:\\x'\nEND=x\\\n`,
    );
    assert.throws(() => formatEnv(env, "dotenv"), RangeError);
  });
  await t.step("json", () => {
    assert.deepEqual(JSON.parse(formatEnv(env, "json")), env);
  });
  await t.step("fish", () => {
    assert.equal(
      formatEnv({ PORT: "3100", ODD: `it's \\' $x\\` }, "fish"),
      `set -gx PORT '3100'\nset -gx ODD 'it\\'s \\\\\\' $x\\\\'\n`,
    );
  });
  await t.step("unknown format", () => {
    assert.throws(() => formatEnv(env, "yaml" as EnvFormat), TypeError);
  });
});

Deno.test("allocate() makes git ignore the port file without touching .gitignore", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocateIn(a, ports);
  await allocateIn(b, ports);
  await allocateIn(repo.root, ports);
  for (const dir of [repo.root, a, b]) assert.equal(await git(dir, "status", "--porcelain"), "");
  const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`);
  assert.equal(exclude.split("\n").filter((line) => line === "/.worktree-ports.json").length, 1);
  await assert.rejects(Deno.stat(`${repo.root}/.gitignore`), Deno.errors.NotFound);
});

Deno.test("allocate() adds its ignore rules once, also when a .gitignore already covers the file", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  await Deno.writeTextFile(`${repo.root}/.gitignore`, ".worktree-ports.json\n");
  await git(repo.root, "add", ".gitignore");
  await git(repo.root, "commit", "-q", "-m", "ignore");
  const [a] = await repo.addWorktrees("wt", 1);
  const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`);
  await allocateIn(a, ports);
  await allocateIn(a, ports, { force: true });
  assert.equal(
    await Deno.readTextFile(`${repo.root}/.git/info/exclude`),
    `${exclude}/.worktree-ports.json\n/.worktree-ports.json.*.tmp\n`,
  );
  assert.equal(await git(a, "status", "--porcelain"), "");
});

Deno.test("allocate() warns loudly when the port file is tracked by git", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  await allocateIn(repo.root, ports);
  await git(repo.root, "add", "-f", ".worktree-ports.json");
  await git(repo.root, "commit", "-q", "-m", "commit the port file by mistake");
  const [a] = await repo.addWorktrees("wt", 1);
  const allocation = await allocateIn(a, ports);
  assert.equal(allocation.slot, 1);
  assert.match(allocation.warnings.join("\n"), /was written for the worktree/);
  assert.match(
    allocation.warnings.join("\n"),
    /".*wt0\/\.worktree-ports\.json" is tracked by git: every new worktree checks out the same ports/,
  );
});

Deno.test("fixWorktrees() moves the later of two equally idle duplicates, then has nothing to do", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const older = {
    web: ports.at(1).web,
    worktree_ports: { slot: 1, worktree: a, allocated_at: "2026-01-01T00:00:00Z" },
  };
  const newer = {
    web: ports.at(1).web,
    worktree_ports: { slot: 1, worktree: b, allocated_at: "2026-02-01T00:00:00Z" },
  };
  await writeJson(`${a}/.worktree-ports.json`, older);
  await writeJson(`${b}/.worktree-ports.json`, newer);
  const statuses = await inspectWorktrees({ cwd: a });
  assert.deepEqual(statuses.map((s) => s.state), ["none", "duplicate", "duplicate"]);
  const moves = await fixWorktrees({ cwd: a, ...ports.config() });
  assert.deepEqual(moves, [{
    worktree: b,
    reason: "duplicate",
    from: ports.at(1),
    slot: 2,
    to: ports.at(2),
    warnings: [],
  }]);
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), older);
  assert.deepEqual(await fixWorktrees({ cwd: a, ...ports.config() }), []);
});

Deno.test("the README's config example is a valid config", async () => {
  const readme = await Deno.readTextFile(new URL("./README.md", import.meta.url));
  const example = /## Configuration[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)![1];
  const config = parseConfig(JSON.parse(example));
  assert.deepEqual(Object.keys(config.ports), ["cloud_port", "web_port", "db_port"]);
});

// ---------------------------------------------------------------------------
// Git before 2.36
// ---------------------------------------------------------------------------

Deno.test("parseWorktreeList() reads the newline format of git before 2.36", async (t) => {
  const head = "HEAD 1111111111111111111111111111111111111111";
  const table: [string, string, Partial<ReturnType<typeof parseWorktreeList>[number]>[]][] = [
    [
      "every attribute",
      `worktree /srv/repo.git\nbare\n\nworktree /srv/wt\n${head}\nbranch refs/heads/x\nlocked\n\n` +
      `worktree /srv/gone\n${head}\ndetached\nprunable gitdir file points to non-existent location\n\n`,
      [
        { path: "/srv/repo.git", bare: true },
        { path: "/srv/wt", branch: "x", locked: true },
        { path: "/srv/gone", detached: true, prunable: true },
      ],
    ],
    [
      "a path written as it is, with spaces, quotes, backslashes and unicode",
      `worktree /srv/a "b" \\c ü\n${head}\ndetached\n\n`,
      [{ path: '/srv/a "b" \\c ü', detached: true }],
    ],
    [
      "a path holding newlines and an empty line, as git before 2.36 writes it",
      `worktree /srv/one\ntwo\n\nbranch x\n${head}\nbranch refs/heads/y\n\n`,
      [{ path: "/srv/one\ntwo\n\nbranch x", branch: "y" }],
    ],
    [
      "a path in git's C-style quotes: escapes and octal UTF-8 bytes",
      `worktree "/srv/a\\tb\\n\\"q\\" \\\\ \\303\\274"\n${head}\n\n`,
      [{ path: '/srv/a\tb\n"q" \\ ü' }],
    ],
    ["nothing", "", []],
  ];
  for (const [name, output, expected] of table) {
    await t.step(name, () => {
      const parsed = parseWorktreeList(output);
      assert.equal(parsed.length, expected.length);
      parsed.forEach((worktree, index) => {
        const fields = Object.keys(expected[index]) as (keyof typeof worktree)[];
        assert.deepEqual(
          Object.fromEntries(fields.map((key) => [key, worktree[key]])),
          expected[index],
        );
      });
    });
  }
});

/** A real git that answers `worktree list -z` as git 2.30 does, counting the listings. */
function gitWithoutListZ(calls: string[]) {
  return {
    async run(args: readonly string[], cwd: string): Promise<string> {
      calls.push(args.join(" "));
      if (args[0] === "worktree" && args.includes("-z")) {
        throw new WorktreePortsError(
          "GIT_FAILED",
          `"git ${args.join(" ")}" failed with exit code 129: error: unknown switch \`z'`,
        );
      }
      return await denoGit.run(args, cwd);
    },
  };
}

Deno.test("listWorktrees() falls back to newline porcelain once and tells a gone directory itself", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const odd = [
    await repo.addWorktree('with space "quoted" \\ back'),
    await repo.addWorktree("new\nline"),
    await repo.addWorktree("ünïcødé €"),
  ];
  const gone = await repo.addWorktree("gone");
  await Deno.remove(gone, { recursive: true });
  const calls: string[] = [];
  const git = gitWithoutListZ(calls);
  const worktrees = await listWorktrees({ cwd: repo.root, git });
  // Git lists linked worktrees in the order of their names under .git/worktrees.
  assert.deepEqual(
    worktrees.map(({ path, prunable }) => [path, prunable]).sort(),
    [[repo.root, false], ...odd.map((path) => [path, false]), [gone, true]].sort(),
  );
  assert.deepEqual(calls, ["worktree list --porcelain -z", "worktree list --porcelain"]);
  calls.length = 0;
  await listWorktrees({ cwd: odd[1], git });
  assert.deepEqual(calls, ["worktree list --porcelain"], "the format is remembered");
  // Every worktree is found and allocated through the fallback.
  for (const [index, cwd] of odd.entries()) {
    assert.equal((await allocateIn(cwd, ports, { git, ignoreOutput: false })).slot, index + 1);
  }
});

Deno.test("a git error is the command and git's first error line, never its usage text", async () => {
  await using repo = await TempRepo.create();
  await assert.rejects(
    denoGit.run(["worktree", "list", "--no-such-option"], repo.root),
    (error: unknown) => {
      assertCode("GIT_FAILED")(error);
      assert.equal(
        (error as Error).message,
        `"git worktree list --no-such-option" failed with exit code 129: error: unknown option \`no-such-option'`,
      );
      return true;
    },
  );
});

// ---------------------------------------------------------------------------
// Transient failures
// ---------------------------------------------------------------------------

Deno.test("listWorktrees() tries again when a listing fails while a worktree is being added", async (t) => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const failing = (failures: number) => {
    let calls = 0;
    return {
      get calls() {
        return calls;
      },
      run(args: readonly string[], cwd: string): Promise<string> {
        if (args[0] === "worktree" && ++calls <= failures) {
          return Promise.reject(
            new WorktreePortsError(
              "GIT_FAILED",
              `"git worktree list --porcelain -z" failed with exit code 128: fatal: failed to read ${repo.root}/.git/worktrees/wt1/commondir: Success`,
            ),
          );
        }
        return denoGit.run(args, cwd);
      },
    };
  };
  await t.step("one failure: the allocation goes through", async () => {
    const git = failing(1);
    const allocation = await allocateIn(a, ports, { git });
    assert.equal(allocation.slot, 1);
    // Git before 2.36 takes one more call, to learn that it lacks -z.
    assert.ok(git.calls === 2 || git.calls === 3, `${git.calls} calls`);
  });
  await t.step("failures that last: git's error, after a few tries", async () => {
    const git = failing(Infinity);
    await assert.rejects(allocateIn(a, ports, { git }), assertCode("GIT_FAILED"));
    assert.ok(git.calls > 2 && git.calls < 10, `${git.calls} calls`);
  });
  await t.step("not a repository: no second try", async () => {
    const outside = await Deno.makeTempDir();
    try {
      let calls = 0;
      const git = {
        run(args: readonly string[], cwd: string) {
          calls++;
          return denoGit.run(args, cwd);
        },
      };
      await assert.rejects(allocateIn(outside, ports, { git }), assertCode("NOT_A_WORKTREE"));
      assert.equal(calls, 1);
    } finally {
      await Deno.remove(outside);
    }
  });
});

// ---------------------------------------------------------------------------
// Ports a user can actually use
// ---------------------------------------------------------------------------

Deno.test("BROWSER_BLOCKED_PORTS holds the Fetch standard's bad ports above 1023", () => {
  const high = [...BROWSER_BLOCKED_PORTS].filter((port) => port > 1023);
  assert.deepEqual(high, [
    1719,
    1720,
    1723,
    2049,
    3659,
    4045,
    4190,
    5060,
    5061,
    6000,
    6566,
    6665,
    6666,
    6667,
    6668,
    6669,
    6679,
    6697,
    10080,
  ]);
  for (const port of [1, 22, 25, 80 - 1, 143, 443 + 22, 993, 995]) {
    assert.ok(BROWSER_BLOCKED_PORTS.has(port), `${port} is blocked`);
  }
  for (const port of [80, 443, 3000, 5432, 8080]) {
    assert.ok(!BROWSER_BLOCKED_PORTS.has(port), `${port} is not blocked`);
  }
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

Deno.test("configWarnings() warns when slot 0 holds a port browsers refuse, naming it", () => {
  assert.deepEqual(configWarnings(parseConfig({ ports: { web: 3000 } })), []);
  const warnings = configWarnings(
    parseConfig({ ports: { web: 3000, x11: 6000, sip: 5060 }, stride: 7, slots: 5 }),
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /holds 6000 \("x11"\), 5060 \("sip"\), a port browsers refuse/);
});

Deno.test("configWarnings() names each key's ports inside the ephemeral range, once", async (t) => {
  const ephemeralRange = { low: 32768, high: 60999, source: "a test" };
  const cases: [string, unknown, RegExp | undefined][] = [
    ["ports below it", { ports: { web: 3000 } }, undefined],
    [
      "a base of 40000",
      {
        ports: { web: 40000, api: 41000 },
        stride: 10,
        slots: 5,
      },
      /range 32768-60999 \(from a test\): "web" 40000 to 40050 \(slots 0 to 5\), "api" 41000 to 41050 \(slots 0 to 5\)\..* \(choose base ports below 32768 or above 60999\)$/,
    ],
    ["slots that climb into it", {
      ports: { web: 32700 },
      stride: 50,
      slots: 4,
    }, /: "web" 32800 to 32900 \(slots 2 to 4\)\./],
    [
      "one slot inside",
      { ports: { web: 32000 }, stride: 800, slots: 1 },
      /: "web" 32800 \(slot 1\)\./,
    ],
  ];
  for (const [name, value, expected] of cases) {
    await t.step(name, () => {
      const warnings = configWarnings(parseConfig(value), { ephemeralRange });
      if (expected === undefined) {
        assert.deepEqual(warnings, []);
      } else {
        assert.equal(warnings.length, 1);
        assert.match(warnings[0], expected);
      }
    });
  }
  await t.step("a range reaching 65535 suggests only lower ports", () => {
    const [warning] = configWarnings(parseConfig({ ports: { web: 50000 }, slots: 2 }), {
      ephemeralRange: { low: 49152, high: 65535, source: "macOS's default" },
    });
    assert.match(warning, /\(from macOS's default\).*\(choose base ports below 49152\)$/);
  });
});

const isLinux = Deno.build.os === "linux";

Deno.test({
  name: `ephemeralPortRange() reads /proc where Deno may, else gives Linux's default saying why${
    isLinux ? "" : " (skipped: not Linux)"
  }`,
  ignore: !isLinux,
  fn: async () => {
    const file = "/proc/sys/net/ipv4/ip_local_port_range";
    const [low, high] = (await run("cat", [file])).stdout.trim().split(/\s+/).map(Number);
    // With --allow-all, as `deno eval` runs, the file is read.
    const script = `import { ephemeralPortRange } from ${
      JSON.stringify(new URL("./mod.ts", import.meta.url).href)
    }; console.log(JSON.stringify(ephemeralPortRange()));`;
    const all = await run(Deno.execPath(), ["eval", script]);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(JSON.parse(all.stdout), { low, high, source: `"${file}"` });
    // This test runs with --allow-read only, like the CLI: Deno refuses /proc.
    assert.deepEqual(ephemeralPortRange(), {
      low: 32768,
      high: 60999,
      source: `Linux's default; Deno reads "${file}" only with --allow-all`,
    });
  },
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

Deno.test("allocate() takes a port the OS refuses as not free, and writes nothing when none is left", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const deny = (denied: (port: number) => boolean): PortProbe => ({
    isFree: (port) => !denied(port),
    status: (port) => denied(port) ? "permission-denied" : "free",
  });
  const allocation = await allocateIn(a, ports, {
    probe: deny((port) => port === ports.at(1).web),
  });
  assert.equal(allocation.slot, 2);
  await assert.rejects(
    allocateIn(b, ports, { probe: deny(() => true), slots: 3 }),
    new RegExp(
      `2 refused by the operating system: permission denied binding ${ports.at(1).web}, ${
        ports.at(3).web
      }`,
    ),
  );
  await assert.rejects(Deno.stat(`${b}/.worktree-ports.json`), Deno.errors.NotFound);
});

Deno.test({
  name: `portStatus() finds a privileged port refused for a normal user, and isPortFree() not free${
    "reason" in UNPRIVILEGED ? ` (skipped: ${UNPRIVILEGED.reason})` : ""
  }`,
  ignore: "reason" in UNPRIVILEGED,
  fn: async () => {
    const start = Number((await run("cat", ["/proc/sys/net/ipv4/ip_unprivileged_port_start"]))
      .stdout.trim());
    // Nothing below this port is bindable without privileges; 0 would mean every port is.
    assert.ok(start > 80, `ip_unprivileged_port_start is ${start}`);
    const home = await Deno.makeTempDir();
    try {
      await Deno.chmod(home, 0o777);
      // A copy the other user can read wherever this checkout lives.
      await copyPackage(`${home}/package`);
      const mod = JSON.stringify(`file://${home}/package/mod.ts`);
      const script = `import { isPortFree, portStatus } from ${mod};
        console.log(JSON.stringify([portStatus(80), isPortFree(80)]));`;
      const [command, ...args] = [
        ...("prefix" in UNPRIVILEGED ? UNPRIVILEGED.prefix : []),
        Deno.execPath(),
        "eval",
        script,
      ];
      const result = await run(command, args, { env: { HOME: home, DENO_DIR: home } });
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), ["permission-denied", false]);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test("portStatus() still throws NotCapable when net permission is missing", async () => {
  const mod = JSON.stringify(new URL("./mod.ts", import.meta.url).href);
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      file,
      `import { portStatus } from ${mod};
      try { portStatus(41234); } catch (error) { console.log(error.constructor.name); }`,
    );
    const result = await run(Deno.execPath(), ["run", "--allow-read", file]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), "NotCapable");
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("allocate() warns when the main worktree, without a file yet, finds a base port listening", async (t) => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const ports = pickPorts(["web", "api"], { stride: 10, slots: 1 });
  using _listener = Deno.listen({ hostname: "127.0.0.1", port: ports.base.api });
  const options = ports.config();
  const busyWarning = new RegExp(
    `^Port ${ports.base.api} \\("api"\\) of slot 0 is already in use, but the main worktree, which always gets slot 0, had no port file of its own`,
  );
  await t.step("the main worktree with no file: warned, and still given slot 0", async () => {
    const allocation = await allocate({ cwd: repo.root, ...options });
    assert.equal(allocation.slot, 0);
    assert.equal(allocation.written, true);
    assert.equal(allocation.warnings.filter((w) => busyWarning.test(w)).length, 1);
  });
  await t.step(
    "once the file is its own, the listener may be its service: no warning",
    async () => {
      const allocation = await allocate({ cwd: repo.root, ...options });
      assert.equal(allocation.warnings.filter((w) => busyWarning.test(w)).length, 0);
    },
  );
  await t.step("a copied file is not its own: warned again", async () => {
    const file = `${repo.root}/.worktree-ports.json`;
    const copied = await readJson(file);
    (copied.worktree_ports as { worktree: string }).worktree = a;
    await writeJson(file, copied);
    const allocation = await allocate({ cwd: repo.root, ...options });
    assert.equal(allocation.warnings.filter((w) => busyWarning.test(w)).length, 1);
  });
  await t.step("a linked worktree is never warned: it probes and skips", async () => {
    const allocation = await allocate({ cwd: a, ...options });
    assert.equal(
      allocation.warnings.filter((w) => /of slot 0 is already in use/.test(w)).length,
      0,
    );
  });
});

Deno.test("allocate({ dryRun: true }) writes nothing and previews what the real allocation writes", async (t) => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b, c] = await repo.addWorktrees("wt", 3);
  await t.step("a fresh repository: no port file, no exclude rule", async () => {
    const preview = await allocateIn(a, ports, { dryRun: true });
    assert.deepEqual([preview.slot, preview.written], [1, false]);
    await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
    const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`).catch(() => "");
    assert.ok(!exclude.includes("/.worktree-ports.json"), exclude);
  });
  await allocateIn(a, ports);
  using _busy = Deno.listen({ hostname: "127.0.0.1", port: ports.at(2).web });
  await t.step("the same scan and probes: a reserved and a busy slot are skipped", async () => {
    const before = await snapshot(repo.base);
    const preview = await allocateIn(b, ports, { dryRun: true });
    assert.deepEqual(await snapshot(repo.base), before);
    const real = await allocateIn(b, ports);
    assert.equal(preview.slot, 3);
    assert.deepEqual([real.slot, real.bundle, real.path], [
      preview.slot,
      preview.bundle,
      preview.path,
    ]);
    assert.equal(real.written, true);
  });
  await t.step(
    "a copied file is left as it is, and the preview is this worktree's own",
    async () => {
      await Deno.copyFile(`${a}/.worktree-ports.json`, `${c}/.worktree-ports.json`);
      const before = await snapshot(repo.base);
      const preview = await allocateIn(c, ports, { dryRun: true });
      assert.deepEqual(await snapshot(repo.base), before);
      assert.equal(preview.worktree, c);
      assert.equal(preview.slot, 4);
      assert.match(
        preview.warnings.join("\n"),
        /was written for the worktree .*; allocate would allocate a fresh bundle for this one/,
      );
      assert.equal((await allocateIn(c, ports)).slot, 4);
    },
  );
});

Deno.test("listSlots() reports every slot with its bundle, its holders and why it is skipped", async () => {
  // Slot 3 lands on a port browsers refuse.
  const ports = pickPorts(["web"], { stride: 100, slots: 5, blockedAt: { key: "web", slot: 3 } });
  const web = (slot: number) => ports.at(slot).web;
  await using repo = await TempRepo.create({
    config: { ...ports.config(), templates: { url: "http://127.0.0.1:{web}/callback" } },
  });
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocate({ cwd: repo.root });
  await allocate({ cwd: a });
  using _busy = Deno.listen({ hostname: "127.0.0.1", port: web(2) });
  const probe: PortProbe = {
    isFree: (port) => portStatus(port) === "free",
    // Stands in for a range the OS reserves; everything else is probed for real.
    status: (port) => port === web(5) ? "permission-denied" : portStatus(port),
  };
  const slots = await listSlots({ cwd: b, probe });
  const row = (slot: number, state: string, holders: string[], extra = {}) => ({
    slot,
    state,
    bundle: { web: web(slot), url: `http://127.0.0.1:${web(slot)}/callback` },
    holders,
    current: false,
    blocked: [],
    busy: [],
    denied: [],
    ...extra,
  });
  assert.deepEqual(slots, [
    row(0, "held", [repo.root]),
    row(1, "held", [a]),
    row(2, "in-use", [], { busy: [web(2)] }),
    row(3, "blocked", [], { blocked: [web(3)] }),
    row(4, "free", []),
    row(5, "permission-denied", [], { denied: [web(5)] }),
  ]);
  // An allocation takes the slot the list shows as the first free one.
  assert.equal((await allocate({ cwd: b, probe })).slot, 4);
  const after = await listSlots({ cwd: b, probe, listening: false });
  assert.deepEqual(after[4], row(4, "held", [b], { current: true }));
  assert.deepEqual(after[2], row(2, "free", []), "not probed with listening: false");
});

Deno.test("allocate() moves a worktree whose file holds a port browsers refuse, saying why", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  // Slot 1 lands on a port browsers refuse.
  const ports = pickPorts(["web"], { stride: 100, slots: 3, blockedAt: { key: "web", slot: 1 } });
  const options = { cwd: a, ...ports.config() };
  // As an older version wrote it, which handed out such a slot.
  await writeJson(`${a}/.worktree-ports.json`, {
    ...ports.at(1),
    worktree_ports: { version: 1, slot: 1, worktree: a, allocated_at: "2026-01-01T00:00:00.000Z" },
  });
  const allocation = await allocate(options);
  assert.deepEqual([allocation.slot, allocation.kept, allocation.bundle], [2, false, ports.at(2)]);
  assert.match(
    allocation.warnings.join("\n"),
    new RegExp(
      `This worktree's bundle at slot 1 holds ${
        ports.at(1).web
      }, a port browsers refuse to connect to; it gets slot 2 instead`,
    ),
  );
  const again = await allocate(options);
  assert.deepEqual([again.slot, again.kept, again.warnings], [2, true, []]);
});

// ---------------------------------------------------------------------------
// Values reach every consumer exactly
// ---------------------------------------------------------------------------

/** Values that dotenv readers disagree on, by how each is quoted. */
const TRICKY_VALUES: Record<string, string> = {
  EMPTY: "",
  PLAIN: "http://127.0.0.1:3100/a?b=c",
  SPACE: "a b",
  EDGE_SPACES: " lead and trail ",
  SINGLE_QUOTE: "it's",
  DOUBLE_QUOTES: 'say "hi"',
  DOLLAR_NAME: "$HOME",
  BACKSLASH_DOLLAR: "\\$HOME",
  BACKSLASH: "C:\\Users\\dev",
  DOUBLE_BACKSLASH: "a\\\\b",
  TRAILING_BACKSLASH: "end\\",
  BACKSLASH_N: "\\n",
  HASH: "a#b",
  SPACE_HASH: "a #b",
  LEADING_HASH: "#start",
  EQUALS: "a=b=c",
  NEWLINE: "line1\nline2",
  QUOTE_NEWLINE: "it's\n#2",
  CARRIAGE_RETURN: "a\r\nb",
  TAB: "tab\there",
  UNICODE: "héllo ✓ \u2028",
  BACKTICKS: "`id` $(id)",
  LONE_DOLLARS: "a$ $ $$",
  BRACES: "{a} }b{",
  // No quoting keeps these exact in every reader: they are refused.
  BRACED_NAME: "${HOME}",
  BRACED_DEFAULT: "${HOME:-x}",
  BOTH_QUOTES: `'both" q`,
  QUOTE_DOLLAR: "it's $HOME",
  BACKSLASH_SPACE: "C:\\Program Files\\",
  BACKSLASH_NEWLINE: "a\\\nb",
};

const REFUSED_VALUES = [
  "BRACED_NAME",
  "BRACED_DEFAULT",
  "BOTH_QUOTES",
  "QUOTE_DOLLAR",
  "BACKSLASH_SPACE",
  "BACKSLASH_NEWLINE",
];

Deno.test("formatEnv() dotenv refuses a value no quoting keeps exact, naming the variable and the character", async (t) => {
  for (
    const [name, value, character] of [
      ["BRACED_NAME", "${HOME}", /holds "\$\{"/],
      ["QUOTE_DOLLAR", "it's $HOME", /holds "'" and "\$"/],
      ["BACKSLASH_SPACE", "C:\\Program Files\\", /holds "\\" and a space/],
      ["BACKSLASH_NEWLINE", "a\\\nb", /holds a line break and "\\"/],
      ["ESCAPE", "a\x1bb", /holds the control character U\+001B/],
    ] as const
  ) {
    await t.step(name, () => {
      assert.throws(
        () => formatEnv({ PORT: "3100", [name]: value }, "dotenv"),
        (error: unknown) => {
          assert.ok(error instanceof RangeError);
          assert.match(error.message, new RegExp(`^Cannot write "${name}" as dotenv: `));
          assert.match(error.message, character);
          assert.match(error.message, /use "--format json" or "--format shell"/);
          return true;
        },
      );
    });
  }
});

Deno.test("formatEnv() dotenv is read back exactly by python-dotenv, npm dotenv, direnv and docker-compose", async (t) => {
  const accepted: Record<string, string> = {};
  const refused: string[] = [];
  for (const [name, value] of Object.entries(TRICKY_VALUES)) {
    try {
      formatEnv({ [name]: value }, "dotenv");
      accepted[name] = value;
    } catch (error) {
      assert.ok(error instanceof RangeError, String(error));
      refused.push(name);
    }
  }
  assert.deepEqual(refused, REFUSED_VALUES);
  const dir = await Deno.makeTempDir({ prefix: "worktree-ports-dotenv-" });
  try {
    const file = `${dir}/ports.env`;
    await Deno.writeTextFile(file, formatEnv(accepted, "dotenv"));
    // Each refused value in every form a dotenv writer could choose: bare,
    // single-quoted and double-quoted with escapes, one file each.
    const naive: string[] = [];
    for (const name of refused) {
      const value = TRICKY_VALUES[name];
      const forms = [
        value,
        `'${value}'`,
        `"${value.replace(/[\\"]/g, "\\$&").replaceAll("\n", "\\n")}"`,
      ];
      for (const [index, form] of forms.entries()) {
        const path = `${dir}/${name}-${index}.env`;
        await Deno.writeTextFile(path, `${name}=${form}\nNEXT=ok\n`);
        naive.push(path);
      }
    }
    const misread = new Set<string>();
    for (const reader of dotenvReaders(dir)) {
      await t.step({
        name: `${reader.name}${reader.missing ? ` (skipped: ${reader.missing})` : ""}`,
        ignore: reader.missing !== undefined,
        fn: async () => {
          const [values, ...naiveValues] = await reader.read([file, ...naive]);
          assert.deepEqual(values, accepted);
          naiveValues.forEach((read, index) => {
            const name = refused[Math.floor(index / 3)];
            if (read[name] !== TRICKY_VALUES[name] || read.NEXT !== "ok") {
              misread.add(naive[index]);
            }
          });
        },
      });
    }
    // Compose v2 is optional here: the four others decide which values are refused.
    const missing = dotenvReaders(dir).filter((reader) =>
      reader.missing !== undefined && reader.name !== "docker compose v2"
    );
    await t.step({
      name: `every refused value is misread in every form by some reader${
        missing.length > 0 ? " (skipped: not every reader is installed)" : ""
      }`,
      ignore: missing.length > 0,
      fn: () => assert.deepEqual(naive.filter((path) => !misread.has(path)), []),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig() adds the ports override to the config's ports and blames it for its errors", async (t) => {
  const value = { ports: { web: 3000 }, templates: { url: "http://127.0.0.1:{web}" } };
  await t.step("added and replaced", () => {
    assert.deepEqual(parseConfig(value, { ports: { api: 9000 } }).ports, { web: 3000, api: 9000 });
    assert.deepEqual(parseConfig(value, { ports: { web: 4000 } }).ports, { web: 4000 });
    // Without ports in the config, the override replaces the default.
    assert.deepEqual(parseConfig({}, { ports: { api: 9000 } }).ports, { api: 9000 });
  });
  await t.step("errors", () => {
    const source = '"/repo/worktree-ports.config.json"';
    assert.throws(
      () => parseConfig(value, { source, ports: { api: 0 } }),
      /^WorktreePortsError: Invalid option "ports": port "api" must be an integer/,
    );
    assert.throws(
      () => parseConfig(value, { source, ports: { api: 0 }, overrideNames: { ports: "--port" } }),
      /^WorktreePortsError: Invalid --port: port "api"/,
    );
    assert.throws(
      () => parseConfig(value, { source, ports: { api: 3100 } }),
      /^WorktreePortsError: Invalid option "ports" with config "\/repo\/worktree-ports\.config\.json": port "web" at slot 1 and port "api" at slot 0 both land on 3100/,
    );
    assert.throws(
      () => parseConfig({ ...value, stride: 0 }, { source, ports: { api: 9000 } }),
      /^WorktreePortsError: Invalid config "\/repo\/worktree-ports\.config\.json": "stride" must be/,
    );
  });
});

Deno.test("parseConfig() refuses keys whose variable names collide or that the environment depends on", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    [
      "a port and a port",
      { ports: { web_port: 3000, WEB_PORT: 4000 } },
      /: keys "web_port" and "WEB_PORT" both become the variable "WEB_PORT"/,
    ],
    [
      "a port and a template",
      { ports: { web: 3000 }, templates: { Web: "x" } },
      /: keys "web" and "Web" both become the variable "WEB"/,
    ],
    [
      "PATH",
      { ports: { web: 3000 }, templates: { path: "/bin" } },
      /: key "path" would set "PATH", which commands need from the environment \(rename it, e.g. "app_path"\)/,
    ],
    ...["home", "Shell", "user", "pwd", "lang", "term", "tmpdir"].map((key) =>
      [
        key,
        { ports: { [key]: 3000 } },
        new RegExp(`key "${key}" would set "${key.toUpperCase()}"`),
      ] as [
        string,
        unknown,
        RegExp,
      ]
    ),
    ...["lc_all", "deno_dir", "git_dir", "ld_preload", "dyld_library_path"].map((key) =>
      [
        key,
        { ports: { web: 3000 }, templates: { [key]: "x" } },
        new RegExp(`key "${key}" would set`),
      ] as [
        string,
        unknown,
        RegExp,
      ]
    ),
    [
      "several at once",
      { ports: { path: 3000, git_port: 4000 } },
      /: keys "path" and "git_port" would set "PATH" and "GIT_PORT"/,
    ],
  ];
  await assertConfigErrors(t, cases);
  await t.step("names that only look alike are fine", () => {
    const config = parseConfig({ ports: { path_port: 3000, home_url_port: 4001, lc: 5002 } });
    assert.deepEqual(Object.keys(config.ports), ["path_port", "home_url_port", "lc"]);
  });
});

Deno.test("renderBundle() fills {slot}, {branch}, {name} and {slug} from the worktree, {{ and }} as braces", async (t) => {
  const config = parseConfig({
    ports: { web_port: 3000 },
    templates: {
      project: "app-{slug}",
      url: "http://{slug}.localhost:{web_port}",
      db: "app_{slot}_{name}",
      branch: "{branch}",
      braces: "{{web_port}} }}{{ {{{web_port}}} { x }",
    },
  });
  await t.step("on a branch", () => {
    const bundle = renderBundle(config, 2, {
      worktree: { path: "/src/app-login/", branch: "Feature/Login_Page" },
    });
    assert.deepEqual(bundle, {
      web_port: 3200,
      project: "app-feature-login-page",
      url: "http://feature-login-page.localhost:3200",
      db: "app_2_app-login",
      branch: "Feature/Login_Page",
      braces: "{web_port} }{ {3200} { x }",
    });
  });
  await t.step("detached: no branch, the slug from the directory's name", () => {
    const bundle = renderBundle(config, 1, { worktree: { path: "/src/Hot Fix 2" } });
    assert.equal(bundle.branch, "");
    assert.equal(bundle.project, "app-hot-fix-2");
  });
  await t.step("without a worktree", () => {
    const bundle = renderBundle(config, 3);
    assert.deepEqual([bundle.branch, bundle.project, bundle.db], ["", "app-slot-3", "app_3_"]);
  });
});

Deno.test("slugOf() makes a DNS label of at most 63 characters", () => {
  for (
    const [text, slug] of [
      ["Feature/Login_Page", "feature-login-page"],
      ["--main--", "main"],
      ["fix/Ünïcode  names!", "fix-unicode-names"],
      ["日本", ""],
      ["a".repeat(70), "a".repeat(63)],
      [`${"a".repeat(62)}/b`, "a".repeat(62)],
    ]
  ) {
    assert.equal(slugOf(text), slug, text);
  }
});

Deno.test("parseConfig() checks template placeholders", async (t) => {
  await t.step("an unknown placeholder, with the escape to use", () => {
    assert.throws(
      () => parseConfig({ ports: { web: 3000 }, templates: { json: '{"a": {b}}' } }),
      /template "json" names "\{b\}", which is neither in "ports" nor one of "\{slot\}", "\{branch\}", "\{name\}" or "\{slug\}" \(write "\{\{" and "\}\}" for literal braces\)/,
    );
  });
  await t.step("an escaped one is fine", () => {
    parseConfig({ ports: { web: 3000 }, templates: { json: '{{"a": {{b}}}}' } });
  });
  await t.step("a port named like a placeholder", () => {
    assert.throws(
      () => parseConfig({ ports: { slot: 3000 } }),
      /port "slot" has the name of the placeholder "\{slot\}" \(rename it\)/,
    );
  });
});

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

Deno.test('parseConfig() accepts "scope" and rejects any other value', () => {
  assert.equal(parseConfig({ scope: "repository" }).scope, "repository");
  assert.equal(parseConfig({ scope: "machine" }).scope, "machine");
  assert.equal(parseConfig({}).scope, undefined);
  assert.throws(
    () => parseConfig({ scope: "planet" }),
    (error: unknown) =>
      error instanceof WorktreePortsError && error.code === "INVALID_CONFIG" &&
      /"scope" must be "machine" or "repository", got "planet"/.test(error.message),
  );
});

Deno.test("allocate() keeps the machine-wide index where it is told, and reserves other repositories' ports", async () => {
  const ports = webPorts();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const [b1] = await b.addWorktrees("b", 1);
  const dir = await Deno.makeTempDir();
  try {
    const index = machineIndexAt(`${dir}/index`);
    const first = await allocateIn(a1, ports, { index });
    const second = await allocateIn(b1, ports, { index });
    assert.deepEqual([first.slot, second.slot], [1, 2]);
    assert.deepEqual(second.warnings, []);
    const files = (await readJson(`${dir}/index/index.json`)).files as { path: string }[];
    assert.deepEqual(files.map((entry) => entry.path), [first.path, second.path]);
    // The default index of these tests, elsewhere, saw none of it.
    const other = await allocateIn(b1, ports, { index: machineIndexAt(TEST_HOME), force: true });
    assert.equal(other.slot, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("allocate() without permission to read the environment says so instead of falling back", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const ports = webPorts();
  const script = `import { allocate } from ${
    JSON.stringify(new URL("./mod.ts", import.meta.url).href)
  };
try {
  await allocate(${JSON.stringify(ports.config())});
  console.log("allocated");
} catch (error) {
  console.log(error.name);
}`;
  await Deno.writeTextFile(`${repo.base}/script.ts`, script);
  const result = await run(Deno.execPath(), [
    "run",
    "--no-prompt",
    ...["--allow-run=git", "--allow-read", "--allow-write", "--allow-net=127.0.0.1,[::1],0.0.0.0"],
    `${repo.base}/script.ts`,
  ], { cwd: a });
  assert.equal(result.stdout, "NotCapable\n", result.stderr);
  await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
});

Deno.test("bundleEnv() leaves out keys that would set a variable commands depend on, or the same variable", async (t) => {
  const table: [string, Record<string, unknown>, Record<string, string>, RegExp[]][] = [
    [
      "PATH and LD_PRELOAD",
      { port: 3100, path: "/x/evilbin", ld_preload: "/tmp/x.so" },
      { PORT: "3100" },
      [/^Left out key "path" of the port file: it would set "PATH"/, /"ld_preload".*"LD_PRELOAD"/],
    ],
    [
      "every reserved prefix",
      { lc_all: "C", deno_dir: "/x", git_dir: "/x", dyld_insert_libraries: "/x", home: "/x" },
      {},
      [/"LC_ALL"/, /"DENO_DIR"/, /"GIT_DIR"/, /"DYLD_INSERT_LIBRARIES"/, /"HOME"/],
    ],
    [
      "two keys that become one variable",
      { web: 3100, WEB: 3200, api: 3300 },
      { API: "3300" },
      [/^Left out keys "web" and "WEB" of the port file: they both become the variable "WEB"/],
    ],
    [
      "reserved names that also collide",
      { path: "/a", PATH: "/b" },
      {},
      [/^Left out keys "path" and "PATH" of the port file: they would set "PATH"/],
    ],
    ["a key that is not exported does not collide", { web: 3100, WEB: {} }, { WEB: "3100" }, []],
  ];
  for (const [name, bundle, expected, warnings] of table) {
    await t.step(name, () => {
      const seen: string[] = [];
      assert.deepEqual(bundleEnv(bundle, { onWarning: (w) => seen.push(w) }), expected);
      assert.equal(seen.length, warnings.length, seen.join("\n"));
      warnings.forEach((pattern, index) => assert.match(seen[index], pattern));
      assert.deepEqual(bundleEnv(bundle), expected);
    });
  }
});

Deno.test("fixWorktrees() names the keys a moved duplicate's file loses in the move's warnings", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const older = {
    web: ports.at(1).web,
    worktree_ports: { slot: 1, worktree: a, allocated_at: "2026-01-01T00:00:00Z" },
  };
  // An older allocator's file, written later, with keys someone added by hand.
  const newer = { web: ports.at(1).web, redis_port: 6380, my_note: "staging" };
  await writeJson(`${a}/.worktree-ports.json`, older);
  await writeJson(`${b}/.worktree-ports.json`, newer);
  const moves = await fixWorktrees({ cwd: a, ...ports.config() });
  assert.deepEqual(moves.map((move) => [move.worktree, move.reason, move.slot]), [
    [b, "duplicate", 2],
  ]);
  assert.equal(moves[0].warnings.length, 1, moves[0].warnings.join("\n"));
  assert.match(
    moves[0].warnings[0],
    /^Rewriting ".*wt1\/\.worktree-ports\.json" dropped "redis_port", "my_note", which the config does not produce/,
  );
  assert.equal((await readJson(`${b}/.worktree-ports.json`)).redis_port, undefined);
});

Deno.test("allocate() refuses an explicit output that is an existing file but no port file", async (t) => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const table: [string, string][] = [
    ["text", "# My project\n"],
    ["a JSON array", "[3100]\n"],
    ["a JSON object with nested values", '{ "name": "app", "scripts": { "dev": "vite" } }\n'],
  ];
  for (const [name, text] of table) {
    await t.step(name, async () => {
      const output = `${a}/kept-${slugOf(name)}`;
      await Deno.writeTextFile(output, text);
      await assert.rejects(allocateIn(a, ports, { output }), (error: unknown) => {
        assertCode("INVALID_OUTPUT")(error);
        assert.match((error as Error).message, /is not a port file .*choose another output path/);
        return true;
      });
      assert.equal(await Deno.readTextFile(output), text);
    });
  }
  await t.step("a FIFO", async () => {
    await run("mkfifo", [`${a}/fifo`]);
    await assert.rejects(
      allocateIn(a, ports, { output: `${a}/fifo` }),
      assertCode("INVALID_OUTPUT"),
    );
    assert.ok((await Deno.lstat(`${a}/fifo`)).isFifo);
  });
  await t.step("an empty file and a port file are written", async () => {
    const output = `${a}/empty.json`;
    await Deno.writeTextFile(output, "");
    assert.equal((await allocateIn(a, ports, { output })).slot, 1);
    assert.equal((await readJson(output)).web, ports.at(1).web);
    assert.equal((await allocateIn(a, ports, { output })).written, false);
  });
  await t.step("the default port file is still replaced with a warning", async () => {
    await Deno.writeTextFile(`${a}/.worktree-ports.json`, "# not JSON\n");
    const allocation = await allocateIn(a, ports);
    assert.match(allocation.warnings.join("\n"), /is unusable \(not valid JSON\); replacing it/);
  });
});
