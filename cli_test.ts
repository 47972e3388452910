import assert from "node:assert/strict";
import denoJson from "./deno.json" with { type: "json" };
import {
  CLI_FLAGS,
  git,
  readJson,
  runCli,
  snapshot,
  spawnCli,
  TempRepo,
  writeJson,
} from "./test_util.ts";

const PORT_ARGS = ["--port", "web=42000", "--port", "api=43000", "--stride", "10", "--slots", "60"];

function slotOf(file: Record<string, unknown>): number {
  return (file.worktree_ports as { slot: number }).slot;
}

/** Reads a stream until `text` appears; returns everything read so far. */
async function readUntil(
  reader: ReadableStreamDefaultReader<string>,
  text: string,
): Promise<string> {
  let seen = "";
  while (!seen.includes(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before "${text}"; got: ${seen}`);
    seen += value;
  }
  return seen;
}

/** Whether file modes bind this process: they do not for root. */
async function canCreateFileIn(dir: string): Promise<boolean> {
  try {
    await Deno.writeTextFile(`${dir}/probe`, "");
    await Deno.remove(`${dir}/probe`);
    return true;
  } catch {
    return false;
  }
}

/** Holds the repository lock from another process, the way any flock(1) user would. */
async function holdLock(lockPath: string) {
  const holder = new Deno.Command("bash", {
    args: ["-c", 'exec 9>>"$1" && flock 9 && echo locked && exec sleep 60', "holder", lockPath],
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

Deno.test("cli allocate prints the bundle and writes it at the worktree root, from any subdirectory", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.mkdir(`${a}/src`);
  const result = await runCli(`${a}/src`, ["allocate", ...PORT_ARGS]);
  assert.equal(result.code, 0, result.stderr);
  const printed = JSON.parse(result.stdout);
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), printed);
  assert.equal(printed.web, 42010);
  assert.equal(printed.api, 43010);
  assert.equal(printed.worktree_ports.worktree, a);
  assert.equal(result.stderr, "");
});

Deno.test("cli allocate gives two fresh worktrees different bundles before anything listens", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await runCli(a, ["allocate", ...PORT_ARGS]);
  const second = await runCli(b, ["allocate", ...PORT_ARGS]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(second.code, 0, second.stderr);
  assert.notEqual(JSON.parse(first.stdout).web, JSON.parse(second.stdout).web);
  // Rewriting a worktree's own file returns the same bundle.
  const again = await runCli(a, ["allocate", ...PORT_ARGS]);
  assert.equal(again.stdout, first.stdout);
});

Deno.test("cli allocate reads worktree-ports.config.json and fills templates", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await writeJson(`${a}/worktree-ports.config.json`, {
    ports: { cloud_port: 44000, db_port: 45000 },
    templates: { cloud_url: "http://127.0.0.1:{cloud_port}" },
    stride: 10,
    slots: 50,
  });
  const result = await runCli(a, ["allocate"]);
  assert.equal(result.code, 0, result.stderr);
  const file = JSON.parse(result.stdout);
  assert.deepEqual(Object.keys(file), ["cloud_port", "db_port", "cloud_url", "worktree_ports"]);
  assert.equal(file.cloud_url, `http://127.0.0.1:${file.cloud_port}`);
});

Deno.test("cli show prints the bundle or one value and changes nothing", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const none = await runCli(a, ["show"]);
  assert.equal(none.code, 1);
  assert.match(
    none.stderr,
    /^error: This worktree has no ports yet \(run "worktree-ports allocate"\)/,
  );

  const allocated = await runCli(a, ["allocate", ...PORT_ARGS]);
  const before = await snapshot(repo.base);
  const all = await runCli(a, ["show"]);
  assert.equal(all.code, 0, all.stderr);
  assert.deepEqual(JSON.parse(all.stdout), JSON.parse(allocated.stdout));
  const web = await runCli(a, ["show", "web"]);
  assert.deepEqual([web.code, web.stdout], [0, "42010\n"]);
  const missing = await runCli(a, ["show", "nope"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /has no key "nope" \(it has: "web", "api"\)/);
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli allocate gives every one of 30 simultaneous fresh worktrees a distinct bundle, 3 rounds", async (t) => {
  const worktreeCount = 30;
  for (let round = 1; round <= 3; round++) {
    await t.step(`round ${round}`, async () => {
      await using repo = await TempRepo.create();
      const worktrees = await repo.addWorktrees("wt", worktreeCount);
      const children = worktrees.map((cwd) => spawnCli(cwd, ["allocate", ...PORT_ARGS]));
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
    });
  }
});

Deno.test("cli allocate skips a slot whose port has a listener", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  using _other = Deno.listen({ hostname: "0.0.0.0", port: 43010 });
  const result = await runCli(a, ["allocate", ...PORT_ARGS]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 2);
});

Deno.test("cli allocate waits while another process holds the lock and fails past the timeout", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const lockPath = `${repo.root}/.git/worktree-ports.lock`;
  const holder = await holdLock(lockPath);
  try {
    const result = await runCli(a, ["allocate", ...PORT_ARGS, "--lock-timeout", "0.5"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^error: Timed out after 0\.5 s waiting for the lock ".*"/);
    assert.ok(result.stderr.includes(lockPath), result.stderr);
    await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
  } finally {
    await holder.kill();
  }
});

Deno.test("cli allocate proceeds once a SIGKILLed lock holder is gone", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const holder = await holdLock(`${repo.root}/.git/worktree-ports.lock`);
  const child = spawnCli(a, ["allocate", ...PORT_ARGS]);
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

Deno.test("cli allocate fails with exit 1 when every slot is taken, changing nothing", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const args = ["allocate", "--port", "web=42000", "--slots", "1"];
  assert.equal((await runCli(a, args)).code, 0);
  const before = await snapshot(repo.base);
  const result = await runCli(b, args);
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    /^error: Cannot allocate ports: all 1 slots are taken \(1 reserved by other worktrees, 0 in use/,
  );
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli allocate replaces this worktree's corrupt file with a warning", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.writeTextFile(`${a}/.worktree-ports.json`, "{ half a file");
  const result = await runCli(a, ["allocate", ...PORT_ARGS]);
  assert.equal(result.code, 0);
  assert.match(
    result.stderr,
    /^warning: This worktree's port file ".*" is unusable \(not valid JSON\)/,
  );
  assert.equal(slotOf(await readJson(`${a}/.worktree-ports.json`)), 1);
});

Deno.test("cli rejects bad input with a clear error and changes nothing", async (t) => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.mkdir(`${a}/a-directory`);
  await Deno.writeTextFile(`${a}/a-file`, "");
  await Deno.writeTextFile(`${a}/not-json.json`, "{ ports: ");
  await writeJson(`${a}/unknown-key.json`, { ports: { web: 3000 }, colour: "blue" });
  await writeJson(`${a}/overlap.json`, {
    ports: { cloud_port: 8000, web_port: 3000 },
    stride: 100,
    slots: 50,
  });
  const outside = await Deno.makeTempDir();
  const noGitBin = await Deno.makeTempDir();
  try {
    const cases: {
      name: string;
      args: string[];
      cwd?: string;
      code: number;
      stderr: RegExp;
      flags?: string[];
      env?: Record<string, string>;
    }[] = [
      {
        name: "unknown command",
        args: ["alocate"],
        code: 2,
        stderr: /Unknown command "alocate"\n\nworktree-ports [\s\S]*Commands:\n {2}allocate/,
      },
      {
        name: "unknown flag",
        args: ["allocate", "--colour"],
        code: 2,
        stderr:
          /Unknown option "--colour" for "allocate"\n\nUsage: worktree-ports allocate [\s\S]*--lock-timeout/,
      },
      {
        name: "flag without value",
        args: ["allocate", "--stride"],
        code: 2,
        stderr: /"--stride" needs a value/,
      },
      {
        name: "extra argument",
        args: ["show", "a", "b"],
        code: 2,
        stderr: /Unexpected argument "b"/,
      },
      {
        name: "no command",
        args: [],
        code: 2,
        stderr: /^error: Missing command\n\n[\s\S]*Usage: worktree-ports COMMAND/,
      },
      {
        name: "outside a git work tree",
        args: ["allocate"],
        cwd: outside,
        code: 2,
        stderr: /is not inside a git worktree/,
      },
      {
        name: "inside the git directory",
        args: ["allocate"],
        cwd: `${repo.root}/.git`,
        code: 2,
        stderr: /is not inside a git worktree/,
      },
      {
        name: "git not installed",
        args: ["allocate"],
        code: 1,
        stderr: /error: Cannot run git: it is not installed or not on PATH/,
        env: { PATH: noGitBin },
      },
      {
        name: "missing config file",
        args: ["allocate", "--config", "nope.json"],
        code: 2,
        stderr: /Cannot read config ".*nope\.json": the file does not exist/,
      },
      {
        name: "config not JSON",
        args: ["allocate", "--config", "not-json.json"],
        code: 2,
        stderr: /Invalid config ".*not-json\.json": not valid JSON/,
      },
      {
        name: "config with an unknown key",
        args: ["allocate", "--config", "unknown-key.json"],
        code: 2,
        stderr: /unknown key "colour"/,
      },
      {
        name: "config whose slots overlap",
        args: ["allocate", "--config", "overlap.json"],
        code: 2,
        stderr: /port "web_port" at slot 50 and port "cloud_port" at slot 0 both land on 8000/,
      },
      {
        name: "malformed --port",
        args: ["allocate", "--port", "web"],
        code: 2,
        stderr: /"--port" must look like KEY=BASE/,
      },
      {
        name: "port key that is no env name",
        args: ["allocate", "--port", "web-port=3000"],
        code: 2,
        stderr: /key "web-port"/,
      },
      {
        name: "port out of range",
        args: ["allocate", "--port", "web=65536"],
        code: 2,
        stderr: /port "web" must be an integer from 1 to 65535, got 65536/,
      },
      {
        name: "zero stride",
        args: ["allocate", "--stride", "0"],
        code: 2,
        stderr: /"stride" must be an integer from 1 to 65535, got 0/,
      },
      {
        name: "non-numeric slots",
        args: ["allocate", "--slots", "many"],
        code: 2,
        stderr: /"--slots" must be a whole number, got "many"/,
      },
      {
        name: "negative lock timeout",
        args: ["allocate", "--lock-timeout", "-1"],
        code: 2,
        stderr: /"--lock-timeout" must be a number of seconds/,
      },
      {
        name: "output is a directory",
        args: ["allocate", "--output", "a-directory"],
        code: 1,
        stderr: /Cannot write ".*a-directory": it is a directory/,
      },
      {
        name: "output under a file",
        args: ["allocate", "--output", "a-file/ports.json"],
        code: 1,
        stderr: /Cannot write ".*a-file\/ports\.json"/,
      },
      {
        name: "missing --allow-write",
        args: ["allocate"],
        code: 2,
        stderr:
          /Missing permission: run again with --allow-write \("allocate" needs --allow-run=git --allow-read --allow-write --allow-net=127\.0\.0\.1,\[::1\],0\.0\.0\.0\)/,
        flags: CLI_FLAGS.filter((flag) => flag !== "--allow-write"),
      },
      {
        name: "missing --allow-net",
        args: ["allocate"],
        code: 2,
        stderr: /run again with --allow-net=127\.0\.0\.1,\[::1\],0\.0\.0\.0 /,
        flags: ["--allow-run=git", "--allow-read", "--allow-write", "--allow-net=127.0.0.1"],
      },
      {
        name: "missing --allow-run=git",
        args: ["show"],
        code: 2,
        stderr: /run again with --allow-run=git /,
        flags: ["--allow-read"],
      },
    ];
    await Deno.mkdir(`${a}/read-only`, { mode: 0o555 });
    if (!(await canCreateFileIn(`${a}/read-only`))) {
      cases.push({
        name: "output in a read-only directory",
        args: ["allocate", "--output", "read-only/ports.json"],
        code: 1,
        stderr: /Cannot write ".*read-only\/ports\.json"/,
      });
    } else {
      console.log(
        "skipped the read-only directory case: this user may write into a mode 0555 directory (root)",
      );
    }
    for (const item of cases) {
      await t.step(item.name, async () => {
        const cwd = item.cwd ?? a;
        const before = await snapshot(repo.base);
        const result = await runCli(cwd, item.args, { flags: item.flags, env: item.env });
        assert.equal(result.code, item.code, result.stderr);
        assert.match(result.stderr, item.stderr);
        // Deno itself notes an unresolvable --allow-run=git before the program runs.
        assert.match(result.stderr, /^(.*Failed to resolve 'git'.*\n)?error: /);
        assert.equal(result.stdout, "");
        assert.deepEqual(await snapshot(repo.base), before);
      });
    }
  } finally {
    await Deno.remove(outside, { recursive: true });
    await Deno.remove(noGitBin, { recursive: true });
  }
});

Deno.test("cli prints help and version", async (t) => {
  await using repo = await TempRepo.create();
  await t.step("--help lists the commands", async () => {
    const result = await runCli(repo.root, ["--help"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /allocate \[options\]/);
    assert.match(result.stdout, /show \[KEY\]/);
  });
  await t.step("COMMAND --help lists its options", async () => {
    const result = await runCli(repo.root, ["allocate", "--help"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /--lock-timeout SECONDS/);
    assert.match(result.stdout, /--port KEY=BASE/);
  });
  await t.step("--version prints the package version", async () => {
    const result = await runCli(repo.root, ["--version"]);
    assert.deepEqual([result.code, result.stdout], [0, `${denoJson.version}\n`]);
  });
  await t.step("help needs no permissions", async () => {
    const result = await runCli(repo.root, ["show", "--help"], { flags: [] });
    assert.equal(result.code, 0);
    assert.match(result.stdout, /Usage: worktree-ports show/);
  });
  // The main worktree is untouched by all of the above.
  assert.equal(await git(repo.root, "status", "--porcelain"), "");
});
