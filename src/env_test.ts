import assert from "node:assert/strict";
import { bundleEnv, formatEnv } from "./env.ts";
import type { EnvFormat } from "./names.ts";

Deno.test("bundleEnv() upper-cases keys and keeps only scalar values with valid names", () => {
  assert.deepEqual(
    bundleEnv({
      cloud_port: 8100,
      cloud_url: "http://127.0.0.1:8100",
      "web-port": 3100,
      nested: { a: 1 },
      flag: true,
      worktree_ports: { slot: 1 },
    }),
    { CLOUD_PORT: "8100", CLOUD_URL: "http://127.0.0.1:8100" },
  );
});

Deno.test("formatEnv() quotes each format so values stay literal", async (t) => {
  const env = { PORT: "3100", URL: "http://127.0.0.1:3100/a?b=c", ODD: `it's $(id) "q"` };
  await t.step("shell", () => {
    assert.equal(
      formatEnv(env, "shell"),
      `export PORT='3100'\nexport URL='http://127.0.0.1:3100/a?b=c'\nexport ODD='it'\\''s $(id) "q"'\n`,
    );
  });
  await t.step("dotenv", () => {
    const { ODD: _, ...rest } = env;
    assert.equal(
      formatEnv({ ...rest, SPACE: "a b", QUOTE: "it's", DIR: "C:\\x", END: "x\\" }, "dotenv"),
      `PORT=3100\nURL='http://127.0.0.1:3100/a?b=c'\nSPACE='a b'\nQUOTE="it's"\nDIR='C:\\x'\nEND=x\\\n`,
    );
    assert.throws(() => formatEnv(env, "dotenv"), RangeError);
  });
  await t.step("json", () => {
    assert.deepEqual(JSON.parse(formatEnv(env, "json")), env);
  });
  await t.step("fish", () => {
    assert.equal(
      formatEnv({ PORT: "3100", ODD: `it's \\' $x\\` }, "fish"),
      `set -gx PORT '3100'\nset -gx ODD 'it\\'s \\\\\\' $x\\\\'\n`,
    );
  });
  await t.step("powershell", () => {
    assert.equal(
      formatEnv({ PORT: "3100", ODD: "it's ‘$x’" }, "powershell"),
      "$env:PORT = '3100'\n$env:ODD = 'it''s ‘‘$x’’'\n",
    );
  });
  await t.step("unknown format", () => {
    assert.throws(() => formatEnv(env, "yaml" as EnvFormat), TypeError);
  });
});

/**
 * Reads `$env:NAME = '...'` lines as PowerShell's language specification
 * reads a verbatim string: any of its four single-quote characters ends it,
 * and two of them in a row stand for the second. Nothing in it is expanded.
 */
function readPowershellAssignments(text: string): Record<string, string> {
  const quotes = "'\u2018\u2019\u201a\u201b";
  const env: Record<string, string> = {};
  let at = 0;
  while (at < text.length) {
    const head = /^\$env:([A-Za-z_][A-Za-z0-9_]*) = /.exec(text.slice(at));
    assert.ok(head !== null, `an assignment at ${JSON.stringify(text.slice(at))}`);
    at += head[0].length;
    assert.ok(quotes.includes(text[at]), "a quoted value");
    let value = "";
    for (at++;; at++) {
      assert.ok(at < text.length, "the quote is closed");
      if (!quotes.includes(text[at])) value += text[at];
      else if (quotes.includes(text[at + 1] ?? "")) value += text[++at];
      else break;
    }
    assert.equal(text[++at], "\n", "one assignment per line");
    at++;
    env[head[1]] = value;
  }
  return env;
}

Deno.test("formatEnv() powershell is read back exactly by PowerShell's quoting rules, expanding nothing", () => {
  const env = {
    PLAIN: "3100",
    QUOTES: `it's "x" ‘single’ ‚low‛ '' ’`,
    EXPANSIONS: "$env:PATH $(Remove-Item x) `n ${x} @(1)",
    LINES: "a\r\nb\n",
    BACKSLASH: "C:\\x\\",
    END_QUOTE: "x'",
  };
  assert.deepEqual(readPowershellAssignments(formatEnv(env, "powershell")), env);
});

Deno.test("formatEnv() dotenv refuses a value no quoting keeps exact, naming the variable and the character", async (t) => {
  for (
    const [name, value, character] of [
      ["BRACED_NAME", "${HOME}", /holds "\$\{"/],
      ["QUOTE_DOLLAR", "it's $HOME", /holds "'" and "\$"/],
      ["BACKSLASH_SPACE", "C:\\Program Files\\", /holds "\\" and a space/],
      ["BACKSLASH_NEWLINE", "a\\\nb", /holds a line break and "\\"/],
      ["ESCAPE", "a\x1bb", /holds the control character U\+001B/],
      // Node's --env-file keeps "\r" in double quotes as it is written.
      ["CARRIAGE_RETURN", "a\r\nb", /holds a carriage return/],
    ] as const
  ) {
    await t.step(name, () => {
      assert.throws(
        () => formatEnv({ PORT: "3100", [name]: value }, "dotenv"),
        (error: unknown) => {
          assert.ok(error instanceof RangeError);
          assert.match(error.message, new RegExp(`^Cannot write "${name}" as dotenv: `));
          assert.match(error.message, character);
          assert.match(error.message, /use "--format json" or "--format shell"/);
          return true;
        },
      );
    });
  }
});

Deno.test("bundleEnv() leaves out keys that would set a variable commands depend on, or the same variable", async (t) => {
  const table: [string, Record<string, unknown>, Record<string, string>, RegExp[]][] = [
    [
      "PATH and LD_PRELOAD",
      { port: 3100, path: "/x/evilbin", ld_preload: "/tmp/x.so" },
      { PORT: "3100" },
      [/^Left out key "path" of the port file: it would set "PATH"/, /"ld_preload".*"LD_PRELOAD"/],
    ],
    [
      "every reserved prefix",
      { lc_all: "C", deno_dir: "/x", git_dir: "/x", dyld_insert_libraries: "/x", home: "/x" },
      {},
      [/"LC_ALL"/, /"DENO_DIR"/, /"GIT_DIR"/, /"DYLD_INSERT_LIBRARIES"/, /"HOME"/],
    ],
    [
      "two keys that become one variable",
      { web: 3100, WEB: 3200, api: 3300 },
      { API: "3300" },
      [/^Left out keys "web" and "WEB" of the port file: they both become the variable "WEB"/],
    ],
    [
      "reserved names that also collide",
      { path: "/a", PATH: "/b" },
      {},
      [/^Left out keys "path" and "PATH" of the port file: they would set "PATH"/],
    ],
    ["a key that is not exported does not collide", { web: 3100, WEB: {} }, { WEB: "3100" }, []],
  ];
  for (const [name, bundle, expected, warnings] of table) {
    await t.step(name, () => {
      const seen: string[] = [];
      assert.deepEqual(bundleEnv(bundle, { onWarning: (w) => seen.push(w) }), expected);
      assert.equal(seen.length, warnings.length, seen.join("\n"));
      warnings.forEach((pattern, index) => assert.match(seen[index], pattern));
      assert.deepEqual(bundleEnv(bundle), expected);
    });
  }
});
