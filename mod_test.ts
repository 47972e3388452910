import assert from "node:assert/strict";
import {
  allocate,
  type AllocateOptions,
  bundleEnv,
  chooseSlot,
  type EnvFormat,
  fixWorktrees,
  formatEnv,
  inspectWorktrees,
  isPortFree,
  lockRepository,
  machineIndexAt,
  machineIndexDir,
  openRepository,
  parseConfig,
  parseWorktreeList,
  readReservedPorts,
  reservedPortsOf,
  runWithPorts,
  WorktreePortsError,
  writeFileAtomic,
} from "./mod.ts";
import {
  forEachLoopback,
  git,
  readJson,
  run,
  snapshot,
  TempRepo,
  TEST_HOME,
  writeJson,
} from "./test_util.ts";

// Ports far from common services, with a small stride, so tests do not trip
// over whatever else this machine runs.
const TEST_PORTS = { ports: { web: 41000 }, stride: 10, slots: 40 } as const;

function allocateIn(cwd: string, options: AllocateOptions = {}) {
  return allocate({ ...TEST_PORTS, ports: { ...TEST_PORTS.ports }, cwd, ...options });
}

function assertCode(code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof WorktreePortsError, `expected WorktreePortsError, got ${error}`);
    assert.equal(error.code, code);
    return true;
  };
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

Deno.test("parseConfig() fills in the defaults when there is no config", () => {
  assert.deepEqual(parseConfig(undefined), {
    ports: { port: 3000 },
    templates: {},
    stride: 100,
    slots: 50,
  });
});

Deno.test("parseConfig() lets overrides replace ports, stride and slots", () => {
  const config = parseConfig(
    { ports: { a: 1000, b: 2000 }, stride: 5, slots: 3 },
    { ports: { c: 9000 }, stride: 7, slots: 4 },
  );
  assert.deepEqual(config, { ports: { c: 9000 }, templates: {}, stride: 7, slots: 4 });
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
      /template "url" names "\{api\}", which is not in "ports"/,
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
  for (const [name, value, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseConfig(value), (error: unknown) => {
        assertCode("INVALID_CONFIG")(error);
        assert.match((error as Error).message, message);
        return true;
      });
    });
  }
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
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  // The main worktree has no file yet: slot 0 is still not handed out.
  assert.equal((await allocateIn(a)).slot, 1);
  assert.equal((await allocateIn(b)).slot, 2);
  const main = await allocateIn(repo.root);
  assert.equal(main.slot, 0);
  assert.deepEqual(main.bundle, { web: 41000 });
});

Deno.test("allocate() skips a slot that a sibling worktree's file reserves, even when nothing listens", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await allocateIn(a);
  assert.equal(
    isPortFree(first.bundle.web as number),
    true,
    "nothing listens on the sibling's port",
  );
  const second = await allocateIn(b);
  assert.equal(first.slot, 1);
  assert.equal(second.slot, 2);
});

Deno.test("allocate() does not let the current output file block rewriting the same bundle", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const first = await allocateIn(a);
  const again = await allocateIn(a, { force: true });
  assert.equal(again.slot, first.slot);
  // The option is what makes the difference: counting the file as reserved moves the bundle.
  const blocked = await allocateIn(a, { force: true, excludeOutput: false });
  assert.notEqual(blocked.slot, first.slot);
});

Deno.test("allocate() with an output path reads siblings at the same place in their worktree", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  for (const dir of [a, b]) await Deno.mkdir(`${dir}/config`);
  const first = await allocateIn(a, { output: "config/ports.json" });
  const second = await allocateIn(b, { output: "config/ports.json" });
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
  await writeJson(`${old}/.worktree-ports.json`, {
    cloud_port: 8100,
    web_port: 3100,
    db_port: 5532,
    cloud_url: "http://127.0.0.1:8100",
  });
  await writeJson(`${fresh}/worktree-ports.config.json`, {
    ports: { cloud_port: 8000, web_port: 3000, db_port: 5432 },
    templates: { cloud_url: "http://127.0.0.1:{cloud_port}" },
    stride: 100,
    slots: 40,
  });
  const allocation = await allocate({ cwd: fresh });
  assert.equal(allocation.slot, 2);
  assert.deepEqual(allocation.bundle, {
    cloud_port: 8200,
    web_port: 3200,
    db_port: 5632,
    cloud_url: "http://127.0.0.1:8200",
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
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const first = await allocateIn(a);
  assert.equal(first.written, true);
  const before = await Deno.readTextFile(first.path);
  using _service = Deno.listen({ hostname: "127.0.0.1", port: first.bundle.web as number });
  const second = await allocateIn(a);
  assert.deepEqual(
    { slot: second.slot, bundle: second.bundle, kept: second.kept, written: second.written },
    { slot: first.slot, bundle: first.bundle, kept: true, written: false },
  );
  assert.equal(await Deno.readTextFile(first.path), before);
});

Deno.test("allocate() skips a slot whose port has a listener on each loopback address", async (t) => {
  await forEachLoopback(t, async (hostname) => {
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    using _other = Deno.listen({ hostname, port: 41010 });
    const allocation = await allocateIn(a);
    assert.equal(allocation.slot, 2);
  });
});

Deno.test("allocate() treats a copied port file as not this worktree's own", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocateIn(a);
  await Deno.copyFile(`${a}/.worktree-ports.json`, `${b}/.worktree-ports.json`);
  const allocation = await allocateIn(b);
  assert.equal(allocation.slot, 2);
  assert.match(allocation.warnings.join("\n"), /was written for the worktree ".*wt0"/);
  assert.equal(
    ((await readJson(`${b}/.worktree-ports.json`)).worktree_ports as { worktree: string }).worktree,
    b,
  );
});

Deno.test("allocate() replaces a corrupt own file and skips a corrupt sibling file, with warnings", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await Deno.writeTextFile(`${a}/.worktree-ports.json`, "{ broken");
  await Deno.writeTextFile(`${b}/.worktree-ports.json`, "[1, 2");
  const allocation = await allocateIn(b);
  assert.equal(allocation.slot, 1);
  assert.equal(allocation.warnings.length, 2);
  assert.match(
    allocation.warnings[0],
    /Skipped port file ".*wt0\/\.worktree-ports\.json": not valid JSON/,
  );
  assert.match(
    allocation.warnings[1],
    /This worktree's port file .* is unusable \(not valid JSON\)/,
  );
  assert.equal(((await readJson(allocation.path)).worktree_ports as { slot: number }).slot, 1);
});

Deno.test("allocate() keeps nothing reserved for a worktree whose directory is gone", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocateIn(a);
  await Deno.remove(a, { recursive: true });
  assert.match(await git(repo.root, "worktree", "list", "--porcelain"), /prunable/);
  assert.equal((await allocateIn(b)).slot, 1);
});

Deno.test("allocate() works in the linked worktrees of a bare repository", async () => {
  await using repo = await TempRepo.create({ bare: true });
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await allocateIn(a)).slot, 1);
  assert.equal((await allocateIn(b)).slot, 2);
  await assert.rejects(allocateIn(repo.root), assertCode("NOT_A_WORKTREE"));
});

Deno.test("allocate() handles worktree paths with spaces, newlines and unicode", async () => {
  await using repo = await TempRepo.create();
  const odd = await repo.addWorktree("wt ü\nline two");
  const allocation = await allocateIn(odd);
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
  await using repo = await TempRepo.create();
  const worktrees = await repo.addWorktrees("wt", 6);
  const calls: string[] = [];
  const git = {
    async run(args: readonly string[], cwd: string) {
      calls.push(args.join(" "));
      return (await run("git", args, { cwd })).stdout;
    },
  };
  // The first allocation in a repository also asks whether git ignores the new file.
  await allocateIn(worktrees[0], { git });
  assert.deepEqual(calls, [
    "worktree list --porcelain -z",
    `ls-files -z -t --cached --others --exclude-standard -- .worktree-ports.json`,
  ]);
  for (const cwd of worktrees.slice(1)) {
    calls.length = 0;
    await allocateIn(cwd, { git });
    assert.deepEqual(calls, ["worktree list --porcelain -z"], "a fresh worktree");
    calls.length = 0;
    await allocateIn(cwd, { git });
    assert.deepEqual(calls, ["worktree list --porcelain -z"], "a worktree keeping its slot");
  }
});

Deno.test("allocate() gives distinct bundles to simultaneous allocations in one process", async () => {
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
  const allocations = await Promise.all(worktrees.map((cwd) => allocateIn(cwd, { probe })));
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
    assert.equal(
      formatEnv({ ...env, SPACE: "a b" }, "dotenv"),
      `PORT=3100\nURL='http://127.0.0.1:3100/a?b=c'\nODD="it's \\$(id) \\"q\\""\nSPACE='a b'\n`,
    );
  });
  await t.step("json", () => {
    assert.deepEqual(JSON.parse(formatEnv(env, "json")), env);
  });
  await t.step("unknown format", () => {
    assert.throws(() => formatEnv(env, "yaml" as EnvFormat), TypeError);
  });
});

Deno.test("allocate() makes git ignore the port file without touching .gitignore", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  await allocateIn(a);
  await allocateIn(b);
  await allocateIn(repo.root);
  for (const dir of [repo.root, a, b]) assert.equal(await git(dir, "status", "--porcelain"), "");
  const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`);
  assert.equal(exclude.split("\n").filter((line) => line === "/.worktree-ports.json").length, 1);
  await assert.rejects(Deno.stat(`${repo.root}/.gitignore`), Deno.errors.NotFound);
});

Deno.test("allocate() leaves the exclude file alone when a .gitignore already covers the file", async () => {
  await using repo = await TempRepo.create();
  await Deno.writeTextFile(`${repo.root}/.gitignore`, ".worktree-ports.json\n");
  await git(repo.root, "add", ".gitignore");
  await git(repo.root, "commit", "-q", "-m", "ignore");
  const [a] = await repo.addWorktrees("wt", 1);
  const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`);
  await allocateIn(a);
  assert.equal(await Deno.readTextFile(`${repo.root}/.git/info/exclude`), exclude);
  assert.equal(await git(a, "status", "--porcelain"), "");
});

Deno.test("allocate() warns loudly when the port file is tracked by git", async () => {
  await using repo = await TempRepo.create();
  await allocateIn(repo.root);
  await git(repo.root, "add", "-f", ".worktree-ports.json");
  await git(repo.root, "commit", "-q", "-m", "commit the port file by mistake");
  const [a] = await repo.addWorktrees("wt", 1);
  const allocation = await allocateIn(a);
  assert.equal(allocation.slot, 1);
  assert.match(allocation.warnings.join("\n"), /was written for the worktree/);
  assert.match(
    allocation.warnings.join("\n"),
    /".*wt0\/\.worktree-ports\.json" is tracked by git: every new worktree checks out the same ports/,
  );
});

Deno.test("fixWorktrees() moves the later of two equally idle duplicates, then has nothing to do", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const older = {
    web: 41010,
    worktree_ports: { slot: 1, worktree: a, allocated_at: "2026-01-01T00:00:00Z" },
  };
  const newer = {
    web: 41010,
    worktree_ports: { slot: 1, worktree: b, allocated_at: "2026-02-01T00:00:00Z" },
  };
  await writeJson(`${a}/.worktree-ports.json`, older);
  await writeJson(`${b}/.worktree-ports.json`, newer);
  const statuses = await inspectWorktrees({ cwd: a });
  assert.deepEqual(statuses.map((s) => s.state), ["none", "duplicate", "duplicate"]);
  const moves = await fixWorktrees({ cwd: a, ...TEST_PORTS, ports: { ...TEST_PORTS.ports } });
  assert.deepEqual(moves, [{
    worktree: b,
    reason: "duplicate",
    from: { web: 41010 },
    slot: 2,
    to: { web: 41020 },
  }]);
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), older);
  assert.deepEqual(
    await fixWorktrees({ cwd: a, ...TEST_PORTS, ports: { ...TEST_PORTS.ports } }),
    [],
  );
});

Deno.test("the README's config example is a valid config", async () => {
  const readme = await Deno.readTextFile(new URL("./README.md", import.meta.url));
  const example = /## Configuration[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)![1];
  const config = parseConfig(JSON.parse(example));
  assert.deepEqual(Object.keys(config.ports), ["cloud_port", "web_port", "db_port"]);
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
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const [b1] = await b.addWorktrees("b", 1);
  const dir = await Deno.makeTempDir();
  try {
    const index = machineIndexAt(`${dir}/index`);
    const first = await allocateIn(a1, { index });
    const second = await allocateIn(b1, { index });
    assert.deepEqual([first.slot, second.slot], [1, 2]);
    assert.deepEqual(second.warnings, []);
    const files = (await readJson(`${dir}/index/index.json`)).files as { path: string }[];
    assert.deepEqual(files.map((entry) => entry.path), [first.path, second.path]);
    // The default index of these tests, elsewhere, saw none of it.
    const other = await allocateIn(b1, { index: machineIndexAt(TEST_HOME), force: true });
    assert.equal(other.slot, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("allocate() without permission to read the environment says so instead of falling back", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const script = `import { allocate } from ${
    JSON.stringify(new URL("./mod.ts", import.meta.url).href)
  };
try {
  await allocate({ ports: { web: 41000 }, stride: 10 });
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
