import assert from "node:assert/strict";
import { parseConfig } from "./config.ts";
import { BROWSER_BLOCKED_PORTS, configWarnings, ephemeralPortRange } from "./usable_ports.ts";
import { run } from "../test_util.ts";

const isLinux = Deno.build.os === "linux";

Deno.test("BROWSER_BLOCKED_PORTS holds the Fetch standard's bad ports above 1023", () => {
  const high = [...BROWSER_BLOCKED_PORTS].filter((port) => port > 1023);
  assert.deepEqual(high, [
    1719,
    1720,
    1723,
    2049,
    3659,
    4045,
    4190,
    5060,
    5061,
    6000,
    6566,
    6665,
    6666,
    6667,
    6668,
    6669,
    6679,
    6697,
    10080,
  ]);
  for (const port of [1, 22, 25, 80 - 1, 143, 443 + 22, 993, 995]) {
    assert.ok(BROWSER_BLOCKED_PORTS.has(port), `${port} is blocked`);
  }
  for (const port of [80, 443, 3000, 5432, 8080]) {
    assert.ok(!BROWSER_BLOCKED_PORTS.has(port), `${port} is not blocked`);
  }
});

Deno.test("configWarnings() warns when slot 0 holds a port browsers refuse, naming it", () => {
  assert.deepEqual(configWarnings(parseConfig({ ports: { web: 3000 } })), []);
  const warnings = configWarnings(
    parseConfig({ ports: { web: 3000, x11: 6000, sip: 5060 }, stride: 7, slots: 5 }),
  );
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /holds 6000 \("x11"\), 5060 \("sip"\), a port browsers refuse/);
});

Deno.test("configWarnings() names each key's ports inside the ephemeral range, once", async (t) => {
  const ephemeralRange = { low: 32768, high: 60999, source: "a test" };
  const cases: [string, unknown, RegExp | undefined][] = [
    ["ports below it", { ports: { web: 3000 } }, undefined],
    [
      "a base of 40000",
      {
        ports: { web: 40000, api: 41000 },
        stride: 10,
        slots: 5,
      },
      /range 32768-60999 \(from a test\): "web" 40000 to 40050 \(slots 0 to 5\), "api" 41000 to 41050 \(slots 0 to 5\)\..*; choose base ports below 32768 or above 60999 \(see "Configuration" in the README\)$/,
    ],
    ["slots that climb into it", {
      ports: { web: 32700 },
      stride: 50,
      slots: 4,
    }, /: "web" 32800 to 32900 \(slots 2 to 4\)\./],
    [
      "one slot inside",
      { ports: { web: 32000 }, stride: 800, slots: 1 },
      /: "web" 32800 \(slot 1\)\./,
    ],
  ];
  for (const [name, value, expected] of cases) {
    await t.step(name, () => {
      const warnings = configWarnings(parseConfig(value), { ephemeralRange });
      if (expected === undefined) {
        assert.deepEqual(warnings, []);
      } else {
        assert.equal(warnings.length, 1);
        assert.match(warnings[0], expected);
      }
    });
  }
  await t.step("a range reaching 65535 suggests only lower ports", () => {
    const [warning] = configWarnings(parseConfig({ ports: { web: 50000 }, slots: 2 }), {
      ephemeralRange: { low: 49152, high: 65535, source: "macOS's default" },
    });
    assert.match(
      warning,
      /\(from macOS's default\).*; choose base ports below 49152 \(see "Configuration" in the README\)$/,
    );
  });
});

Deno.test({
  name: `ephemeralPortRange() reads /proc where Deno may, else gives Linux's default saying why${
    isLinux ? "" : " (skipped: not Linux)"
  }`,
  ignore: !isLinux,
  fn: async () => {
    const file = "/proc/sys/net/ipv4/ip_local_port_range";
    const [low, high] = (await run("cat", [file])).stdout.trim().split(/\s+/).map(Number);
    // With --allow-all, as `deno eval` runs, the file is read.
    const script = `import { ephemeralPortRange } from ${
      JSON.stringify(new URL("../mod.ts", import.meta.url).href)
    }; console.log(JSON.stringify(ephemeralPortRange()));`;
    const all = await run(Deno.execPath(), ["eval", script]);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(JSON.parse(all.stdout), { low, high, source: `"${file}"` });
    // This test runs with --allow-read only, like the CLI: Deno refuses /proc.
    assert.deepEqual(ephemeralPortRange(), {
      low: 32768,
      high: 60999,
      source: `Linux's default; Deno reads "${file}" only with --allow-all`,
    });
  },
});

Deno.test("configWarnings() warns when the main worktree's slot holds the proxy's port", () => {
  const warnings = configWarnings(parseConfig({ ports: { web: 1355 }, stride: 10 }), {
    ephemeralRange: { low: 49152, high: 65535, source: "test" },
  });
  assert.deepEqual(warnings, [
    `Slot 0 of this config, the main worktree's, holds 1355 ("web"), the port of "worktree-ports proxy" (linked worktrees skip it, the main worktree cannot; change the base port)`,
  ]);
});
