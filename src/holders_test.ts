import assert from "node:assert/strict";
import { findHolders, HIDDEN_HOLDER, holderName, startScan } from "./holders.ts";
import type { Container, Listener, ListenerLookup } from "./listeners.ts";

/** A system that answers with these processes and containers, and notes what it was asked. */
function fakeSystem(
  listeners: Listener[] | string,
  processes: Record<number, { command?: string; cwd?: string }> = {},
  containers: Container[] | string = [],
): ListenerLookup & { asked: string[] } {
  const asked: string[] = [];
  const pick = (pids: readonly number[], field: "command" | "cwd") =>
    new Map(
      pids.flatMap((pid) => {
        const value = processes[pid]?.[field];
        return value === undefined ? [] : [[pid, value] as const];
      }),
    );
  const answer = <T>(value: T | string) =>
    Promise.resolve(typeof value === "string" ? { unknown: value } : { found: value });
  return {
    asked,
    listeners() {
      asked.push("listeners");
      return answer(listeners);
    },
    workingDirectories(pids) {
      asked.push(`working directories ${pids.join(",")}`);
      return Promise.resolve(pick(pids, "cwd"));
    },
    commandLines(pids) {
      asked.push(`command lines ${pids.join(",")}`);
      return Promise.resolve(pick(pids, "command"));
    },
    containers() {
      asked.push("containers");
      return answer(containers);
    },
  };
}

function find(
  system: ListenerLookup,
  ports: number[],
  worktrees: string[],
  more: { inUse?: Set<number>; commandLines?: boolean } = {},
) {
  return findHolders(startScan(system, more.commandLines), {
    ports,
    worktrees,
    lookup: system,
    inUse: more.inUse,
  });
}

Deno.test("findHolders() places each process in the deepest worktree holding its directory", async () => {
  const system = fakeSystem([
    { port: 100, pid: 1, name: "node" },
    { port: 200, pid: 2, name: "node" },
    { port: 300, pid: 3, name: "python3" },
    { port: 400, pid: 4, name: "node" },
    { port: 999, pid: 5, name: "sshd" },
  ], {
    1: { command: "node server.js", cwd: "/r/main/src" },
    2: { command: "vite", cwd: "/r/main/.worktrees/a/web" },
    3: { command: "python3 -m http.server", cwd: "/tmp" },
    4: { command: "node x.js" },
  });
  const result = await find(system, [100, 200, 300, 400], ["/r/main", "/r/main/.worktrees/a"]);
  assert.equal(result.unknown, undefined);
  assert.deepEqual(result.holders.get(100), [
    { pid: 1, command: "node server.js", cwd: "/r/main/src", worktree: "/r/main" },
  ]);
  assert.equal(result.holders.get(200)?.[0].worktree, "/r/main/.worktrees/a");
  assert.equal(result.holders.get(300)?.[0].worktree, null);
  // Where the system does not tell the directory, the place stays unknown.
  assert.deepEqual(result.holders.get(400), [{ pid: 4, command: "node x.js" }]);
  assert.equal(result.holders.has(999), false);
  // Every listener is described at once, before the ports are known; docker is not asked.
  assert.deepEqual(system.asked, [
    "listeners",
    "working directories 1,2,3,4,5",
    "command lines 1,2,3,4,5",
  ]);
});

Deno.test("findHolders() without command lines names each process by its short name, and runs nothing more", async () => {
  const system = fakeSystem([{ port: 100, pid: 1, name: "node" }], {
    1: { command: "node server.js", cwd: "/r/main" },
  });
  const result = await find(system, [100], ["/r/main"], { commandLines: false });
  assert.deepEqual(result.holders.get(100), [
    { pid: 1, command: "node", cwd: "/r/main", worktree: "/r/main" },
  ]);
  assert.deepEqual(system.asked, ["listeners", "working directories 1"]);
});

Deno.test("findHolders() names a container's port by its container, compose project and compose directory", async () => {
  const system = fakeSystem(
    [{ port: 100, pid: 9, name: "docker-proxy" }, { port: 200, pid: 10, name: "docker-proxy" }],
    { 9: { command: "/usr/bin/docker-proxy -host-port 100", cwd: "/" } },
    [{ name: "myapp-a-web-1", project: "myapp-a", workingDir: "/r/a", ports: [100] }],
  );
  const result = await find(system, [100, 200], ["/r/main", "/r/a"]);
  assert.deepEqual(result.holders.get(100), [{
    pid: 9,
    command: "/usr/bin/docker-proxy -host-port 100",
    container: "myapp-a-web-1",
    composeProject: "myapp-a",
    worktree: "/r/a",
  }]);
  // A proxy docker does not name is only a proxy: where it runs ("/") says nothing of whose it is.
  const [proxy] = result.holders.get(200)!;
  assert.equal(holderName(proxy), "docker-proxy 10");
  assert.equal("worktree" in proxy, false);
});

Deno.test("findHolders() says who holds a port in use that no listener shows, when docker knows, and else that it cannot", async () => {
  const withDocker = await find(
    fakeSystem([], {}, [{ name: "db", ports: [100] }]),
    [100, 200],
    ["/r/main"],
    { inUse: new Set([100, 200]) },
  );
  assert.deepEqual(withDocker.holders.get(100), [{ container: "db", composeProject: undefined }]);
  assert.deepEqual(withDocker.holders.get(200), [{ unknown: HIDDEN_HOLDER }]);
  const withoutDocker = await find(
    fakeSystem([], {}, "docker is not installed, or not allowed to run"),
    [100],
    ["/r/main"],
    { inUse: new Set([100]) },
  );
  assert.deepEqual(withoutDocker.holders.get(100), [{ unknown: HIDDEN_HOLDER }]);
  // Nothing in use that the listeners miss: docker is not asked.
  const quiet = fakeSystem([]);
  await find(quiet, [100], ["/r/main"]);
  assert.deepEqual(quiet.asked, ["listeners"]);
});

Deno.test("findHolders() passes on why the system could not be asked", async () => {
  const system = fakeSystem("lsof is not installed");
  const result = await find(system, [100], ["/r/main"], { inUse: new Set([100]) });
  assert.deepEqual(result, { holders: new Map(), unknown: "lsof is not installed" });
  assert.deepEqual(system.asked, ["listeners"]);
});
