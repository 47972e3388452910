// What the tool exports and prints cannot be turned against the user: only
// the names a config produces reach a shell or a program, show never prints
// another worktree's ports, and a reader that goes away is no error.

import assert from "node:assert/strict";
import {
  CLI_FLAGS,
  pickPorts,
  readJson,
  ROOT,
  run,
  runCli,
  runsOk,
  slotOf,
  TempRepo,
  testWhere,
  writeJson,
} from "../test_util.ts";

/** Names a committed port file could use to run code in a shell or a program. */
const PLANTED = {
  node_options: "--require ./evil.js",
  prompt_command: "touch /tmp/owned",
  ps1: "$(touch /tmp/owned)",
  pythonstartup: "/tmp/evil.py",
  editor: "/tmp/evil",
  npm_config_script_shell: "/tmp/evil",
};

const SHELLS = ["bash", "zsh", "fish"].filter((shell) => runsOk(shell, ["-c", "true"]));

/**
 * The value each planted name has after `source`-ing `env` output in a shell,
 * or `unset` where it is not set (zsh's `echo` takes `-` for an option).
 */
async function sourced(shell: string, text: string): Promise<string[]> {
  const names = Object.keys(PLANTED).map((key) => key.toUpperCase());
  const script = shell === "fish"
    ? `${text}\nfor name in ${
      names.join(" ")
    }; if set -q $name; echo $$name; else; echo unset; end; end`
    : `${text}\nfor name in ${names.join(" ")}; do printenv "$name" || echo unset; done`;
  const result = await run(shell, ["-c", script], {
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin" },
  });
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim().split("\n");
}

testWhere(
  { tools: ["bash"] },
  "cli env, exec and show give only the names a config produces, whatever a committed port file holds",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a] = await repo.addWorktrees("wt", 1);
    const file = `${a}/.worktree-ports.json`;
    const own = async (meta: boolean) => {
      const allocated = await runCli(a, ["allocate"]);
      assert.equal(allocated.code, 0, allocated.stderr);
      const written = await readJson(file);
      const { worktree_ports, ...bundle } = written;
      await writeJson(file, { ...PLANTED, ...bundle, ...(meta ? { worktree_ports } : {}) });
      return bundle;
    };
    const expected = { WEB: String(ports.at(1).web), API: String(ports.at(1).api) };
    for (
      const [name, meta] of [["committed, without metadata", false], [
        "naming this worktree",
        true,
      ]] as const
    ) {
      await t.step(`${name}: env in every format`, async () => {
        await own(meta);
        const json = await runCli(a, ["env", "--format", "json"]);
        assert.equal(json.code, 0, json.stderr);
        assert.deepEqual(JSON.parse(json.stdout), expected);
        // The rewrite names what it drops, so nothing is lost silently.
        assert.match(json.stderr, /dropped "node_options", "prompt_command", "ps1"/);
        assert.deepEqual(
          Object.keys(await readJson(file)).sort(),
          ["api", "web", "worktree_ports"],
        );
        for (const format of ["shell", "dotenv", "fish"]) {
          await own(meta);
          const env = await runCli(a, ["env", "--format", format]);
          assert.equal(env.code, 0, env.stderr);
          for (const key of Object.keys(PLANTED)) {
            assert.doesNotMatch(env.stdout, new RegExp(key.toUpperCase()), format);
          }
        }
      });
      for (const shell of SHELLS) {
        await t.step(`${name}: ${shell} sourcing env sets none of them`, async () => {
          await own(meta);
          const env = await runCli(a, ["env", "--format", shell === "fish" ? "fish" : "shell"]);
          assert.equal(env.code, 0, env.stderr);
          assert.deepEqual(
            await sourced(shell, env.stdout),
            Object.keys(PLANTED).map(() => "unset"),
          );
        });
      }
      await t.step(`${name}: exec hands a program none of them`, async () => {
        await own(meta);
        const names = Object.keys(PLANTED).map((key) => key.toUpperCase());
        const exec = await runCli(
          a,
          [
            "exec",
            "--",
            "bash",
            "-c",
            `for n in ${names.join(" ")} WEB; do printenv $n || echo -; done`,
          ],
          { flags: ["--allow-run", ...CLI_FLAGS.slice(1)] },
        );
        assert.equal(exec.code, 0, exec.stderr);
        assert.deepEqual(exec.stdout.trim().split("\n"), [...names.map(() => "-"), expected.WEB]);
      });
      await t.step(`${name}: show gives the config's names only`, async () => {
        await own(meta);
        const show = await runCli(a, ["show"]);
        assert.equal(show.code, meta ? 0 : 1, show.stderr);
        if (meta) {
          // A file whose names differ from the config's is rewritten first.
          const { worktree_ports: _, ...shown } = JSON.parse(show.stdout);
          assert.deepEqual(shown, { web: ports.at(1).web, api: ports.at(1).api });
        } else {
          assert.match(show.stderr, /has no worktree-ports metadata/);
          assert.equal(show.stdout, "");
        }
        const one = await runCli(a, ["show", "node_options"]);
        assert.notEqual(one.code, 0);
        assert.doesNotMatch(one.stdout, /evil/);
      });
    }
  },
);

Deno.test("cli env without a config gives a port file's ports and leaves its strings out, saying so", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const allocated = await runCli(a, ["allocate", ...ports.args]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const file = `${a}/.worktree-ports.json`;
  await writeJson(file, { ...PLANTED, ...await readJson(file) });
  const env = await runCli(a, ["env", "--format", "json"]);
  assert.equal(env.code, 0, env.stderr);
  assert.deepEqual(JSON.parse(env.stdout), {
    WEB: String(ports.at(1).web),
    API: String(ports.at(1).api),
  });
  assert.match(
    env.stderr,
    /^warning: Left out "node_options", "prompt_command", .* with no config, a port file gives only ports/m,
  );
});

Deno.test("cli allocate refuses a config key that would make a shell or a program run code, naming it", async (t) => {
  for (
    const key of [
      "node_options",
      "prompt_command",
      "ps1",
      "pythonpath",
      "npm_config_prefix",
      "editor",
      "pythonuserbase",
      "perllib",
      "xdg_config_home",
      "prompt",
      "lessopen",
      "histfilesize",
      "tmout",
    ]
  ) {
    await t.step(key, async () => {
      await using repo = await TempRepo.create({
        config: { ports: { web: 20000 }, templates: { [key]: "x" } },
      });
      const result = await runCli(repo.root, ["allocate"]);
      assert.equal(result.code, 2);
      assert.match(
        result.stderr,
        new RegExp(
          `key "${key}" would set "${key.toUpperCase()}", which makes a shell or a program run ` +
            `code of its choosing \\(rename it`,
        ),
      );
    });
  }
});

Deno.test("cli show never prints another worktree's ports: not from a copied file, nor before an allocation", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create({ config: ports.config() });
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await runCli(a, ["allocate"]);
  assert.equal(first.code, 0, first.stderr);
  await t.step("missing: an error, and nothing printed", async () => {
    const show = await runCli(b, ["show", "web"]);
    assert.deepEqual([show.code, show.stdout], [1, ""]);
    assert.match(show.stderr, /no ports yet/);
  });
  await t.step("copied from a live sibling: an error, and nothing printed", async () => {
    await Deno.copyFile(`${a}/.worktree-ports.json`, `${b}/.worktree-ports.json`);
    const show = await runCli(b, ["show", "web"]);
    assert.deepEqual([show.code, show.stdout], [1, ""]);
    assert.match(
      show.stderr,
      /was written for the worktree ".*wt0" \(copied\?\): its ports are not this worktree's/,
    );
  });
  await t.step("show, env and exec then agree on this worktree's own ports", async () => {
    const env = await runCli(b, ["env", "--format", "json"]);
    assert.equal(env.code, 0, env.stderr);
    const show = await runCli(b, ["show", "web"]);
    assert.equal(show.code, 0, show.stderr);
    assert.equal(show.stdout, `${JSON.parse(env.stdout).WEB}\n`);
    assert.notEqual(show.stdout, `${ports.at(1).web}\n`);
    assert.equal(slotOf(await readJson(`${b}/.worktree-ports.json`)), 2);
  });
});

testWhere(
  { tools: ["bash"] },
  "cli commands stop quietly when the reader of their output goes away",
  async (t) => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create({ config: ports.config() });
    const [a] = await repo.addWorktrees("wt", 1);
    assert.equal((await runCli(a, ["allocate"])).code, 0);
    const cli = [Deno.execPath(), "run", ...CLI_FLAGS, `${ROOT}cli.ts`]
      .map((word) => `'${word}'`).join(" ");
    for (const [command, reader] of [["list", "head -c 0"], ["env", "true"], ["show", "true"]]) {
      await t.step(`${command} | ${reader}`, async () => {
        // The reader is gone long before Deno has started and writes.
        const result = await run("bash", ["-c", `set -o pipefail; ${cli} ${command} | ${reader}`], {
          cwd: a,
        });
        assert.equal(result.stderr, "");
        assert.equal(result.code, 0);
      });
    }
  },
);

Deno.test("cli show rewrites a committed file that names a path that is no worktree, giving only the config's names and its own ports", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create({ config: ports.config() });
  const [a, b] = await repo.addWorktrees("wt", 2);
  const first = await runCli(a, ["allocate"]);
  assert.equal(first.code, 0, first.stderr);
  await t.step("a path that was never a worktree, with planted names", async () => {
    await writeJson(`${b}/.worktree-ports.json`, {
      ...PLANTED,
      ...ports.at(1),
      worktree_ports: { version: 1, slot: 1, worktree: "/home/alice/src/app", allocated_at: "x" },
    });
    const show = await runCli(b, ["show"]);
    assert.equal(show.code, 0, show.stderr);
    const { worktree_ports: _, ...shown } = JSON.parse(show.stdout);
    // Slot 1 is a's: b gets its own, and only the config's names.
    assert.deepEqual(shown, ports.at(2));
    const planted = await runCli(b, ["show", "node_options"]);
    assert.deepEqual([planted.code, planted.stdout], [1, ""]);
  });
  await t.step("metadata forged to name this worktree, on the main worktree's slot", async () => {
    const real = await Deno.realPath(b);
    await writeJson(`${b}/.worktree-ports.json`, {
      ...ports.at(0),
      worktree_ports: { version: 1, slot: 0, worktree: real, allocated_at: "x" },
    });
    const show = await runCli(b, ["show", "web"]);
    assert.equal(show.code, 0, show.stderr);
    assert.notEqual(show.stdout, `${ports.at(0).web}\n`);
    const env = await runCli(b, ["env", "--format", "json"]);
    assert.equal(env.code, 0, env.stderr);
    assert.notEqual(JSON.parse(env.stdout).WEB, String(ports.at(0).web));
  });
});

Deno.test("cli env and show without a config leave out a port file's numbers under names no config may have", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  assert.equal((await runCli(a, ["allocate", ...ports.args])).code, 0);
  const file = `${a}/.worktree-ports.json`;
  await writeJson(file, { tmout: 1, histfilesize: 1, node_options: 1234, ...await readJson(file) });
  const env = await runCli(a, ["env", "--format", "json"]);
  assert.equal(env.code, 0, env.stderr);
  assert.deepEqual(Object.keys(JSON.parse(env.stdout)).sort(), ["API", "WEB"]);
  const show = await runCli(a, ["show"]);
  assert.equal(show.code, 0, show.stderr);
  assert.deepEqual(Object.keys(JSON.parse(show.stdout)).sort(), ["api", "web", "worktree_ports"]);
});
