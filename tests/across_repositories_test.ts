// No two worktrees on the machine share a port, whichever repository they
// belong to: the machine-wide index, and what list, check and check --fix
// make of ports other repositories hold.

import assert from "node:assert/strict";
import { machineIndexAt } from "../mod.ts";
import {
  allocateIn,
  canCreateFileIn,
  CLI_FLAGS,
  copyPackage,
  git,
  type PickedPorts,
  pickPorts,
  portsAt,
  portsOf,
  readJson,
  ROOT,
  run,
  runCli,
  runsOk,
  slotOf,
  snapshot,
  tempHome,
  TempRepo,
  TEST_HOME,
  testWhere,
  UNPRIVILEGED,
  webPorts,
  writeJson,
} from "../test_util.ts";

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

Deno.test("cli allocate gives fresh worktrees of two repositories no shared port", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1, a2] = await a.addWorktrees("a", 2);
  const [b1, b2] = await b.addWorktrees("b", 2);
  await t.step("machine scope, the default", async () => {
    const given: number[] = [];
    for (const dir of [a1, b1, a2, b2]) {
      const result = await runCli(dir, ["allocate", ...ports.args], { env: home.env });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "");
      given.push(...portsOf(result.stdout));
    }
    assert.equal(new Set(given).size, 8, `ports: ${given}`);
    const index = await readJson(`${home.dir}/index.json`);
    assert.deepEqual(
      (index.files as { path: string }[]).map((entry) => entry.path).sort(),
      [a1, a2, b1, b2].map((dir) => `${dir}/.worktree-ports.json`).sort(),
    );
  });
  await t.step("--scope repository looks at the repository's own worktrees only", async () => {
    await Deno.remove(`${b1}/.worktree-ports.json`);
    await Deno.remove(`${b2}/.worktree-ports.json`);
    const before = await Deno.readTextFile(`${home.dir}/index.json`);
    const result = await runCli(b1, ["allocate", "--scope", "repository", ...ports.args], {
      env: home.env,
    });
    assert.equal(result.code, 0, result.stderr);
    // a1 holds slot 1 in its own repository; b1 takes slot 1 too.
    assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
    assert.equal(await Deno.readTextFile(`${home.dir}/index.json`), before);
  });
  await t.step(`config "scope": "repository" does the same`, async () => {
    await writeJson(`${b2}/worktree-ports.config.json`, { scope: "repository" });
    const result = await runCli(b2, ["allocate", ...ports.args], { env: home.env });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(portsOf(result.stdout), portsAt(ports, 2));
  });
  await t.step("an unknown scope is a usage error", async () => {
    const result = await runCli(b2, ["allocate", "--scope", "planet"], { env: home.env });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /"--scope" must be machine or repository, got "planet"/);
  });
});

Deno.test("cli allocate: git worktree remove in one repository frees its bundle for the others", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1, a2] = await a.addWorktrees("a", 2);
  const [b1, b2] = await b.addWorktrees("b", 2);
  const allocate = async (dir: string, ...args: string[]) => {
    const result = await runCli(dir, ["allocate", ...ports.args, ...args], { env: home.env });
    assert.equal(result.code, 0, result.stderr);
    return portsOf(result.stdout);
  };
  assert.deepEqual(await allocate(a1), portsAt(ports, 1));
  assert.deepEqual(await allocate(b1), portsAt(ports, 2));
  await t.step("a removed worktree's file is gone: its entry is dropped", async () => {
    await git(a.root, "worktree", "remove", a1);
    assert.deepEqual(await allocate(b2), portsAt(ports, 1));
    const index = await readJson(`${home.dir}/index.json`);
    const paths = (index.files as { path: string }[]).map((entry) => entry.path);
    assert.ok(!paths.includes(`${a1}/.worktree-ports.json`), `index: ${paths}`);
  });
  await t.step(
    "a worktree git reports as prunable reserves nothing, though its file remains",
    async () => {
      // The port file lives outside the worktree, so deleting the worktree leaves it behind.
      const file = `${a.base}/a1-ports.json`;
      assert.deepEqual(await allocate(a2, "--output", file), portsAt(ports, 3));
      await Deno.remove(a2, { recursive: true });
      // Git still lists it (and from 2.31 on calls it prunable); its directory is gone.
      assert.ok(
        (await git(a.root, "worktree", "list", "--porcelain")).includes(`worktree ${a2}\n`),
      );
      await Deno.remove(`${b1}/.worktree-ports.json`);
      assert.deepEqual(await allocate(b1), portsAt(ports, 2));
      await Deno.remove(`${b1}/.worktree-ports.json`);
      await Deno.remove(`${b2}/.worktree-ports.json`);
      // Without a2's file the lowest free slots are 1 and 2; with it, 3 would be skipped anyway.
      assert.deepEqual(await allocate(b2), portsAt(ports, 1));
      assert.deepEqual(await allocate(b1), portsAt(ports, 2));
      const [b3] = await b.addWorktrees("b3-", 1);
      assert.deepEqual(await allocate(b3), portsAt(ports, 3));
    },
  );
});

testWhere(
  { unix: "file modes that deny access (chmod)", tools: ["sh"] },
  "cli allocate works with a bad machine-wide index, warning and keeping to the repository",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using a = await TempRepo.create();
    await using b = await TempRepo.create();
    const [a1] = await a.addWorktrees("a", 1);
    const [b1] = await b.addWorktrees("b", 1);
    const gitDir = (await run("sh", ["-c", "command -v git"])).stdout.trim().replace(/\/git$/, "");
    /** Allocates in a1, then in b1 from scratch; returns b1's run. */
    async function allocateBoth(env: Record<string, string>, clearEnv = false) {
      const first = await runCli(a1, ["allocate", ...ports.args], { env, clearEnv });
      assert.equal(first.code, 0, first.stderr);
      await Deno.remove(`${b1}/.worktree-ports.json`).catch(() => {});
      return await runCli(b1, ["allocate", ...ports.args], { env, clearEnv });
    }
    await t.step("a deleted index is started afresh", async () => {
      await using home = await tempHome();
      await allocateBoth(home.env);
      await Deno.remove(`${home.dir}/index.json`);
      await Deno.remove(`${a1}/.worktree-ports.json`);
      const result = await allocateBoth(home.env);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "");
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, 2));
      const files = (await readJson(`${home.dir}/index.json`)).files as unknown[];
      assert.equal(files.length, 2);
    });
    await t.step("a corrupt index is left as it is", async () => {
      await using home = await tempHome();
      await Deno.writeTextFile(`${home.dir}/index.json`, '{"version": 1, "files": [{"path": ');
      const result = await allocateBoth(home.env);
      assert.equal(result.code, 0, result.stderr);
      assert.match(
        result.stderr,
        /^warning: The index ".*index\.json" is not valid JSON; allocating for this repository only this time \(move the file away to start a new index\)\n$/,
      );
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
      assert.equal(
        await Deno.readTextFile(`${home.dir}/index.json`),
        '{"version": 1, "files": [{"path": ',
      );
    });
    await t.step("an entry it cannot make sense of is kept as it is", async () => {
      await using home = await tempHome();
      const odd = { path: 42, note: "written by hand" };
      await writeJson(`${home.dir}/index.json`, { version: 1, files: [odd] });
      const result = await allocateBoth(home.env);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, 2));
      const files = (await readJson(`${home.dir}/index.json`)).files as unknown[];
      assert.deepEqual(files[0], odd);
      assert.equal(files.length, 3);
    });
    await t.step("an index folder that is a file", async () => {
      await using home = await tempHome();
      const file = `${home.dir}/not-a-folder`;
      await Deno.writeTextFile(file, "mine\n");
      const result = await allocateBoth({ WORKTREE_PORTS_HOME: file });
      assert.equal(result.code, 0, result.stderr);
      assert.match(
        result.stderr,
        /^warning: Cannot use the machine-wide index in ".*not-a-folder": .*; allocating for this repository only this time\n$/,
      );
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
      assert.equal(await Deno.readTextFile(file), "mine\n");
    });
    const readOnly = await Deno.makeTempDir({ prefix: "worktree-ports-home-" });
    try {
      await Deno.chmod(readOnly, 0o555);
      await t.step({
        name: "an unwritable index folder" +
          ((await canCreateFileIn(readOnly))
            ? " (skipped: this user may write into mode 0555 folders)"
            : ""),
        ignore: await canCreateFileIn(readOnly),
        fn: async () => {
          const result = await allocateBoth({ WORKTREE_PORTS_HOME: `${readOnly}/index` });
          assert.equal(result.code, 0, result.stderr);
          assert.match(result.stderr, /^warning: Cannot use the machine-wide index in /);
          assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
        },
      });
    } finally {
      await Deno.chmod(readOnly, 0o755);
      await Deno.remove(readOnly, { recursive: true });
    }
    await t.step("an index file that is a folder", async () => {
      await using home = await tempHome();
      await allocateBoth(home.env);
      await Deno.remove(`${home.dir}/index.json`);
      await Deno.mkdir(`${home.dir}/index.json`);
      await Deno.remove(`${a1}/.worktree-ports.json`);
      const result = await allocateBoth(home.env);
      assert.equal(result.code, 0, result.stderr);
      assert.match(
        result.stderr,
        /^warning: Cannot read the index ".*index\.json": it is not a regular file; allocating for this repository only this time/,
      );
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
    });
    await t.step("HOME unset", async () => {
      const result = await allocateBoth({ PATH: gitDir }, true);
      assert.equal(result.code, 0, result.stderr);
      // Deno notes each program of --allow-run not on that PATH (lsof, ps beside an old git).
      assert.match(
        result.stderr,
        /^(.*Failed to resolve '\w+'.*\n)*warning: No home folder for the machine-wide index \(set HOME or WORKTREE_PORTS_HOME\); allocating for this repository only this time\n$/,
      );
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
    });
  },
);

Deno.test("cli list, check and check --fix see ports shared with other repositories", async (t) => {
  const ports = pickPorts(["web", "api"]);
  const [s0, s1, s2] = [ports.at(0), ports.at(1), ports.at(2)];
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const [b1] = await b.addWorktrees("b", 1);
  const cli = (cwd: string, ...args: string[]) => runCli(cwd, args, { env: home.env });
  // Two worktrees that allocated with the opt-out, then an index that records
  // both (one kept from before, say): allocating never records such a pair.
  for (const dir of [a1, b1]) {
    const result = await cli(dir, "allocate", "--scope", "repository", ...ports.args);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
  }
  await writeJson(`${home.dir}/index.json`, {
    version: 1,
    files: [a1, b1].map((dir) => ({
      path: `${dir}/.worktree-ports.json`,
      repository: `${dir === a1 ? a.root : b.root}/.git`,
      worktree: dir,
    })),
  });
  assert.equal((await cli(a.root, "allocate", ...ports.args)).code, 0);
  await t.step("plain list marks the ports another repository holds", async () => {
    const result = await cli(a1, "list");
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      new RegExp(
        `web=${s1.web} \\(held by another repository\\) api=${s1.api} \\(held by another repository\\) +shares ${s1.web}, ${s1.api} with ${
          RegExp.escape(b1)
        } \\(another repository\\)`,
      ),
    );
    const json = JSON.parse((await cli(a1, "list", "--json")).stdout);
    assert.deepEqual(json[1].conflicts, [{
      worktree: b1,
      ports: portsAt(ports, 1),
      repository: `${b.root}/.git`,
    }]);
  });
  await t.step("plain check reports them", async () => {
    const result = await cli(a1, "check");
    assert.equal(result.code, 1);
    assert.match(
      result.stdout,
      new RegExp(
        `conflict: "${RegExp.escape(a1)}" and "${RegExp.escape(b1)}" of the repository "${
          RegExp.escape(b.root)
        }/\\.git" share ports ${s1.web}, ${s1.api}`,
      ),
    );
    assert.match(result.stderr, /run "worktree-ports check --fix --all" to repair/);
  });
  await t.step(
    "list --all groups every indexed worktree by repository, from anywhere",
    async () => {
      const result = await cli(home.dir, "list", "--all");
      assert.equal(result.code, 0, result.stderr);
      const sections = result.stdout.split("\n\n");
      assert.equal(sections.length, 2);
      // Outside any repository, the repositories come in order of path.
      const [first, second] = [a.root, b.root].sort();
      assert.match(sections[0], new RegExp(`^repository ${RegExp.escape(first)}/\\.git\n`));
      assert.match(sections[1], new RegExp(`^repository ${RegExp.escape(second)}/\\.git\n`));
      const bSection = sections.find((section) => section.includes(`${b.root}/.git\n`))!;
      assert.match(bSection, new RegExp(`${RegExp.escape(b1)} .* duplicate`));
      assert.doesNotMatch(result.stdout, /^\* /m);
    },
  );
  await t.step("check --fix --all moves one of the pair, by the same rules", async () => {
    const check = await cli(b1, "check", "--all");
    assert.equal(check.code, 1);
    assert.match(check.stdout, new RegExp(`conflict: .* share ports ${s1.web}, ${s1.api}`));
    const fix = await cli(b1, "check", "--fix", "--all", ...ports.args);
    assert.equal(fix.code, 0, fix.stderr);
    // b1 was allocated later; slot 2 is free in both repositories.
    assert.match(
      fix.stdout,
      new RegExp(
        `^moved "${
          RegExp.escape(b1)
        }" \\(duplicate\\): web=${s1.web} api=${s1.api} -> web=${s2.web} api=${s2.api} \\(slot 2\\)\nok: 4 worktrees, no shared ports\n$`,
      ),
    );
    const again = await cli(a1, "check", "--fix", "--all", ...ports.args);
    assert.equal(again.stdout, "nothing to fix\nok: 4 worktrees, no shared ports\n");
  });
  await t.step(
    "a main worktree without a file takes another slot when another repository holds its base ports",
    async () => {
      const result = await cli(b.root, "allocate", ...ports.args);
      assert.equal(result.code, 0, result.stderr);
      const slot = slotOf(JSON.parse(result.stdout));
      assert.notEqual(slot, 0);
      assert.deepEqual(portsOf(result.stdout), portsAt(ports, slot));
      assert.match(
        result.stderr,
        new RegExp(
          `^warning: Slot 0 of this main worktree is held by another repository \\(${s0.web} ` +
            `\\("web"\\) by "${RegExp.escape(a.root)}/\\.worktree-ports\\.json"`,
        ),
      );
      const check = await cli(b.root, "check", "--all", ...ports.args);
      assert.equal(check.code, 0, check.stdout);
    },
  );
});

Deno.test("cli allocate is not led astray by index entries pointing at a FIFO, a huge file, a folder or a relative path", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const elsewhere = `${home.dir}/elsewhere`;
  await Deno.mkdir(`${elsewhere}/wt/.git`, { recursive: true });
  const fifo = `${elsewhere}/fifo.json`;
  const mkfifo = await run("mkfifo", [fifo]);
  assert.equal(mkfifo.code, 0, mkfifo.stderr);
  const huge = `${elsewhere}/huge.json`;
  {
    using file = await Deno.open(huge, { write: true, create: true });
    // Sparse: 2 GiB on paper, nothing on disk; a reader that opened it would take a while.
    await file.truncate(2 ** 31);
  }
  const relative = { path: "ports.json", repository: "/r/.git", worktree: "wt" };
  const entry = (path: string) => ({ path, repository: "/elsewhere/.git", worktree: elsewhere });
  await writeJson(`${home.dir}/index.json`, {
    version: 1,
    files: [entry(fifo), entry(huge), entry(`${elsewhere}/wt`), relative],
  });
  // A file named like the relative entry, where it would be read from by mistake.
  await writeJson(`${a1}/ports.json`, ports.at(1));
  const result = await runCli(a1, ["allocate", "--lock-timeout", "5", ...ports.args], {
    env: home.env,
  });
  assert.equal(result.code, 0, result.stderr);
  // None of them was written by a worktree: nothing is known of their ports,
  // so each is named once and dropped.
  const dropped = (path: string, why: string) =>
    `warning: Dropped "${path}" from the machine-wide index: it cannot be read (${why}) and ` +
    `nothing is known of its ports\n`;
  assert.equal(
    result.stderr,
    dropped(fifo, "it is a FIFO (named pipe), not a file") +
      dropped(huge, "it is larger than 1048576 bytes") +
      dropped(`${elsewhere}/wt`, "it is a directory"),
  );
  assert.deepEqual(portsOf(result.stdout), portsAt(ports, 1));
  const files = (await readJson(`${home.dir}/index.json`)).files as unknown[];
  // The malformed entry is kept as it was; this worktree's file is recorded with its ports.
  assert.deepEqual(files, [relative, {
    path: `${a1}/.worktree-ports.json`,
    repository: `${a.root}/.git`,
    worktree: a1,
    ports: portsAt(ports, 1),
  }]);
  const again = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stderr, "");
});

Deno.test("cli allocate with a relative WORKTREE_PORTS_HOME warns and keeps to the repository", async () => {
  const ports = pickPorts(["web", "api"]);
  await using a = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const result = await runCli(a1, ["allocate", ...ports.args], {
    env: { WORKTREE_PORTS_HOME: "state" },
  });
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stderr,
    /^warning: The machine-wide index folder "state" is not an absolute path \(set WORKTREE_PORTS_HOME to one\); allocating for this repository only this time\n$/,
  );
  await assert.rejects(Deno.stat(`${a1}/state`), Deno.errors.NotFound);
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli allocate writes a symlinked index.json through its link",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using home = await tempHome();
    await using a = await TempRepo.create();
    const [a1] = await a.addWorktrees("a", 1);
    await Deno.mkdir(`${home.dir}/synced`);
    await writeJson(`${home.dir}/synced/index.json`, { version: 1, files: [] });
    await Deno.symlink(`${home.dir}/synced/index.json`, `${home.dir}/index.json`);
    const result = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
    assert.equal(result.code, 0, result.stderr);
    assert.ok((await Deno.lstat(`${home.dir}/index.json`)).isSymlink);
    const files = (await readJson(`${home.dir}/synced/index.json`)).files as { path: string }[];
    assert.deepEqual(files.map((entry) => entry.path), [`${a1}/.worktree-ports.json`]);
  },
);

Deno.test("cli check needs --allow-env only to read the machine-wide index", async (t) => {
  await using home = await tempHome();
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const flags = ["--allow-run=git", "--allow-read"];
  await t.step("with --scope repository, git and read suffice", async () => {
    const result = await runCli(a, ["check", "--scope", "repository"], { flags, env: home.env });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "ok: 2 worktrees, no shared ports\n");
  });
  await t.step("otherwise it names the missing --allow-env", async () => {
    const result = await runCli(a, ["check"], { flags, env: home.env });
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      /^error: Missing permission: run again with --allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA \(for "check"; /,
    );
  });
});

Deno.test("cli allocate keeps a worktree's slot when the index still files it under a repository it left", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const first = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(first.code, 0, first.stderr);
  // As after the directory was reused by another repository's worktree.
  await writeJson(`${home.dir}/index.json`, {
    version: 1,
    files: [{ path: `${a1}/.worktree-ports.json`, repository: "/gone/.git", worktree: a1 }],
  });
  const again = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout, first.stdout);
  const files = (await readJson(`${home.dir}/index.json`)).files as { repository: string }[];
  assert.deepEqual(files.map((entry) => entry.repository), [`${a.root}/.git`]);
});

Deno.test("cli allocate still only warns when the machine-wide index's lock cannot be opened", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using repo = await TempRepo.create();
  await Deno.mkdir(`${home.dir}/worktree-ports.lock`);
  const result = await runCli(repo.root, ["allocate", ...ports.args], { env: home.env });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(
    result.stderr,
    `warning: Cannot use the machine-wide index in "${home.dir}": Cannot open the lock "${home.dir}/worktree-ports.lock": it is a directory (remove it; worktree-ports creates the lock again as an empty file); allocating for this repository only this time\n`,
  );
  assert.equal(portsOf(result.stdout)[0], ports.base.web);
});

Deno.test("cli allocate keeps another repository's ports after its worktree moved or its files were never indexed", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1, a2, a3] = await a.addWorktrees("a", 3);
  const [b1, b2] = await b.addWorktrees("b", 2);
  const allocate = async (dir: string) => {
    const result = await runCli(dir, ["allocate", ...ports.args], { env: home.env });
    assert.equal(result.code, 0, result.stderr);
    return portsOf(result.stdout);
  };
  await t.step("a worktree moved after it was recorded", async () => {
    assert.deepEqual(await allocate(a1), portsAt(ports, 1));
    await git(a.root, "worktree", "move", a1, `${a.base}/moved`);
    assert.deepEqual(await allocate(b1), portsAt(ports, 2));
    // The index now points at the moved file.
    const paths = ((await readJson(`${home.dir}/index.json`)).files as { path: string }[])
      .map((entry) => entry.path);
    assert.ok(paths.includes(`${a.base}/moved/.worktree-ports.json`), `index: ${paths}`);
  });
  await t.step("files written before the index was lost", async () => {
    assert.deepEqual(await allocate(a2), portsAt(ports, 3));
    await Deno.remove(`${home.dir}/index.json`);
    // One allocation in repository a records all of its files again (it cannot
    // know b1's any more: the index was the only pointer to it).
    const [a3Web] = await allocate(a3);
    const [b2Web] = await allocate(b2);
    assert.ok(![ports.at(1).web, ports.at(3).web, a3Web].includes(b2Web), `b2 got ${b2Web}`);
  });
});

Deno.test("cli check --fix --all opens a moved repository once and finishes", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using repo = await TempRepo.create();
  const [w1] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(w1, ["allocate", ...ports.args], { env: home.env })).code, 0);
  const moved = `${repo.base}/main2`;
  await Deno.rename(repo.root, moved);
  await git(moved, "worktree", "repair");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...CLI_FLAGS,
      `${ROOT}cli.ts`,
      "check",
      "--fix",
      "--all",
      "--lock-timeout",
      "5",
      ...ports.args,
    ],
    cwd: w1,
    env: { ...home.env, GIT_CONFIG_GLOBAL: "/dev/null", GIT_CONFIG_NOSYSTEM: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = await child.output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.doesNotMatch(stderr, /Timed out/);
  assert.equal(output.code, 0, stderr + new TextDecoder().decode(output.stdout));
});

testWhere(
  { linux: "/proc" },
  "cli allocate treats an index entry pointing into /proc as a file to skip",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using home = await tempHome();
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    await writeJson(`${home.dir}/index.json`, {
      version: 1,
      files: [{
        path: "/proc/self/environ",
        repository: "/elsewhere/.git",
        worktree: "/proc/self",
      }],
    });
    const result = await runCli(a, ["allocate", ...ports.args], { env: home.env });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(slotOf(JSON.parse(result.stdout)), 1);
  },
);

/** Runs `mv`, as a user moving a folder would (git is not told). */
async function mv(from: string, to: string): Promise<void> {
  const moved = await run("mv", [from, to]);
  assert.equal(moved.code, 0, moved.stderr);
}

/** The port files the machine-wide index in `home` records. */
async function indexedPaths(home: string): Promise<string[]> {
  const files = (await readJson(`${home}/index.json`)).files as { path?: unknown }[];
  return files.map((entry) => String(entry.path));
}

/** The ports in `given` that `held` holds too. */
function shared(given: readonly number[], held: readonly number[]): number[] {
  return given.filter((port) => held.includes(port));
}

Deno.test("cli allocate keeps the ports of another repository's locked worktree whose directory is away, and list --all shows it absent", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const a1 = await a.addWorktree("a1");
  const b1 = await b.addWorktree("b1");
  const cli = (cwd: string, ...args: string[]) => runCli(cwd, args, { env: home.env });
  const first = await cli(a1, "allocate", ...ports.args);
  assert.equal(first.code, 0, first.stderr);
  const held = portsOf(first.stdout);
  // Git keeps a locked worktree whose directory is away (on a removable disk, say).
  await git(a.root, "worktree", "lock", a1);
  const away = `${a.base}/away`;
  await mv(a1, away);
  await t.step("a fresh worktree of another repository gets none of its ports", async () => {
    const result = await cli(b1, "allocate", ...ports.args);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(shared(portsOf(result.stdout), held), []);
  });
  await t.step("the index keeps its entry", async () => {
    assert.ok(
      (await indexedPaths(home.dir)).includes(`${a1}/.worktree-ports.json`),
      `index: ${await indexedPaths(home.dir)}`,
    );
  });
  await t.step("list --all shows it absent", async () => {
    const result = await cli(b1, "list", "--all", "--json");
    assert.equal(result.code, 0, result.stderr);
    const rows = JSON.parse(result.stdout) as { path: string; state: string }[];
    const row = rows.find((row) => row.path === a1);
    assert.equal(row?.state, "absent", result.stdout);
  });
  await t.step("check --fix --all does not try to move it", async () => {
    const result = await cli(b1, "check", "--fix", "--all", ...ports.args);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.doesNotMatch(result.stdout, new RegExp(`^moved "${RegExp.escape(a1)}"`, "m"));
  });
  await t.step("moved back, check --all finds nothing wrong", async () => {
    await mv(away, a1);
    // From a1's side: its own repository is listed by git, the other through the index.
    const result = await cli(a1, "check", "--all");
    assert.equal(result.code, 0, result.stdout + result.stderr);
  });
});

/**
 * `--port` and `--stride`/`--slots` flags for a repository whose slot 0 is
 * slot 1 of `ports` (and each slot k, slot k + 1), so that another
 * repository on `ports` has a linked worktree's slot on its main worktree's
 * ports; every port stays among those `ports` picked.
 */
function shiftedArgs(ports: PickedPorts<"web" | "api">): string[] {
  const { web, api } = ports.at(1);
  return [
    ...["--port", `web=${web}`, "--port", `api=${api}`],
    ...["--stride", String(ports.stride), "--slots", String(ports.slots - 1)],
  ];
}

testWhere(
  { unix: "file modes that deny access (chmod) and FIFOs (mkfifo)" },
  "cli allocate reserves the ports of another repository's port file that cannot be read",
  async (t) => {
    const damages: {
      name: string;
      damage: (file: string) => Promise<void>;
      unprivileged?: true;
    }[] = [
      {
        name: "a file over 1 MiB",
        damage: async (file) => {
          // Still the same JSON, with a mebibyte of spaces after it.
          const text = await Deno.readTextFile(file);
          await Deno.writeTextFile(file, text + " ".repeat(2 ** 20));
        },
      },
      {
        name: "a FIFO",
        damage: async (file) => {
          await Deno.remove(file);
          const made = await run("mkfifo", [file]);
          assert.equal(made.code, 0, made.stderr);
        },
      },
      {
        name: "a directory",
        damage: async (file) => {
          await Deno.remove(file);
          await Deno.mkdir(file);
        },
      },
      {
        name: "mode 000",
        damage: (file) => Deno.chmod(file, 0o000),
        unprivileged: true,
      },
    ];
    for (const which of ["linked", "main"] as const) {
      for (const { name, damage, unprivileged } of damages) {
        const skip = unprivileged && "reason" in UNPRIVILEGED
          ? ` (skipped: ${UNPRIVILEGED.reason})`
          : "";
        await t.step({
          name: `${
            which === "main" ? "the main worktree's" : "a linked worktree's"
          } file is ${name}${skip}`,
          ignore: skip !== "",
          fn: async () => {
            const ports = pickPorts(["web", "api"]);
            await using home = await tempHome();
            await using a = await TempRepo.create();
            await using b = await TempRepo.create();
            // A main worktree holds slot 0: the other repository's linked
            // worktree would get it at its own slot 1.
            const aArgs = which === "main" ? shiftedArgs(ports) : [...ports.args];
            const aDir = which === "main" ? a.root : await a.addWorktree("a1");
            const b1 = await b.addWorktree("b1");
            const first = await runCli(aDir, ["allocate", ...aArgs], { env: home.env });
            assert.equal(first.code, 0, first.stderr);
            const held = portsOf(first.stdout);
            const file = `${aDir}/.worktree-ports.json`;
            let prefix: string[] = [];
            let cli = `${ROOT}cli.ts`;
            let env: Record<string, string> = home.env;
            if (unprivileged && "prefix" in UNPRIVILEGED && UNPRIVILEGED.prefix.length > 0) {
              // B's allocation runs as a user the file's mode binds; it owns B and the index.
              prefix = UNPRIVILEGED.prefix;
              for (const dir of [a.base, b.base, home.dir]) {
                await Deno.chmod(dir, 0o755);
                const chown = await run("chown", ["-R", "65534:65534", dir]);
                assert.equal(chown.code, 0, chown.stderr);
              }
              // A copy of the package and a Deno cache that user can read and write.
              cli = `${await copyPackage(`${b.base}/package`)}/cli.ts`;
              await Deno.mkdir(`${b.base}/deno`);
              await Deno.chown(`${b.base}/deno`, 65534, 65534);
              env = { ...home.env, HOME: home.dir, DENO_DIR: `${b.base}/deno` };
            }
            await damage(file);
            const result = await run(prefix[0] ?? Deno.execPath(), [
              ...prefix.slice(1),
              ...(prefix.length > 0 ? [Deno.execPath()] : []),
              "run",
              ...CLI_FLAGS,
              cli,
              "allocate",
              ...ports.args,
            ], { cwd: b1, env });
            assert.equal(result.code, 0, result.stderr);
            assert.deepEqual(shared(portsOf(result.stdout), held), [], result.stderr);
            assert.ok(
              (await indexedPaths(home.dir)).includes(file),
              `index: ${await indexedPaths(home.dir)}`,
            );
          },
        });
      }
    }
  },
);

/** Whether this user may make folders in /dev/shm (checked by another program: see below). */
const DEV_SHM_WRITABLE = runsOk("test", ["-d", "/dev/shm", "-a", "-w", "/dev/shm"]);

/**
 * A repository with one commit in a new folder under /dev/shm, removed on
 * dispose. Deno opens files under /dev only with --allow-all, which the CLI
 * does not ask for (nor do these tests: other programs make and remove it).
 */
async function devShmRepository(): Promise<{ dir: string; root: string } & AsyncDisposable> {
  const made = await run("mktemp", ["-d", "-p", "/dev/shm", "worktree-ports-XXXXXXXX"]);
  assert.equal(made.code, 0, made.stderr);
  const dir = made.stdout.trim();
  await git(dir, "init", "-q", "-b", "main", "main");
  await git(`${dir}/main`, "commit", "-q", "--allow-empty", "-m", "initial");
  return {
    dir,
    root: `${dir}/main`,
    [Symbol.asyncDispose]: async () => {
      await run("rm", ["-rf", dir]);
    },
  };
}

Deno.test({
  name:
    `cli allocate reserves the ports of another repository in a folder its permissions cannot read (/dev/shm)${
      DEV_SHM_WRITABLE ? "" : " (skipped: /dev/shm is not a writable folder here)"
    }`,
  ignore: !DEV_SHM_WRITABLE,
  fn: async () => {
    const ports = pickPorts(["web", "api"]);
    await using home = await tempHome();
    await using b = await TempRepo.create();
    await using a = await devShmRepository();
    const a1 = `${a.dir}/a1`;
    await git(a.root, "worktree", "add", "-q", "--detach", a1);
    const b1 = await b.addWorktree("b1");
    const first = await runCli(a1, ["allocate", ...ports.args], {
      env: home.env,
      flags: ["-A"],
    });
    assert.equal(first.code, 0, first.stderr);
    const result = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(shared(portsOf(result.stdout), portsOf(first.stdout)), [], result.stderr);
    assert.ok(
      (await indexedPaths(home.dir)).includes(`${a1}/.worktree-ports.json`),
      `index: ${await indexedPaths(home.dir)}`,
    );
  },
});

Deno.test("cli allocate reserves the ports of a repository whose folder was renamed and repaired", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const a1 = await a.addWorktree("a1");
  const b1 = await b.addWorktree("b1");
  // A's slot 0 is B's slot 1, and A's slot 1 B's slot 2.
  const aArgs = shiftedArgs(ports);
  const main = await runCli(a.root, ["allocate", ...aArgs], { env: home.env });
  assert.equal(main.code, 0, main.stderr);
  assert.equal((await runCli(a1, ["allocate", ...aArgs], { env: home.env })).code, 0);
  const renamed = `${a.base}/renamed`;
  await mv(a.root, renamed);
  // As git's documentation says to after moving the main worktree.
  await git(renamed, "worktree", "repair");
  assert.equal(await git(a1, "rev-parse", "--git-common-dir"), `${renamed}/.git\n`);
  const result = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(shared(portsOf(result.stdout), portsOf(main.stdout)), [], result.stderr);
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli allocate keeps a worktree's slot after its parent folder was renamed and a symbolic link left at the old name",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using home = await tempHome();
    const tmp = await Deno.realPath(await Deno.makeTempDir({ prefix: "worktree-ports-" }));
    try {
      await Deno.mkdir(`${tmp}/x`);
      const repo = await TempRepo.create({ dir: `${tmp}/x` });
      const wt = await repo.addWorktree("wt");
      const allocate = (cwd: string) => runCli(cwd, ["allocate", ...ports.args], { env: home.env });
      assert.equal((await allocate(repo.root)).code, 0);
      const first = await allocate(wt);
      assert.equal(first.code, 0, first.stderr);
      const slot = slotOf(JSON.parse(first.stdout));
      await mv(`${tmp}/x`, `${tmp}/y`);
      await Deno.symlink("y", `${tmp}/x`);
      // Through the old name, which still leads there.
      for (let round = 1; round <= 3; round++) {
        const again = await allocate(wt);
        assert.equal(again.code, 0, again.stderr);
        assert.equal(slotOf(JSON.parse(again.stdout)), slot, `round ${round}: ${again.stderr}`);
        assert.doesNotMatch(again.stderr, /copied/, `round ${round}`);
      }
      const check = await runCli(repo.root, ["check", ...ports.args], { env: home.env });
      assert.equal(check.code, 0, check.stdout + check.stderr);
      const all = await runCli(repo.root, ["check", "--all", ...ports.args], { env: home.env });
      assert.equal(all.code, 0, all.stdout + all.stderr);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test("cli allocate with WORKTREE_PORTS_HOME set to the repository's own git directory warns and does not wait for itself", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const a1 = await repo.addWorktree("a1");
  const gitDir = `${repo.root}/.git`;
  const result = await runCli(a1, ["allocate", "--lock-timeout", "2", ...ports.args], {
    env: { WORKTREE_PORTS_HOME: gitDir },
  });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, new RegExp(`^warning: .*${RegExp.escape(gitDir)}`, "m"));
  assert.equal(slotOf(JSON.parse(result.stdout)), 1);
});

Deno.test("cli check --fix --all rewrites an outdated file for its own slot, as check --fix does", async (t) => {
  const ports = pickPorts(["web", "api"]);
  const config = { ...ports.config(), templates: { web_url: "http://127.0.0.1:{web}" } };
  /**
   * A linked worktree at slot 2 (a sibling holds slot 1) whose config changed
   * since, and a second repository in the index, so that --all has two.
   */
  async function outdatedAtSlot2(home: string) {
    const repo = await TempRepo.create({ config });
    const other = await TempRepo.create({ config });
    const scenario = {
      w2: `${repo.base}/wt1`,
      async [Symbol.asyncDispose]() {
        await repo[Symbol.asyncDispose]();
        await other[Symbol.asyncDispose]();
      },
    };
    try {
      const [w1, w2] = await repo.addWorktrees("wt", 2);
      const [o1] = await other.addWorktrees("other", 1);
      for (const dir of [w1, w2, o1]) {
        const result = await runCli(dir, ["allocate"], { env: { WORKTREE_PORTS_HOME: home } });
        assert.equal(result.code, 0, result.stderr);
      }
      assert.equal(slotOf(await readJson(`${w2}/.worktree-ports.json`)), 2);
      await writeJson(`${w2}/worktree-ports.config.json`, {
        ...config,
        templates: { web_url: "http://localhost:{web}" },
      });
      return scenario;
    } catch (error) {
      await scenario[Symbol.asyncDispose]();
      throw error;
    }
  }
  for (const args of [["check", "--fix"], ["check", "--fix", "--all"]]) {
    await t.step(`${args.join(" ")} keeps slot 2`, async () => {
      await using home = await tempHome();
      await using scenario = await outdatedAtSlot2(home.dir);
      const fix = await runCli(scenario.w2, args, { env: home.env });
      assert.equal(fix.code, 0, fix.stdout + fix.stderr);
      const file = await readJson(`${scenario.w2}/.worktree-ports.json`);
      assert.equal(slotOf(file), 2, fix.stdout);
      assert.equal(file.web_url, `http://localhost:${ports.at(2).web}`);
    });
  }
});

Deno.test("cli allocate refuses an --output inside another repository's worktree", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const b1 = await b.addWorktree("b1");
  for (const [name, dir] of [["main", b.root], ["linked", b1]]) {
    await t.step(`a path in its ${name} worktree`, async () => {
      const before = await snapshot(b.base);
      const result = await runCli(
        a.root,
        ["allocate", "--output", `${dir}/.worktree-ports.json`, ...ports.args],
        { env: home.env },
      );
      assert.equal(result.code, 2, result.stdout + result.stderr);
      assert.match(result.stderr, /inside .*(another repository|not this one)/);
      assert.deepEqual(await snapshot(b.base), before);
    });
  }
});

Deno.test("cli allocate and check --fix --all keep two repositories' main worktrees off the same base ports", async (t) => {
  const ports = pickPorts(["web", "api"]);
  const file = (root: string) => readJson(`${root}/.worktree-ports.json`);
  await t.step("the second main worktree takes the lowest free slot, with a warning", async () => {
    await using home = await tempHome();
    await using a = await TempRepo.create();
    await using b = await TempRepo.create();
    const first = await runCli(a.root, ["allocate", ...ports.args], { env: home.env });
    assert.equal(first.code, 0, first.stderr);
    assert.equal(slotOf(JSON.parse(first.stdout)), 0);
    const second = await runCli(b.root, ["allocate", ...ports.args], { env: home.env });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(slotOf(JSON.parse(second.stdout)), 1, second.stderr);
    assert.match(second.stderr, new RegExp(`^warning: .*${RegExp.escape(a.root)}`, "m"));
  });
  await t.step("check --fix --all moves the one allocated later", async () => {
    await using home = await tempHome();
    await using a = await TempRepo.create();
    await using b = await TempRepo.create();
    const cli = (cwd: string, ...args: string[]) => runCli(cwd, args, { env: home.env });
    assert.equal((await cli(a.root, "allocate", ...ports.args)).code, 0);
    // Out of the index's sight: both main worktrees on slot 0.
    const clash = await cli(b.root, "allocate", "--scope", "repository", ...ports.args);
    assert.equal(clash.code, 0, clash.stderr);
    const allocatedAt = async (root: string) =>
      ((await file(root)).worktree_ports as { allocated_at: string }).allocated_at;
    assert.ok(await allocatedAt(a.root) < await allocatedAt(b.root));
    assert.equal(slotOf(await file(b.root)), 0);
    const check = await cli(b.root, "check", "--all", ...ports.args);
    assert.equal(check.code, 1, check.stdout + check.stderr);
    const fix = await cli(b.root, "check", "--fix", "--all", ...ports.args);
    assert.equal(fix.code, 0, fix.stdout + fix.stderr);
    assert.equal(slotOf(await file(a.root)), 0);
    assert.notEqual(slotOf(await file(b.root)), 0, fix.stdout);
    const again = await cli(b.root, "check", "--all", ...ports.args);
    assert.equal(again.code, 0, again.stdout + again.stderr);
  });
});

Deno.test("cli allocate reads an index.json that starts with a UTF-8 byte-order mark", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const a1 = await a.addWorktree("a1");
  const b1 = await b.addWorktree("b1");
  const first = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(first.code, 0, first.stderr);
  // As an editor that saves UTF-8 with a byte-order mark would leave it.
  const index = `${home.dir}/index.json`;
  await Deno.writeTextFile(
    index,
    "\uFEFF" + JSON.stringify({
      version: 1,
      files: [{ path: `${a1}/.worktree-ports.json`, repository: `${a.root}/.git`, worktree: a1 }],
    }),
  );
  const result = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(result.code, 0, result.stderr);
  assert.doesNotMatch(result.stderr, /^warning: .*index/m);
  assert.deepEqual(shared(portsOf(result.stdout), portsOf(first.stdout)), []);
});

Deno.test("cli allocate drops an index entry whose file is no port file, in a folder that is no worktree", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using b = await TempRepo.create();
  const b1 = await b.addWorktree("b1");
  const notes = `${home.dir}/notes`;
  const settings = `${home.dir}/settings`;
  await Deno.mkdir(notes);
  await Deno.mkdir(settings);
  await Deno.writeTextFile(`${notes}/.worktree-ports.json`, "remember the milk\n");
  await writeJson(`${settings}/.worktree-ports.json`, { theme: "dark" });
  const strays = [notes, settings].map((dir) => ({
    path: `${dir}/.worktree-ports.json`,
    repository: `${dir}/.git`,
    worktree: dir,
  }));
  await writeJson(`${home.dir}/index.json`, { version: 1, files: strays });
  const first = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(first.code, 0, first.stderr);
  const second = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stderr, "");
  assert.deepEqual(await indexedPaths(home.dir), [`${b1}/.worktree-ports.json`]);
});

Deno.test("cli check --all names the index file it read", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  const a1 = await a.addWorktree("a1");
  assert.equal((await runCli(a1, ["allocate", ...ports.args], { env: home.env })).code, 0);
  const result = await runCli(a1, ["check", "--all", ...ports.args], { env: home.env });
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.ok(
    (result.stdout + result.stderr).includes(`${home.dir}/index.json`),
    result.stdout + result.stderr,
  );
});

// ---------------------------------------------------------------------------
// What breaking the machine-wide reader found

Deno.test("cli allocate keeps a renamed repository's main worktree when another repository allocates before the repair", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const cli = (cwd: string, ...args: string[]) =>
    runCli(cwd, [...args, ...ports.args], { env: home.env });
  const main = await cli(a.root, "allocate");
  assert.equal(main.code, 0, main.stderr);
  const a1 = await a.addWorktree("a1");
  assert.equal((await cli(a1, "allocate")).code, 0);
  const renamed = `${a.base}/renamed`;
  await mv(a.root, renamed);
  // Between the rename and the repair, a1's .git leads nowhere.
  const b1 = await b.addWorktree("b1");
  assert.equal((await cli(b1, "allocate")).code, 0);
  await git(renamed, "worktree", "repair");
  const b2 = await b.addWorktree("b2");
  assert.equal((await cli(b2, "allocate")).code, 0);
  // B's main worktree would take the base ports A's main worktree holds.
  const bMain = await cli(b.root, "allocate");
  assert.equal(bMain.code, 0, bMain.stderr);
  assert.deepEqual(shared(portsOf(bMain.stdout), portsOf(main.stdout)), [], bMain.stderr);
  const check = await cli(b.root, "check", "--all");
  assert.equal(check.code, 0, check.stdout + check.stderr);
});

Deno.test("cli allocate reads a worktree left behind by a deleted repository as another repository's, not the new one's at its path", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  const cli = (cwd: string, ...args: string[]) =>
    runCli(cwd, [...args, ...ports.args], { env: home.env });
  const a1 = await a.addWorktree("a1");
  const orphan = await cli(a1, "allocate");
  assert.equal(orphan.code, 0, orphan.stderr);
  // The whole repository goes; a1's directory and port file stay behind.
  await Deno.remove(a.root, { recursive: true });
  // A new repository at the same path, whose git knows nothing of a1.
  await git(a.base, "init", "-q", "-b", "main", "main");
  await git(a.root, "commit", "-q", "--allow-empty", "-m", "again");
  const second = await a.addWorktree("a2");
  const result = await cli(second, "allocate");
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(shared(portsOf(result.stdout), portsOf(orphan.stdout)), [], result.stderr);
  // Once the directory is gone too, nothing holds its ports.
  await Deno.remove(a1, { recursive: true });
  const third = await a.addWorktree("a3");
  const after = await cli(third, "allocate");
  assert.equal(after.code, 0, after.stderr);
  assert.ok(!(await indexedPaths(home.dir)).includes(`${a1}/.worktree-ports.json`));
});

Deno.test("cli slots shows the slots other repositories hold as held, naming their worktrees", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const a1 = await a.addWorktree("a1");
  const b1 = await b.addWorktree("b1");
  for (const dir of [a.root, a1]) {
    assert.equal((await runCli(dir, ["allocate", ...ports.args], { env: home.env })).code, 0);
  }
  const slots = await runCli(b1, ["slots", "--json", ...ports.args], { env: home.env });
  assert.equal(slots.code, 0, slots.stderr);
  const rows = JSON.parse(slots.stdout) as { slot: number; state: string; holders: string[] }[];
  assert.deepEqual(rows[0], { ...rows[0], state: "held", holders: [a.root] });
  assert.deepEqual(rows[1], { ...rows[1], state: "held", holders: [a1] });
  const dryRun = await runCli(b1, ["allocate", "--dry-run", ...ports.args], { env: home.env });
  assert.equal(slotOf(JSON.parse(dryRun.stdout)), rows.find((row) => row.state === "free")!.slot);
  // Without the index, for which it needs no --allow-env.
  const own = await runCli(b1, ["slots", "--json", "--scope", "repository", ...ports.args], {
    env: home.env,
    flags: CLI_FLAGS.filter((flag) => !flag.startsWith("--allow-env")),
  });
  assert.equal(own.code, 0, own.stderr);
  assert.equal(JSON.parse(own.stdout)[1].state, "free");
});

Deno.test("cli check --fix keeps the main worktree on slot 0 when only a sibling holds its base ports", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  // The main worktree's config has its base ports where the sibling's
  // config (another branch's) puts the sibling's slot 1.
  const shifted = { ports: ports.at(1), stride: ports.stride, slots: ports.slots - 1 };
  await using a = await TempRepo.create({ config: shifted });
  const a1 = await a.addWorktree("a1");
  await git(a1, "switch", "-q", "-c", "other");
  await writeJson(`${a1}/worktree-ports.config.json`, ports.config());
  await git(a1, "commit", "-q", "-am", "other ports");
  const cli = (cwd: string, ...args: string[]) => runCli(cwd, args, { env: home.env });
  const held = await cli(a1, "allocate");
  assert.equal(slotOf(JSON.parse(held.stdout)), 1, held.stderr);
  assert.equal((await cli(a.root, "allocate")).code, 0);
  // The main worktree's file copied from its sibling: foreign.
  await Deno.copyFile(`${a1}/.worktree-ports.json`, `${a.root}/.worktree-ports.json`);
  const fix = await cli(a.root, "check", "--fix");
  assert.match(fix.stdout, /^moved ".*" \(foreign\): .*\(slot 0\)$/m, fix.stdout + fix.stderr);
  assert.equal(slotOf(await readJson(`${a.root}/.worktree-ports.json`)), 0);
});

Deno.test("cli check --fix --all changes nothing when a port file it must rewrite is a directory", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const cli = (cwd: string, ...args: string[]) =>
    runCli(cwd, [...args, ...ports.args], { env: home.env });
  assert.equal((await cli(a.root, "allocate")).code, 0);
  assert.equal((await cli(b.root, "allocate", "--scope", "repository")).code, 0);
  await Deno.remove(`${a.root}/.worktree-ports.json`);
  await Deno.mkdir(`${a.root}/.worktree-ports.json`);
  const warned = await cli(b.root, "check");
  assert.match(warned.stderr, /remove the directory, then run "worktree-ports allocate"/);
  const before = await Deno.readTextFile(`${home.dir}/index.json`);
  const fix = await cli(a.root, "check", "--fix", "--all");
  assert.equal(fix.code, 1);
  assert.match(fix.stderr, /^error: Cannot write ".*\.worktree-ports\.json": it is a directory/m);
  assert.equal(await Deno.readTextFile(`${home.dir}/index.json`), before);
});

Deno.test("cli allocate finds the repository of an index entry through its worktree when the recorded one is relative or wrong", async (t) => {
  // Relative to a worktree of B, where B allocates: "../main/.git" is B's own.
  for (const [name, repository] of [["relative", "../main/.git"], ["another repository's", ""]]) {
    await t.step(name, async () => {
      const ports = pickPorts(["web", "api"]);
      await using home = await tempHome();
      await using a = await TempRepo.create();
      await using b = await TempRepo.create();
      const a1 = await a.addWorktree("a1");
      const held = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
      assert.equal(held.code, 0, held.stderr);
      const index = await readJson(`${home.dir}/index.json`);
      for (const entry of index.files as { worktree: string; repository: string }[]) {
        if (entry.worktree === a1) entry.repository = repository || `${b.root}/.git`;
      }
      await writeJson(`${home.dir}/index.json`, index);
      const b1 = await b.addWorktree("b1");
      const result = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(shared(portsOf(result.stdout), portsOf(held.stdout)), [], result.stderr);
    });
  }
});

Deno.test({
  name:
    `cli allocate forgets a deleted repository that Deno could not look into (/dev/shm), and list --all and check --all still work${
      DEV_SHM_WRITABLE ? "" : " (skipped: /dev/shm is not a writable folder here)"
    }`,
  ignore: !DEV_SHM_WRITABLE,
  fn: async () => {
    const ports = pickPorts(["web", "api"]);
    await using home = await tempHome();
    await using b = await TempRepo.create();
    await using a = await devShmRepository();
    const first = await runCli(a.root, ["allocate", ...ports.args], {
      env: home.env,
      flags: ["-A"],
    });
    assert.equal(first.code, 0, first.stderr);
    for (const command of [["list", "--all"], ["check", "--all", ...ports.args]]) {
      const result = await runCli(b.root, command, { env: home.env });
      assert.equal(result.code, 0, result.stdout + result.stderr);
      assert.match(result.stderr, /Skipped the indexed repository .*only with --allow-all/);
    }
    await run("rm", ["-rf", a.dir]);
    const main = await runCli(b.root, ["allocate", ...ports.args], { env: home.env });
    assert.equal(main.code, 0, main.stderr);
    assert.equal(slotOf(JSON.parse(main.stdout)), 0, main.stderr);
    assert.equal(main.stderr, "");
  },
});

Deno.test("cli check --all names no index when the index folder is relative, and names it with --scope repository", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  assert.equal((await runCli(a.root, ["allocate", ...ports.args], { env: home.env })).code, 0);
  const relative = await runCli(a.root, ["check", "--all", ...ports.args], {
    env: { WORKTREE_PORTS_HOME: "relative" },
  });
  assert.doesNotMatch(relative.stderr, /^index:/m);
  assert.match(relative.stderr, /not an absolute path/);
  const scoped = await runCli(a.root, ["check", "--all", "--scope", "repository", ...ports.args], {
    env: home.env,
  });
  assert.match(scoped.stderr, new RegExp(`^index: "${RegExp.escape(home.dir)}/index\\.json"`, "m"));
});
