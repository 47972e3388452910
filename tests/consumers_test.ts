// The values reach every program that reads them exactly: dotenv readers
// (python-dotenv, npm's dotenv, direnv, docker-compose), shells evaluating
// `env`, and the completion scripts in bash, zsh and fish.

import assert from "node:assert/strict";
import { formatEnv } from "../mod.ts";
import {
  composePorts,
  composeRecipe,
  dotenvReaders,
  git,
  installed,
  oddValue,
  type Output,
  pickPorts,
  repoWithOddTemplate,
  ROOT,
  run,
  runCli,
  runsOk,
  TempRepo,
  testWhere,
} from "../test_util.ts";

/** Values that dotenv readers disagree on, by how each is quoted. */
const TRICKY_VALUES: Record<string, string> = {
  EMPTY: "",
  PLAIN: "http://127.0.0.1:3100/a?b=c",
  SPACE: "a b",
  EDGE_SPACES: " lead and trail ",
  SINGLE_QUOTE: "it's",
  DOUBLE_QUOTES: 'say "hi"',
  DOLLAR_NAME: "$HOME",
  BACKSLASH_DOLLAR: "\\$HOME",
  BACKSLASH: "C:\\Users\\dev",
  DOUBLE_BACKSLASH: "a\\\\b",
  TRAILING_BACKSLASH: "end\\",
  BACKSLASH_N: "\\n",
  HASH: "a#b",
  SPACE_HASH: "a #b",
  LEADING_HASH: "#start",
  EQUALS: "a=b=c",
  NEWLINE: "line1\nline2",
  QUOTE_NEWLINE: "it's\n#2",
  TAB: "tab\there",
  UNICODE: "héllo ✓ \u2028",
  BACKTICKS: "`id` $(id)",
  LONE_DOLLARS: "a$ $ $$",
  BRACES: "{a} }b{",
  // No quoting keeps these exact in every reader: they are refused.
  BRACED_NAME: "${HOME}",
  BRACED_DEFAULT: "${HOME:-x}",
  BOTH_QUOTES: `'both" q`,
  QUOTE_DOLLAR: "it's $HOME",
  BACKSLASH_SPACE: "C:\\Program Files\\",
  BACKSLASH_NEWLINE: "a\\\nb",
  CARRIAGE_RETURN: "a\r\nb",
};

const REFUSED_VALUES = [
  "BRACED_NAME",
  "BRACED_DEFAULT",
  "BOTH_QUOTES",
  "QUOTE_DOLLAR",
  "BACKSLASH_SPACE",
  "BACKSLASH_NEWLINE",
  "CARRIAGE_RETURN",
];

/** Loads the bash completion script; the function it returns completes the words typed so far. */
async function bashCompleter(): Promise<(...words: string[]) => Promise<string[]>> {
  const script = (await runCli(ROOT, ["completions", "bash"], { flags: [] })).stdout;
  return async (...words: string[]) => {
    const line = `COMP_WORDS=(${words.map((word) => `'${word}'`).join(" ")}); COMP_CWORD=${
      words.length - 1
    }; _worktree_ports; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const result = await run("bash", ["-c", `${script}\n${line}`]);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout.trim().split("\n");
  };
}

/** Writes the CLI's completion script for a shell to a temporary file for `fn`. */
async function withCompletionScript(shell: string, fn: (file: string) => Promise<void>) {
  const script = (await runCli(ROOT, ["completions", shell], { flags: [] })).stdout;
  const file = await Deno.makeTempFile({ suffix: `.${shell}` });
  try {
    await Deno.writeTextFile(file, script);
    await fn(file);
  } finally {
    await Deno.remove(file);
  }
}

const hasZsh = installed("zsh");

const hasFish = installed("fish");

/** Template values with what shells and dotenv readers treat specially. */
const TRICKY_TEMPLATES: Record<string, string> = {
  single_quote: "it's",
  double_quotes: 'say "hi" on {web_port}',
  dollar: "$HOME $(touch pwned) (touch pwned2) `touch pwned3`",
  backslashes: "C:\\dir\\ \\\\ \\' \\n",
  trailing_backslash: "end\\",
  spaces: "  two  spaces  ",
  newline: "line1\nline2\n",
  unicode: "héllo ✓",
  empty: "",
  glob: "* ? [a] ~ %self",
};

const hasCompose1 = runsOk("docker-compose", ["version"]);

Deno.test("formatEnv() dotenv is read back exactly by python-dotenv, npm dotenv, node --env-file, direnv and docker-compose", async (t) => {
  const accepted: Record<string, string> = {};
  const refused: string[] = [];
  for (const [name, value] of Object.entries(TRICKY_VALUES)) {
    try {
      formatEnv({ [name]: value }, "dotenv");
      accepted[name] = value;
    } catch (error) {
      assert.ok(error instanceof RangeError, String(error));
      refused.push(name);
    }
  }
  assert.deepEqual(refused, REFUSED_VALUES);
  const dir = await Deno.makeTempDir({ prefix: "worktree-ports-dotenv-" });
  try {
    const file = `${dir}/ports.env`;
    await Deno.writeTextFile(file, formatEnv(accepted, "dotenv"));
    // Each refused value in every form a dotenv writer could choose: bare,
    // single-quoted and double-quoted with escapes, one file each.
    const naive: string[] = [];
    for (const name of refused) {
      const value = TRICKY_VALUES[name];
      const forms = [
        value,
        `'${value}'`,
        `"${value.replace(/[\\"]/g, "\\$&").replaceAll("\n", "\\n")}"`,
      ];
      for (const [index, form] of forms.entries()) {
        const path = `${dir}/${name}-${index}.env`;
        await Deno.writeTextFile(path, `${name}=${form}\nNEXT=ok\n`);
        naive.push(path);
      }
    }
    const misread = new Set<string>();
    for (const reader of dotenvReaders(dir)) {
      await t.step({
        name: `${reader.name}${reader.missing ? ` (skipped: ${reader.missing})` : ""}`,
        ignore: reader.missing !== undefined,
        fn: async () => {
          const [values, ...naiveValues] = await reader.read([file, ...naive]);
          assert.deepEqual(values, accepted);
          naiveValues.forEach((read, index) => {
            const name = refused[Math.floor(index / 3)];
            if (read[name] !== TRICKY_VALUES[name] || read.NEXT !== "ok") {
              misread.add(naive[index]);
            }
          });
        },
      });
    }
    // Compose v2 is optional here: the four others decide which values are refused.
    const missing = dotenvReaders(dir).filter((reader) =>
      reader.missing !== undefined && reader.name !== "docker compose v2"
    );
    await t.step({
      name: `every refused value is misread in every form by some reader${
        missing.length > 0 ? " (skipped: not every reader is installed)" : ""
      }`,
      ignore: missing.length > 0,
      fn: () => assert.deepEqual(naive.filter((path) => !misread.has(path)), []),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWhere(
  { tools: ["bash"] },
  "cli env prints shell lines that bash evaluates to exactly the values, running nothing",
  async () => {
    const ports = pickPorts(["web_port"], { slots: 50 });
    await using repo = await repoWithOddTemplate(ports);
    const [a] = await repo.addWorktrees("wt", 1);
    const env = await runCli(a, ["env"]);
    assert.equal(env.code, 0, env.stderr);
    assert.match(env.stderr, /allocated slot 1 to this worktree/);
    const script = `eval "$(cat)"; printf '%s\\n%s' "$WEB_PORT" "$ODD"`;
    const evaluated = await new Deno.Command("bash", {
      args: ["-c", script],
      cwd: a,
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const writer = evaluated.stdin.getWriter();
    await writer.write(new TextEncoder().encode(env.stdout));
    await writer.close();
    const output = await evaluated.output();
    assert.equal(
      new TextDecoder().decode(output.stdout),
      `${ports.at(1).web_port}\n${oddValue(ports)}`,
    );
    await assert.rejects(Deno.stat(`${a}/pwned`), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(`${a}/pwned2`), Deno.errors.NotFound);
    // The second call finds the file and says nothing on stderr.
    const again = await runCli(a, ["env"]);
    assert.deepEqual([again.stdout, again.stderr], [env.stdout, ""]);
  },
);

testWhere(
  { tools: ["bash"] },
  "cli completions bash loads in bash and completes commands, options and values",
  async () => {
    const complete = await bashCompleter();
    assert.deepEqual(await complete("worktree-ports", "al"), ["allocate"]);
    assert.deepEqual(await complete("worktree-ports", "c"), ["check", "completions"]);
    assert.deepEqual(await complete("worktree-ports", "allocate", "--lo"), ["--lock-timeout"]);
    assert.deepEqual(await complete("worktree-ports", "env", "--format", ""), [
      "shell",
      "dotenv",
      "json",
      "fish",
      "powershell",
    ]);
    assert.deepEqual(await complete("worktree-ports", "env", "--format", "p"), ["powershell"]);
    assert.deepEqual(await complete("worktree-ports", "completions", "z"), ["zsh"]);
    assert.ok((await complete("worktree-ports", "exec", "bas")).includes("bash"));
    // The command after exec, after "--" and after exec's options, as sudo's.
    assert.ok((await complete("worktree-ports", "exec", "--", "bas")).includes("bash"));
    assert.ok(
      (await complete("worktree-ports", "exec", "--config", "f.json", "bas")).includes("bash"),
    );
    assert.deepEqual(await complete("worktree-ports", "exec", "--lock"), ["--lock-timeout"]);
    assert.deepEqual(await complete("worktree-ports", "he"), ["help"]);
    assert.deepEqual(await complete("worktree-ports", "help", "al"), ["allocate"]);
  },
);

Deno.test({
  name:
    `cli completions zsh registers and completes commands, the command after exec and help in zsh${
      hasZsh ? "" : " (skipped: zsh is not installed)"
    }`,
  ignore: !hasZsh,
  fn: () =>
    withCompletionScript("zsh", async (file) => {
      assert.equal((await run("zsh", ["-n", file])).code, 0);
      // A real interactive zsh on a pseudo-terminal types "allo<TAB><Enter>";
      // the stub command then prints the words it got. Checking what ran, not
      // what the line editor drew, keeps this independent of redraw timing.
      const driver = [
        "zmodload zsh/zpty",
        "zpty z zsh -f -i",
        "seen=",
        "await() {",
        "  local chunk",
        "  repeat 100; do",
        "    while zpty -r -t z chunk; do seen+=$chunk; done",
        "    [[ $seen == $~1 ]] && return 0",
        "    sleep 0.1",
        "  done",
        '  print -r -- "timed out waiting for $1 in: $seen"; return 1',
        "}",
        `zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; source ${file}; ` +
        `worktree-ports() { print -r -- "ARGS:$*"; }; zzuniquecmd() { }; print RE""ADY'`,
        "await '*READY*' || exit 1",
        "zpty -w z $'worktree-ports allo\\t'",
        "await '*ARGS:allocate*' || exit 1",
        // The command after exec, with "--" and without; then help.
        "zpty -w z $'worktree-ports exec -- zzuniq\\t'",
        "await '*ARGS:exec -- zzuniquecmd*' || exit 1",
        "zpty -w z $'worktree-ports exec --scope repository zzuniq\\t'",
        "await '*ARGS:exec --scope repository zzuniquecmd*' || exit 1",
        "zpty -w z $'worktree-ports he\\t'",
        "await '*ARGS:help*' || exit 1",
        "zpty -d z",
        "[[ $seen != *'bad math'* ]] || { print -r -- \"zsh complained: $seen\"; exit 1 }",
      ].join("\n");
      const result = await run("zsh", ["-f", "-c", driver]);
      assert.equal(result.code, 0, result.stdout + result.stderr);
    }),
});

Deno.test({
  name: `cli completions fish completes commands, values, the command after exec and help in fish${
    hasFish ? "" : " (skipped: fish is not installed)"
  }`,
  ignore: !hasFish,
  fn: () =>
    withCompletionScript("fish", async (file) => {
      const complete = async (line: string) => {
        const result = await run("fish", [
          "-c",
          `source ${file}; function zzuniquecmd; end; complete -C${JSON.stringify(line)}`,
        ]);
        assert.equal(result.code, 0, result.stderr);
        return result.stdout.trim().split("\n");
      };
      assert.deepEqual(await complete("worktree-ports al"), [
        "allocate\tGive this worktree its bundle of ports, write it to the port file and print it",
      ]);
      // Each value alone, not beside the option's long description.
      assert.deepEqual(await complete("worktree-ports env --format "), [
        "dotenv",
        "fish",
        "json",
        "powershell",
        "shell",
      ]);
      assert.deepEqual(await complete("worktree-ports exec -- zzuniq"), ["zzuniquecmd"]);
      assert.deepEqual(await complete("worktree-ports exec zzuniq"), ["zzuniquecmd"]);
      assert.match((await complete("worktree-ports he")).join("\n"), /^help\t/m);
    }),
});

Deno.test("cli allocate's env_file is read back exactly by node --env-file, python-dotenv, npm dotenv, direnv and docker-compose", async (t) => {
  // Every value dotenv output accepts, as templates (braces doubled, as templates write them).
  const accepted = Object.entries(TRICKY_VALUES).filter(([name]) => !REFUSED_VALUES.includes(name));
  const ports = pickPorts(["web_port"], { slots: 50 });
  await using repo = await TempRepo.create({
    config: {
      ...ports.config(),
      templates: Object.fromEntries(
        accepted.map(([name, value]) => [
          name.toLowerCase(),
          value.replaceAll("{", "{{").replaceAll("}", "}}"),
        ]),
      ),
      env_file: "config/app.env",
    },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  const allocated = await runCli(a, ["allocate"]);
  assert.equal(allocated.code, 0, allocated.stderr);
  const expected = { WEB_PORT: String(ports.at(1).web_port), ...Object.fromEntries(accepted) };
  for (const reader of dotenvReaders(repo.base)) {
    await t.step({
      name: `${reader.name}${reader.missing ? ` (skipped: ${reader.missing})` : ""}`,
      ignore: reader.missing !== undefined,
      fn: async () => {
        const [values] = await reader.read([`${a}/config/app.env`]);
        assert.deepEqual(values, expected);
      },
    });
  }
});

/**
 * Prints `env --format FORMAT` for a worktree whose templates hold values
 * shells treat specially, has a real shell load it with `load` (which prints
 * each variable of `names` NUL-terminated), and checks every value arrived
 * exactly and nothing in them ran.
 */
async function assertShellLoadsEnv(
  format: string,
  extension: string,
  load: (file: string, names: readonly string[], cwd: string) => Promise<Output>,
): Promise<void> {
  const ports = pickPorts(["web_port"], { slots: 50 });
  await using repo = await TempRepo.create({
    config: { ...ports.config(), templates: TRICKY_TEMPLATES },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  const env = await runCli(a, ["env", "--format", format]);
  assert.equal(env.code, 0, env.stderr);
  const names = ["WEB_PORT", ...Object.keys(TRICKY_TEMPLATES).map((key) => key.toUpperCase())];
  const file = `${repo.base}/env.${extension}`;
  await Deno.writeTextFile(file, env.stdout);
  const result = await load(file, names, a);
  assert.equal(result.code, 0, result.stderr);
  const web = String(ports.at(1).web_port);
  const expected = [
    web,
    ...Object.values(TRICKY_TEMPLATES).map((value) => value.replace("{web_port}", web)),
  ];
  assert.deepEqual(result.stdout.split("\0").slice(0, -1), expected);
  for (const name of ["pwned", "pwned2", "pwned3"]) {
    await assert.rejects(Deno.stat(`${a}/${name}`), Deno.errors.NotFound);
  }
}

testWhere(
  { tools: ["fish"] },
  "cli env --format fish is sourced by fish to exactly the values, running nothing",
  () =>
    assertShellLoadsEnv("fish", "fish", (file, names, cwd) =>
      // Sourced from a pipe, as the README shows.
      run("fish", [
        "--no-config",
        "-c",
        `cat $argv[1] | source; for name in ${names.join(" ")}; printf '%s\\0' "$$name"; end`,
        file,
      ], { cwd })),
);

testWhere(
  { tools: ["pwsh"] },
  "cli env --format powershell is run by PowerShell to exactly the values, running nothing",
  () =>
    assertShellLoadsEnv("powershell", "ps1", (file, names, cwd) =>
      // Run as the README shows, through Invoke-Expression.
      run("pwsh", [
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        `Get-Content -Raw -Encoding utf8 '${file}' | Invoke-Expression; ` +
        `foreach ($name in @(${names.map((name) => `'${name}'`).join(",")})) { ` +
        `[Console]::Out.Write([Environment]::GetEnvironmentVariable($name) + [char]0) }`,
      ], { cwd })),
);

Deno.test({
  name: `cli the README's compose recipe reaches docker-compose v1 through a dotenv file${
    hasCompose1 ? "" : " (skipped: docker-compose is not installed)"
  }`,
  ignore: !hasCompose1,
  fn: async () => {
    const ports = composePorts();
    const slot1 = ports.at(1);
    // As the README has it: the project named from the folder, the env file written by allocate.
    const recipe = composeRecipe(ports);
    recipe.templates.compose_project_name = "myapp-{name}";
    await using repo = await TempRepo.create({ config: { ...recipe, env_file: ".env.ports" } });
    const login = `${repo.base}/app-login`;
    await git(repo.root, "worktree", "add", "-q", "-b", "Feature/Login_Page", login);
    const allocated = await runCli(login, ["allocate"]);
    assert.equal(allocated.code, 0, allocated.stderr);
    assert.match(
      await Deno.readTextFile(`${login}/.env.ports`),
      /^COMPOSE_PROJECT_NAME=myapp-app-login$/m,
    );
    await Deno.writeTextFile(
      `${login}/compose.yaml`,
      [
        "services:",
        "  web:",
        "    image: node:22",
        '    ports: ["127.0.0.1:${WEB_PORT}:3000"]',
        "    environment:",
        "      PUBLIC_URL: ${PUBLIC_URL}",
        "      DATABASE_URL: ${DATABASE_URL}",
        "  db:",
        "    image: postgres:17",
        '    ports: ["127.0.0.1:${DB_PORT}:5432"]',
        "",
      ].join("\n"),
    );
    const config = await run("docker-compose", ["--env-file", ".env.ports", "config"], {
      cwd: login,
      env: { HOME: repo.base },
    });
    assert.equal(config.code, 0, config.stderr);
    for (
      const line of [
        `- 127.0.0.1:${slot1.web_port}:3000/tcp`,
        `- 127.0.0.1:${slot1.db_port}:5432/tcp`,
        `PUBLIC_URL: http://feature-login-page.localhost:${slot1.web_port}`,
        `DATABASE_URL: postgres://app@127.0.0.1:${slot1.db_port}/app_1`,
      ]
    ) {
      assert.ok(config.stdout.includes(line), `${line} in:\n${config.stdout}`);
    }
    // The env file is out of git: the worktree can be removed.
    await Deno.remove(`${login}/compose.yaml`);
    await git(repo.root, "worktree", "remove", login);
  },
});

Deno.test("cli completions bash completes --scope and --all", async () => {
  const complete = await bashCompleter();
  assert.deepEqual(await complete("worktree-ports", "allocate", "--scope", ""), [
    "machine",
    "repository",
  ]);
  assert.deepEqual(await complete("worktree-ports", "list", "--a"), ["--all"]);
});
