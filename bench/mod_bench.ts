// Micro-benchmarks of the pure and in-process parts of an allocation:
// deno bench --allow-read --allow-write bench/mod_bench.ts
import {
  chooseSlot,
  parseConfig,
  parseWorktreeList,
  readReservedPorts,
  reservedPortsOf,
} from "../mod.ts";

const WORKTREES = 1000;

const porcelain = Array.from(
  { length: WORKTREES + 1 },
  (_, index) =>
    `worktree /src/app-${index}\0HEAD ${"0123456789".repeat(4)}\0branch refs/heads/b${index}\0\0`,
).join("");

Deno.bench(`parseWorktreeList(): ${WORKTREES} worktrees`, () => {
  parseWorktreeList(porcelain);
});

const config = parseConfig({ ports: { web: 10000, api: 40000 }, stride: 10, slots: 1500 });

Deno.bench("parseConfig(): 2 ports, 1500 slots, every collision checked", () => {
  parseConfig({ ports: { web: 10000, api: 40000 }, stride: 10, slots: 1500 });
});

// Half of the worktrees hold a port file, as in the process benchmark.
const dir = Deno.makeTempDirSync({ prefix: "worktree-ports-bench-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const paths: string[] = [];
const reserved = new Set<number>();
for (let index = 0; index < WORKTREES; index++) {
  const path = `${dir}/${index}.json`;
  paths.push(path);
  if (index % 2 === 0) {
    const slot = index / 2 + 1;
    const file = {
      web: 10000 + slot * 10,
      api: 40000 + slot * 10,
      web_url: `http://127.0.0.1:${10000 + slot * 10}`,
      worktree_ports: { version: 1, slot, worktree: `/src/app-${index}`, allocated_at: "" },
    };
    Deno.writeTextFileSync(path, JSON.stringify(file, null, 2) + "\n");
    reserved.add(file.web).add(file.api);
  }
}

Deno.bench(`readReservedPorts(): ${WORKTREES} worktrees, ${WORKTREES / 2} files`, () => {
  readReservedPorts(paths);
});

const sample = JSON.parse(Deno.readTextFileSync(paths[0]));
Deno.bench("reservedPortsOf(): one port file", () => {
  reservedPortsOf(sample);
});

const allFree = { isFree: () => true };
Deno.bench(`chooseSlot(): first free slot after ${WORKTREES / 2} reserved`, async () => {
  await chooseSlot(config, reserved, { probe: allFree });
});
