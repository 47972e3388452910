import assert from "node:assert/strict";
import { bindStatus, isPortFree, PROBE_HOSTNAMES } from "./probe.ts";
import { copyPackage, forEachLoopback, run, UNPRIVILEGED } from "../test_util.ts";

Deno.test("isPortFree() sees a listener on each loopback address", async (t) => {
  await forEachLoopback(t, (hostname) => {
    using listener = Deno.listen({ hostname, port: 0 });
    const { port } = listener.addr as Deno.NetAddr;
    assert.equal(isPortFree(port), false);
    listener.close();
    assert.equal(isPortFree(port), true);
  });
});

Deno.test({
  name: `portStatus() finds a privileged port refused for a normal user, and isPortFree() not free${
    "reason" in UNPRIVILEGED ? ` (skipped: ${UNPRIVILEGED.reason})` : ""
  }`,
  ignore: "reason" in UNPRIVILEGED,
  fn: async () => {
    const start = Number((await run("cat", ["/proc/sys/net/ipv4/ip_unprivileged_port_start"]))
      .stdout.trim());
    // Nothing below this port is bindable without privileges; 0 would mean every port is.
    assert.ok(start > 80, `ip_unprivileged_port_start is ${start}`);
    const home = await Deno.makeTempDir();
    try {
      await Deno.chmod(home, 0o777);
      // A copy the other user can read wherever this checkout lives.
      await copyPackage(`${home}/package`);
      const mod = JSON.stringify(`file://${home}/package/mod.ts`);
      const script = `import { isPortFree, portStatus } from ${mod};
        console.log(JSON.stringify([portStatus(80), isPortFree(80)]));`;
      const [command, ...args] = [
        ...("prefix" in UNPRIVILEGED ? UNPRIVILEGED.prefix : []),
        Deno.execPath(),
        "eval",
        script,
      ];
      const result = await run(command, args, { env: { HOME: home, DENO_DIR: home } });
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), ["permission-denied", false]);
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test("portStatus() still throws NotCapable when net permission is missing", async () => {
  const mod = JSON.stringify(new URL("../mod.ts", import.meta.url).href);
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      file,
      `import { portStatus } from ${mod};
      try { portStatus(41234); } catch (error) { console.log(error.constructor.name); }`,
    );
    const result = await run(Deno.execPath(), ["run", "--allow-read", file]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), "NotCapable");
  } finally {
    await Deno.remove(file);
  }
});

/**
 * Binding as BSD's rules have it for listeners that set `SO_REUSEADDR`, as
 * Deno's do on macOS: a bind fails only on the very address another socket
 * holds, so that a specific address and a wildcard never collide.
 */
function bsdBinding(held: readonly string[]): (hostname: string, port: number) => void {
  return (hostname) => {
    if (held.includes(hostname)) throw new Deno.errors.AddrInUse("Address already in use");
  };
}

Deno.test("the probe's addresses find a listener on [::] under BSD's binding rules, as on macOS", async (t) => {
  for (const listening of ["::", "0.0.0.0", "127.0.0.1", "::1"]) {
    await t.step(`listener on ${listening}`, () => {
      assert.equal(bindStatus(4100, PROBE_HOSTNAMES, bsdBinding([listening])), "in-use");
    });
  }
  // What the IPv4 addresses and ::1 alone found: the [::] listener went unseen.
  assert.equal(
    bindStatus(4100, ["127.0.0.1", "::1", "0.0.0.0"], bsdBinding(["::"])),
    "free",
  );
  assert.equal(bindStatus(4100, PROBE_HOSTNAMES, bsdBinding([])), "free");
});
