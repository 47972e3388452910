// Who holds a port: list and check name the process listening on each
// worktree's port, from the system's own answer (lsof and ps here), with real
// servers started in real worktrees.

import assert from "node:assert/strict";
import { inspectWorktrees, type WorktreeStatus } from "../mod.ts";
import {
  CLI_FLAGS,
  pickPorts,
  readJson,
  runCli,
  serveIn,
  slashed,
  slotOf,
  TempRepo,
  testWhere,
  webPorts,
  writeJson,
} from "../test_util.ts";

/** A directory outside every worktree to start strays in. */
async function outsideDir(): Promise<AsyncDisposable & { path: string }> {
  const path = slashed(await Deno.realPath(await Deno.makeTempDir({ prefix: "stray-" })));
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** A repository with two linked worktrees, a and b, allocated, and their web ports. */
async function twoAllocated() {
  const repo = await TempRepo.create({ config: webPorts().config() });
  const [a, b] = await repo.addWorktrees("wt", 2);
  for (const dir of [a, b]) assert.equal((await runCli(dir, ["allocate"])).code, 0);
  const web = async (dir: string) => (await readJson(`${dir}/.worktree-ports.json`)).web as number;
  return { repo, a, b, aWeb: await web(a), bWeb: await web(b) };
}

const needs = { unix: "the processes are found with lsof and ps", tools: ["lsof", "ps"] };

testWhere(
  needs,
  "list and check name a worktree's own server and a stray one on another worktree's port, and check --fix moves that worktree",
  async () => {
    const { repo, a, b, aWeb, bWeb } = await twoAllocated();
    await using _repo = repo;
    assert.equal((await runCli(repo.root, ["allocate"])).code, 0);
    await using outside = await outsideDir();
    await using own = await serveIn(`${a}`, aWeb);
    await using stray = await serveIn(outside.path, bWeb);

    const listed = await runCli(a, ["list", "--json"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stderr, "");
    const statuses: WorktreeStatus[] = JSON.parse(listed.stdout);
    const [statusA, statusB] = [a, b].map((dir) => statuses.find((s) => s.path === dir)!);
    assert.equal(statusA.state, "ok");
    assert.equal(statusA.holders.web.length, 1);
    assert.equal(statusA.holders.web[0].pid, own.pid);
    assert.equal(statusA.holders.web[0].worktree, a);
    assert.match(statusA.holders.web[0].command!, /\beval\b/);
    assert.equal(statusB.state, "held");
    assert.equal(statusB.holders.web[0].pid, stray.pid);
    assert.equal(statusB.holders.web[0].worktree, null);
    assert.equal(statusB.holders.web[0].cwd, outside.path);

    const table = await runCli(a, ["list"]);
    assert.match(table.stdout, new RegExp(`web=${aWeb} \\(listening: deno ${own.pid}\\)`));
    assert.match(
      table.stdout,
      new RegExp(
        `held +web=${bWeb} .*web ${bWeb} held by deno ${stray.pid} outside every worktree`,
      ),
    );

    const checked = await runCli(a, ["check"]);
    assert.equal(checked.code, 1);
    assert.match(
      checked.stdout,
      new RegExp(
        `^held: pid ${stray.pid} \`.*eval.*\` outside every worktree holds web ${bWeb} of "${b}"$`,
        "m",
      ),
    );
    // The worktree's own server on its own port is the normal case.
    assert.doesNotMatch(checked.stdout, new RegExp(`"${a}"`));
    assert.match(checked.stderr, /run "worktree-ports check --fix" to repair/);

    const fixed = await runCli(a, ["check", "--fix"]);
    assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
    assert.match(
      fixed.stdout,
      new RegExp(
        `^moved "${b}" \\(held: web ${bWeb} by deno ${stray.pid} outside every worktree\\): web=${bWeb} -> web=\\d+ \\(slot \\d+\\)$`,
        "m",
      ),
    );
    const moved = await readJson(`${b}/.worktree-ports.json`);
    assert.notEqual(moved.web, bWeb);
    assert.notEqual(slotOf(moved), 2);
    assert.equal((await readJson(`${a}/.worktree-ports.json`)).web, aWeb);
    assert.match(fixed.stdout, /ok: 3 worktrees/);
  },
);

testWhere(
  needs,
  "check flags a worktree's port that a server of a sibling worktree listens on, naming that worktree",
  async () => {
    const { repo, a, b, bWeb } = await twoAllocated();
    await using _repo = repo;
    // Started from a subdirectory of the sibling: it still belongs to that worktree.
    await Deno.mkdir(`${a}/server`);
    await using server = await serveIn(`${a}/server`, bWeb);
    const checked = await runCli(b, ["check"]);
    assert.equal(checked.code, 1);
    assert.match(
      checked.stdout,
      new RegExp(
        `^held: pid ${server.pid} \`.*\` of the worktree "${a}" holds web ${bWeb} of "${b}"$`,
        "m",
      ),
    );
    const statuses = await inspectWorktrees({ cwd: b });
    const held = statuses.find((status) => status.path === b)!;
    assert.equal(held.state, "held");
    assert.equal(held.holders.web[0].worktree, a);
    assert.equal(held.listening.web, true);
  },
);

testWhere(
  { unix: "PATH is narrowed to a folder of symbolic links", tools: ["lsof", "ps"] },
  "list and check work without lsof and ps, saying the holder is unknown",
  async () => {
    const { repo, a, b, bWeb } = await twoAllocated();
    await using _repo = repo;
    await using outside = await outsideDir();
    await using _stray = await serveIn(outside.path, bWeb);
    // A PATH with git and nothing else: lsof and ps are not installed.
    const onlyGit = `${outside.path}/bin`;
    await Deno.mkdir(onlyGit);
    const gitPath = new TextDecoder().decode(
      new Deno.Command("sh", { args: ["-c", "command -v git"], stdout: "piped" }).outputSync()
        .stdout,
    ).trim();
    await Deno.symlink(gitPath, `${onlyGit}/git`);
    const env = { PATH: onlyGit };

    const listed = await runCli(a, ["list", "--json"], { env });
    assert.equal(listed.code, 0, listed.stderr);
    const statusB = (JSON.parse(listed.stdout) as WorktreeStatus[]).find((s) => s.path === b)!;
    assert.equal(statusB.state, "ok");
    assert.equal(statusB.listening.web, true);
    assert.match(statusB.holders.web[0].unknown!, /lsof is not installed/);
    assert.match(
      listed.stderr,
      /^warning: Cannot tell which processes listen on the ports: lsof is not installed, or not allowed to run \(run again with --allow-run=git,lsof,ps\)$/m,
    );
    const table = await runCli(a, ["list"], { env });
    assert.match(table.stdout, new RegExp(`web=${bWeb} \\(listening: unknown\\)`));

    const checked = await runCli(a, ["check"], { env });
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    assert.match(checked.stdout, /^ok: 3 worktrees, no shared ports$/m);
    assert.match(checked.stderr, /warning: Cannot tell which processes listen on the ports/);

    // Without permission to run them, the same.
    const scoped = await runCli(a, ["check"], {
      flags: CLI_FLAGS.map((flag) => flag.startsWith("--allow-run=") ? "--allow-run=git" : flag),
    });
    assert.equal(scoped.code, 0, scoped.stdout + scoped.stderr);
    assert.match(scoped.stderr, /not allowed to run \(run again with --allow-run=git,lsof,ps\)/);
  },
);

testWhere(
  needs,
  "check --fix keeps the one of two worktrees sharing a port whose own server listens on it, though it was allocated later",
  async () => {
    const ports = webPorts();
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a, b] = await repo.addWorktrees("wt", 2);
    // An older allocator's bug: both got slot 1's port. b's file is the later one,
    // which alone would make b move; but b's server listens on the shared port.
    const shared = ports.at(1).web;
    await writeJson(`${a}/.worktree-ports.json`, { web: shared });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await writeJson(`${b}/.worktree-ports.json`, { web: shared });
    await using _bServes = await serveIn(b, shared);
    const fixed = await runCli(b, ["check", "--fix"]);
    assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
    assert.match(fixed.stdout, new RegExp(`^moved "${a}" \\(duplicate\\): web=${shared} -> `, "m"));
    assert.deepEqual(await readJson(`${b}/.worktree-ports.json`), { web: shared });
  },
);

testWhere(
  needs,
  "check names a stray on the main worktree's port, and check --fix leaves the main worktree on slot 0",
  async () => {
    const ports = webPorts();
    await using repo = await TempRepo.create({ config: ports.config() });
    assert.equal((await runCli(repo.root, ["allocate"])).code, 0);
    const before = await Deno.readTextFile(`${repo.root}/.worktree-ports.json`);
    await using outside = await outsideDir();
    await using stray = await serveIn(outside.path, ports.at(0).web);
    for (const args of [["check"], ["check", "--fix"], ["check", "--fix"]]) {
      const result = await runCli(repo.root, args);
      assert.equal(result.code, 1, result.stdout + result.stderr);
      assert.match(
        result.stdout,
        new RegExp(
          `^held: pid ${stray.pid} .* holds web ${ports.at(0).web} of "${repo.root}" ` +
            `\\(the main worktree keeps slot 0: stop that process, or change the base port\\)$`,
          "m",
        ),
      );
      assert.doesNotMatch(result.stdout, /^moved /m);
      assert.doesNotMatch(result.stderr, /check --fix/);
    }
    assert.equal(await Deno.readTextFile(`${repo.root}/.worktree-ports.json`), before);
  },
);

testWhere(
  needs,
  "check --fix moves a held worktree in one run, whether its file is also outdated or shares a port",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a, b, c] = await repo.addWorktrees("wt", 3);
    for (const dir of [a, b, c]) assert.equal((await runCli(dir, ["allocate"])).code, 0);
    // a: outdated (a key the config does not give) and held.
    const aFile = await readJson(`${a}/.worktree-ports.json`);
    await writeJson(`${a}/.worktree-ports.json`, { ...aFile, extra: 1 });
    // c: a copy of b's file for c, allocated later; a stray holds their shared api port.
    const bFile = await readJson(`${b}/.worktree-ports.json`);
    const later = structuredClone(bFile) as { worktree_ports: Record<string, unknown> };
    later.worktree_ports.worktree = c;
    later.worktree_ports.allocated_at = new Date(Date.now() + 60_000).toISOString();
    await writeJson(`${c}/.worktree-ports.json`, later);
    await using outside = await outsideDir();
    await using _aStray = await serveIn(outside.path, aFile.web as number);
    await using _bcStray = await serveIn(outside.path, bFile.api as number);
    const fixed = await runCli(a, ["check", "--fix"]);
    assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
    assert.match(fixed.stdout, new RegExp(`^moved "${a}" \\(held: web ${aFile.web} by `, "m"));
    // Both held: neither stays on the port, whichever the duplicate rule would keep.
    for (const dir of [b, c]) {
      assert.match(fixed.stdout, new RegExp(`^moved "${dir}" \\(held: api ${bFile.api} by `, "m"));
    }
    const again = await runCli(a, ["check", "--fix"]);
    assert.equal(again.stdout, "nothing to fix\nok: 4 worktrees, no shared ports\n");
  },
);
