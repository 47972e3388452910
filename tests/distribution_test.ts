// The package as users get it: the permission set, the shebang, deno install,
// deno compile, deno publish, `deno run mod.ts`, and the README's examples.

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { parseConfig } from "../mod.ts";
import {
  CLI_FLAGS,
  git,
  permissionSetFlags,
  pickPorts,
  readJson,
  ROOT,
  run,
  runCli,
  slotOf,
  snapshot,
  TempRepo,
  testWhere,
} from "../test_util.ts";

/**
 * The compile task, pointed at a temporary output. Building needs Deno's
 * runtime for the target, which `deno compile` downloads: where it cannot,
 * the test below is reported as ignored, with the reason in its name.
 */
const compiled: { binary: string; dir: string } | { reason: string } = await (async () => {
  const task = (denoJson as { tasks: Record<string, string> }).tasks.compile.split(" ");
  const dir = await Deno.makeTempDir({ prefix: "worktree-ports-compile-" });
  const output = `${dir}/worktree-ports`;
  const args = task.slice(1).map((word, index, words) =>
    words[index - 1] === "--output" ? output : word
  );
  const result = await run(Deno.execPath(), args, { cwd: ROOT });
  if (result.code === 0) return { binary: output, dir };
  await Deno.remove(dir, { recursive: true });
  const reason = /error sending request|dns error|Download/.test(result.stderr)
    ? "deno compile could not download its runtime (no network here)"
    : `deno compile failed: ${result.stderr.trim().split("\n").at(-1)}`;
  console.log(`compile test skipped: ${reason}`);
  return { reason };
})();

Deno.test("every config the README shows is a valid config", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const example = /## Configuration[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)![1];
  const config = parseConfig(JSON.parse(example));
  assert.deepEqual(Object.keys(config.ports), ["cloud_port", "web_port", "db_port"]);
  // Every JSON block with "ports", indented in a list or not.
  const blocks = [...readme.matchAll(/^( *)```json\n([\s\S]*?)^ *```/gm)]
    .map(([, indent, text]) => text.replaceAll(new RegExp(`^${indent}`, "gm"), ""))
    .filter((text) => text.includes('"ports"'));
  assert.ok(blocks.length >= 3, `${blocks.length} configs found`);
  for (const text of blocks) parseConfig(JSON.parse(text));
});

testWhere(
  { tools: ["sh"] },
  "cli allocate from the README's post-checkout hook gives each new worktree its ports, and the hook lets git go on where the tool is not installed",
  async () => {
    // The hook allocates by the committed config, whose ports are picked for this test.
    await using repo = await TempRepo.create({ config: pickPorts(["web", "api"]).config() });
    const readme = await Deno.readTextFile(`${ROOT}README.md`);
    const hook =
      /```sh\n {0,3}(#!\/bin\/sh\n {0,3}# \.git\/hooks\/post-checkout[\s\S]*?\n) {0,3}```/
        .exec(readme)?.[1].replace(/^ {3}/gm, "");
    assert.ok(hook, "the README shows the hook");
    await Deno.writeTextFile(`${repo.root}/.git/hooks/post-checkout`, hook, { mode: 0o755 });
    // Without the tool on PATH, git worktree add still works, and nothing is allocated.
    const bare = await repo.addWorktree("without");
    await assert.rejects(Deno.stat(`${bare}/.worktree-ports.json`), Deno.errors.NotFound);
    // With it: "worktree-ports" runs this checkout's cli.ts.
    const bin = `${repo.base}/bin`;
    await Deno.mkdir(bin);
    await Deno.writeTextFile(
      `${bin}/worktree-ports`,
      `#!/bin/sh\nexec '${Deno.execPath()}' run ${
        CLI_FLAGS.map((flag) => `'${flag}'`).join(" ")
      } '${ROOT}cli.ts' "$@"\n`,
      { mode: 0o755 },
    );
    const path = `${bin}:${(await run("sh", ["-c", 'printf %s "$PATH"'])).stdout}`;
    for (const name of ["wt0", "wt1"]) {
      const added = await run(
        "git",
        ["worktree", "add", "-q", "--detach", `${repo.base}/${name}`],
        {
          cwd: repo.root,
          env: { PATH: path },
        },
      );
      assert.equal(added.code, 0, added.stderr);
    }
    assert.equal(slotOf(await readJson(`${repo.base}/wt0/.worktree-ports.json`)), 1);
    assert.equal(slotOf(await readJson(`${repo.base}/wt1/.worktree-ports.json`)), 2);
    assert.equal(await git(`${repo.base}/wt1`, "status", "--porcelain"), "");
  },
);

Deno.test("cli flags everywhere match the permission set in deno.json", async () => {
  const flags = permissionSetFlags();
  assert.deepEqual([...flags].sort(), [...CLI_FLAGS].sort());
  const cli = await Deno.readTextFile(`${ROOT}cli.ts`);
  const shebang = cli.split("\n")[0];
  assert.match(shebang, /^#!\/usr\/bin\/env -S deno run /);
  assert.deepEqual(shebang.split(" ").slice(4).sort(), [...flags].sort());
  const help = await runCli(ROOT, ["--help"]);
  assert.deepEqual(
    /Permissions: (.*)/.exec(help.stdout)![1].split(" ").map((flag) => flag.replaceAll("'", ""))
      .sort(),
    [...flags].sort(),
  );
  // Printed and shown, the net flag is quoted, so that it pastes into zsh.
  assert.match(help.stdout, / --allow-net='127\.0\.0\.1,\[::1\],0\.0\.0\.0,\[::\]'[ \n]/);
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const install = /deno install -g -f -n worktree-ports ([^\n]*\\\n[^\n]*) jsr:/.exec(readme)![1];
  assert.deepEqual(
    install.replace("\\\n", " ").split(/\s+/).filter(Boolean).map((flag) =>
      flag.replaceAll("'", "")
    )
      .sort(),
    [...flags].sort(),
  );
});

Deno.test("./cli.ts runs through its shebang", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const result = await run(`${ROOT}cli.ts`, ["allocate", ...ports.args], { cwd: a });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(slotOf(JSON.parse(result.stdout)), 1);
});

Deno.test("deno install from this checkout gives a working worktree-ports command", async () => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a] = await repo.addWorktrees("wt", 1);
  const root = await Deno.makeTempDir({ prefix: "worktree-ports-install-" });
  try {
    const install = await run(Deno.execPath(), [
      "install",
      "-g",
      "--root",
      root,
      "-n",
      "worktree-ports",
      ...permissionSetFlags(),
      `${ROOT}cli.ts`,
    ]);
    assert.equal(install.code, 0, install.stderr);
    const installed = `${root}/bin/worktree-ports`;
    const result = await run(installed, ["allocate", ...ports.args], { cwd: a });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), JSON.parse(result.stdout));
    const version = await run(installed, ["--version"], { cwd: a });
    assert.equal(version.stdout, `${denoJson.version}\n`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: `the compiled binary allocates${
    "reason" in compiled ? ` (skipped: ${compiled.reason})` : ""
  }`,
  ignore: "reason" in compiled,
  fn: async () => {
    const ports = pickPorts(["web", "api"]);
    if (!("binary" in compiled)) return;
    try {
      await using repo = await TempRepo.create();
      const [a] = await repo.addWorktrees("wt", 1);
      const result = await run(compiled.binary, ["allocate", ...ports.args], { cwd: a });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(slotOf(await readJson(`${a}/.worktree-ports.json`)), 1);
      const version = await run(compiled.binary, ["--version"], { cwd: a });
      assert.equal(version.stdout, `${denoJson.version}\n`);
    } finally {
      await Deno.remove(compiled.dir, { recursive: true });
    }
  },
});

Deno.test("deno publish ships only the package files", async () => {
  const result = await run(Deno.execPath(), ["publish", "--dry-run", "--allow-dirty"], {
    cwd: ROOT,
  });
  assert.equal(result.code, 0, result.stderr);
  const root = new URL("../", import.meta.url).href;
  const files = [...result.stderr.matchAll(/(file:\/\/\S+) \(/g)]
    .map((match) => match[1].slice(root.length));
  // The modules under src/ and nothing else of them: no test, no test data.
  const modules: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(new URL(dir, root))) {
      if (entry.isDirectory) walk(`${dir}/${entry.name}`);
      else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
        modules.push(`${dir}/${entry.name}`);
      }
    }
  };
  walk("src");
  assert.ok(modules.includes("src/cli/commands/allocate.ts"), modules.join(", "));
  assert.deepEqual(
    files.sort(),
    ["LICENSE", "README.md", "cli.ts", "deno.json", "mod.ts", ...modules].sort(),
  );
});

Deno.test("deno run mod.ts runs the command line, the way jsr:@org/worktree-ports is run", async (t) => {
  const ports = pickPorts(["web", "api"]);
  await using repo = await TempRepo.create();
  const [a, b] = await repo.addWorktrees("wt", 2);
  const viaMod = (cwd: string, args: string[], flags: readonly string[] = ["-A"]) =>
    run(Deno.execPath(), ["run", ...flags, `${ROOT}mod.ts`, ...args], { cwd });
  await t.step("allocate writes and prints the bundle as cli.ts does", async () => {
    const result = await viaMod(a, ["allocate", ...ports.args]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(slotOf(JSON.parse(result.stdout)), 1);
    assert.deepEqual(await readJson(`${a}/.worktree-ports.json`), JSON.parse(result.stdout));
    const second = await runCli(b, ["allocate", ...ports.args]);
    assert.equal(slotOf(JSON.parse(second.stdout)), 2);
  });
  await t.step("with the permission set instead of -A", async () => {
    const result = await viaMod(a, ["show", "web"], CLI_FLAGS);
    assert.deepEqual([result.code, result.stdout, result.stderr], [0, `${ports.at(1).web}\n`, ""]);
  });
  await t.step("--help prints the same help as cli.ts", async () => {
    const [viaRoot, viaCli] = await Promise.all([viaMod(a, ["--help"]), runCli(a, ["--help"])]);
    assert.equal(viaRoot.code, 0);
    assert.match(viaRoot.stdout, /^Usage: worktree-ports COMMAND/m);
    assert.equal(viaRoot.stdout, viaCli.stdout);
  });
  await t.step("a usage error exits 2, as cli.ts does", async () => {
    const result = await viaMod(a, ["no-such-command"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^error: Unknown command "no-such-command"/);
  });
  await t.step("importing mod.ts runs nothing", async () => {
    const script = `${repo.base}/import.ts`;
    await Deno.writeTextFile(
      script,
      `import { PORT_FILE_NAME } from ${JSON.stringify(`${ROOT}mod.ts`)};\n` +
        `console.log(PORT_FILE_NAME);\n`,
    );
    const before = await snapshot(b);
    const result = await run(Deno.execPath(), ["run", "-A", script, "allocate"], { cwd: b });
    assert.deepEqual([result.code, result.stdout, result.stderr], [
      0,
      ".worktree-ports.json\n",
      "",
    ]);
    assert.deepEqual(await snapshot(b), before);
  });
});

testWhere(
  { tools: ["sh"] },
  "the README's install line for exec installs a command that runs any program",
  async () => {
    const ports = pickPorts(["web", "api"]);
    await using repo = await TempRepo.create();
    const [a] = await repo.addWorktrees("wt", 1);
    const readme = await Deno.readTextFile(`${ROOT}README.md`);
    const line = /deno install -g -f -n worktree-ports (--allow-run [^\n]*\\\n[^\n]*) jsr:/
      .exec(readme)![1];
    const flags = line.replace("\\\n", " ").split(/\s+/).filter(Boolean)
      .map((flag) => flag.replaceAll("'", ""));
    assert.ok(flags.includes("--allow-run"), line);
    const root = await Deno.makeTempDir({ prefix: "worktree-ports-install-" });
    try {
      const install = await run(Deno.execPath(), [
        "install",
        "-g",
        "-f",
        "--root",
        root,
        "-n",
        "worktree-ports",
        ...flags,
        `${ROOT}cli.ts`,
      ]);
      assert.equal(install.code, 0, install.stderr);
      const result = await run(`${root}/bin/worktree-ports`, [
        "exec",
        ...ports.args,
        "--",
        "sh",
        "-c",
        'echo "$WEB"',
      ], { cwd: a });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, `${ports.at(1).web}\n`);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

/** The static imports of every module of the package reached from `entry`, by path from the root. */
async function staticImports(entry: string): Promise<Map<string, string[]>> {
  const result = await run(Deno.execPath(), ["info", "--json", entry], { cwd: ROOT });
  assert.equal(result.code, 0, result.stderr);
  const root = new URL("../", import.meta.url).href;
  const local = (specifier: string) =>
    specifier.startsWith(root) ? specifier.slice(root.length) : undefined;
  const graph = new Map<string, string[]>();
  const info = JSON.parse(result.stdout) as {
    modules: {
      specifier: string;
      dependencies?: {
        isDynamic?: boolean;
        code?: { specifier?: string };
        type?: { specifier?: string };
      }[];
    }[];
  };
  for (const module of info.modules) {
    const from = local(module.specifier);
    if (from === undefined) continue;
    const to = (module.dependencies ?? []).filter((dependency) => !dependency.isDynamic)
      .flatMap((dependency) => [dependency.code?.specifier, dependency.type?.specifier])
      .map((specifier) => specifier === undefined ? undefined : local(specifier))
      .filter((path): path is string => path !== undefined);
    graph.set(from, [...new Set(to)]);
  }
  return graph;
}

Deno.test("imports run one way: no static cycle, and nothing in src/ imports mod.ts or cli.ts", async () => {
  const graph = new Map([...await staticImports("cli.ts"), ...await staticImports("mod.ts")]);
  assert.ok(graph.has("src/allocate.ts") && graph.has("src/cli/args.ts"), [...graph.keys()].join());
  for (const [from, to] of graph) {
    if (!from.startsWith("src/")) continue;
    assert.deepEqual(to.filter((path) => path === "mod.ts" || path === "cli.ts"), [], from);
  }
  // Depth-first: a module met again while still on the path closes a cycle.
  const done = new Set<string>();
  const visit = (module: string, path: string[]) => {
    const seen = path.indexOf(module);
    assert.equal(seen, -1, `import cycle: ${[...path.slice(seen), module].join(" -> ")}`);
    if (done.has(module)) return;
    for (const next of graph.get(module) ?? []) visit(next, [...path, module]);
    done.add(module);
  };
  for (const module of graph.keys()) visit(module, []);
});
