// Simultaneous allocations never share a port: many processes at the same
// instant, waits on a held lock, worktrees created or moved while others wait,
// and allocations killed at any moment.

import assert from "node:assert/strict";
import { isPortFree } from "../mod.ts";
import {
  allocateIn,
  CLI_FLAGS,
  git,
  pickPorts,
  portFileAt,
  portsOf,
  readJson,
  readRest,
  readUntil,
  ROOT,
  run,
  runCli,
  runsOk,
  slotOf,
  spawnCli,
  tempHome,
  TempRepo,
  testWhere,
  webPorts,
  writeJson,
} from "../test_util.ts";

/**
 * Holds the repository lock from another process: a plain Deno program that
 * takes the file lock, as flock(1) would on Unix and LockFileEx on Windows,
 * with nothing of this package.
 */
async function holdLock(lockPath: string) {
  const script =
    `const file = Deno.openSync(Deno.args[0], { read: true, write: true, create: true });
    file.lockSync(true);
    console.log("locked");
    setTimeout(() => {}, 60_000);`;
  const holder = new Deno.Command(Deno.execPath(), {
    args: ["eval", script, lockPath],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  await readUntil(reader, "locked");
  return {
    kill: async () => {
      holder.kill("SIGKILL");
      await holder.status;
      reader.releaseLock();
      await holder.stdout.cancel().catch(() => {});
    },
  };
}

/** Starts a CLI command that will wait on a held lock, and resolves once it waits. */
async function startWaiting(cwd: string, args: readonly string[]) {
  const child = spawnCli(cwd, args);
  const stdout = new Response(child.stdout).text();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  // The notice comes only after the command has listed the worktrees and waited a second.
  const seen = await readUntil(stderr, "another worktree-ports process holds the lock");
  return {
    async finish(): Promise<{ code: number; stdout: string; stderr: string }> {
      const { code } = await child.status;
      return { code, stdout: await stdout, stderr: seen + await readRest(stderr) };
    },
  };
}

/** Runs a CLI command that waits on the held repository lock, does `meanwhile`, then releases it. */
async function whileWaiting(
  root: string,
  cwd: string,
  args: readonly string[],
  meanwhile: () => Promise<void>,
) {
  const holder = await holdLock(`${root}/.git/worktree-ports.lock`);
  let waiting;
  try {
    waiting = await startWaiting(cwd, args);
    await meanwhile();
  } finally {
    await holder.kill();
  }
  return await waiting.finish();
}

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

Deno.test("cli allocate gives every one of 30 simultaneous fresh worktrees a distinct bundle, 3 rounds", async (t) => {
  const ports = pickPorts(["web", "api"]);
  const worktreeCount = 30;
  for (let round = 1; round <= 3; round++) {
    await t.step(`round ${round}`, async () => {
      await using repo = await TempRepo.create();
      const worktrees = await repo.addWorktrees("wt", worktreeCount);
      const children = worktrees.map((cwd) => spawnCli(cwd, ["allocate", ...ports.args]));
      const outputs = await Promise.all(children.map((child) => child.output()));
      const decoder = new TextDecoder();
      const bundles = outputs.map((output) => {
        assert.equal(output.code, 0, decoder.decode(output.stderr));
        return JSON.parse(decoder.decode(output.stdout));
      });
      const distinct = new Set(bundles.map((bundle) => `${bundle.web}/${bundle.api}`));
      console.log(`round ${round}: ${worktreeCount} worktrees, ${distinct.size} distinct bundles`);
      assert.equal(distinct.size, worktreeCount);
      assert.ok(bundles.every((bundle) => slotOf(bundle) >= 1));
      for (const [index, cwd] of worktrees.entries()) {
        assert.deepEqual(await readJson(`${cwd}/.worktree-ports.json`), bundles[index]);
      }
      // Every one of them made sure git ignores its file; the rule was added once.
      const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`);
      assert.equal(
        exclude.split("\n").filter((line) => line === "/.worktree-ports.json").length,
        1,
      );
    });
  }
});

Deno.test("cli allocate waits while another process holds the lock and fails past the timeout", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const lockPath = `${repo.root}/.git/worktree-ports.lock`;
  const holder = await holdLock(lockPath);
  try {
    const result = await runCli(a, ["allocate", ...ports.args, "--lock-timeout", "0.5"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^error: Timed out after 0\.5 s waiting for the lock ".*"/);
    assert.ok(result.stderr.includes(lockPath), result.stderr);
    await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
  } finally {
    await holder.kill();
  }
});

Deno.test("cli allocate proceeds once a SIGKILLed lock holder is gone", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const holder = await holdLock(`${repo.root}/.git/worktree-ports.lock`);
  const child = spawnCli(a, ["allocate", ...ports.args]);
  const stdout = new Response(child.stdout).text();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    // The notice appears only after a second of waiting: the lock really delays it.
    await readUntil(stderr, "another worktree-ports process holds the lock");
    await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
  } finally {
    await holder.kill();
  }
  assert.equal((await child.status).code, 0);
  await stderr.cancel();
  const printed = JSON.parse(await stdout);
  assert.equal(slotOf(printed), 1);
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), printed);
});

Deno.test("cli allocate sees a worktree created and allocated while it waited for the lock", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const result = await whileWaiting(repo.root, a, ["allocate", ...ports.args], async () => {
    const b = await repo.addWorktree("late");
    await writeJson(`${b}/.worktree-ports.json`, portFileAt(ports, b, 1));
  });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 2);
});

Deno.test("cli check --fix sees a worktree created and allocated while it waited for the lock", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  // A file copied from the main worktree: --fix reallocates it to the lowest free slot.
  await writeJson(`${a}/.worktree-ports.json`, portFileAt(ports, repo.root, 5));
  const result = await whileWaiting(repo.root, a, ["check", "--fix", ...ports.args], async () => {
    const b = await repo.addWorktree("late");
    await writeJson(`${b}/.worktree-ports.json`, portFileAt(ports, b, 1));
  });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /moved ".*wt0" \(foreign\).*\(slot 2\)/);
  assert.equal(slotOf(await readJson(`${a}/.worktree-ports.json`)), 2);
});

Deno.test("cli allocate: 3 repositories x 8 worktrees allocating at the same instant get 24 distinct bundles, 5 rounds", async () => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  const repos = [await TempRepo.create(), await TempRepo.create(), await TempRepo.create()];
  try {
    const worktrees: string[] = [];
    for (const [index, repo] of repos.entries()) {
      worktrees.push(...await repo.addWorktrees(`r${index}-`, 8));
    }
    for (let round = 1; round <= 5; round++) {
      for (const dir of worktrees) {
        await Deno.remove(`${dir}/.worktree-ports.json`).catch(() => {});
      }
      const children = worktrees.map((dir) =>
        spawnCli(dir, ["allocate", "--lock-timeout", "60", ...ports.args], { env: home.env })
      );
      const outputs = await Promise.all(children.map((child) => child.output()));
      const bundles = outputs.map((output, index) => {
        const stderr = new TextDecoder().decode(output.stderr);
        assert.equal(output.code, 0, `${worktrees[index]}: ${stderr}`);
        return JSON.parse(new TextDecoder().decode(output.stdout));
      });
      const given = bundles.flatMap((bundle) => [bundle.web, bundle.api]);
      console.log(
        `round ${round}: ${worktrees.length} worktrees in ${repos.length} repositories, ` +
          `${new Set(bundles.map((bundle) => bundle.web)).size} distinct bundles`,
      );
      assert.equal(new Set(given).size, 48, `round ${round}: ports ${given}`);
    }
  } finally {
    for (const repo of repos) await repo[Symbol.asyncDispose]();
  }
});

Deno.test("cli allocate takes the repository lock before the machine lock, so holders never wait on each other", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using home = await tempHome();
  await using a = await TempRepo.create();
  await using b = await TempRepo.create();
  const [a1] = await a.addWorktrees("a", 1);
  const [b1, b2] = await b.addWorktrees("b", 2);
  await t.step("waiting for a repository lock holds no machine lock", async () => {
    const holder = await holdLock(`${a.root}/.git/worktree-ports.lock`);
    const waiting = spawnCli(a1, ["allocate", "--lock-timeout", "60", ...ports.args], {
      env: home.env,
    });
    const stderr = waiting.stderr.pipeThrough(new TextDecoderStream()).getReader();
    try {
      await readUntil(stderr, "waiting for");
      // In the wrong order the waiting process would hold the machine lock,
      // and this allocation would time out behind it.
      const other = await runCli(b1, ["allocate", "--lock-timeout", "5", ...ports.args], {
        env: home.env,
      });
      assert.equal(other.code, 0, other.stderr);
    } finally {
      await holder.kill();
    }
    assert.equal((await waiting.status).code, 0);
    await readRest(stderr);
    await waiting.stdout.cancel();
  });
  await t.step("waiting for the machine lock, it holds its repository lock", async () => {
    const holder = await holdLock(`${home.dir}/worktree-ports.lock`);
    const waiting = spawnCli(b2, ["allocate", "--lock-timeout", "60", ...ports.args], {
      env: home.env,
    });
    const stderr = waiting.stderr.pipeThrough(new TextDecoderStream()).getReader();
    try {
      await readUntil(stderr, `waiting for "${home.dir}/worktree-ports.lock"`);
      using lock = await Deno.open(`${b.root}/.git/worktree-ports.lock`, { write: true });
      assert.equal(await lock.tryLock(true), false);
    } finally {
      await holder.kill();
    }
    assert.equal((await waiting.status).code, 0);
    await readRest(stderr);
    await waiting.stdout.cancel();
  });
});

Deno.test("cli check --fix sees a sibling moved while it waited for the lock", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b, c] = await repo.addWorktrees("wt", 3);
  assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
  assert.equal((await runCli(b, ["allocate", ...ports.args])).code, 0);
  // c holds a copy of a's file: --fix moves it to the lowest slot nobody holds.
  const copy = await readJson(`${a}/.worktree-ports.json`);
  await writeJson(`${c}/.worktree-ports.json`, copy);
  const result = await whileWaiting(
    repo.root,
    repo.root,
    ["check", "--fix", ...ports.args],
    async () => {
      await git(repo.root, "worktree", "move", b, `${repo.base}/moved`);
    },
  );
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.equal(slotOf(await readJson(`${c}/.worktree-ports.json`)), 3);
});

Deno.test("cli allocate sees a sibling moved while it waited, even with a new directory at its old place", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await runCli(b, ["allocate", ...ports.args])).code, 0);
  const result = await whileWaiting(repo.root, a, ["allocate", ...ports.args], async () => {
    await git(repo.root, "worktree", "move", b, `${repo.base}/moved`);
    await Deno.mkdir(b);
  });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 2);
});

Deno.test("cli allocate refuses to write for a worktree moved while it waited", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const result = await whileWaiting(repo.root, a, ["allocate", ...ports.args], async () => {
    await git(repo.root, "worktree", "move", a, `${repo.base}/moved`);
  });
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /is not a worktree any more: it was moved or removed while/);
  await assert.rejects(Deno.stat(a), Deno.errors.NotFound);
});

Deno.test("cli allocate killed at any moment never leaves git status dirty", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const worktrees = await repo.addWorktrees("wt", 24);
  for (const [index, dir] of worktrees.entries()) {
    const child = spawnCli(dir, ["allocate", ...ports.args]);
    // Spread over the whole run, start-up to exit (about 50 ms here).
    await new Promise((resolve) => setTimeout(resolve, 15 + index * 2.5));
    try {
      child.kill(index % 2 === 0 ? "SIGKILL" : "SIGTERM");
    } catch {
      // It had finished.
    }
    await child.status;
    await child.stdout.cancel();
    await child.stderr.cancel();
    assert.equal(await git(dir, "status", "--porcelain"), "", `${dir}, killed`);
  }
  // The next allocation anywhere removes what the killed ones left.
  for (const dir of worktrees) {
    assert.equal((await runCli(dir, ["allocate", ...ports.args])).code, 0);
  }
  const leftovers: string[] = [];
  for (const dir of [...worktrees, `${repo.root}/.git/info`]) {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.endsWith(".tmp")) leftovers.push(`${dir}/${entry.name}`);
    }
  }
  assert.deepEqual(leftovers, []);
});

testWhere(
  { linux: "strace, to stop it at each rename", tools: ["strace"] },
  "cli allocate puts the ignore rules in place before it writes the port file",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const result = await whileWaiting(repo.root, a, ["allocate", ...ports.args], async () => {
      // Made while it waits: the write of the port file itself fails.
      await Deno.mkdir(`${a}/.worktree-ports.json/in-the-way`, { recursive: true });
    });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: Cannot write ".*\.worktree-ports\.json"/m);
    assert.ok(
      (await Deno.readTextFile(`${repo.root}/.git/info/exclude`))
        .endsWith("\n/.worktree-ports.json\n/.worktree-ports.json.*.tmp\n"),
    );
  },
);

/** Whether strace can trace a program here: it is installed, and ptrace is allowed. */
const STRACE_RUNS = runsOk("strace", ["-qq", "-o", "/dev/null", "true"]);

/** The admin entry git keeps for a linked worktree: the `gitdir:` its `.git` file names. */
async function gitDirOf(worktree: string): Promise<string> {
  const text = await Deno.readTextFile(`${worktree}/.git`);
  return text.replace(/^gitdir: /, "").trim();
}

/** Every `*.tmp` file beside each of `paths`. */
async function temporaryFilesBeside(paths: readonly string[]): Promise<string[]> {
  const found: string[] = [];
  for (const dir of new Set(paths.map((path) => path.replace(/\/[^/]*$/, "")))) {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.endsWith(".tmp")) found.push(`${dir}/${entry.name}`);
    }
  }
  return found.sort();
}

Deno.test({
  name:
    `cli allocate killed at any rename of an allocation leaves no port shared with another repository and no temporary file${
      STRACE_RUNS ? "" : " (skipped: strace cannot run here)"
    }`,
  ignore: !STRACE_RUNS,
  fn: async (t) => {
    // One set of base ports for both repositories: without the index they would collide.
    const ports = pickPorts(["web", "api"]);
    for (let n = 1; n <= 6; n++) {
      await t.step(`killed at the rename number ${n}`, async () => {
        await using home = await tempHome();
        await using a = await TempRepo.create();
        await using b = await TempRepo.create();
        const a1 = await a.addWorktree("a1");
        const b1 = await b.addWorktree("b1");
        const own = `${a1}/.worktree-ports.json`;
        const targets = [
          own,
          `${await gitDirOf(a1)}/worktree-ports.json`,
          `${a.root}/.git/info/exclude`,
          `${home.dir}/index.json`,
          `${a.root}/.git/worktree-ports.memory.json`,
        ];
        // Deno compiles the modules into its cache (with renames) on a first run;
        // a dry run, which writes nothing of ours, leaves only our renames to count.
        const warm = await runCli(a1, ["allocate", "--dry-run", ...ports.args], {
          env: home.env,
        });
        assert.equal(warm.code, 0, warm.stderr);
        const trace = `${home.dir}/strace.log`;
        // strace's -P matches a rename(2) by its first path only (the temporary
        // file, whose name holds the pid): every rename is counted, and the log
        // shows that the one killed is one of ours.
        const killed = await run("strace", [
          "-f",
          "-qq",
          "-o",
          trace,
          "-e",
          "trace=rename,renameat,renameat2",
          "-e",
          `inject=rename,renameat,renameat2:signal=SIGKILL:when=${n}`,
          Deno.execPath(),
          "run",
          ...CLI_FLAGS,
          `${ROOT}cli.ts`,
          "allocate",
          ...ports.args,
        ], { cwd: a1, env: { ...home.env, DENO_NO_UPDATE_CHECK: "1" } });
        const renames = (await Deno.readTextFile(trace)).split("\n")
          .map((line) =>
            /rename(?:at2?)?\((?:[^,]*, )?"[^"]*", (?:[^,]*, )?"([^"]*)"/.exec(line)?.[1]
          )
          .filter((path) => path !== undefined);
        if (renames.length >= n) {
          assert.ok(targets.includes(renames[n - 1]), `rename ${n} was of ${renames[n - 1]}`);
          assert.notEqual(killed.code, 0, "killed");
        } else {
          assert.equal(killed.code, 0, killed.stderr);
        }
        const other = await runCli(b1, ["allocate", ...ports.args], { env: home.env });
        assert.equal(other.code, 0, other.stderr);
        const otherPorts = portsOf(other.stdout);
        const held = async () => {
          try {
            const file = await readJson(own);
            return [file.web, file.api];
          } catch (error) {
            if (error instanceof Deno.errors.NotFound) return [];
            throw error;
          }
        };
        assert.deepEqual(
          (await held()).filter((port) => otherPorts.includes(port as number)),
          [],
          `killed at rename ${n} (${renames[n - 1] ?? "none"}), b1 got ${otherPorts}`,
        );
        const again = await runCli(a1, ["allocate", ...ports.args], { env: home.env });
        assert.equal(again.code, 0, again.stderr);
        assert.deepEqual(portsOf(again.stdout).filter((port) => otherPorts.includes(port)), []);
        assert.deepEqual(await temporaryFilesBeside(targets), []);
      });
    }
  },
});
