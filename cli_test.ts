import assert from "node:assert/strict";
import denoJson from "./deno.json" with { type: "json" };
import {
  canCreateFileIn,
  CLI_FLAGS,
  composePorts,
  composeRecipe,
  copyPackage,
  git,
  LINUX_EPHEMERAL,
  oddValue,
  permissionSetFlags,
  type PickedPorts,
  pickPorts,
  portFileAt,
  portsAt,
  readJson,
  readRest,
  readUntil,
  repoWithOddTemplate,
  ROOT,
  run,
  runCli,
  serveIn,
  slotOf,
  snapshot,
  spawnCli,
  TempRepo,
  testWhere,
  UNPRIVILEGED,
  writeJson,
} from "./test_util.ts";

/** The --allow-env flag of the permission set: the variables that locate the machine-wide index. */
const ENV_FLAG = "--allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA";

/** The run flag of the permission set: git, and the programs that name who listens on a port. */
const RUN_FLAG = CLI_FLAGS.find((flag) => flag.startsWith("--allow-run="))!;

/**
 * script(1) arguments that run the CLI with `flags` and `args` on a pseudo-terminal.
 * script hands the line to `$SHELL -c`; the line starts with `exec` so that no shell
 * stays between the terminal and the CLI (a Ctrl-C would kill a shell such as dash).
 * Run it with {@link SCRIPT_ENV}: SHELL may be unset where the tests run.
 */
function scriptArgs(flags: readonly string[], args: readonly string[]): string[] {
  const line = [Deno.execPath(), "run", ...flags, `${ROOT}cli.ts`]
    .concat(args).map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(" ");
  return ["-qec", `exec ${line}`, "/dev/null"];
}

/** The environment script(1) needs from {@link scriptArgs}: a shell to run its line. */
const SCRIPT_ENV = { SHELL: "/bin/sh" };

Deno.test("cli allocate prints the bundle and writes it at the worktree root, from any subdirectory", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.mkdir(`${a}/src`);
  // Picked below the ephemeral range, whose warning would be the only output on stderr.
  const ports = pickPorts(["web", "api"]);
  const result = await runCli(`${a}/src`, ["allocate", ...ports.args]);
  assert.equal(result.code, 0, result.stderr);
  const printed = JSON.parse(result.stdout);
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), printed);
  assert.equal(printed.web, ports.at(1).web);
  assert.equal(printed.api, ports.at(1).api);
  assert.equal(printed.worktree_ports.worktree, a);
  assert.equal(result.stderr, "");
});

Deno.test("cli allocate gives two fresh worktrees different bundles before anything listens", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await runCli(a, ["allocate", ...ports.args]);
  const second = await runCli(b, ["allocate", ...ports.args]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(second.code, 0, second.stderr);
  assert.notEqual(JSON.parse(first.stdout).web, JSON.parse(second.stdout).web);
  // Rewriting a worktree's own file returns the same bundle.
  const again = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(again.stdout, first.stdout);
});

Deno.test("cli allocate reads worktree-ports.config.json and fills templates", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await writeJson(`${a}/worktree-ports.config.json`, {
    ...pickPorts(["cloud_port", "db_port"], { slots: 50 }).config(),
    templates: { cloud_url: "http://127.0.0.1:{cloud_port}" },
  });
  const result = await runCli(a, ["allocate"]);
  assert.equal(result.code, 0, result.stderr);
  const file = JSON.parse(result.stdout);
  assert.deepEqual(Object.keys(file), ["cloud_port", "db_port", "cloud_url", "worktree_ports"]);
  assert.equal(file.cloud_url, `http://127.0.0.1:${file.cloud_port}`);
});

Deno.test("cli show prints the bundle or one value and changes nothing", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const none = await runCli(a, ["show"]);
  assert.equal(none.code, 1);
  assert.match(
    none.stderr,
    /^error: This worktree has no ports yet \(run "worktree-ports allocate", or "env" or "exec", which allocate first\)/,
  );

  const allocated = await runCli(a, ["allocate", ...ports.args]);
  const before = await snapshot(repo.base);
  const all = await runCli(a, ["show"]);
  assert.equal(all.code, 0, all.stderr);
  assert.deepEqual(JSON.parse(all.stdout), JSON.parse(allocated.stdout));
  const web = await runCli(a, ["show", "web"]);
  assert.deepEqual([web.code, web.stdout], [0, `${ports.at(1).web}\n`]);
  const missing = await runCli(a, ["show", "nope"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /has no key "nope" \(it has: "web", "api"\)/);
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli allocate skips a slot whose port has a listener", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  using _other = Deno.listen({ hostname: "0.0.0.0", port: ports.at(1).api });
  const result = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 2);
});

Deno.test("cli allocate fails with exit 1 when every slot is taken, changing nothing", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const args = ["allocate", ...pickPorts(["web"], { slots: 1 }).args];
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
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.writeTextFile(`${a}/.worktree-ports.json`, "{ half a file");
  const result = await runCli(a, ["allocate", ...ports.args]);
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
      // A mistyped word is one line, with the nearest valid one, never the whole help.
      {
        name: "mistyped command",
        args: ["alocate"],
        code: 2,
        stderr:
          /^error: Unknown command "alocate" \(did you mean "allocate"\?\); "worktree-ports --help" lists the commands\n$/,
      },
      {
        name: "mistyped flag",
        args: ["allocate", "--ouptut", "x"],
        code: 2,
        stderr:
          /^error: Unknown option "--ouptut" for "allocate" \(did you mean "--output"\?\); "worktree-ports allocate --help" lists its options\n$/,
      },
      {
        name: "unknown flag, nothing near it",
        args: ["allocate", "--colour"],
        code: 2,
        stderr:
          /^error: Unknown option "--colour" for "allocate"; "worktree-ports allocate --help" lists its options\n$/,
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
          /^error: Missing permission: run again with --allow-write \(for "allocate"; "worktree-ports help allocate" lists all it needs\)\n$/,
        flags: CLI_FLAGS.filter((flag) => flag !== "--allow-write"),
      },
      {
        name: "missing --allow-net",
        args: ["allocate"],
        code: 2,
        stderr: /run again with --allow-net='127\.0\.0\.1,\[::1\],0\.0\.0\.0,\[::\]' /,
        flags: ["--allow-run=git", "--allow-read", "--allow-write", "--allow-net=127.0.0.1"],
      },
      {
        name: "missing --allow-run=git",
        args: ["show"],
        code: 2,
        stderr: new RegExp(`run again with ${RUN_FLAG} `),
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
        // Deno itself notes each program of --allow-run it cannot find before the program runs.
        assert.match(result.stderr, /^(.*Failed to resolve '\w+'.*\n)*error: /);
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

// ---------------------------------------------------------------------------
// env, exec, list, check, release
// ---------------------------------------------------------------------------

Deno.test("cli env prints dotenv and json formats", async (t) => {
  const ports = pickPorts(["web_port"], { slots: 50 });
  await using repo = await repoWithOddTemplate(ports);
  const [a] = await repo.addWorktrees("wt", 1);
  await t.step("dotenv refuses a value that dotenv readers do not all read exactly", async () => {
    const result = await runCli(a, ["env", "--format", "dotenv"]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, "");
    assert.match(
      result.stderr,
      /error: Cannot write "ODD" as dotenv: its value holds "'" and "\$".*use "--format json" or "--format shell"/,
    );
  });
  await t.step("json", async () => {
    const result = await runCli(a, ["env", "--format=json"]);
    assert.deepEqual(JSON.parse(result.stdout), {
      WEB_PORT: String(ports.at(1).web_port),
      ODD: oddValue(ports),
    });
  });
  await t.step("unknown format", async () => {
    const result = await runCli(a, ["env", "--format", "yaml"]);
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      /"--format" must be shell, dotenv, json, fish or powershell, got "yaml"/,
    );
  });
});

testWhere(
  { tools: ["bash"] },
  "cli exec passes arguments unchanged, the variables, and the exit code",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const args = ["a b", "c'd", '"e"', "$(touch pwned)", "--port", ""];
    const result = await runCli(
      a,
      [
        "exec",
        ...ports.args,
        "--",
        "bash",
        "-c",
        'printf "<%s>\\n" "$@"; echo "web=$WEB api=$API"; exit 3',
        "script",
        ...args,
      ],
      { flags: ["--allow-run", ...CLI_FLAGS.slice(1)] },
    );
    assert.equal(result.code, 3, result.stderr);
    assert.equal(
      result.stdout,
      args.map((arg) => `<${arg}>\n`).join("") + `web=${ports.at(1).web} api=${ports.at(1).api}\n`,
    );
    assert.match(result.stderr, /allocated slot 1 to this worktree/);
    await assert.rejects(Deno.stat(`${a}/pwned`), Deno.errors.NotFound);
  },
);

testWhere(
  { tools: ["sh"] },
  "cli allocate and exec work with the loader's LD_* and DYLD_* variables set, which exec keeps",
  async () => {
    // CUDA, conda, Nix and many editors set LD_LIBRARY_PATH; Deno refuses to
    // start git under --allow-run=git while any such variable is set.
    const ports = pickPorts(["web"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const loader = {
      LD_LIBRARY_PATH: `${repo.base}/lib`,
      ld_run_path: `${repo.base}/lib`,
      DYLD_FALLBACK_LIBRARY_PATH: `${repo.base}/lib`,
    };
    const allocated = await runCli(a, ["allocate", ...ports.args], { env: loader });
    assert.equal(allocated.code, 0, allocated.stderr);
    assert.equal((await readJson(`${a}/.worktree-ports.json`)).web, ports.at(1).web);
    const script = 'printf "%s|%s|%s|%s" "$LD_LIBRARY_PATH" "$ld_run_path" ' +
      '"$DYLD_FALLBACK_LIBRARY_PATH" "$WEB"';
    const ran = await runCli(a, ["exec", ...ports.args, "--", "sh", "-c", script], {
      env: loader,
      flags: ["--allow-run", ...CLI_FLAGS.slice(1)],
    });
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(
      ran.stdout,
      `${repo.base}/lib|${repo.base}/lib|${repo.base}/lib|${ports.at(1).web}`,
    );
    // Deno passes them to a command only with permission to run every program: say so.
    const scoped = await runCli(a, ["exec", ...ports.args, "--", "sh", "-c", script], {
      env: loader,
      flags: ["--allow-run=git,sh", ...CLI_FLAGS.slice(1)],
    });
    assert.equal(scoped.code, 2, scoped.stderr);
    assert.match(
      scoped.stderr,
      /^error: Missing permission: run again with --allow-run \(Deno starts "sh" with DYLD_FALLBACK_LIBRARY_PATH, LD_LIBRARY_PATH, ld_run_path set only when every program may be run; or unset them\)/,
    );
    assert.equal(scoped.stdout, "");
  },
);

Deno.test({
  name: `cli exec passes back a signal that killed the command as 128 + its number on this system${
    Deno.build.os === "windows" ? " (skipped: Windows has no signals to kill with)" : ""
  }`,
  ignore: Deno.build.os === "windows",
  fn: async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    // SIGUSR1's number differs between systems: 10 on Linux, 30 on macOS.
    for (const signal of ["TERM", "USR1"]) {
      await t.step(`SIG${signal}`, async () => {
        const number = Number((await run("bash", ["-c", `kill -l ${signal}`])).stdout.trim());
        const result = await runCli(a, ["exec", ...ports.args, "sh", "-c", `kill -${signal} $$`], {
          flags: ["--allow-run", ...CLI_FLAGS.slice(1)],
        });
        assert.equal(result.code, 128 + number, result.stderr);
      });
    }
  },
});

testWhere(
  { unix: "signals sent with kill" },
  "cli exec passes a SIGTERM or SIGINT it receives on to the command",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      await t.step(signal, async () => {
        // Bounded, so that a broken forwarder fails the test instead of leaving
        // bash behind. No command substitution: the only child bash waits on is sleep.
        const script = `trap "echo got ${signal}; exit 7" ${signal.slice(3)}; echo ready; ` +
          "i=0; while ((i++ < 100)); do sleep 0.05; done";
        const child = spawnCli(a, ["exec", ...ports.args, "bash", "-c", script], {
          flags: ["--allow-run", ...CLI_FLAGS.slice(1)],
        });
        const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const stderr = new Response(child.stderr).text();
        const seen = await readUntil(stdout, "ready\n");
        child.kill(signal);
        const rest = await readRest(stdout);
        const status = await child.status;
        assert.deepEqual(
          { code: status.code, stdout: seen + rest },
          { code: 7, stdout: `ready\ngot ${signal}\n` },
          await stderr,
        );
      });
    }
  },
);

testWhere(
  { linux: "script(1) from util-linux for a terminal", tools: ["script"] },
  "cli exec on a terminal leaves Ctrl-C to the terminal, so the command gets it once",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    // The command counts the SIGINTs it gets and reports its parent, exec.
    const script = 'trap "echo INT" INT; echo "ready $PPID"; ' +
      "i=0; while ((i++ < 40)); do sleep 0.05; done; echo done; exit 4";
    // script(1) runs exec on a pseudo-terminal whose keyboard is our pipe.
    const terminal = new Deno.Command("script", {
      args: scriptArgs(
        ["--allow-run", ...CLI_FLAGS.slice(1)],
        ["exec", ...ports.args, "bash", "-c", script],
      ),
      env: SCRIPT_ENV,
      cwd: a,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stdout = terminal.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const stderr = new Response(terminal.stderr).text();
    const keyboard = terminal.stdin.getWriter();
    let seen = "";
    while (!/ready \d+\r?\n/.test(seen)) seen += await readUntil(stdout, "\n");
    // The new allocation is reported before the command starts, not after it ends.
    assert.match(seen, /^allocated slot 1 to this worktree .*\r?\nready \d+\r?\n$/);
    const exec = Number(/ready (\d+)/.exec(seen)?.[1]);
    // Ctrl-C: the terminal signals exec and the command alike.
    await keyboard.write(new TextEncoder().encode("\x03"));
    seen += await readUntil(stdout, "INT");
    // A SIGINT sent to exec alone is not passed on either, and exec outlives it.
    Deno.kill(exec, "SIGINT");
    seen += await readRest(stdout);
    await keyboard.close();
    const status = await terminal.status;
    assert.equal(status.code, 4, seen + (await stderr));
    assert.equal(seen.match(/INT/g)?.length, 1, seen);
    assert.match(seen, /done\r?\n$/);
  },
);

testWhere({ tools: ["bash"] }, "cli exec needs permission to run the command", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const result = await runCli(a, ["exec", "bash", "-c", "true"]);
  assert.equal(result.code, 2);
  // One line: run from a checkout, not from JSR, there is nothing to reinstall.
  assert.equal(
    result.stderr,
    `error: Missing permission: run again with --allow-run=git,bash (or --allow-run) ("exec" runs the command)\n`,
  );
});

Deno.test("cli list --json reports every state", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [okTree, none, dupA, dupB, foreign, unreadable, gone] = await repo.addWorktrees("wt", 7);
  assert.equal((await runCli(okTree, ["allocate", ...ports.args])).code, 0);
  // An older allocator's file, holding a port of its own picking.
  const cloud = pickPorts(["cloud_port"], { avoid: [ports] }).base.cloud_port;
  const older = { cloud_port: cloud, cloud_url: `http://127.0.0.1:${cloud}` };
  await writeJson(`${dupA}/.worktree-ports.json`, older);
  await writeJson(`${dupB}/.worktree-ports.json`, older);
  await Deno.copyFile(`${okTree}/.worktree-ports.json`, `${foreign}/.worktree-ports.json`);
  await Deno.writeTextFile(`${unreadable}/.worktree-ports.json`, "{ not json");
  assert.equal((await runCli(gone, ["allocate", ...ports.args])).code, 0);
  await Deno.remove(gone, { recursive: true });
  await using server = await serveIn(okTree, ports.at(1).api);

  const result = await runCli(none, ["list", "--json"]);
  assert.equal(result.code, 0, result.stderr);
  const rows = JSON.parse(result.stdout) as Record<string, unknown>[];
  const byPath = new Map(rows.map((row) => [row.path, row]));
  assert.deepEqual(rows.map((row) => [row.path, row.state]), [
    [repo.root, "none"],
    [okTree, "ok"],
    [none, "none"],
    [dupA, "duplicate"],
    [dupB, "duplicate"],
    [foreign, "foreign"],
    [unreadable, "unreadable"],
    [gone, "stale"],
  ]);
  const okHolder = (byPath.get(okTree)!.holders as Record<string, { command: string }[]>).api[0];
  assert.match(okHolder.command, /deno.* eval /);
  assert.deepEqual(byPath.get(okTree), {
    path: okTree,
    primary: false,
    current: false,
    state: "ok",
    file: `${okTree}/.worktree-ports.json`,
    slot: 1,
    ports: ports.at(1),
    listening: { web: false, api: true },
    holders: {
      api: [{ pid: server.pid, command: okHolder.command, cwd: okTree, worktree: okTree }],
    },
    allocatedAt: (await readJson(`${okTree}/.worktree-ports.json`) as {
      worktree_ports: { allocated_at: string };
    }).worktree_ports.allocated_at,
    conflicts: [],
  });
  assert.deepEqual(byPath.get(dupA)!.conflicts, [{ worktree: dupB, ports: [cloud] }]);
  assert.equal(byPath.get(foreign)!.detail, okTree);
  assert.equal(byPath.get(unreadable)!.detail, "not valid JSON");
  assert.equal(byPath.get(none)!.current, true);
});

testWhere(
  { linux: "script(1) from util-linux for a terminal", tools: ["script"] },
  "cli list prints an aligned table, coloured only on a terminal without NO_COLOR",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    await runCli(a, ["allocate", ...ports.args]);
    await t.step("piped: plain text", async () => {
      const result = await runCli(a, ["list"]);
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.trimEnd().split("\n");
      assert.match(lines[0], /^ {2}WORKTREE +BRANCH +SLOT +STATE +PORTS +NOTE$/);
      assert.match(
        lines[2],
        new RegExp(`^\\* .*wt0 +- +1 +ok +web=${ports.at(1).web} api=${ports.at(1).api}$`),
      );
      assert.equal(lines[0].indexOf("STATE"), lines[2].indexOf("ok"));
      assert.ok(!result.stdout.includes("\x1b["));
    });
    // script(1) gives the CLI a real terminal.
    const args = scriptArgs(CLI_FLAGS, ["list"]);
    for (
      const [name, env, colored] of [["terminal", {}, true], ["terminal with NO_COLOR", {
        NO_COLOR: "1",
      }, false]] as const
    ) {
      await t.step(name, async () => {
        const result = await run("script", args, { cwd: a, env: { ...SCRIPT_ENV, ...env } });
        assert.equal(result.code, 0, result.stdout);
        assert.match(result.stdout, /WORKTREE/);
        assert.equal(result.stdout.includes("\x1b[32mok"), colored);
      });
    }
  },
);

/** The older allocator's keys, 100 apart in 20 slots, at bases picked for one test. */
function cloudPorts(): PickedPorts<"cloud_port" | "web_port"> {
  return pickPorts(["cloud_port", "web_port"], { stride: 100, slots: 20 });
}

/** A repository with a committed config matching the older allocator's keys. */
function repoWithCloudConfig(ports: PickedPorts<"cloud_port" | "web_port">): Promise<TempRepo> {
  return TempRepo.create({
    config: { ...ports.config(), templates: { cloud_url: "http://127.0.0.1:{cloud_port}" } },
  });
}

/** The older allocator's keys at `slot`, as check --fix prints a bundle. */
function cloudBundle(ports: PickedPorts<"cloud_port" | "web_port">, slot: number): string {
  const { cloud_port, web_port } = ports.at(slot);
  return `cloud_port=${cloud_port} web_port=${web_port}`;
}

Deno.test("cli check exits 0 on a clean repository and 1 naming each conflict", async () => {
  const ports = cloudPorts();
  await using repo = await repoWithCloudConfig(ports);
  const [a, b, c] = await repo.addWorktrees("wt", 3);
  for (const dir of [a, b]) assert.equal((await runCli(dir, ["allocate"])).code, 0);
  const clean = await runCli(c, ["check"]);
  assert.deepEqual([clean.code, clean.stdout], [0, "ok: 4 worktrees, no shared ports\n"]);

  await Deno.copyFile(`${a}/.worktree-ports.json`, `${c}/.worktree-ports.json`);
  const older = { cloud_url: `http://127.0.0.1:${ports.at(9).cloud_port}` };
  await writeJson(`${repo.root}/.worktree-ports.json`, older);
  await writeJson(`${b}/.worktree-ports.json`, { ...older, web_port: ports.at(2).web_port });
  const conflicted = await runCli(c, ["check"]);
  assert.equal(conflicted.code, 1);
  assert.equal(
    conflicted.stdout,
    `conflict: "${repo.root}" and "${b}" share ports ${ports.at(9).cloud_port}\n` +
      `foreign: "${c}/.worktree-ports.json" was written for "${a}"\n`,
  );
  assert.match(conflicted.stderr, /check --fix/);
});

Deno.test("cli check --fix moves the non-listening one of an older allocator's duplicate pair, once", async () => {
  const ports = cloudPorts();
  const [cloud, web] = [
    (slot: number) => ports.at(slot).cloud_port,
    (slot: number) => ports.at(slot).web_port,
  ];
  await using repo = await repoWithCloudConfig(ports);
  const [a, b] = await repo.addWorktrees("wt", 2);
  // The older allocator's bug: both worktrees got slot 1's cloud port. b's file is
  // older, so only the listening rule can keep a's... a listens; b must move.
  const shared = { cloud_port: cloud(1), cloud_url: `http://127.0.0.1:${cloud(1)}` };
  await writeJson(`${b}/.worktree-ports.json`, { ...shared, web_port: web(2) });
  await new Promise((resolve) => setTimeout(resolve, 20));
  await writeJson(`${a}/.worktree-ports.json`, { ...shared, web_port: web(1) });
  await using _aServes = await serveIn(a, web(1));

  const fixed = await runCli(a, ["check", "--fix"]);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  assert.equal(
    fixed.stdout,
    `moved "${b}" (duplicate): cloud_port=${cloud(1)} web_port=${web(2)} -> ${
      cloudBundle(ports, 2)
    } (slot 2)\n` +
      "ok: 3 worktrees, no shared ports\n",
  );
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), { ...shared, web_port: web(1) });
  const moved = await readJson(`${b}/.worktree-ports.json`);
  assert.equal(moved.cloud_url, `http://127.0.0.1:${cloud(2)}`);

  const again = await runCli(a, ["check", "--fix"]);
  assert.equal(again.code, 0);
  assert.equal(again.stdout, "nothing to fix\nok: 3 worktrees, no shared ports\n");
  assert.deepEqual(await readJson(`${b}/.worktree-ports.json`), moved);
});

Deno.test("cli check --fix keeps clear of ports that other files hold only as URLs", async () => {
  const ports = cloudPorts();
  const [cloud, web] = [
    (slot: number) => ports.at(slot).cloud_port,
    (slot: number) => ports.at(slot).web_port,
  ];
  await using repo = await repoWithCloudConfig(ports);
  const [a, b, c] = await repo.addWorktrees("wt", 3);
  const shared = { cloud_port: cloud(1), cloud_url: `http://127.0.0.1:${cloud(1)}` };
  await writeJson(`${a}/.worktree-ports.json`, { ...shared, web_port: web(1) });
  await writeJson(`${b}/.worktree-ports.json`, { ...shared, web_port: web(2) });
  // An older tool's file that reserves slot 2's cloud port through a URL alone.
  await writeJson(`${c}/.worktree-ports.json`, { api_url: `http://127.0.0.1:${cloud(2)}/v1` });
  await using _aServes = await serveIn(a, web(1));
  const fixed = await runCli(a, ["check", "--fix"]);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  assert.match(
    fixed.stdout,
    new RegExp(`^moved ".*wt1" \\(duplicate\\): .* -> ${cloudBundle(ports, 3)} \\(slot 3\\)\n`),
  );
});

Deno.test("cli check --fix reallocates a copied file for its own worktree", async () => {
  const ports = cloudPorts();
  await using repo = await repoWithCloudConfig(ports);
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await Deno.copyFile(`${a}/.worktree-ports.json`, `${b}/.worktree-ports.json`);
  const fixed = await runCli(b, ["check", "--fix"]);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  assert.match(
    fixed.stdout,
    new RegExp(
      `^moved ".*wt1" \\(foreign\\): ${cloudBundle(ports, 1)} -> ${
        cloudBundle(ports, 2)
      } \\(slot 2\\)\n`,
    ),
  );
  assert.equal(slotOf(await readJson(`${b}/.worktree-ports.json`)), 2);
  assert.equal(
    ((await readJson(`${b}/.worktree-ports.json`)).worktree_ports as { worktree: string }).worktree,
    b,
  );
});

Deno.test("cli check reports an unreadable port file and --fix replaces it", async () => {
  const ports = cloudPorts();
  await using repo = await repoWithCloudConfig(ports);
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await Deno.writeTextFile(`${b}/.worktree-ports.json`, "{ not json");
  const check = await runCli(a, ["check"]);
  assert.equal(check.code, 1);
  assert.equal(check.stdout, `unreadable: "${b}/.worktree-ports.json": not valid JSON\n`);
  const fixed = await runCli(a, ["check", "--fix"]);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  assert.match(
    fixed.stdout,
    new RegExp(
      `^moved ".*wt1" \\(unreadable\\): \\(none\\) -> ${cloudBundle(ports, 2)} \\(slot 2\\)\n`,
    ),
  );
  assert.equal(slotOf(await readJson(`${b}/.worktree-ports.json`)), 2);
});

Deno.test("cli allocate --timings says where the time went", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const result = await runCli(a, ["allocate", ...ports.args, "--timings"]);
  assert.equal(result.code, 0, result.stderr);
  const match =
    /^timings: git ([\d.]+) ms, lock wait ([\d.]+) ms, locked ([\d.]+) ms, total ([\d.]+) ms\n$/
      .exec(result.stderr);
  assert.ok(match, result.stderr);
  const [git, wait, locked, total] = match.slice(1).map(Number);
  assert.ok(git + wait + locked <= total, result.stderr);
});

Deno.test("cli release frees the slot for the next fresh worktree", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal(slotOf(JSON.parse((await runCli(a, ["allocate", ...ports.args])).stdout)), 1);
  assert.equal(slotOf(JSON.parse((await runCli(b, ["allocate", ...ports.args])).stdout)), 2);
  const released = await runCli(a, ["release"]);
  assert.deepEqual([released.code, released.stdout], [0, `released "${a}/.worktree-ports.json"\n`]);
  await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
  const again = await runCli(a, ["release"]);
  assert.deepEqual([again.code, again.stdout], [
    0,
    `nothing to release: "${a}/.worktree-ports.json" does not exist\n`,
  ]);
  const fresh = await repo.addWorktree("fresh");
  assert.equal(slotOf(JSON.parse((await runCli(fresh, ["allocate", ...ports.args])).stdout)), 1);
});

Deno.test("cli release --all-stale lists worktrees whose directory is gone and removes nothing", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, gone] = await repo.addWorktrees("wt", 2);
  await runCli(a, ["allocate", ...ports.args]);
  await Deno.remove(gone, { recursive: true });
  const before = await snapshot(repo.base);
  const result = await runCli(a, ["release", "--all-stale"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stdout,
    /^1 stale worktree, whose directory is gone, reserves no ports already.*\n {2}.*wt1\n$/,
  );
  assert.deepEqual(await snapshot(repo.base), before);
});

// ---------------------------------------------------------------------------
// Permissions and completions
// ---------------------------------------------------------------------------

Deno.test("cli allocate runs with exactly the permission set and fails naming any one left out", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const flags = permissionSetFlags();
  await t.step("all of them, and nothing else", async () => {
    const result = await runCli(a, ["allocate", ...ports.args], {
      flags: ["--no-prompt", ...flags],
    });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(slotOf(JSON.parse(result.stdout)), 1);
  });
  for (const missing of flags) {
    await t.step(`without ${missing}`, async () => {
      const before = await snapshot(repo.base);
      const result = await runCli(a, ["allocate", ...ports.args], {
        flags: flags.filter((flag) => flag !== missing),
      });
      assert.equal(result.code, 2);
      const quoted = missing.replace(/^(--allow-net=)(.*)$/, "$1'$2'");
      assert.match(
        result.stderr,
        new RegExp(`Missing permission: run again with ${RegExp.escape(quoted)} \\(`),
      );
      assert.deepEqual(await snapshot(repo.base), before);
    });
  }
});

Deno.test("cli completions rejects an unknown shell", async () => {
  const result = await runCli(ROOT, ["completions", "powershell"], { flags: [] });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /Unknown shell "powershell" \(expected bash, zsh or fish\)/);
});

// ---------------------------------------------------------------------------
// Running wherever users are
// ---------------------------------------------------------------------------

/** The git on PATH, which `.ci/run` also points at an old release. */
const GIT_VERSION = (await run("git", ["--version"])).stdout.trim();

Deno.test(`cli allocate, list and check handle odd worktree paths with ${GIT_VERSION}`, async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const names = ["with space", `quote"d 'twice'`, "new\nline", "back\\slash", "ünï cødé €"];
  const worktrees: string[] = [];
  for (const name of names) worktrees.push(await repo.addWorktree(name));
  const gone = await repo.addWorktree("gone");
  for (const [index, cwd] of worktrees.entries()) {
    const result = await runCli(cwd, ["allocate", ...ports.args]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(slotOf(JSON.parse(result.stdout)), index + 1);
    assert.equal((JSON.parse(result.stdout).worktree_ports as { worktree: string }).worktree, cwd);
  }
  await runCli(gone, ["allocate", ...ports.args]);
  await Deno.remove(gone, { recursive: true });
  const list = await runCli(worktrees[2], ["list", "--json"]);
  assert.equal(list.code, 0, list.stderr);
  const statuses = JSON.parse(list.stdout) as { path: string; state: string; current: boolean }[];
  assert.deepEqual(
    statuses.map(({ path, state, current }) => [path, state, current]).sort(),
    [
      [repo.root, "none", false],
      ...worktrees.map((path, index) => [path, "ok", index === 2]),
      [gone, "stale", false],
    ].sort(),
  );
  const check = await runCli(worktrees[4], ["check"]);
  assert.deepEqual([check.code, check.stdout], [0, "ok: 7 worktrees, no shared ports\n"]);
});

/** `repo` with a submodule "lib" (a repository of its own, next to it) checked out in its main worktree. */
async function addSubmodule(repo: TempRepo): Promise<string> {
  const origin = `${repo.base}/lib-origin`;
  await git(repo.base, "init", "-q", "-b", "main", "lib-origin");
  await git(origin, "commit", "-q", "--allow-empty", "-m", "initial");
  await git(repo.root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", origin, "lib");
  await git(repo.root, "commit", "-q", "-m", "add lib");
  return `${repo.root}/lib`;
}

Deno.test("cli allocate, list and check work inside a submodule and its linked worktrees", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const lib = await addSubmodule(repo);
  const libLinked = `${repo.base}/lib linked`;
  await git(lib, "worktree", "add", "-q", "--detach", libLinked);
  await Deno.mkdir(`${lib}/src`);
  const main = await runCli(`${lib}/src`, ["allocate", ...ports.args]);
  assert.equal(main.code, 0, main.stderr);
  assert.equal(slotOf(JSON.parse(main.stdout)), 0);
  assert.equal(
    (JSON.parse(main.stdout).worktree_ports as { worktree: string }).worktree,
    lib,
  );
  const linked = await runCli(libLinked, ["allocate", ...ports.args]);
  assert.equal(linked.code, 0, linked.stderr);
  assert.equal(slotOf(JSON.parse(linked.stdout)), 1);
  // The superproject is a repository of its own: it too gets slot 0 (of other base ports,
  // or the machine-wide index would report two main worktrees on the same ones).
  const other = pickPorts(["web", "api"], { avoid: [ports] });
  const superproject = await runCli(repo.root, ["allocate", ...other.args]);
  assert.equal(slotOf(JSON.parse(superproject.stdout)), 0);
  const list = await runCli(libLinked, ["list", "--json"]);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(
    (JSON.parse(list.stdout) as { path: string; slot: number; state: string }[])
      .map(({ path, slot, state }) => [path, slot, state]),
    [[lib, 0, "ok"], [libLinked, 1, "ok"]],
  );
  const check = await runCli(lib, ["check"]);
  assert.deepEqual([check.code, check.stdout], [0, "ok: 2 worktrees, no shared ports\n"]);
  // Neither port file shows up as a change in the superproject or the submodule.
  assert.equal(await git(repo.root, "status", "--porcelain"), "");
  assert.equal(await git(lib, "status", "--porcelain"), "");
});

Deno.test("cli list and check work in a bare repository; commands that need a worktree say so", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create({ bare: true });
  const [a, b] = await repo.addWorktrees("wt", 2);
  await runCli(a, ["allocate", ...ports.args]);
  await t.step("list names the linked worktrees", async () => {
    const list = await runCli(repo.root, ["list", "--json"]);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(
      (JSON.parse(list.stdout) as { path: string; state: string; current: boolean }[])
        .map(({ path, state, current }) => [path, state, current]),
      [[a, "ok", false], [b, "none", false]],
    );
  });
  await t.step("check and check --fix", async () => {
    const check = await runCli(repo.root, ["check"]);
    assert.deepEqual([check.code, check.stdout], [0, "ok: 2 worktrees, no shared ports\n"]);
    const fix = await runCli(repo.root, ["check", "--fix", ...ports.args]);
    assert.equal(fix.code, 0, fix.stderr);
    assert.match(fix.stdout, /^nothing to fix\n/);
  });
  for (const command of [["show"], ["allocate"], ["env"], ["release"], ["exec", "true"]]) {
    await t.step(`${command[0]} says it needs a worktree and names them`, async () => {
      const before = await snapshot(repo.base);
      const result = await runCli(repo.root, command, {
        flags: CLI_FLAGS.map((flag) => flag.startsWith("--allow-run=") ? "--allow-run" : flag),
      });
      assert.equal(result.code, 2);
      assert.equal(
        result.stderr,
        `error: "${repo.root}" is a bare repository, which has no files and so no ports of its ` +
          `own (run this in one of its worktrees: "${a}", "${b}")\n`,
      );
      assert.deepEqual(await snapshot(repo.base), before);
    });
  }
});

Deno.test("cli check treats a file moved by git worktree move as its worktree's own, and a copy as foreign", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const moved = `${repo.base}/moved ü`;
  const first = JSON.parse((await runCli(a, ["allocate", ...ports.args])).stdout);
  await runCli(b, ["allocate", ...ports.args]);
  await git(repo.root, "worktree", "move", a, moved);
  await t.step("check, list, show and env see the moved worktree's own file", async () => {
    const check = await runCli(moved, ["check"]);
    assert.deepEqual([check.code, check.stdout], [0, "ok: 3 worktrees, no shared ports\n"]);
    const list = JSON.parse((await runCli(moved, ["list", "--json"])).stdout) as {
      path: string;
      state: string;
      slot: number;
    }[];
    assert.deepEqual(
      list.find((status) => status.path === moved),
      { ...list.find((status) => status.path === moved), state: "ok", slot: 1 },
    );
    // Until it is rewritten, the file could as well be a copy from a removed
    // worktree; with no config, show cannot rewrite it, and says what to run.
    const show = await runCli(moved, ["show", "web"]);
    assert.deepEqual([show.code, show.stdout], [1, ""]);
    assert.match(show.stderr, /^error: .* which is no worktree now \(moved with its worktree/);
    const env = await runCli(moved, ["env", ...ports.args]);
    assert.deepEqual([env.code, env.stderr], [
      0,
      `recorded this worktree's path in "${moved}/.worktree-ports.json" (slot 1 kept)\n`,
    ]);
  });
  await t.step("allocate keeps the slot and records the new path", async () => {
    const result = await runCli(moved, ["allocate", ...ports.args]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "");
    const file = await readJson(`${moved}/.worktree-ports.json`);
    assert.deepEqual(file, {
      ...first,
      worktree_ports: { ...first.worktree_ports, worktree: moved },
    });
  });
  await t.step("moved back, it keeps the slot again", async () => {
    await git(repo.root, "worktree", "move", moved, a);
    const result = await runCli(a, ["allocate", ...ports.args]);
    assert.equal(result.stderr, "");
    assert.deepEqual(JSON.parse(result.stdout), first);
  });
  await t.step("a file naming another live worktree is still a copy", async () => {
    await Deno.copyFile(`${b}/.worktree-ports.json`, `${a}/.worktree-ports.json`);
    const check = await runCli(a, ["check"]);
    assert.equal(check.code, 1);
    assert.equal(check.stdout, `foreign: "${a}/.worktree-ports.json" was written for "${b}"\n`);
    const result = await runCli(a, ["allocate", ...ports.args]);
    assert.match(result.stderr, /was written for the worktree ".*wt1" \(copied\?\)/);
    assert.equal(slotOf(JSON.parse(result.stdout)), 1);
  });
});

Deno.test("cli help [COMMAND] prints what --help prints, and each command's permissions", async (t) => {
  await using repo = await TempRepo.create();
  await t.step("help is --help, help COMMAND is COMMAND --help", async () => {
    for (
      const [viaHelp, viaFlag] of [[["help"], ["--help"]], [["help", "check"], ["check", "--help"]]]
    ) {
      const [a, b] = await Promise.all([
        runCli(repo.root, viaHelp, { flags: [] }),
        runCli(repo.root, viaFlag, { flags: [] }),
      ]);
      assert.deepEqual([a.code, a.stdout, a.stderr], [0, b.stdout, ""]);
    }
    const unknown = await runCli(repo.root, ["help", "nope"]);
    assert.equal(unknown.code, 2);
    assert.equal(
      unknown.stderr,
      `error: Unknown command "nope"; "worktree-ports --help" lists the commands\n`,
    );
  });
  await t.step(
    "check --help names what --fix needs, completions --help that it needs none",
    async () => {
      const check = await runCli(repo.root, ["check", "--help"]);
      assert.ok(
        check.stdout.endsWith(
          `\nPermissions: ${RUN_FLAG} --allow-read ${ENV_FLAG}\n` +
            `  with --fix: ${RUN_FLAG} --allow-read --allow-write ` +
            `--allow-net='127.0.0.1,[::1],0.0.0.0,[::]' ${ENV_FLAG}\n`,
        ),
        check.stdout,
      );
      const completions = await runCli(repo.root, ["completions", "--help"]);
      assert.match(completions.stdout, /\nPermissions: none\n$/);
      const exec = await runCli(repo.root, ["exec", "--help"]);
      assert.match(exec.stdout, /and --allow-run=git,COMMAND \(or --allow-run\) to run COMMAND\n$/);
    },
  );
});

// ---------------------------------------------------------------------------
// The guarantee at its edges: odd files
// ---------------------------------------------------------------------------

/** Runs the CLI, killing it after `seconds`: a hang fails the test instead of the run. */
async function runCliWithin(
  cwd: string,
  args: readonly string[],
  seconds = 30,
): Promise<{ code: number; stdout: string; stderr: string; timedOut: boolean }> {
  const child = spawnCli(cwd, args);
  const timer = setTimeout(() => child.kill("SIGKILL"), seconds * 1000);
  const [stdout, stderr, status] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.status,
  ]);
  clearTimeout(timer);
  return { code: status.code, stdout, stderr, timedOut: status.signal === "SIGKILL" };
}

async function mkfifo(path: string): Promise<void> {
  const result = await run("mkfifo", [path]);
  assert.equal(result.code, 0, result.stderr);
}

testWhere(
  { unix: "FIFOs (mkfifo)" },
  "cli allocate, show, env, list and check never open a FIFO: each treats one as an unreadable file",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a, b] = await repo.addWorktrees("wt", 2);
    await mkfifo(`${b}/.worktree-ports.json`);
    const cases: [string, string, string[], number, RegExp][] = [
      [
        "a sibling's",
        a,
        ["allocate", ...ports.args],
        0,
        /wt1\/\.worktree-ports\.json" is unreadable \(it is a FIFO/,
      ],
      ["a sibling's", a, ["env", ...ports.args], 0, /^$|allocated slot/],
      ["a sibling's", a, ["list"], 0, /^$/],
      ["a sibling's", a, ["check"], 1, /^run "worktree-ports check --fix"/],
      ["a sibling's", a, ["show"], 0, /^$/],
      [
        "its own",
        b,
        ["show"],
        1,
        /^error: Cannot read ".*wt1\/\.worktree-ports\.json": it is a FIFO/,
      ],
      ["its own", b, ["list"], 0, /^$/],
      ["its own", b, ["check"], 1, /^run "worktree-ports check --fix"/],
      ["its own", b, ["env", ...ports.args], 0, /port file ".*" is unusable \(it is a FIFO/],
    ];
    for (const [whose, cwd, args, code, stderr] of cases) {
      await t.step(`${args[0]} with ${whose} port file a FIFO`, async () => {
        const result = await runCliWithin(cwd, args);
        assert.ok(!result.timedOut, `${args[0]} hung`);
        assert.equal(result.code, code, result.stderr);
        assert.match(result.stderr, stderr);
        if (args[0] === "list" || args[0] === "check") {
          assert.match(result.stdout, /unreadable.*it is a FIFO \(named pipe\), not a file/);
        }
      });
    }
    await t.step("allocate with its own port file a FIFO replaces it", async () => {
      await Deno.remove(`${b}/.worktree-ports.json`);
      await mkfifo(`${b}/.worktree-ports.json`);
      const result = await runCliWithin(b, ["allocate", ...ports.args]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /is unusable \(it is a FIFO/);
      assert.ok((await Deno.stat(`${b}/.worktree-ports.json`)).isFile);
    });
    await t.step("allocate and env with the config a FIFO", async () => {
      await mkfifo(`${a}/worktree-ports.config.json`);
      // env reads the config when it allocates, as for a worktree without a file.
      await Deno.remove(`${a}/.worktree-ports.json`);
      for (const command of ["allocate", "env"]) {
        const result = await runCliWithin(a, [command]);
        assert.ok(!result.timedOut, `${command} hung`);
        assert.equal(result.code, 2, result.stderr);
        assert.match(
          result.stderr,
          /^error: Cannot read config ".*worktree-ports\.config\.json": it is a FIFO/,
        );
      }
    });
  },
);

Deno.test("cli allocate removes a stale temporary file, and git never shows one", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  // What a process killed between writing and renaming leaves behind.
  const stale = `${a}/.worktree-ports.json.4242-k3j5h2g1.tmp`;
  await Deno.writeTextFile(stale, '{"web": 42010');
  const result = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(result.code, 0, result.stderr);
  await assert.rejects(Deno.stat(stale), Deno.errors.NotFound);
  assert.equal(await git(a, "status", "--porcelain"), "");
  // Planted again after the rules exist, git does not show it even before it is removed.
  await Deno.writeTextFile(stale, "");
  assert.equal(await git(a, "status", "--porcelain"), "");
  const exclude = await Deno.readTextFile(`${repo.root}/.git/info/exclude`);
  assert.ok(exclude.endsWith("\n/.worktree-ports.json\n/.worktree-ports.json.*.tmp\n"), exclude);
  assert.equal((await runCli(a, ["release"])).code, 0);
  await assert.rejects(Deno.stat(stale), Deno.errors.NotFound);
});

Deno.test("cli allocate adds the ignore rules again when they were lost", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const excludePath = `${repo.root}/.git/info/exclude`;
  const original = await Deno.readTextFile(excludePath);
  assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
  // As after a failed write: the port file is there, the rules are not.
  await Deno.writeTextFile(excludePath, original);
  assert.equal(await git(a, "status", "--porcelain"), "?? .worktree-ports.json\n");
  const result = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(await git(a, "status", "--porcelain"), "");
  assert.equal(
    await Deno.readTextFile(excludePath),
    `${original}/.worktree-ports.json\n/.worktree-ports.json.*.tmp\n`,
  );
});

Deno.test("cli allocate keeps the reservations of damaged and odd sibling files", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const sibling = `${b}/.worktree-ports.json`;
  const slot1 = portFileAt(ports, b, 1);
  const { web, api } = ports.at(1);
  const cases: [string, string, RegExp | undefined][] = [
    ["a byte-order mark", "\ufeff" + JSON.stringify(slot1, null, 2), undefined],
    [
      "text that is not JSON",
      `{\n  "web": ${web},\n  "api": ${api},\n  "worktree_ports": {"slot": 1,,\n`,
      new RegExp(
        `"[^"]*wt1/\\.worktree-ports\\.json" is unreadable \\(not valid JSON\\); reserving the ports its text names \\(${web}, ${api}\\)`,
      ),
    ],
    [
      "200,000 levels of nesting",
      `{"web": ${web}, "api": ${api}, "deep": ${"[".repeat(200_000)}${"]".repeat(200_000)}}`,
      new RegExp(
        `is unreadable \\(nested more than 64 levels deep\\); reserving the ports its text names \\(${web}, ${api}\\)`,
      ),
    ],
  ];
  for (const [what, text, warning] of cases) {
    await t.step(what, async () => {
      await Deno.writeTextFile(sibling, text);
      const result = await runCli(a, ["allocate", "--force", ...ports.args]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(slotOf(JSON.parse(result.stdout)), 2);
      if (warning === undefined) assert.equal(result.stderr, "");
      else assert.match(result.stderr, warning);
    });
  }
  await t.step("a file nobody can parse, with the copy git's directory keeps", async () => {
    assert.equal((await runCli(b, ["allocate", "--force", ...ports.args])).code, 0);
    const held = slotOf(await readJson(sibling));
    await Deno.writeTextFile(sibling, "\0\0\0");
    const result = await runCli(a, ["allocate", "--force", ...ports.args]);
    assert.equal(result.code, 0, result.stderr);
    assert.notEqual(slotOf(JSON.parse(result.stdout)), held);
    assert.match(result.stderr, /reserving the ports it held when last written/);
  });
});

Deno.test("cli allocate warns about its own file's nesting and never prints a value that is not a port", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const own = `${a}/.worktree-ports.json`;
  await t.step("200,000 levels of nesting", async () => {
    await Deno.writeTextFile(own, `{"deep": ${"[".repeat(200_000)}${"]".repeat(200_000)}}`);
    for (const command of ["allocate", "list", "check"]) {
      const result = await runCli(a, [command, ...(command === "allocate" ? ports.args : [])]);
      assert.doesNotMatch(result.stderr, /Maximum call stack/);
      if (command === "allocate") {
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stderr, /is unusable \(nested more than 64 levels deep\)/);
      }
    }
  });
  await t.step("numbers that are not ports", async () => {
    await Deno.writeTextFile(
      own,
      JSON.stringify(portFileAt(ports, a, 1)).replace(`"web":${ports.at(1).web}`, '"web":1e400')
        .replace(`"api":${ports.at(1).api}`, '"api":-3500'),
    );
    const check = await runCli(a, ["check"]);
    assert.equal(check.code, 1);
    assert.match(
      check.stdout,
      /^invalid: ".*wt0\/\.worktree-ports\.json": "web" is too large to be a number; "api" is -3500, not a port/m,
    );
    const env = await runCli(a, ["env", ...ports.args]);
    assert.equal(env.code, 0, env.stderr);
    assert.doesNotMatch(env.stdout, /Infinity|-3500/);
    assert.equal(env.stdout, `export WEB='${ports.at(1).web}'\nexport API='${ports.at(1).api}'\n`);
    assert.equal((await runCli(a, ["check"])).code, 0);
  });
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli rejects a config that is null, a broken link or too large, quoting little of it",
  async (t) => {
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const config = `${a}/worktree-ports.config.json`;
    const cases: [string, () => Promise<void>, RegExp][] = [
      ["null", () => Deno.writeTextFile(config, "null\n"), /it must be a JSON object, got null/],
      [
        "a broken symbolic link",
        () => Deno.symlink(`${a}/no-such-config.json`, config),
        /^error: Cannot read config ".*": it is a symbolic link to a file that does not exist/,
      ],
      [
        "1e400 as a port",
        () => Deno.writeTextFile(config, '{"ports": {"web": 1e400}}'),
        /port "web" must be an integer from 1 to 65535, got a number too large to use/,
      ],
      [
        "a huge value",
        () => Deno.writeTextFile(config, JSON.stringify({ stride: "x".repeat(100_000) })),
        /"stride" must be an integer from 1 to 65535, got "x{199}… \(100002 characters\)\n/,
      ],
    ];
    for (const [what, make, message] of cases) {
      await t.step(what, async () => {
        await Deno.remove(config).catch(() => {});
        await make();
        const before = await snapshot(repo.base);
        const result = await runCli(a, ["allocate"]);
        assert.equal(result.code, 2, result.stderr);
        assert.match(result.stderr, message);
        assert.ok(result.stderr.length < 1000, result.stderr);
        assert.deepEqual(await snapshot(repo.base), before);
      });
    }
  },
);

Deno.test("cli allocate --output stays in its own worktree, and a preview never repeats a held bundle", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
  await t.step("outside every worktree: never this worktree's own bundle", async () => {
    const outside = await Deno.makeTempFile({ suffix: ".json" });
    try {
      await Deno.remove(outside);
      const result = await runCli(a, ["allocate", ...ports.args, "--output", outside]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(slotOf(JSON.parse(result.stdout)), 2);
    } finally {
      await Deno.remove(outside).catch(() => {});
    }
  });
  await t.step("into another worktree's tree: refused, nothing changed", async () => {
    const before = await snapshot(repo.base);
    for (
      const output of [`${b}/.worktree-ports.json`, "../wt1/sub/ports.json", `${repo.root}/p.json`]
    ) {
      const result = await runCli(a, ["allocate", ...ports.args, "--output", output]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        result.stderr,
        /^error: Cannot write ".*": it is inside the worktree ".*", not this one/,
      );
    }
    assert.deepEqual(await snapshot(repo.base), before);
  });
  await t.step("a missing parent directory inside the worktree is created", async () => {
    const result = await runCli(b, ["allocate", ...ports.args, "--output", "run/ports/p.json"]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await readJson(`${b}/run/ports/p.json`), JSON.parse(result.stdout));
    assert.equal(await git(b, "status", "--porcelain"), "");
  });
});

Deno.test("cli allocate keeps the reservation of a locked worktree whose directory is away", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
  await git(repo.root, "worktree", "lock", "--reason", "on a removable disk", a);
  await Deno.rename(a, `${repo.base}/unplugged`);
  const result = await runCli(b, ["allocate", ...ports.args]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 2);
  const list = await runCli(b, ["list", "--json"]);
  const away = JSON.parse(list.stdout).find((row: { path: string }) => row.path === a);
  assert.equal(away.state, "absent");
  assert.deepEqual(away.ports, ports.at(1));
  assert.equal((await runCli(b, ["check"])).code, 0);
  // Without the copy, its ports are unknown, and it says so.
  const adminDirs = [...Deno.readDirSync(`${repo.root}/.git/worktrees`)].map((entry) => entry.name);
  for (const name of adminDirs) {
    await Deno.remove(`${repo.root}/.git/worktrees/${name}/worktree-ports.json`).catch(() => {});
  }
  const table = await runCli(b, ["list"]);
  assert.match(table.stdout, /wt0 +- +- +absent +locked, directory absent; its ports are unknown/);
});

Deno.test("cli allocate names the keys it drops from its own file", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
  const file = await readJson(`${a}/.worktree-ports.json`);
  await writeJson(`${a}/.worktree-ports.json`, { ...file, redis_port: 6390, my_note: "mine" });
  const result = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(
    result.stderr,
    /^warning: Rewriting ".*" dropped "redis_port", "my_note", which the config does not produce/,
  );
  assert.equal(slotOf(JSON.parse(result.stdout)), 1);
});

// ---------------------------------------------------------------------------
// Ports a user can actually use
// ---------------------------------------------------------------------------

Deno.test("cli allocate skips a slot that reaches a port browsers refuse", async () => {
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  // Slot 1 lands on a port browsers refuse, such as 6000.
  const ports = pickPorts(["web"], { stride: 100, slots: 3, blockedAt: { key: "web", slot: 1 } });
  const args = ["allocate", ...ports.args];
  const first = await runCli(a, args);
  assert.equal(first.code, 0, first.stderr);
  assert.deepEqual([slotOf(JSON.parse(first.stdout)), JSON.parse(first.stdout).web], [
    2,
    ports.at(2).web,
  ]);
  const second = await runCli(b, args);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(JSON.parse(second.stdout).web, ports.at(3).web);
});

Deno.test("cli allocate warns, and still allocates, when slot 0 holds a port browsers refuse", async () => {
  await using repo = await TempRepo.create();
  const result = await runCli(repo.root, ["allocate", "--port", "x11=6000", "--slots", "3"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(JSON.parse(result.stdout).x11, 6000);
  assert.match(
    result.stderr,
    /^warning: Slot 0 of this config, the main worktree's, holds 6000 \("x11"\), a port browsers refuse/m,
  );
});

const onLinux = Deno.build.os === "linux";

Deno.test({
  name:
    `cli allocate warns once per config when its ports lie in the ephemeral range, and check reports it${
      onLinux ? "" : " (skipped: not Linux)"
    }`,
  ignore: !onLinux,
  fn: async () => {
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    // Picked inside the range on purpose.
    const ports = pickPorts(["web", "api"], { slots: 5, region: LINUX_EPHEMERAL });
    const [first, last] = [ports.at(0), ports.at(5)];
    const result = await runCli(a, ["allocate", ...ports.args]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(JSON.parse(result.stdout).web, ports.at(1).web);
    // The CLI's --allow-read does not open /proc: Linux's default range, saying so.
    const expected = new RegExp(
      String
        .raw`^warning: Ports of this config lie in the ephemeral range 32768-60999 \(from Linux's default; Deno reads "/proc/sys/net/ipv4/ip_local_port_range" only with --allow-all\): ` +
        `"web" ${first.web} to ${last.web} \\(slots 0 to 5\\), "api" ${first.api} to ${last.api} \\(slots 0 to 5\\)\\.`,
    );
    const lines = result.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], expected);
    assert.match(lines[0], /see "Configuration" in the README\)$/);
    // Said once for the config: the next worktree's allocation is quiet.
    const [b] = await repo.addWorktrees("next", 1);
    const quiet = await runCli(b, ["allocate", ...ports.args]);
    assert.deepEqual([quiet.code, quiet.stderr], [0, ""]);
    // A changed config is warned about again.
    const changed = await runCli(b, ["allocate", ...ports.args, "--slots", "4"]);
    assert.match(changed.stderr, /^warning: Ports of this config lie in the ephemeral range/);

    const check = await runCli(a, ["check", ...ports.args]);
    assert.deepEqual([check.code, check.stdout], [0, "ok: 3 worktrees, no shared ports\n"]);
    // check says it every time: it is asked.
    assert.match(check.stderr, expected);
  },
});

Deno.test("cli allocate warns, naming the port, when the main worktree's base port already listens", async () => {
  await using repo = await TempRepo.create();
  using listener = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const result = await runCli(repo.root, ["allocate", "--port", `web=${port}`, "--slots", "1"]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 0);
  assert.match(
    result.stderr,
    new RegExp(
      `^warning: Port ${port} \\("web"\\) of slot 0 is already in use, but the main worktree`,
      "m",
    ),
  );
});

Deno.test("cli allocate --dry-run prints what allocate then writes, and writes nothing", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  assert.equal((await runCli(b, ["allocate", ...ports.args])).code, 0);
  const before = await snapshot(repo.base);
  const preview = await runCli(a, ["allocate", "--dry-run", ...ports.args]);
  assert.equal(preview.code, 0, preview.stderr);
  assert.deepEqual(await snapshot(repo.base), before);
  const real = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(real.code, 0, real.stderr);
  const withoutTime = (text: string) => {
    const file = JSON.parse(text);
    delete file.worktree_ports.allocated_at;
    return file;
  };
  assert.equal(slotOf(JSON.parse(preview.stdout)), 2);
  assert.deepEqual(withoutTime(preview.stdout), withoutTime(real.stdout));
  assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), JSON.parse(real.stdout));
});

Deno.test("cli slots --json lists slot 0 to slots, with templates filled and holders", async (t) => {
  // Slot 2 lands on a port browsers refuse.
  const ports = pickPorts(["web"], { stride: 100, slots: 4, blockedAt: { key: "web", slot: 2 } });
  const web = (slot: number) => ports.at(slot).web;
  await using repo = await TempRepo.create({
    config: { ...ports.config(), templates: { redirect: "http://localhost:{web}/oauth" } },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await t.step("json", async () => {
    const result = await runCli(repo.root, ["slots", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const slots = JSON.parse(result.stdout);
    assert.deepEqual(slots.map((info: { slot: number }) => info.slot), [0, 1, 2, 3, 4]);
    assert.deepEqual(slots[1], {
      slot: 1,
      state: "held",
      bundle: { web: web(1), redirect: `http://localhost:${web(1)}/oauth` },
      holders: [a],
      current: false,
      blocked: [],
      busy: [],
      denied: [],
    });
    assert.deepEqual(
      slots.map((info: { state: string }) => info.state),
      ["free", "held", "blocked", "free", "free"],
    );
    assert.deepEqual(slots[2].blocked, [web(2)]);
  });
  await t.step("table", async () => {
    const result = await runCli(a, ["slots", "--slots", "2"]);
    assert.equal(result.code, 0, result.stderr);
    const items = (
      slot: number,
    ) => [`web=${web(slot)}`, `redirect=http://localhost:${web(slot)}/oauth`];
    const notes = ["the main worktree's", `${a} (this worktree)`, `browsers refuse ${web(2)}`];
    const states = ["free", "held", "blocked"];
    const lines = result.stdout.split("\n").slice(0, -1);
    assert.match(lines[0], /^SLOT {2}STATE {4}BUNDLE +NOTE$/);
    // Each slot: its first line has the slot, state, first bundle items and note; its
    // other items wrap onto lines of their own under the bundle column.
    const bundleAt = lines[0].indexOf("BUNDLE");
    const noteAt = lines[0].indexOf("NOTE");
    const rows: string[][] = [];
    for (const line of lines.slice(1)) {
      if (line.startsWith(" ")) rows.at(-1)!.push(line.slice(bundleAt).trim());
      else rows.push([line]);
    }
    assert.equal(rows.length, 3, result.stdout);
    rows.forEach(([first, ...rest], slot) => {
      assert.equal(
        first.slice(0, bundleAt).trim().split(/\s+/).join(" "),
        `${slot} ${states[slot]}`,
      );
      assert.equal(first.slice(noteAt), notes[slot]);
      const bundle = [first.slice(bundleAt, noteAt).trim(), ...rest].join(" ").split(" ");
      assert.deepEqual(bundle, items(slot));
    });
    // Within 100 columns, unless the other columns leave the bundle no room
    // for more than one item to a line.
    for (const line of lines) {
      const cell = line.slice(bundleAt, line.startsWith(" ") ? undefined : noteAt).trim();
      assert.ok(line.length <= 100 || !cell.includes(" "), `${line.length} columns: ${line}`);
    }
  });
  await t.step("needs no write permission, and changes nothing", async () => {
    const before = await snapshot(repo.base);
    const flags = CLI_FLAGS.filter((flag) => flag !== "--allow-write");
    const result = await runCli(a, ["slots"], { flags });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await snapshot(repo.base), before);
  });
});

Deno.test("cli allocate fails naming the refused ports when every slot holds one, changing nothing", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  // The lock file, which any earlier allocation leaves behind, is no change.
  await Deno.writeTextFile(`${repo.root}/.git/worktree-ports.lock`, "");
  const before = await snapshot(repo.base);
  const result = await runCli(a, [
    "allocate",
    "--port",
    "irc=6665",
    "--stride",
    "1",
    "--slots",
    "4",
  ]);
  assert.equal(result.code, 1);
  assert.equal(
    result.stderr,
    "error: Cannot allocate ports: all 4 slots are taken (0 reserved by other worktrees, " +
      "0 in use by other processes, 4 holding a port browsers refuse: 6666, 6667, 6668, 6669; " +
      'run "worktree-ports slots" to see each slot and who holds it, or raise "slots")\n',
  );
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli check reads the config it warns about, and exits 2 when it is invalid", async () => {
  await using repo = await TempRepo.create();
  await writeJson(`${repo.root}/worktree-ports.config.json`, { ports: { web: 99999 } });
  const result = await runCli(repo.root, ["check"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /^error: Invalid config ".*": port "web" must be an integer/);
  assert.equal(result.stdout, "");
});

// ---------------------------------------------------------------------------
// Configs that change, and keys that become variables
// ---------------------------------------------------------------------------

/** Rewrites a worktree's copy of the config, as a user editing it there would. */
async function editConfig(worktree: string, config: unknown): Promise<void> {
  await writeJson(`${worktree}/worktree-ports.config.json`, config);
}

/** The ports of the config-change tests, at bases picked for one test. */
function configPorts(): PickedPorts<"web_port" | "api_port" | "db_port"> {
  return pickPorts(["web_port", "api_port", "db_port"], { slots: 50 });
}

/** A config with web_port alone. */
function webOnly(ports: PickedPorts<"web_port">) {
  return { ports: { web_port: ports.base.web_port }, stride: ports.stride, slots: ports.slots };
}

/** The same config with api_port and a template that names it added. */
function webAndApi(ports: PickedPorts<"web_port" | "api_port">) {
  return {
    ports: { web_port: ports.base.web_port, api_port: ports.base.api_port },
    templates: { api_url: "http://127.0.0.1:{api_port}" },
    stride: ports.stride,
    slots: ports.slots,
  };
}

Deno.test("cli show, env and exec rewrite a port file the config has changed under, keeping the slot", async (t) => {
  const ports = configPorts();
  const { web_port, api_port } = ports.at(1);
  await using repo = await TempRepo.create({ config: webOnly(ports) });
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  const updated = /^updated ".*\.worktree-ports\.json" to the current config \(slot 1 kept\)\n$/;
  await t.step("show KEY", async () => {
    await editConfig(a, webAndApi(ports));
    const result = await runCli(a, ["show", "api_port"]);
    assert.deepEqual([result.code, result.stdout], [0, `${api_port}\n`], result.stderr);
    assert.match(result.stderr, updated);
    const file = await readJson(`${a}/.worktree-ports.json`);
    assert.equal(slotOf(file), 1);
    assert.equal(file.api_url, `http://127.0.0.1:${api_port}`);
    const again = await runCli(a, ["show", "api_port"]);
    assert.deepEqual([again.stdout, again.stderr], [`${api_port}\n`, ""]);
  });
  await t.step("env", async () => {
    await editConfig(a, webOnly(ports));
    const result = await runCli(a, ["env", "--format", "json"]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { WEB_PORT: String(web_port) });
    // The keys the config no longer produces are dropped, and named.
    const [dropped, ...rest] = result.stderr.split(/(?<=\n)/);
    assert.match(dropped, /^warning: Rewriting ".*" dropped "api_port", "api_url"/);
    assert.match(rest.join(""), updated);
  });
  await t.step("exec", async () => {
    await editConfig(a, webAndApi(ports));
    const result = await runCli(a, ["exec", "--", "printenv", "API_URL"], {
      flags: [...CLI_FLAGS.filter((flag) => !flag.startsWith("--allow-run=")), "--allow-run"],
    });
    assert.deepEqual(
      [result.code, result.stdout],
      [0, `http://127.0.0.1:${api_port}\n`],
      result.stderr,
    );
    assert.match(result.stderr, updated);
  });
  await t.step("show without --allow-write names the flag and changes nothing", async () => {
    await editConfig(a, webOnly(ports));
    const before = await snapshot(repo.base);
    const result = await runCli(a, ["show"], { flags: ["--allow-run=git", "--allow-read"] });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /Missing permission: run again with --allow-write --allow-net=/);
    assert.deepEqual(await snapshot(repo.base), before);
  });
});

Deno.test("cli env moves an outdated file to another slot only when its new ports collide", async () => {
  const ports = configPorts();
  const db = ports.base.db_port;
  await using repo = await TempRepo.create({ config: webOnly(ports) });
  const [a, b] = await repo.addWorktrees("wt", 2);
  // b's own config holds one port: db_port, at its base at slot 0.
  await editConfig(b, { ports: { db_port: db }, stride: 10, slots: 50 });
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  const bFile = await runCli(b, ["allocate"]);
  assert.equal(bFile.code, 0, bFile.stderr);
  const bSlot = slotOf(JSON.parse(bFile.stdout));
  // a, at slot 1, adds a key whose slot-1 port is the one b holds.
  await editConfig(a, {
    ports: { web_port: ports.base.web_port, db_port: db + (bSlot - 1) * 10 },
    stride: 10,
  });
  const result = await runCli(a, ["env", "--format", "json"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /updated ".*" to the current config \(moved to slot \d+: /);
  const file = await readJson(`${a}/.worktree-ports.json`);
  assert.notEqual(slotOf(file), 1);
  const bPorts = Object.values(await readJson(`${b}/.worktree-ports.json`));
  assert.ok(!bPorts.includes(file.db_port), `${file.db_port} is b's`);
});

Deno.test("cli check reports an outdated file and --fix rewrites it for the same slot", async () => {
  const ports = configPorts();
  await using repo = await TempRepo.create({ config: webOnly(ports) });
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  assert.equal((await runCli(repo.root, ["check"])).code, 0);
  await editConfig(a, webAndApi(ports));
  const check = await runCli(repo.root, ["check"]);
  assert.equal(check.code, 1);
  assert.match(
    check.stdout,
    /^outdated: ".*\/wt0\/\.worktree-ports\.json" is not what the config renders for slot 1 now$/m,
  );
  const list = await runCli(repo.root, ["list", "--json"]);
  assert.deepEqual(
    JSON.parse(list.stdout).map((status: { state: string }) => status.state),
    ["none", "outdated"],
  );
  const fix = await runCli(repo.root, ["check", "--fix"]);
  assert.equal(fix.code, 0, fix.stdout + fix.stderr);
  assert.match(
    fix.stdout,
    new RegExp(
      `^updated ".*wt0" \\(outdated\\): web_port=${ports.at(1).web_port} -> .*\\(slot 1\\)$`,
      "m",
    ),
  );
  const file = await readJson(`${a}/.worktree-ports.json`);
  assert.equal(file.api_url, `http://127.0.0.1:${ports.at(1).api_port}`);
});

Deno.test("cli env keeps a file allocated with --port flags alone when called without them", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const allocated = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const before = await snapshot(repo.base);
  const env = await runCli(a, ["env", "--format", "json"]);
  assert.deepEqual([env.code, env.stderr], [0, ""]);
  assert.deepEqual(JSON.parse(env.stdout), {
    WEB: String(ports.at(1).web),
    API: String(ports.at(1).api),
  });
  assert.equal((await runCli(repo.root, ["check"])).code, 0);
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli --port adds to the config's ports or replaces one, and errors it causes name it", async (t) => {
  // "other" is the base a --port flag gives web_port in place of the config's.
  const ports = pickPorts(["web_port", "api_port", "other"], { slots: 50 });
  const [base, slot1] = [ports.base, ports.at(1)];
  await using repo = await TempRepo.create({
    config: {
      ports: { web_port: base.web_port },
      templates: { web_url: "http://127.0.0.1:{web_port}" },
      stride: 10,
    },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  await t.step("a new key is added beside the config's", async () => {
    const result = await runCli(a, ["allocate", "--port", `api_port=${base.api_port}`]);
    assert.equal(result.code, 0, result.stderr);
    const { worktree_ports: _, ...bundle } = JSON.parse(result.stdout);
    assert.deepEqual(bundle, {
      web_port: slot1.web_port,
      web_url: `http://127.0.0.1:${slot1.web_port}`,
      api_port: slot1.api_port,
    });
  });
  await t.step("a config key is replaced, templates follow", async () => {
    const result = await runCli(a, [
      ...["env", "--format", "json", "--port", `web_port=${base.other}`],
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), {
      WEB_PORT: String(slot1.other),
      WEB_URL: `http://127.0.0.1:${slot1.other}`,
    });
  });
  const before = await snapshot(repo.base);
  for (
    const [name, args, message] of [
      [
        "a flag's own mistake",
        ["--port", "web_port=65536"],
        /^error: Invalid option "--port": port "web_port" must be an integer from 1 to 65535, got 65536$/m,
      ],
      [
        "a flag that collides with the config",
        ["--port", `api_port=${slot1.web_port}`],
        new RegExp(
          `^error: Invalid option "--port" with config ".*worktree-ports\\.config\\.json": port "web_port" at slot 1 and port "api_port" at slot 0 both land on ${slot1.web_port}`,
          "m",
        ),
      ],
      [
        "stride",
        ["--stride", "0"],
        /^error: Invalid option "--stride": "stride" must be an integer from 1 to 65535, got 0$/m,
      ],
      [
        "stride that makes the config's ports collide",
        ["--stride", "1", "--port", `api_port=${base.web_port + 1}`],
        new RegExp(
          `^error: Invalid option "--port" and option "--stride" with config ".*": port "web_port" at slot 1 and port "api_port" at slot 0 both land on ${
            base.web_port + 1
          }`,
          "m",
        ),
      ],
    ] as const
  ) {
    await t.step(name, async () => {
      const result = await runCli(a, ["allocate", ...args]);
      assert.equal(result.code, 2);
      assert.match(result.stderr, message);
      assert.deepEqual(await snapshot(repo.base), before);
    });
  }
});

Deno.test("cli refuses keys whose variable names collide or are reserved, naming them, changing nothing", async (t) => {
  await using repo = await TempRepo.create({
    config: { ports: { web_port: 42000 }, templates: { WEB_PORT: "x" }, stride: 10 },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  const original = await Deno.readTextFile(`${a}/worktree-ports.config.json`);
  const before = await snapshot(repo.base);
  await t.step("a config whose keys collide", async () => {
    const result = await runCli(a, ["env"]);
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      /^error: Invalid config ".*": keys "web_port" and "WEB_PORT" both become the variable "WEB_PORT"/,
    );
  });
  await editConfig(a, { ports: { web_port: 42000 }, stride: 10 });
  await t.step("a --port key that would set PATH", async () => {
    const result = await runCli(a, ["exec", "--port", "path=45000", "--", "true"], {
      flags: [...CLI_FLAGS.filter((flag) => !flag.startsWith("--allow-run=")), "--allow-run"],
    });
    assert.equal(result.code, 2);
    assert.match(
      result.stderr,
      /^error: Invalid option "--port": key "path" would set "PATH", which commands need/,
    );
  });
  await Deno.writeTextFile(`${a}/worktree-ports.config.json`, original);
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli templates know the worktree: slot, branch, name and slug, updated when the branch changes", async (t) => {
  const ports = composePorts();
  const [slot1, slot2] = [ports.at(1), ports.at(2)];
  await using repo = await TempRepo.create({ config: composeRecipe(ports) });
  const login = `${repo.base}/app-login`;
  await git(repo.root, "worktree", "add", "-q", "-b", "Feature/Login_Page", login);
  const detached = await repo.addWorktree("Hot Fix");
  const envOf = async (dir: string) => {
    const result = await runCli(dir, ["env", "--format", "json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout);
  };
  await t.step("on a branch", async () => {
    assert.deepEqual(await envOf(login), {
      WEB_PORT: String(slot1.web_port),
      DB_PORT: String(slot1.db_port),
      COMPOSE_PROJECT_NAME: "myapp-feature-login-page",
      PUBLIC_URL: `http://feature-login-page.localhost:${slot1.web_port}`,
      DATABASE_URL: `postgres://app@127.0.0.1:${slot1.db_port}/app_1`,
    });
  });
  await t.step("detached: the slug comes from the directory's name", async () => {
    const env = await envOf(detached);
    assert.equal(env.COMPOSE_PROJECT_NAME, "myapp-hot-fix");
    assert.equal(env.DATABASE_URL, `postgres://app@127.0.0.1:${slot2.db_port}/app_2`);
  });
  await t.step("switching the branch rewrites the file for the same slot", async () => {
    await git(login, "switch", "-q", "-c", "bugfix/42");
    const result = await runCli(login, ["show", "public_url"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `http://bugfix-42.localhost:${slot1.web_port}\n`);
    assert.match(result.stderr, /updated ".*" to the current config \(slot 1 kept\)/);
  });
});

Deno.test("cli show --config judges and rewrites the file by that config", async () => {
  const ports = configPorts();
  const web = ports.at(1).web_port;
  await using repo = await TempRepo.create({ config: webOnly(ports) });
  const [a] = await repo.addWorktrees("wt", 1);
  const other = `${repo.base}/other.json`;
  await writeJson(other, {
    ...webOnly(ports),
    templates: { web_url: "http://127.0.0.1:{web_port}" },
  });
  assert.equal((await runCli(a, ["allocate", "--config", other])).code, 0);
  const same = await runCli(a, ["show", "web_url", "--config", other]);
  assert.deepEqual(
    [same.code, same.stdout, same.stderr],
    [0, `http://127.0.0.1:${web}\n`, ""],
  );
  await writeJson(other, {
    ...webOnly(ports),
    templates: { web_url: "http://localhost:{web_port}" },
  });
  const changed = await runCli(a, ["show", "web_url", "--config", other]);
  assert.deepEqual([changed.code, changed.stdout], [0, `http://localhost:${web}\n`]);
  assert.match(
    changed.stderr,
    /^updated ".*" to the current config \(slot 1 kept\)\n$/,
  );
});

// ---------------------------------------------------------------------------
// Found by trying to break it: git's own files, odd layouts, odd keys
// ---------------------------------------------------------------------------

Deno.test("cli allocate warns when a linked worktree holds one of the main worktree's base ports, and --fix moves that one", async () => {
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  // The default stride and slots, and one stride more: the main worktree's base lies a stride up.
  const { base } = pickPorts(["port"], { stride: 100, slots: 51 });
  const mainBase = base.port + 100;
  // Another branch's config: its slot 1 lands on the main worktree's base port.
  await writeJson(`${a}/worktree-ports.config.json`, { ports: { port: base.port } });
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await writeJson(`${repo.root}/worktree-ports.config.json`, { ports: { port: mainBase } });
  const main = await runCli(repo.root, ["allocate"]);
  assert.equal(main.code, 0, main.stderr);
  assert.match(
    main.stderr,
    new RegExp(
      `^warning: Port ${mainBase} \\("port"\\) of this main worktree is also held by ".*wt0/\\.worktree-ports\\.json"`,
      "m",
    ),
  );
  const fix = await runCli(repo.root, ["check", "--fix"]);
  assert.match(fix.stdout, /^moved ".*wt0" \(duplicate\)/);
  assert.equal(slotOf(await readJson(`${repo.root}/.worktree-ports.json`)), 0);
});

Deno.test("cli allocate --output never writes into git's own directory or breaks .gitignore", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  for (
    const [where, cwd, output] of [
      ["HEAD", repo.root, ".git/HEAD"],
      ["config", repo.root, ".git/config"],
      ["a linked worktree's .git file", a, ".git"],
      ["its admin entry", a, `${repo.root}/.git/worktrees/wt0/ports.json`],
    ]
  ) {
    await t.step(where, async () => {
      const before = await snapshot(repo.base);
      const result = await runCli(cwd, ["allocate", ...ports.args, "--output", output]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /^error: Cannot write ".*": it is inside git's own directory/);
      assert.deepEqual(await snapshot(repo.base), before);
    });
  }
  await t.step("a name with a line break", async () => {
    const before = await snapshot(repo.base);
    const result = await runCli(a, ["allocate", ...ports.args, "--output", "new\nline.json"]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /a path with a line break cannot be kept out of git/);
    assert.deepEqual(await snapshot(repo.base), before);
  });
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli allocate removes stale temporary files in git's directory, and writes through a linked exclude file",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const shared = `${repo.base}/shared-exclude`;
    await Deno.writeTextFile(shared, "*.log\n");
    await Deno.remove(`${repo.root}/.git/info/exclude`);
    await Deno.symlink(shared, `${repo.root}/.git/info/exclude`);
    assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
    assert.ok((await Deno.lstat(`${repo.root}/.git/info/exclude`)).isSymlink);
    assert.equal(
      await Deno.readTextFile(shared),
      "*.log\n/.worktree-ports.json\n/.worktree-ports.json.*.tmp\n",
    );
    const stale = [
      `${shared}.12345-abcdefgh.tmp`,
      `${repo.root}/.git/worktrees/wt0/worktree-ports.json.12345-abcdefgh.tmp`,
    ];
    for (const path of stale) await Deno.writeTextFile(path, "x");
    // The exclude rules are in place: only allocations that write them clean beside them.
    await Deno.writeTextFile(shared, "*.log\n");
    assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
    for (const path of stale) await assert.rejects(Deno.stat(path), Deno.errors.NotFound, path);
  },
);

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli allocate and release replace a port file that is a symbolic link loop",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const own = `${a}/.worktree-ports.json`;
    await Deno.symlink(own, own);
    const allocate = await runCli(a, ["allocate", ...ports.args]);
    assert.equal(allocate.code, 0, allocate.stderr);
    assert.match(allocate.stderr, /is unusable \(it is a symbolic link loop\)/);
    assert.ok((await Deno.lstat(own)).isFile);
    await Deno.remove(own);
    await Deno.symlink(own, own);
    assert.equal((await runCli(a, ["release"])).code, 0);
    await assert.rejects(Deno.lstat(own), Deno.errors.NotFound);
  },
);

Deno.test({
  name: `cli allocate reserves an unreadable sibling's ports from its kept copy, naming the fix${
    "reason" in UNPRIVILEGED ? ` (skipped: ${UNPRIVILEGED.reason})` : ""
  }`,
  ignore: "reason" in UNPRIVILEGED,
  fn: async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a, b] = await repo.addWorktrees("wt", 2);
    const home = `${repo.base}/home`;
    await Deno.mkdir(`${home}/deno`, { recursive: true });
    const prefix = "prefix" in UNPRIVILEGED ? UNPRIVILEGED.prefix : [];
    if (prefix.length > 0) {
      await Deno.chmod(repo.base, 0o755);
      assert.equal((await run("chown", ["-R", "65534:65534", repo.base])).code, 0);
    }
    // A copy the other user can read wherever this checkout lives.
    const cli = `${await copyPackage(`${repo.base}/package`)}/cli.ts`;
    const allocate = (cwd: string) =>
      run(prefix[0] ?? Deno.execPath(), [
        ...prefix.slice(1),
        ...(prefix.length > 0 ? [Deno.execPath()] : []),
        "run",
        ...CLI_FLAGS,
        cli,
        "allocate",
        ...ports.args,
      ], { cwd, env: { HOME: home, DENO_DIR: `${home}/deno`, WORKTREE_PORTS_HOME: home } });
    const first = await allocate(b);
    assert.equal(first.code, 0, first.stderr);
    await Deno.chmod(`${b}/.worktree-ports.json`, 0o000);
    const result = await allocate(a);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(slotOf(JSON.parse(result.stdout)), 2);
    assert.match(
      result.stderr,
      new RegExp(
        `^warning: Port file ".*wt1/\\.worktree-ports\\.json" is unreadable \\(permission denied\\); reserving the ports it held when last written \\(${
          portsAt(ports, 1).join(", ")
        }\\); to fix, make it readable \\("chmod u\\+r .*"\\)`,
        "m",
      ),
    );
  },
});

testWhere(
  { tools: ["bash"] },
  "cli env and exec leave out a port file's PATH and LD_PRELOAD keys, with a warning",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const allocated = await runCli(a, ["allocate", ...ports.args]);
    assert.equal(allocated.code, 0, allocated.stderr);
    const file = `${a}/.worktree-ports.json`;
    // As a committed or planted file would have it.
    await writeJson(file, {
      path: "/x/evilbin",
      ld_preload: "/tmp/x.so",
      git_dir: ports.at(3).web,
      api: ports.at(1).api,
      API: ports.at(2).api,
      ...await readJson(file),
    });
    const env = await runCli(a, ["env", "--format", "json"]);
    assert.equal(env.code, 0, env.stderr);
    assert.deepEqual(JSON.parse(env.stdout), { WEB: String(ports.at(1).web) });
    const warnings = env.stderr.trim().split("\n");
    assert.equal(warnings.length, 2, env.stderr);
    // Without a config, the file was allocated with --port flags: they give
    // ports, under names no config would refuse.
    assert.match(
      warnings[0],
      /^warning: Left out "path", "ld_preload", "git_dir" of ".*": with no config, a port file gives only ports/,
    );
    assert.match(warnings[1], /^warning: Left out keys "api" and "API" .*the variable "API"/);
    const exec = await runCli(
      a,
      [
        "exec",
        "--",
        "bash",
        "-c",
        'printf "%s|%s|%s|%s|%s" "$PATH" "$LD_PRELOAD" "$GIT_DIR" "$WEB" "$API"',
      ],
      { flags: ["--allow-run", ...CLI_FLAGS.slice(1)] },
    );
    assert.equal(exec.code, 0, exec.stderr);
    const [path, preload, gitDir, web, api] = exec.stdout.split("|");
    assert.notEqual(path, "/x/evilbin");
    assert.deepEqual([preload, gitDir, web, api], ["", "", String(ports.at(1).web), ""]);
    assert.match(exec.stderr, /^warning: Left out "path", "ld_preload", "git_dir" of /m);
  },
);

Deno.test("cli env gives a fresh slot for a file copied from a removed worktree whose slot another holds", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [x, b, c] = await repo.addWorktrees("wt", 3);
  const first = await runCli(x, ["allocate", ...ports.args]);
  assert.equal(first.code, 0, first.stderr);
  const saved = await Deno.readTextFile(`${x}/.worktree-ports.json`);
  await git(repo.root, "worktree", "remove", "--force", x);
  const taken = await runCli(c, ["allocate", ...ports.args]);
  assert.equal(taken.code, 0, taken.stderr);
  assert.equal(slotOf(JSON.parse(taken.stdout)), 1);
  await Deno.writeTextFile(`${b}/.worktree-ports.json`, saved);

  // Its slot is c's by now: show never prints another worktree's ports, and
  // with no config it cannot check them.
  const show = await runCli(b, ["show"]);
  assert.deepEqual([show.code, show.stdout], [1, ""]);
  assert.match(
    show.stderr,
    new RegExp(`^error: ".*" was written for "${x}", which is no worktree now `, "m"),
  );

  const env = await runCli(b, ["env", "--format", "json", ...ports.args]);
  assert.equal(env.code, 0, env.stderr);
  assert.deepEqual(JSON.parse(env.stdout), {
    WEB: String(ports.at(2).web),
    API: String(ports.at(2).api),
  });
  assert.match(env.stderr, /its slot 1 is another worktree's; this worktree gets slot 2 instead/);
  const file = await readJson(`${b}/.worktree-ports.json`);
  assert.deepEqual([slotOf(file), (file.worktree_ports as { worktree: string }).worktree], [2, b]);
  const check = await runCli(b, ["check"]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
});

Deno.test("cli env keeps the slot of a worktree moved with git worktree move, rewriting its path", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const first = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(first.code, 0, first.stderr);
  const moved = `${repo.base}/moved`;
  await git(repo.root, "worktree", "move", a, moved);
  // Without a config, show cannot check the file: it says what to run.
  const show = await runCli(moved, ["show", "web"]);
  assert.deepEqual([show.code, show.stdout], [1, ""]);
  assert.match(show.stderr, /which is no worktree now \(moved with its worktree, or copied/);
  const env = await runCli(moved, ["env", "--format", "json", ...ports.args]);
  assert.equal(env.code, 0, env.stderr);
  assert.deepEqual(JSON.parse(env.stdout), {
    WEB: String(ports.at(1).web),
    API: String(ports.at(1).api),
  });
  assert.equal(
    env.stderr,
    `recorded this worktree's path in "${moved}/.worktree-ports.json" (slot 1 kept)\n`,
  );
  const file = await readJson(`${moved}/.worktree-ports.json`);
  assert.deepEqual([slotOf(file), (file.worktree_ports as { worktree: string }).worktree], [
    1,
    moved,
  ]);
  const again = await runCli(moved, ["show", "web"]);
  assert.deepEqual([again.stdout, again.stderr], [`${ports.at(1).web}\n`, ""]);
});

Deno.test("cli check --fix warns about the keys a moved duplicate's file loses", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(first.code, 0, first.stderr);
  // An older allocator's file with a's ports, and keys the user added.
  const [slot1, slot2] = [ports.at(1), ports.at(2)];
  await writeJson(`${b}/.worktree-ports.json`, {
    ...slot1,
    redis_port: 6380,
    my_note: "staging",
  });
  const fixed = await runCli(a, ["check", "--fix", ...ports.args]);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  assert.equal(
    fixed.stdout,
    `moved "${b}" (duplicate): web=${slot1.web} api=${slot1.api} redis_port=6380 -> ` +
      `web=${slot2.web} api=${slot2.api} (slot 2)\n` +
      "ok: 3 worktrees, no shared ports\n",
  );
  assert.equal(
    fixed.stderr,
    `warning: Rewriting "${b}/.worktree-ports.json" dropped "redis_port", "my_note", which the ` +
      `config does not produce (add them to the config's "ports" or "templates" to keep them)\n`,
  );
});

Deno.test("cli allocate --output refuses to replace a tracked file that is no port file", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  await Deno.writeTextFile(`${repo.root}/README.md`, "# My project\n");
  await git(repo.root, "add", "README.md");
  await git(repo.root, "commit", "-q", "-m", "readme");
  const [a] = await repo.addWorktrees("wt", 1);
  const before = await snapshot(repo.base);
  const result = await runCli(a, ["allocate", ...ports.args, "--output", "README.md"]);
  assert.equal(result.code, 2, result.stderr);
  assert.equal(result.stdout, "");
  assert.match(
    result.stderr,
    /^error: Cannot write ".*wt0\/README\.md": it is not a port file \(not valid JSON\), and writing would replace it/,
  );
  assert.deepEqual(await snapshot(repo.base), before);
  assert.equal(await git(a, "status", "--porcelain"), "");
});

Deno.test("cli works in a main worktree whose git directory is elsewhere (--separate-git-dir)", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const main = `${repo.base}/sepwt`;
  await git(repo.base, "init", "-q", "-b", "main", "--separate-git-dir", "sep.git", main);
  await git(main, "commit", "-q", "--allow-empty", "-m", "initial");
  await git(main, "worktree", "add", "-q", "--detach", `${repo.base}/linked`);
  await Deno.mkdir(`${main}/sub`);
  const allocated = await runCli(`${main}/sub`, ["allocate", ...ports.args]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const file = await readJson(`${main}/.worktree-ports.json`);
  assert.equal(file.web, ports.base.web);
  assert.equal((file.worktree_ports as { worktree: string }).worktree, main);
  const linked = await runCli(`${repo.base}/linked`, ["allocate", ...ports.args]);
  assert.equal(linked.code, 0, linked.stderr);
  const list = await runCli(main, ["list", "--json"]);
  assert.equal(list.code, 0, list.stderr);
  const statuses = JSON.parse(list.stdout) as { path: string; slot: number; current: boolean }[];
  assert.deepEqual(
    statuses.map(({ path, slot, current }) => ({ path, slot, current })),
    [{ path: main, slot: 0, current: true }, {
      path: `${repo.base}/linked`,
      slot: 1,
      current: false,
    }],
  );
});

Deno.test("cli reads a .bare layout's folder as the bare repository and works in its worktrees", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const project = `${repo.base}/project`;
  await git(repo.base, "clone", "-q", "--bare", "main", "project/.bare");
  await Deno.writeTextFile(`${project}/.git`, "gitdir: ./.bare\n");
  await git(project, "worktree", "add", "-q", "--detach", "f1");
  const allocated = await runCli(`${project}/f1`, ["allocate", ...ports.args]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const list = await runCli(project, ["list", "--json"]);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(
    (JSON.parse(list.stdout) as { path: string }[]).map((status) => status.path),
    [`${project}/f1`],
  );
  const check = await runCli(project, ["check"]);
  assert.equal(check.code, 0, check.stderr);
  assert.equal(check.stdout, "ok: 1 worktree, no shared ports\n");
  const allocate = await runCli(project, ["allocate", ...ports.args]);
  assert.equal(allocate.code, 2);
  assert.match(allocate.stderr, /is a bare repository, which has no files/);
  await assert.rejects(Deno.stat(`${project}/.worktree-ports.json`), Deno.errors.NotFound);
});

Deno.test("cli slots holds the slots allocate skips for a damaged, unreadable or away worktree", async (t) => {
  const ports = pickPorts(["web", "api"]);
  const cases: [string, (dir: string, repo: TempRepo) => Promise<void>][] = [
    ["a damaged file keeps the ports its text names", async (dir) => {
      const text = await Deno.readTextFile(`${dir}/.worktree-ports.json`);
      await Deno.writeTextFile(`${dir}/.worktree-ports.json`, text.slice(0, text.indexOf(",") + 1));
    }],
    ["an unreadable file keeps the ports of its copy in git's dir", async (dir) => {
      await Deno.writeTextFile(`${dir}/.worktree-ports.json`, "not json at all");
    }],
    ["a locked worktree whose directory is away keeps its ports", async (dir, repo) => {
      await git(repo.root, "worktree", "lock", dir);
      await Deno.rename(dir, `${dir}-away`);
    }],
  ];
  for (const [name, damage] of cases) {
    await t.step(name, async () => {
      await using repo = await TempRepo.create();
      const [a, b] = await repo.addWorktrees("wt", 2);
      const first = await runCli(b, ["allocate", ...ports.args]);
      assert.equal(first.code, 0, first.stderr);
      await damage(b, repo);
      const slots = await runCli(a, ["slots", "--json", ...ports.args]);
      assert.equal(slots.code, 0, slots.stderr);
      const slot1 = (JSON.parse(slots.stdout) as { state: string; holders: string[] }[])[1];
      assert.deepEqual(slot1, { ...slot1, state: "held", holders: [b] });
      const dryRun = await runCli(a, ["allocate", "--dry-run", ...ports.args]);
      assert.equal(dryRun.code, 0, dryRun.stderr);
      assert.equal(slotOf(JSON.parse(dryRun.stdout)), 2);
    });
  }
});

Deno.test("cli escapes control characters in keys instead of sending them to the terminal", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const key = "a\u001b[2J\nb";
  // The port the odd key holds: list probes it.
  const port = pickPorts(["key"], { slots: 0, avoid: [ports] }).base.key;
  const escaped = JSON.stringify(key);
  const raw = /\p{Cc}/u;
  const allocated = await runCli(repo.root, ["allocate", ...ports.args]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const file = `${repo.root}/.worktree-ports.json`;
  const written = await readJson(file);
  await t.step("in the list table", async () => {
    await writeJson(file, { ...written, [key]: port });
    const list = await runCli(repo.root, ["list"], { env: { NO_COLOR: "1" } });
    assert.equal(list.code, 0, list.stderr);
    assert.ok(list.stdout.includes(`${escaped}=${port}`), list.stdout);
    assert.doesNotMatch(list.stdout.replaceAll("\n", ""), raw);
  });
  await t.step("in the dropped-key warning", async () => {
    await writeJson(file, { ...written, [key]: port });
    const result = await runCli(repo.root, ["allocate", ...ports.args]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(result.stderr.includes(`dropped ${escaped}, `), result.stderr);
    assert.doesNotMatch(result.stderr.replaceAll("\n", ""), raw);
  });
  await t.step("in an invalid port file's note", async () => {
    await writeJson(file, { ...written, [key]: 70000 });
    const list = await runCli(repo.root, ["list"], { env: { NO_COLOR: "1" } });
    assert.ok(list.stdout.includes(`${escaped} is `), list.stdout);
    assert.doesNotMatch(list.stdout.replaceAll("\n", ""), raw);
  });
  await t.step("in config and option errors", async () => {
    await writeJson(`${repo.root}/worktree-ports.config.json`, { ports: { [key]: 3000 } });
    const config = await runCli(repo.root, ["allocate"]);
    await Deno.remove(`${repo.root}/worktree-ports.config.json`);
    assert.equal(config.code, 2);
    assert.ok(config.stderr.includes(`key ${escaped} in "ports"`), config.stderr);
    const option = await runCli(repo.root, ["allocate", "--port", `${key}=3000`]);
    assert.equal(option.code, 2);
    assert.ok(option.stderr.includes(`key ${escaped} in "ports"`), option.stderr);
    for (const result of [config, option]) {
      assert.doesNotMatch(result.stderr.replaceAll("\n", ""), raw);
    }
  });
});

testWhere(
  {
    unix:
      "file modes that deny access (chmod) and symbolic links, which Windows makes only with privileges",
  },
  "cli names the lock in one line when it cannot be opened, and changes nothing",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    const cases: [string, (lock: string) => Promise<void>, RegExp][] = [
      ["a directory", (lock) => Deno.mkdir(lock), /it is a directory \(remove it; /],
      [
        "a symbolic link loop",
        (lock) => Deno.symlink(lock, lock),
        /it is a symbolic link loop \(remove the link; /,
      ],
      [
        "a link to a missing folder",
        (lock) => Deno.symlink("/nonexistent-worktree-ports-dir/lock", lock),
        /it is a symbolic link to a folder that does not exist \(remove the link; /,
      ],
    ];
    for (const [name, make, reason] of cases) {
      await t.step(name, async () => {
        await using repo = await TempRepo.create();
        const lock = `${repo.root}/.git/worktree-ports.lock`;
        await make(lock);
        const result = await runCli(repo.root, ["allocate", ...ports.args]);
        assert.equal(result.code, 1);
        const stderr = result.stderr;
        assert.ok(stderr.startsWith(`error: Cannot open the lock "${lock}": `), stderr);
        assert.match(stderr, reason);
        assert.doesNotMatch(stderr, /os error/);
        assert.equal(stderr.split("\n").length, 2, stderr);
        await assert.rejects(Deno.lstat(`${repo.root}/.worktree-ports.json`), Deno.errors.NotFound);
      });
    }
    const unreadable = await TempRepo.create();
    try {
      const lock = `${unreadable.root}/.git/worktree-ports.lock`;
      await Deno.writeTextFile(lock, "");
      await Deno.chmod(lock, 0o000);
      const canOpen = await Deno.open(lock, { read: true, write: true }).then(
        (file) => (file.close(), true),
        () => false,
      );
      await t.step({
        name: "a file this user may not open" +
          (canOpen ? " (skipped: this user may open mode 000 files)" : ""),
        ignore: canOpen,
        fn: async () => {
          const result = await runCli(unreadable.root, ["allocate", ...ports.args]);
          assert.equal(result.code, 1);
          assert.match(
            result.stderr,
            /^error: Cannot open the lock ".*": permission denied \(make it, and the folder ".*\.git", readable and writable by this user\)\n$/,
          );
        },
      });
    } finally {
      await unreadable[Symbol.asyncDispose]();
    }
  },
);

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli names a config that is a symbolic link loop in one line",
  async () => {
    await using repo = await TempRepo.create();
    const config = `${repo.root}/worktree-ports.config.json`;
    await Deno.symlink(config, config);
    const result = await runCli(repo.root, ["allocate"]);
    assert.equal(result.code, 2);
    assert.equal(
      result.stderr,
      `error: Cannot read config "${config}": it is a symbolic link loop (point the link at a file, or remove it)\n`,
    );
    await assert.rejects(Deno.lstat(`${repo.root}/.worktree-ports.json`), Deno.errors.NotFound);
  },
);

Deno.test("cli refuses a --port key given twice, naming the key and both flags", async (t) => {
  await using repo = await TempRepo.create();
  for (const command of ["allocate", "env", "slots"]) {
    await t.step(command, async () => {
      const result = await runCli(repo.root, [command, "--port", "p=3000", "--port", "p=4000"]);
      assert.equal(result.code, 2);
      assert.match(
        result.stderr,
        /^error: Option "--port" names the key "p" more than once \("p=3000" and "p=4000"; give each key once\)\n\nUsage: /,
      );
      await assert.rejects(Deno.lstat(`${repo.root}/.worktree-ports.json`), Deno.errors.NotFound);
    });
  }
});

Deno.test("cli refuses templates no environment can carry, and keys shells treat specially", async (t) => {
  await using repo = await TempRepo.create();
  const a = await repo.addWorktree("w".repeat(60));
  for (
    const [what, config, message] of [
      ["a NUL", { templates: { v: "a\u0000b" } }, /holds a NUL character/],
      ["half a surrogate pair", { templates: { v: "\ud800x" } }, /half of a UTF-16 surrogate pair/],
      ["IFS", { ports: { ifs: 22000 } }, /"ifs"/],
      // 120,000 bytes of config; each {slug} becomes the 60 characters of the worktree's name.
      [
        "a port file no worktree could read",
        { templates: { big: "{slug}".repeat(20_000) } },
        /render a port file larger than 1048576 bytes/,
      ],
    ] as const
  ) {
    await t.step(what, async () => {
      await writeJson(`${a}/worktree-ports.config.json`, config);
      // The lock file, which any earlier allocation leaves behind, is no change.
      await Deno.writeTextFile(`${repo.root}/.git/worktree-ports.lock`, "");
      const before = await snapshot(repo.base);
      const result = await runCli(a, ["allocate"]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.deepEqual(await snapshot(repo.base), before);
    });
  }
});

Deno.test("cli allocate writes each env_file as env --format dotenv prints it, out of git, and release removes them", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create({
    config: {
      ...ports.config(),
      templates: { url: "http://127.0.0.1:{web}/", name: "it's {name}" },
      env_file: [".env.ports", "config/dev.env"],
    },
  });
  const [a, b] = await repo.addWorktrees("wt", 2);
  const allocated = await runCli(a, ["allocate"]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const dotenv = await runCli(a, ["env", "--format", "dotenv"]);
  assert.equal(dotenv.code, 0, dotenv.stderr);
  const header = "# Written by worktree-ports from this worktree's port file; do not edit " +
    "(it is rewritten)\n";
  for (const file of [".env.ports", "config/dev.env"]) {
    assert.equal(await Deno.readTextFile(`${a}/${file}`), header + dotenv.stdout);
  }
  assert.match(dotenv.stdout, new RegExp(`^WEB=${ports.at(1).web}\nAPI=${ports.at(1).api}\n`));
  assert.equal(await git(a, "status", "--porcelain"), "", "the env files stay out of git");
  // Another worktree gets its own.
  assert.equal((await runCli(b, ["allocate"])).code, 0);
  assert.match(await Deno.readTextFile(`${b}/.env.ports`), new RegExp(`WEB=${ports.at(2).web}`));
  const released = await runCli(a, ["release"]);
  assert.equal(released.code, 0, released.stderr);
  assert.equal(
    released.stdout,
    `released "${a}/.worktree-ports.json"\n` +
      `removed the env file "${a}/.env.ports"\nremoved the env file "${a}/config/dev.env"\n`,
  );
  await assert.rejects(Deno.stat(`${a}/.env.ports`), Deno.errors.NotFound);
  // Ignored files do not stop git from removing a worktree.
  await git(repo.root, "worktree", "remove", b);
});

Deno.test("cli allocate refuses an env_file that would replace a file it did not write, and changes nothing", async (t) => {
  const ports = pickPorts(["web"]);
  await using repo = await TempRepo.create({
    config: { ...ports.config(), env_file: ".env.local" },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  await Deno.writeTextFile(`${a}/.env.local`, "SECRET=keep me\n");
  for (const command of ["allocate", "env", "exec"]) {
    await t.step(command, async () => {
      const before = await snapshot(repo.base);
      const result = await runCli(
        a,
        command === "exec" ? ["exec", "true"] : [command],
        command === "exec" ? { flags: ["--allow-run", ...CLI_FLAGS.slice(1)] } : {},
      );
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        result.stderr,
        /^error: Cannot write the env file ".*\/\.env\.local" that the config's "env_file" names: this tool did not write it, and writing would replace it \(rename "\.env\.local" in "env_file", or remove the file first\)\n$/,
      );
      assert.deepEqual(await snapshot(repo.base), before);
    });
  }
  // An empty file holds nothing to lose.
  await Deno.writeTextFile(`${a}/.env.local`, "");
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  assert.match(await Deno.readTextFile(`${a}/.env.local`), /^# Written by worktree-ports/);
  // One put there later: check names it, and does not send the user to
  // check --fix, which cannot move it either.
  await Deno.writeTextFile(`${a}/.env.local`, "SECRET=keep me\n");
  const check = await runCli(a, ["check"]);
  assert.equal(check.code, 1);
  assert.equal(
    check.stdout,
    `outdated: env file "${a}/.env.local" is a file this tool did not write (remove it, or name ` +
      `another file in "env_file")\n`,
  );
  assert.equal(check.stderr, "");
  const fix = await runCli(a, ["check", "--fix"]);
  assert.equal(fix.code, 2);
  assert.equal(await Deno.readTextFile(`${a}/.env.local`), "SECRET=keep me\n");
});

Deno.test("cli allocate fails, changing nothing, when an env_file cannot hold a value exactly", async () => {
  const ports = pickPorts(["web"]);
  await using repo = await TempRepo.create({
    config: { ...ports.config(), templates: { odd: "a${{b}}" }, env_file: ".env.ports" },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  const before = await snapshot(repo.base);
  const result = await runCli(a, ["allocate"]);
  assert.equal(result.code, 2, result.stderr);
  assert.match(
    result.stderr,
    /^error: Cannot write the env file ".*\/\.env\.ports": Cannot write "ODD" as dotenv: its value holds "\$\{", .* \(change the value, or leave the file out of "env_file"\)\n$/,
  );
  assert.deepEqual(await snapshot(repo.base), before);
});

Deno.test("cli check reports an env file that differs from the bundle, and check --fix rewrites it", async () => {
  const ports = pickPorts(["web"]);
  await using repo = await TempRepo.create({
    config: { ...ports.config(), env_file: ".env.ports" },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  const written = await Deno.readTextFile(`${a}/.env.ports`);
  await Deno.writeTextFile(`${a}/.env.ports`, written.replace(/WEB=\d+/, "WEB=1"));
  const check = await runCli(a, ["check"]);
  assert.equal(check.code, 1, check.stderr);
  assert.equal(
    check.stdout,
    `outdated: env file "${a}/.env.ports" does not hold the port file's bundle\n`,
  );
  const fixed = await runCli(a, ["check", "--fix"]);
  assert.equal(fixed.code, 0, fixed.stderr);
  assert.equal(
    fixed.stdout,
    `updated "${a}" (outdated): web=${ports.at(1).web} kept (slot 1)\n` +
      "ok: 2 worktrees, no shared ports\n",
  );
  assert.equal(await Deno.readTextFile(`${a}/.env.ports`), written);
  await Deno.remove(`${a}/.env.ports`);
  assert.equal(
    (await runCli(a, ["check"])).stdout,
    `outdated: env file "${a}/.env.ports" is missing\n`,
  );
  // allocate puts a missing env file back, its port file unchanged.
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  assert.equal(await Deno.readTextFile(`${a}/.env.ports`), written);
});

Deno.test("cli allocate refuses an env_file inside another worktree, as it refuses such an output", async () => {
  const ports = pickPorts(["web"]);
  await using repo = await TempRepo.create({
    config: { ...ports.config(), env_file: "nested/.env.ports" },
  });
  // A worktree nested inside the main one.
  await git(repo.root, "worktree", "add", "-q", "--detach", `${repo.root}/nested`);
  const before = await snapshot(repo.base);
  const result = await runCli(repo.root, ["allocate"]);
  assert.equal(result.code, 2, result.stderr);
  assert.equal(
    result.stderr,
    `error: Cannot write the env file "${repo.root}/nested/.env.ports" that the config's ` +
      `"env_file" names: it is inside "${repo.root}/nested", a worktree or repository of its own\n`,
  );
  assert.deepEqual(await snapshot(repo.base), before);
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli allocate, check --fix and release never write or remove an env file a symbolic link leads out of the worktree",
  async () => {
    const ports = pickPorts(["web"]);
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a] = await repo.addWorktrees("wt", 1);
    assert.equal((await runCli(a, ["allocate"])).code, 0);
    // Then the config names an env file behind a link to a folder outside.
    await writeJson(`${a}/worktree-ports.config.json`, {
      ...ports.config(),
      env_file: "link/app.env",
    });
    await Deno.mkdir(`${repo.base}/outside`);
    await Deno.symlink(`${repo.base}/outside`, `${a}/link`);
    // One that looks like this tool's, which release must not take for its own.
    const planted = "# Written by worktree-ports from this worktree's port file; do not edit " +
      "(it is rewritten)\nWEB=1\n";
    await Deno.writeTextFile(`${repo.base}/outside/app.env`, planted);
    const before = await snapshot(repo.base);
    const refusal =
      `Cannot write the env file "${a}/link/app.env" that the config's "env_file" names: a ` +
      `symbolic link on its way leads out of the worktree, to "${repo.base}/outside"`;
    const allocated = await runCli(a, ["allocate"]);
    assert.deepEqual([allocated.code, allocated.stderr], [2, `error: ${refusal}\n`]);
    const check = await runCli(a, ["check"]);
    assert.deepEqual([check.code, check.stdout, check.stderr], [1, `outdated: ${refusal}\n`, ""]);
    assert.equal((await runCli(a, ["check", "--fix"])).code, 2);
    assert.deepEqual(await snapshot(repo.base), before);
    const released = await runCli(a, ["release"]);
    assert.equal(released.stdout, `released "${a}/.worktree-ports.json"\n`);
    assert.equal(await Deno.readTextFile(`${repo.base}/outside/app.env`), planted);
  },
);

Deno.test("cli allocate --force that moves the worktree says from which slot to which, and why", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create({ config: ports.config() });
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  {
    // Its own service is not what holds the port: --force chooses afresh, probing.
    using _listener = Deno.listen({ hostname: "127.0.0.1", port: ports.at(1).web });
    const moved = await runCli(a, ["allocate", "--force"]);
    assert.equal(moved.code, 0, moved.stderr);
    assert.equal(
      moved.stderr,
      `warning: --force moved this worktree from slot 1 to slot 2: port ${ports.at(1).web} ` +
        `("web") of slot 1 is in use\n`,
    );
    // Staying put says nothing.
    const stayed = await runCli(a, ["allocate", "--force"]);
    assert.equal(stayed.stderr, "");
  }
  const back = await runCli(a, ["allocate", "--force"]);
  assert.equal(
    back.stderr,
    "warning: --force moved this worktree from slot 2 to slot 1, the lowest slot free now\n",
  );
});

Deno.test("cli slots shows a held slot as its holder's file has it, branch and name included", async () => {
  const ports = pickPorts(["web"]);
  await using repo = await TempRepo.create({
    config: { ...ports.config(), templates: { project: "app-{name}-{slug}" }, slots: 2 },
  });
  const login = `${repo.base}/login`;
  await git(repo.root, "worktree", "add", "-q", "-b", "Feature/Login", login);
  assert.equal((await runCli(login, ["allocate"])).code, 0);
  const result = await runCli(login, ["slots", "--json"]);
  assert.equal(result.code, 0, result.stderr);
  const [free, held] = JSON.parse(result.stdout);
  assert.deepEqual(held.bundle, { web: ports.at(1).web, project: "app-login-feature-login" });
  // A free slot has no worktree to name: its templates render without one.
  assert.deepEqual(free.bundle, { web: ports.at(0).web, project: "app--slot-0" });
});

testWhere(
  { unix: "symbolic links, which Windows makes only with privileges" },
  "cli allocate writes env files where git sees them, never over a link or the port file, and nothing when a name is too long",
  async (t) => {
    const ports = pickPorts(["web"]);
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a] = await repo.addWorktrees("wt", 1);
    assert.equal((await runCli(a, ["allocate"])).code, 0);
    const envFile = (name: string) =>
      writeJson(`${a}/worktree-ports.config.json`, { ...ports.config(), env_file: name });
    await t.step(
      "through a folder link inside the worktree: its real path is kept out of git",
      async () => {
        await Deno.mkdir(`${a}/conf`);
        await Deno.symlink("conf", `${a}/conflink`);
        await envFile("conflink/app.env");
        assert.equal((await runCli(a, ["allocate"])).code, 0);
        assert.match(await Deno.readTextFile(`${a}/conf/app.env`), /^# Written by worktree-ports/);
        assert.equal(
          await git(a, "status", "--porcelain", "--untracked-files=all"),
          " M worktree-ports.config.json\n?? conflink\n",
        );
        await Deno.remove(`${a}/conflink`);
        await Deno.remove(`${a}/conf`, { recursive: true });
      },
    );
    await t.step("a link that leads to the port file is refused", async () => {
      await Deno.symlink(".", `${a}/here`);
      await envFile("here/.worktree-ports.json");
      const portFile = await Deno.readTextFile(`${a}/.worktree-ports.json`);
      const result = await runCli(a, ["allocate"]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /names: it is the port file\n$/);
      assert.equal(await Deno.readTextFile(`${a}/.worktree-ports.json`), portFile);
      await Deno.remove(`${a}/here`);
    });
    await t.step("a symbolic link at the path is someone's, and never replaced", async () => {
      await Deno.writeTextFile(`${repo.base}/elsewhere.env`, "");
      await Deno.symlink(`${repo.base}/elsewhere.env`, `${a}/.env.ports`);
      await envFile(".env.ports");
      const result = await runCli(a, ["allocate"]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, /names: it is a symbolic link, and writing would replace it/);
      assert.ok((await Deno.lstat(`${a}/.env.ports`)).isSymlink);
      await Deno.remove(`${a}/.env.ports`);
    });
    await t.step("a temporary file a killed run left is removed", async () => {
      await Deno.writeTextFile(`${a}/.env.ports.99999-abcdefgh.tmp`, "half");
      assert.equal((await runCli(a, ["allocate"])).code, 0);
      await assert.rejects(Deno.stat(`${a}/.env.ports.99999-abcdefgh.tmp`), Deno.errors.NotFound);
    });
    await t.step("an output outside the worktree leaves its env files alone", async () => {
      const envText = await Deno.readTextFile(`${a}/.env.ports`);
      const preview = await runCli(a, ["allocate", "--output", `${repo.base}/preview.json`]);
      assert.equal(preview.code, 0, preview.stderr);
      assert.equal(await Deno.readTextFile(`${a}/.env.ports`), envText);
      const released = await runCli(a, ["release", "--output", `${repo.base}/preview.json`]);
      assert.equal(released.stdout, `released "${repo.base}/preview.json"\n`);
      assert.equal(await Deno.readTextFile(`${a}/.env.ports`), envText);
    });
    await t.step(
      "an env file whose name leaves no room for its temporary file changes nothing",
      async () => {
        // A name the system takes, but not with the temporary file's suffix.
        await writeJson(`${a}/worktree-ports.config.json`, {
          ports: { ...ports.config().ports, extra: ports.at(0).web + 1 },
          stride: ports.config().stride,
          env_file: "e".repeat(240),
        });
        const before = await snapshot(repo.base);
        const result = await runCli(a, ["allocate"]);
        assert.equal(result.code, 2, result.stderr);
        assert.match(
          result.stderr,
          /^error: Cannot write the env file ".*\/e{240}" that the config's "env_file" names: its name is longer than 230 bytes/,
        );
        assert.deepEqual(await snapshot(repo.base), before);
      },
    );
  },
);

Deno.test("cli allocate warns when an env_file is tracked by git, or its ignore rule hides another worktree's own file", async (t) => {
  await t.step("tracked", async () => {
    const ports = pickPorts(["web"]);
    await using repo = await TempRepo.create({
      config: { ...ports.config(), env_file: ".env.ports" },
    });
    await Deno.writeTextFile(`${repo.root}/.env.ports`, "");
    await git(repo.root, "add", ".env.ports");
    await git(repo.root, "commit", "-q", "-m", "an empty env file");
    const [a] = await repo.addWorktrees("wt", 1);
    const result = await runCli(a, ["allocate"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stderr,
      `warning: The env file "${a}/.env.ports" is tracked by git, so every write of it shows in ` +
        `"git status": untrack it with "git rm --cached .env.ports" and commit\n`,
    );
    // Said when the file is first written, not on every run.
    assert.equal((await runCli(a, ["allocate"])).stderr, "");
  });
  await t.step("a file of a worktree's own at the path", async () => {
    const ports = pickPorts(["web"]);
    await using repo = await TempRepo.create({
      config: { ...ports.config(), env_file: ".env.local" },
    });
    const [a, b] = await repo.addWorktrees("wt", 2);
    await Deno.writeTextFile(`${a}/.env.local`, "SECRET=mine\n");
    const result = await runCli(b, ["allocate"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stderr,
      `warning: "${a}/.env.local" is not this tool's, and git now ignores it, as it does every ` +
        `worktree's ".env.local" (the config's "env_file" names it): "git worktree remove" would ` +
        `delete it without asking; rename it, or name another file in "env_file"\n`,
    );
    assert.equal(await Deno.readTextFile(`${a}/.env.local`), "SECRET=mine\n");
  });
});

Deno.test("cli allocate removes an env file the config stops naming, and release one the port file recorded", async () => {
  const ports = pickPorts(["web"]);
  await using repo = await TempRepo.create({ config: ports.config() });
  const [a] = await repo.addWorktrees("wt", 1);
  const configure = (envFile?: string) =>
    writeJson(`${a}/worktree-ports.config.json`, {
      ...ports.config(),
      ...(envFile === undefined ? {} : { env_file: envFile }),
    });
  await configure(".env.a");
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  assert.deepEqual(
    ((await readJson(`${a}/.worktree-ports.json`)).worktree_ports as { env_files: string[] })
      .env_files,
    [".env.a"],
  );
  await configure(".env.b");
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await assert.rejects(Deno.stat(`${a}/.env.a`), Deno.errors.NotFound);
  assert.match(await Deno.readTextFile(`${a}/.env.b`), /^# Written by worktree-ports/);
  // A file of the user's at a dropped name is never touched.
  await configure(".env.c");
  await Deno.writeTextFile(`${a}/.env.b`, "MINE=1\n");
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  assert.equal(await Deno.readTextFile(`${a}/.env.b`), "MINE=1\n");
  // release removes what the port file recorded, though the config names nothing now.
  await configure();
  const released = await runCli(a, ["release"]);
  assert.equal(
    released.stdout,
    `released "${a}/.worktree-ports.json"\nremoved the env file "${a}/.env.c"\n`,
  );
});
