import assert from "node:assert/strict";
import { machineIndexAt } from "./index_home.ts";
import { readRoutes } from "./proxy_routes.ts";

/** A worktree folder with a port file of its own (no git: the label comes from the folder). */
async function worktreeWith(
  dir: string,
  slot: number,
  ports: Record<string, number>,
  config?: unknown,
): Promise<{ path: string; repository: string; worktree: string }> {
  await Deno.mkdir(dir, { recursive: true });
  const worktree = await Deno.realPath(dir);
  await Deno.writeTextFile(
    `${worktree}/.worktree-ports.json`,
    JSON.stringify({
      ...ports,
      worktree_ports: { version: 1, slot, worktree, allocated_at: "2026-01-01T00:00:00.000Z" },
    }),
  );
  if (config !== undefined) {
    await Deno.writeTextFile(`${worktree}/worktree-ports.config.json`, JSON.stringify(config));
  }
  return { path: `${worktree}/.worktree-ports.json`, repository: "", worktree };
}

Deno.test("readRoutes() gives every port one name: colliding worktree labels and keys get told apart, and repository scope is left out", async () => {
  const base = await Deno.realPath(await Deno.makeTempDir());
  try {
    const repository = `${base}/shop/.git`;
    await Deno.mkdir(repository, { recursive: true });
    const files = [
      await worktreeWith(`${base}/one/feature-a`, 1, { web_port: 3100, web: 4100 }),
      await worktreeWith(`${base}/two/feature-a`, 2, { web_port: 3200 }),
      await worktreeWith(`${base}/three/feature-a-2`, 3, { web_port: 3300 }),
      await worktreeWith(`${base}/kept-out`, 4, { web_port: 3400 }, {
        ports: { web_port: 3000 },
        scope: "repository",
      }),
    ].map((file) => ({ ...file, repository, ports: [] }));
    const home = `${base}/home`;
    await Deno.mkdir(home);
    await Deno.writeTextFile(`${home}/index.json`, JSON.stringify({ version: 1, files }));
    const { routes } = readRoutes(machineIndexAt(home));
    assert.deepEqual(
      [...routes.values()].map((route) => [route.host, route.port]).sort(),
      [
        ["web-port.feature-a.shop.localhost", 3100],
        ["web.feature-a-2-3.shop.localhost", 3300],
        ["web.feature-a-2.shop.localhost", 3200],
        ["web.feature-a.shop.localhost", 4100],
      ].sort(),
    );
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
