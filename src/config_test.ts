import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import { WorktreePortsError } from "./errors.ts";
import { assertCode } from "../test_util.ts";

/** One step per case: parseConfig() refuses the value with INVALID_CONFIG and a matching message. */
async function assertConfigErrors(
  t: Deno.TestContext,
  cases: readonly (readonly [string, unknown, RegExp])[],
): Promise<void> {
  for (const [name, value, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseConfig(value), (error: unknown) => {
        assertCode("INVALID_CONFIG")(error);
        assert.match((error as Error).message, message);
        return true;
      });
    });
  }
}

Deno.test("parseConfig() fills in the defaults when there is no config", () => {
  assert.deepEqual(parseConfig(undefined), {
    ports: { port: 3000 },
    templates: {},
    stride: 100,
    slots: 50,
  });
});

Deno.test("parseConfig() lets overrides add ports and replace stride and slots", () => {
  const config = parseConfig(
    { ports: { a: 1000, b: 2000 }, stride: 5, slots: 3 },
    { ports: { c: 9000, b: 3000 }, stride: 7, slots: 4 },
  );
  assert.deepEqual(config, {
    ports: { a: 1000, b: 3000, c: 9000 },
    templates: {},
    stride: 7,
    slots: 4,
  });
});

Deno.test("parseConfig() rejects each invalid config with a message naming the problem", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ["a non-object", [1, 2], /must be a JSON object/],
    ["an unknown key", { ports: { a: 1000 }, strides: 10 }, /unknown key "strides"/],
    ["an empty ports", { ports: {} }, /at least one port/],
    ["ports that is not an object", { ports: [3000] }, /"ports" must be an object/],
    ["a key that cannot be an env name", { ports: { "web-port": 3000 } }, /key "web-port"/],
    ["the reserved metadata key", { ports: { worktree_ports: 3000 } }, /reserved/],
    // Windows reads variable names in any case: "SystemRoot" is SYSTEMROOT.
    [
      "a Windows variable, in any case",
      { ports: { SystemRoot: 3000, comspec: 3001, Temp: 3002, web: 3003 } },
      /keys "SystemRoot" and "comspec" and "Temp" would set "SYSTEMROOT" and "COMSPEC" and "TEMP", which commands need from the environment/,
    ],
    ["a non-integer port", { ports: { web: 3000.5 } }, /port "web" must be an integer/],
    ["a string port", { ports: { web: "3000" } }, /port "web" must be an integer/],
    ["port 0", { ports: { web: 0 } }, /from 1 to 65535, got 0/],
    ["a port above 65535", { ports: { web: 70000 } }, /got 70000/],
    ["a zero stride", { ports: { web: 3000 }, stride: 0 }, /"stride" must be an integer/],
    ["a negative slots", { ports: { web: 3000 }, slots: -1 }, /"slots" must be an integer/],
    ["a fractional slots", { ports: { web: 3000 }, slots: 1.5 }, /"slots" must be an integer/],
    [
      "a template naming a missing key",
      { ports: { web: 3000 }, templates: { url: "http://x:{api}" } },
      /template "url" names "\{api\}", which is neither in "ports" nor one of "\{slot\}"/,
    ],
    [
      "a template named like a port",
      { ports: { web: 3000 }, templates: { web: "x" } },
      /same name as a port/,
    ],
    ["a non-string template", { ports: { web: 3000 }, templates: { url: 1 } }, /must be a string/],
    [
      "a slot beyond port 65535",
      { ports: { web: 60000 }, stride: 100, slots: 60 },
      /port "web" at slot 56 would be 65600/,
    ],
    [
      "two keys landing on the same port",
      { ports: { cloud_port: 8000, web_port: 3000 }, stride: 100, slots: 50 },
      /port "web_port" at slot 50 and port "cloud_port" at slot 0 both land on 8000/,
    ],
    [
      "two ranges that overlap, with the slots and the stride that would not",
      { ports: { web: 34000, api: 35000 } },
      /port "web" at slot 10 and port "api" at slot 0 both land on 35000 \(lower "slots" to 9, or make "stride" 99, or change a base port so that the ranges do not overlap\)/,
    ],
    [
      "two keys with the same base",
      { ports: { a: 3000, b: 3000 } },
      /port "b" at slot 0 and port "a" at slot 0 both land on 3000/,
    ],
  ];
  await assertConfigErrors(t, cases);
});

Deno.test("parseConfig() finds exactly the configs that listing every slot would reject", () => {
  // The check is arithmetic; this compares it with the obvious enumeration.
  let seed = 7;
  const random = (max: number) => (seed = (seed * 48271) % 2147483647) % max;
  const outcomes = { valid: 0, invalid: 0 };
  for (let trial = 0; trial < 2000; trial++) {
    const stride = 1 + random(40);
    const slots = 1 + random(30);
    const ports: Record<string, number> = {};
    const keys = 1 + random(4);
    for (let key = 0; key < keys; key++) ports[`k${key}`] = 64000 + random(1500);
    const seen = new Set<number>();
    let valid = true;
    for (let slot = 0; slot <= slots && valid; slot++) {
      for (const base of Object.values(ports)) {
        const port = base + slot * stride;
        if (port > 65535 || seen.has(port)) valid = false;
        seen.add(port);
      }
    }
    const config = { ports, stride, slots };
    if (valid) {
      parseConfig(config);
    } else {
      assert.throws(
        () => parseConfig(config),
        assertCode("INVALID_CONFIG"),
        JSON.stringify(config),
      );
    }
    outcomes[valid ? "valid" : "invalid"]++;
  }
  // Both kinds were really tried.
  assert.ok(outcomes.valid > 200 && outcomes.invalid > 200, JSON.stringify(outcomes));
});

Deno.test("parseConfig() adds the ports override to the config's ports and blames it for its errors", async (t) => {
  const value = { ports: { web: 3000 }, templates: { url: "http://127.0.0.1:{web}" } };
  await t.step("added and replaced", () => {
    assert.deepEqual(parseConfig(value, { ports: { api: 9000 } }).ports, { web: 3000, api: 9000 });
    assert.deepEqual(parseConfig(value, { ports: { web: 4000 } }).ports, { web: 4000 });
    // Without ports in the config, the override replaces the default.
    assert.deepEqual(parseConfig({}, { ports: { api: 9000 } }).ports, { api: 9000 });
  });
  await t.step("errors", () => {
    const source = '"/repo/worktree-ports.config.json"';
    assert.throws(
      () => parseConfig(value, { source, ports: { api: 0 } }),
      /^WorktreePortsError: Invalid option "ports": port "api" must be an integer/,
    );
    assert.throws(
      () => parseConfig(value, { source, ports: { api: 0 }, overrideNames: { ports: "--port" } }),
      /^WorktreePortsError: Invalid --port: port "api"/,
    );
    assert.throws(
      () => parseConfig(value, { source, ports: { api: 3100 } }),
      /^WorktreePortsError: Invalid option "ports" with config "\/repo\/worktree-ports\.config\.json": port "web" at slot 1 and port "api" at slot 0 both land on 3100/,
    );
    assert.throws(
      () => parseConfig({ ...value, stride: 0 }, { source, ports: { api: 9000 } }),
      /^WorktreePortsError: Invalid config "\/repo\/worktree-ports\.config\.json": "stride" must be/,
    );
  });
});

Deno.test("parseConfig() refuses keys whose variable names collide or that the environment depends on", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    [
      "a port and a port",
      { ports: { web_port: 3000, WEB_PORT: 4000 } },
      /: keys "web_port" and "WEB_PORT" both become the variable "WEB_PORT"/,
    ],
    [
      "a port and a template",
      { ports: { web: 3000 }, templates: { Web: "x" } },
      /: keys "web" and "Web" both become the variable "WEB"/,
    ],
    [
      "PATH",
      { ports: { web: 3000 }, templates: { path: "/bin" } },
      /: key "path" would set "PATH", which commands need from the environment \(rename it, e.g. "app_path"\)/,
    ],
    ...["home", "Shell", "user", "pwd", "lang", "term", "tmpdir"].map((key) =>
      [
        key,
        { ports: { [key]: 3000 } },
        new RegExp(`key "${key}" would set "${key.toUpperCase()}"`),
      ] as [
        string,
        unknown,
        RegExp,
      ]
    ),
    ...["lc_all", "deno_dir", "git_dir", "ld_preload", "dyld_library_path"].map((key) =>
      [
        key,
        { ports: { web: 3000 }, templates: { [key]: "x" } },
        new RegExp(`key "${key}" would set`),
      ] as [
        string,
        unknown,
        RegExp,
      ]
    ),
    [
      "several at once",
      { ports: { path: 3000, git_port: 4000 } },
      /: keys "path" and "git_port" would set "PATH" and "GIT_PORT"/,
    ],
  ];
  await assertConfigErrors(t, cases);
  await t.step("names that only look alike are fine", () => {
    const config = parseConfig({ ports: { path_port: 3000, home_url_port: 4001, lc: 5002 } });
    assert.deepEqual(Object.keys(config.ports), ["path_port", "home_url_port", "lc"]);
  });
});

Deno.test("parseConfig() checks template placeholders", async (t) => {
  await t.step("an unknown placeholder, with the escape to use", () => {
    assert.throws(
      () => parseConfig({ ports: { web: 3000 }, templates: { json: '{"a": {b}}' } }),
      /template "json" names "\{b\}", which is neither in "ports" nor one of "\{slot\}", "\{branch\}", "\{name\}", "\{slug\}", "\{repo\}" or "\{proxy_port\}" \(write "\{\{" and "\}\}" for literal braces\)/,
    );
  });
  await t.step("an escaped one is fine", () => {
    parseConfig({ ports: { web: 3000 }, templates: { json: '{{"a": {{b}}}}' } });
  });
  await t.step("a port named like a placeholder", () => {
    assert.throws(
      () => parseConfig({ ports: { slot: 3000 } }),
      /port "slot" has the name of the placeholder "\{slot\}" \(rename it\)/,
    );
  });
});

Deno.test('parseConfig() accepts "scope" and rejects any other value', () => {
  assert.equal(parseConfig({ scope: "repository" }).scope, "repository");
  assert.equal(parseConfig({ scope: "machine" }).scope, "machine");
  assert.equal(parseConfig({}).scope, undefined);
  assert.throws(
    () => parseConfig({ scope: "planet" }),
    (error: unknown) =>
      error instanceof WorktreePortsError && error.code === "INVALID_CONFIG" &&
      /"scope" must be "machine" or "repository", got "planet"/.test(error.message),
  );
});

Deno.test("parseConfig() reads env_file as one path or a list, inside the worktree", async (t) => {
  assert.deepEqual(parseConfig({ env_file: ".env.ports" }).envFiles, [".env.ports"]);
  assert.deepEqual(
    parseConfig({ env_file: ["./config//dev.env", "web\\.env"] }).envFiles,
    ["config/dev.env", "web/.env"],
  );
  assert.deepEqual(parseConfig({ env_file: [] }).envFiles, []);
  assert.equal(parseConfig({}).envFiles, undefined);
  const cases: [string, unknown, RegExp][] = [
    ["a number", { env_file: 3 }, /"env_file" must be a path or a list of paths, got 3/],
    ["a list with a number", { env_file: [".env", 1] }, /must be a path or a list of paths/],
    ["an empty path", { env_file: "" }, /"env_file" "" must be a path on one line/],
    ["a line break", { env_file: "a\nb" }, /must be a path on one line/],
    ["an absolute path", { env_file: "/etc/profile" }, /must be relative to the worktree root/],
    ["a drive path", { env_file: "C:\\x.env" }, /must be relative to the worktree root/],
    ["a way out", { env_file: "../other/.env" }, /must stay inside the worktree \(no ".."\)/],
    ["a folder", { env_file: "config/" }, /names a folder/],
    ["the worktree itself", { env_file: "./" }, /names a folder/],
    ["git's directory", { env_file: ".git/hooks/x" }, /is inside git's own directory/],
    ["git's directory in capitals", { env_file: ".GIT/x" }, /is inside git's own directory/],
    ["the port file", { env_file: "./.worktree-ports.json" }, /is the port file itself/],
    ["the config", { env_file: "worktree-ports.config.json" }, /is the config itself/],
    ["the same file twice", { env_file: [".env", "./.env"] }, /"\.\/\.env" is named twice/],
  ];
  await assertConfigErrors(t, cases);
});

Deno.test('parseConfig() takes "on_release" as a command list whose placeholders name ports, templates or the worktree', async (t) => {
  const base = { ports: { web: 3000 }, templates: { compose_project: "app-{slug}" } };
  await t.step("every placeholder the bundle knows", () => {
    const config = parseConfig({
      ...base,
      on_release: ["docker", "compose", "-p", "{compose_project}", "down", "{web}", "{slot}{{x}}"],
    });
    assert.deepEqual(config.onRelease, [
      "docker",
      "compose",
      "-p",
      "{compose_project}",
      "down",
      "{web}",
      "{slot}{{x}}",
    ]);
  });
  const cases: [string, unknown, RegExp][] = [
    [
      "an unknown placeholder, named",
      ["echo", "{project}"],
      /Invalid config: "on_release" names "\{project\}", which is neither in "ports" nor in "templates" nor one of "\{slot\}", "\{branch\}", "\{name\}", "\{slug\}", "\{repo\}" or "\{proxy_port\}"/,
    ],
    [
      "a string, not a list",
      "docker compose down",
      /"on_release" must be a command as a list of strings, such as \[/,
    ],
    ["an empty list", [], /"on_release" must be a command as a list of strings/],
    ["a number in the list", ["kill", 3], /"on_release" must be a command as a list of strings/],
    ["no program", ["", "x"], /"on_release" must start with the program to run, got ""/],
    ["a NUL", ["echo", "a\0b"], /"on_release" holds a NUL character/],
  ];
  for (const [name, value, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseConfig({ ...base, on_release: value }), message);
    });
  }
});

Deno.test('parseConfig() takes "name" as a DNS label and "hosts" as port keys', async (t) => {
  const config = parseConfig({
    ports: { web_port: 3000, db_port: 5432 },
    name: "shop",
    hosts: ["web_port"],
  });
  assert.equal(config.name, "shop");
  assert.deepEqual(config.hosts, ["web_port"]);
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["an upper-case name", { name: "Shop" }, /"name" must be a DNS label .*got "Shop"/],
    ["a name with a dot", { name: "a.b" }, /"name" must be a DNS label/],
    ["a name ending in -", { name: "shop-" }, /"name" must be a DNS label/],
    ["hosts not a list", { hosts: "web_port" }, /"hosts" must be a list of port keys/],
    [
      "hosts naming no port",
      { hosts: ["api_port"] },
      /"hosts" names "api_port", which is not in "ports"/,
    ],
  ];
  for (const [name, extra, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseConfig({ ports: { web_port: 3000 }, ...extra }), message);
    });
  }
});
