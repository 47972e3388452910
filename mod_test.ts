import assert from "node:assert/strict";
import {
  allocate,
  fixWorktrees,
  inspectWorktrees,
  isPortFree,
  listSlots,
  listWorktrees,
  type PortProbe,
  portStatus,
  runWithPorts,
  slugOf,
} from "./mod.ts";
import {
  allocateIn,
  assertCode,
  forEachLoopback,
  git,
  pickPorts,
  readJson,
  run,
  snapshot,
  TempRepo,
  testWhere,
  unmetNeed,
  webPorts,
  writeJson,
} from "./test_util.ts";

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

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "allocate() judges an output reached through a symlinked folder by its real path",
  async () => {
    // macOS's /tmp and /var/folders are such links: a worktree reached through
    // one used to count its own file as a sibling's and move on every call.
    const ports = webPorts();
    await using repo = await TempRepo.create();
    const [a, b] = await repo.addWorktrees("wt", 2);
    const link = `${repo.base}/link`;
    await Deno.symlink(a, link);
    const slots = [];
    for (let call = 0; call < 3; call++) {
      const allocation = await allocateIn(link, ports, { output: `${link}/.worktree-ports.json` });
      assert.equal(allocation.path, `${a}/.worktree-ports.json`);
      slots.push(allocation.slot);
    }
    assert.deepEqual(slots, [1, 1, 1]);
    assert.equal(await git(a, "status", "--porcelain"), "", "its file is excluded from git");
    // A sibling's file spelled through the link is still the sibling's.
    const sibling = await allocateIn(b, ports, { output: `${link}/ports.json` }).then(
      () => undefined,
      (error: Error) => error,
    );
    assertCode("INVALID_OUTPUT")(sibling);
  },
);

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

// ---------------------------------------------------------------------------
// Environment, git ignore, inspection and repair
// ---------------------------------------------------------------------------

testWhere(
  { tools: ["bash"] },
  "runWithPorts() runs the command with a bundle it is given, without loading one",
  async () => {
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
  },
);

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

Deno.test("allocate() asks git about the port file by its name, not as a pattern", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  // A tracked file that "ports-?.json" would match as a pattern.
  await Deno.writeTextFile(`${repo.root}/ports-a.json`, "{}\n");
  await git(repo.root, "add", "ports-a.json");
  await git(repo.root, "commit", "-q", "-m", "a file named like a pattern's match");
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.writeTextFile(`${a}/ports-?.json`, "{}\n");
  const allocation = await allocateIn(a, ports, { output: "ports-?.json" });
  assert.deepEqual(allocation.warnings.filter((w) => w.includes("tracked by git")), []);
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

// ---------------------------------------------------------------------------
// Ports a user can actually use
// ---------------------------------------------------------------------------

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
// Missing permissions, dropped keys, outputs that are no port file
// ---------------------------------------------------------------------------

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
    ...[
      "--allow-run=git",
      "--allow-read",
      "--allow-write",
      "--allow-net=127.0.0.1,[::1],0.0.0.0,[::]",
    ],
    `${repo.base}/script.ts`,
  ], { cwd: a });
  assert.equal(result.stdout, "NotCapable\n", result.stderr);
  await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
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
  const noFifo = unmetNeed({ unix: "FIFOs (mkfifo)" });
  await t.step({
    name: `a FIFO${noFifo === undefined ? "" : ` (skipped: ${noFifo})`}`,
    ignore: noFifo !== undefined,
    fn: async () => {
      await run("mkfifo", [`${a}/fifo`]);
      await assert.rejects(
        allocateIn(a, ports, { output: `${a}/fifo` }),
        assertCode("INVALID_OUTPUT"),
      );
      assert.ok((await Deno.lstat(`${a}/fifo`)).isFifo);
    },
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
