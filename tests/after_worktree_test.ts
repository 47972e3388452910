// After a worktree: release runs the config's on_release, prune runs it for
// worktrees removed without release, and a branch gets its slot back. Real git,
// real processes; the on_release commands are Deno scripts that leave markers.

import assert from "node:assert/strict";
import { pruneWorktrees, readMemory } from "../mod.ts";
import {
  CLI_FLAGS,
  git,
  readJson,
  runCli,
  serveIn,
  slotOf,
  snapshot,
  TempRepo,
  testWhere,
  webPorts,
} from "../test_util.ts";

/** The CLI's flags with permission to run any program, as on_release needs. */
const RUN_ANY = CLI_FLAGS.map((flag) => flag.startsWith("--allow-run=") ? "--allow-run" : flag);

/**
 * A config whose on_release writes "<web> <slot> <branch> <name> <project>"
 * into `markers/<name>`, from the variables and placeholders it is given, and
 * exits with the code in the file `markers/exit` (0 when there is none).
 */
function configWith(ports: ReturnType<typeof webPorts>, markers: string) {
  const script = [
    "const [dir, line] = Deno.args;",
    `const code = Number((() => { try { return Deno.readTextFileSync(dir + "/exit"); } catch { return "0"; } })());`,
    "if (code === 0) Deno.writeTextFileSync(dir + '/' + Deno.args[2], line + ' ' + Deno.env.get('COMPOSE_PROJECT') + ' ' + Deno.cwd());",
    "Deno.exit(code);",
  ].join("\n");
  return {
    ...ports.config(),
    templates: { compose_project: "app-{slug}" },
    on_release: [
      Deno.execPath(),
      "eval",
      script,
      markers,
      "{web} {slot} {branch} {name}",
      "{name}",
    ],
  };
}

/** A repository whose committed config has `configWith`'s on_release, and its markers folder. */
async function repoWithTeardown(ports: ReturnType<typeof webPorts>, templates = {}) {
  const repo = await TempRepo.create();
  const markers = `${repo.base}/markers`;
  await Deno.mkdir(markers);
  const config = configWith(ports, markers);
  config.templates = { ...config.templates, ...templates };
  await Deno.writeTextFile(`${repo.root}/worktree-ports.config.json`, JSON.stringify(config));
  await git(repo.root, "add", "worktree-ports.config.json");
  await git(repo.root, "commit", "-q", "-m", "config");
  return { repo, markers };
}

Deno.test("prune runs the on_release of a worktree removed without release, with its last values, and forgets it", async () => {
  const { repo, markers } = await repoWithTeardown(webPorts());
  await using _repo = repo;
  await git(repo.root, "worktree", "add", "-q", "-b", "feature/a", `${repo.base}/wt-a`);
  const a = `${repo.base}/wt-a`;
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  const web = (await readJson(`${a}/.worktree-ports.json`)).web;
  await git(repo.root, "worktree", "remove", a);

  const listed = await runCli(repo.root, ["list", "--json"]);
  const gone = JSON.parse(listed.stdout).find((row: { path: string }) => row.path === a);
  assert.equal(gone.state, "gone");
  assert.deepEqual(gone.ports, { web });

  // A dry run says what it would run, and changes nothing.
  const before = await snapshot(repo.base);
  const dry = await runCli(repo.root, ["prune", "--dry-run"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(
    dry.stdout,
    new RegExp(
      `^gone: "${a}" \\(branch "feature/a", slot 1\\): web=${web} compose_project=app-feature-a$`,
      "m",
    ),
  );
  assert.match(dry.stdout, /^ {2}would run: .* eval .*\(in ".*\/main"\)$/m);
  assert.match(dry.stdout, /^ {2}would forget it$/m);
  assert.deepEqual(await snapshot(repo.base), before);

  const pruned = await runCli(repo.root, ["prune"], { flags: RUN_ANY });
  assert.equal(pruned.code, 0, pruned.stdout + pruned.stderr);
  assert.match(pruned.stderr, new RegExp(`^on_release for "${a}": `, "m"));
  assert.match(pruned.stdout, /^ {2}forgotten$/m);
  assert.equal(
    await Deno.readTextFile(`${markers}/wt-a`),
    `${web} 1 feature/a wt-a app-feature-a ${repo.root}`,
  );
  assert.deepEqual(readMemory(`${repo.root}/.git`).worktrees, []);
  assert.equal(
    (await runCli(repo.root, ["prune"], { flags: RUN_ANY })).stdout,
    "nothing to prune\n",
  );
});

Deno.test("prune keeps a worktree whose on_release fails, exits 1, and prunes it once it succeeds", async () => {
  const { repo, markers } = await repoWithTeardown(webPorts());
  await using _repo = repo;
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await Deno.remove(a, { recursive: true });
  await Deno.writeTextFile(`${markers}/exit`, "3");
  const failed = await runCli(repo.root, ["prune"], { flags: RUN_ANY });
  assert.equal(failed.code, 1);
  assert.match(
    failed.stdout,
    /^ {2}kept: "on_release" \(.*\) failed with exit code 3; fix it and run "worktree-ports prune" again \(or "prune --skip-on-release" to forget it without running it\)$/m,
  );
  assert.equal(readMemory(`${repo.root}/.git`).worktrees.length, 1);
  await Deno.remove(`${markers}/exit`);
  const pruned = await pruneWorktrees({ cwd: repo.root });
  assert.equal(pruned.worktrees.length, 1);
  assert.equal(pruned.worktrees[0].forgotten, true);
  assert.equal(pruned.worktrees[0].onRelease?.code, 0);
  assert.equal(readMemory(`${repo.root}/.git`).worktrees.length, 0);
  assert.ok((await Deno.stat(`${markers}/wt0`)).isFile);
});

Deno.test("release runs on_release in the worktree first, and keeps the ports held when it fails", async (t) => {
  const { repo, markers } = await repoWithTeardown(webPorts());
  await using _repo = repo;
  const [a, b] = await repo.addWorktrees("wt", 2);
  for (const dir of [a, b]) assert.equal((await runCli(dir, ["allocate"])).code, 0);
  await t.step("--dry-run prints what would run and changes nothing", async () => {
    const before = await snapshot(repo.base);
    const dry = await runCli(a, ["release", "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stdout,
      new RegExp(
        `^would run: .* eval .*\\(in "${a}"\\)\\nwould release "${a}/.worktree-ports.json"\\n$`,
      ),
    );
    assert.deepEqual(await snapshot(repo.base), before);
  });
  await t.step("without permission to run its program: exit 2, nothing changed", async () => {
    const before = await snapshot(repo.base);
    const refused = await runCli(a, ["release"]);
    assert.equal(refused.code, 2);
    assert.match(
      refused.stderr,
      /^error: Missing permission: run again with --allow-run=git,\w+,\w+,\S+ \(or --allow-run\) \(the config's "on_release" runs ".*"\)$/m,
    );
    assert.deepEqual(await snapshot(repo.base), before);
  });
  await t.step("a failing on_release keeps the file and says how to retry", async () => {
    await Deno.writeTextFile(`${markers}/exit`, "4");
    const failed = await runCli(a, ["release"], { flags: RUN_ANY });
    assert.equal(failed.code, 1);
    assert.match(
      failed.stderr,
      /failed with exit code 4; the ports stay held: fix what failed and run "worktree-ports release" again \(or "worktree-ports release --skip-on-release" to free them without it\)/,
    );
    assert.ok((await Deno.stat(`${a}/.worktree-ports.json`)).isFile);
    await Deno.remove(`${markers}/exit`);
  });
  await t.step(
    "then it runs with the worktree's values, in the worktree, and the file goes",
    async () => {
      const web = (await readJson(`${a}/.worktree-ports.json`)).web;
      const released = await runCli(a, ["release"], { flags: RUN_ANY });
      assert.equal(released.code, 0, released.stderr);
      assert.equal(released.stdout, `released "${a}/.worktree-ports.json"\n`);
      assert.equal(await Deno.readTextFile(`${markers}/wt0`), `${web} 1  wt0 app-wt0 ${a}`);
      await assert.rejects(Deno.stat(`${a}/.worktree-ports.json`), Deno.errors.NotFound);
      // Released, it is nothing for prune to do once removed.
      await git(repo.root, "worktree", "remove", a);
      assert.equal((await runCli(repo.root, ["prune", "--dry-run"])).stdout, "nothing to prune\n");
    },
  );
  await t.step("--skip-on-release frees the ports without running it", async () => {
    await Deno.writeTextFile(`${markers}/exit`, "5");
    const skipped = await runCli(b, ["release", "--skip-on-release"]);
    assert.equal(skipped.code, 0, skipped.stderr);
    await assert.rejects(Deno.stat(`${markers}/wt1`), Deno.errors.NotFound);
  });
});

Deno.test("a worktree made again for a branch gets the branch's old slot back while it is free", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create({ config: ports.config() });
  for (const branch of ["b1", "b2"]) {
    await git(repo.root, "worktree", "add", "-q", "-b", branch, `${repo.base}/${branch}`);
    assert.equal((await runCli(`${repo.base}/${branch}`, ["allocate"])).code, 0);
  }
  assert.equal(slotOf(await readJson(`${repo.base}/b2/.worktree-ports.json`)), 2);
  for (const branch of ["b1", "b2"]) {
    await git(repo.root, "worktree", "remove", `${repo.base}/${branch}`);
  }
  const table = await runCli(repo.root, ["list"]);
  assert.match(
    table.stdout,
    /^remembered: slot 1 for "b1", slot 2 for "b2": .*"worktree-ports prune --forget" forgets them\)$/m,
  );
  // b2 first: the lowest free slot would be 1.
  await git(repo.root, "worktree", "add", "-q", `${repo.base}/again-b2`, "b2");
  const again = await runCli(`${repo.base}/again-b2`, ["allocate"]);
  assert.equal(slotOf(JSON.parse(again.stdout)), 2);
  // A branch with no memory takes the lowest free slot, b1's: b1 loses it.
  await git(repo.root, "worktree", "add", "-q", "-b", "b3", `${repo.base}/b3`);
  assert.equal(slotOf(JSON.parse((await runCli(`${repo.base}/b3`, ["allocate"])).stdout)), 1);
  await git(repo.root, "worktree", "add", "-q", `${repo.base}/again-b1`, "b1");
  assert.equal(slotOf(JSON.parse((await runCli(`${repo.base}/again-b1`, ["allocate"])).stdout)), 3);
  // --forget forgets what is left.
  await git(repo.root, "worktree", "remove", `${repo.base}/again-b2`);
  assert.equal((await runCli(repo.root, ["prune", "--forget"])).code, 0);
  assert.deepEqual(readMemory(`${repo.root}/.git`).branches, {});
});

Deno.test("a branch's slot is not given back while a process listens on it", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create({ config: ports.config() });
  await git(repo.root, "worktree", "add", "-q", "-b", "b1", `${repo.base}/b1`);
  assert.equal((await runCli(`${repo.base}/b1`, ["allocate"])).code, 0);
  await git(repo.root, "worktree", "remove", `${repo.base}/b1`);
  await using _busy = await serveIn(repo.base, ports.at(1).web);
  await git(repo.root, "worktree", "add", "-q", `${repo.base}/again`, "b1");
  assert.equal(slotOf(JSON.parse((await runCli(`${repo.base}/again`, ["allocate"])).stdout)), 2);
});

testWhere(
  { unix: "processes are found with lsof and ended with kill", tools: ["lsof", "ps", "kill"] },
  "prune names the processes still listening on a gone worktree's ports, and ends them only with --kill",
  async () => {
    const ports = webPorts();
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a] = await repo.addWorktrees("wt", 1);
    assert.equal((await runCli(a, ["allocate"])).code, 0);
    const web = (await readJson(`${a}/.worktree-ports.json`)).web as number;
    await using server = await serveIn(a, web);
    await git(repo.root, "worktree", "remove", "--force", a);
    const dry = await runCli(repo.root, ["prune", "--dry-run"]);
    assert.match(
      dry.stdout,
      new RegExp(
        `^ {2}deno ${server.pid} \`.*\` still listens on web ${web} \\(prune --kill would end it\\)$`,
        "m",
      ),
    );
    // --kill needs kill in --allow-run, and says so.
    const refused = await runCli(repo.root, ["prune", "--kill"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--allow-run=git,\w+,\w+,kill \(or --allow-run\)/);
    const flags = CLI_FLAGS.map((flag) => flag.startsWith("--allow-run=") ? `${flag},kill` : flag);
    const killed = await runCli(repo.root, ["prune", "--kill"], { flags });
    assert.equal(killed.code, 0, killed.stdout + killed.stderr);
    assert.match(killed.stdout, new RegExp(`still listens on web ${web}, ended$`, "m"));
    assert.equal((await server.status).signal, "SIGTERM");
  },
);

Deno.test("a worktree moved with git worktree move is its own: release runs its on_release, prune never tears it down, and it is remembered once", async () => {
  const ports = webPorts();
  const { repo, markers } = await repoWithTeardown(ports, { project: "app-{name}" });
  await using _repo = repo;
  const [a, b] = await repo.addWorktrees("wt", 2);
  for (const dir of [a, b]) assert.equal((await runCli(dir, ["allocate"])).code, 0);
  await git(repo.root, "worktree", "move", a, `${repo.base}/moved-a`);
  await git(repo.root, "worktree", "move", b, `${repo.base}/moved-b`);
  // Its templates render another name now: show rewrites its file for the same slot.
  assert.equal((await runCli(`${repo.base}/moved-a`, ["show", "project"])).stdout, "app-moved-a\n");
  const dry = await runCli(repo.root, ["prune", "--dry-run"]);
  assert.equal(dry.stdout, "nothing to prune\n");
  const listed = JSON.parse((await runCli(repo.root, ["list", "--json"])).stdout);
  assert.deepEqual(listed.filter((row: { state: string }) => row.state === "gone"), []);
  // Remembered once each: moved-a where it is now, moved-b (nothing ran there yet) where it was.
  const memory = readMemory(`${repo.root}/.git`).worktrees.map((item) => item.worktree).sort();
  assert.deepEqual(memory, [`${repo.base}/moved-a`, b]);
  // Released where it is now, its on_release runs, with its values.
  const released = await runCli(`${repo.base}/moved-b`, ["release"], { flags: RUN_ANY });
  assert.equal(released.code, 0, released.stderr);
  assert.match(await Deno.readTextFile(`${markers}/moved-b`), /^\d+ 2 {2}moved-b /);
  // Released, it is forgotten, whichever path it was remembered at.
  assert.deepEqual(
    readMemory(`${repo.root}/.git`).worktrees.map((item) => item.worktree),
    [`${repo.base}/moved-a`],
  );
  // Removed without release, the other is torn down once.
  await git(repo.root, "worktree", "remove", `${repo.base}/moved-a`);
  const pruned = await runCli(repo.root, ["prune"], { flags: RUN_ANY });
  assert.equal(pruned.stdout.match(/^gone: /gm)?.length, 1, pruned.stdout);
});

Deno.test("two prunes at once tear a gone worktree down once: the second says another is running", async () => {
  const ports = webPorts();
  await using repo = await TempRepo.create();
  const markers = `${repo.base}/markers`;
  await Deno.mkdir(markers);
  // An on_release that takes a moment, and counts its runs.
  const script = "const f = Deno.args[0]; Deno.writeTextFileSync(f, 'run\\n', { append: true });" +
    " await new Promise((r) => setTimeout(r, 800));";
  await Deno.writeTextFile(
    `${repo.root}/worktree-ports.config.json`,
    JSON.stringify({
      ...ports.config(),
      on_release: [Deno.execPath(), "eval", script, `${markers}/{name}`],
    }),
  );
  await git(repo.root, "add", "worktree-ports.config.json");
  await git(repo.root, "commit", "-q", "-m", "config");
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await git(repo.root, "worktree", "remove", a);
  const results = await Promise.all([
    runCli(repo.root, ["prune"], { flags: RUN_ANY }),
    runCli(repo.root, ["prune"], { flags: RUN_ANY }),
  ]);
  assert.equal(await Deno.readTextFile(`${markers}/wt0`), "run\n");
  const busy = results.find((result) => result.code !== 0);
  assert.ok(busy !== undefined, results.map((result) => result.stdout).join("\n"));
  assert.match(
    busy.stderr,
    /Another "worktree-ports release" or "prune" of this repository is running an "on_release" now/,
  );
  assert.equal(
    (await runCli(repo.root, ["prune"], { flags: RUN_ANY })).stdout,
    "nothing to prune\n",
  );
});

Deno.test("prune asks for permission to run every on_release before running any, and --skip-on-release forgets without running", async () => {
  const ports = webPorts();
  const { repo, markers } = await repoWithTeardown(ports);
  await using _repo = repo;
  const [a, b] = await repo.addWorktrees("wt", 2);
  for (const dir of [a, b]) assert.equal((await runCli(dir, ["allocate"])).code, 0);
  // a's remembered on_release is git's, which the permission set allows; b's is deno's.
  const memoryFile = `${repo.root}/.git/worktree-ports.memory.json`;
  const memory = await readJson(memoryFile) as {
    worktrees: { worktree: string; onRelease: string[] }[];
  };
  memory.worktrees.find((item) => item.worktree === a)!.onRelease = [
    "git",
    "config",
    "--file",
    `${markers}/git-ran`,
    "x.y",
    "1",
  ];
  await Deno.writeTextFile(memoryFile, JSON.stringify(memory));
  for (const dir of [a, b]) await git(repo.root, "worktree", "remove", dir);
  const refused = await runCli(repo.root, ["prune"]);
  assert.equal(refused.code, 2, refused.stdout + refused.stderr);
  assert.match(
    refused.stderr,
    /^error: Missing permission: run again with --allow-run=git,\w+,\w+,\S+ \(or --allow-run\)/m,
  );
  await assert.rejects(Deno.stat(`${markers}/git-ran`), Deno.errors.NotFound);
  assert.equal(readMemory(`${repo.root}/.git`).worktrees.length, 2);
  const skipped = await runCli(repo.root, ["prune", "--skip-on-release"]);
  assert.equal(skipped.code, 0, skipped.stderr);
  assert.equal(skipped.stdout.match(/^ {2}forgotten$/gm)?.length, 2);
  await assert.rejects(Deno.stat(`${markers}/git-ran`), Deno.errors.NotFound);
  assert.deepEqual(readMemory(`${repo.root}/.git`).worktrees, []);
});

Deno.test("release refuses when the config cannot be read, since its on_release cannot be known, and changes nothing", async () => {
  const ports = webPorts();
  const { repo } = await repoWithTeardown(ports);
  await using _repo = repo;
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate"])).code, 0);
  await Deno.writeTextFile(`${a}/worktree-ports.config.json`, "{ broken");
  const before = await snapshot(repo.base);
  const refused = await runCli(a, ["release"], { flags: RUN_ANY });
  assert.equal(refused.code, 2);
  assert.match(
    refused.stderr,
    /so its "on_release" cannot be known: fix the config, or run "worktree-ports release --skip-on-release" to free the ports without it/,
  );
  assert.deepEqual(await snapshot(repo.base), before);
  assert.equal((await runCli(a, ["release", "--skip-on-release"])).code, 0);
});
