// Whole-process benchmark of `worktree-ports allocate`, run by `deno task bench`.
//
// For repositories of 10, 100 and 1000 linked worktrees (half of them holding
// a port file) it times, in alternating runs within one process:
//   empty     deno run of an empty script
//   git       git worktree list --porcelain -z, run directly
//   git-only  a Deno process doing nothing but that git call (baseline b)
//   each-op   one of each runtime operation allocate performs, without its logic
//   allocate  the CLI in a worktree that already has its file (the common case)
//   fresh     the CLI in a worktree whose file was just deleted (scan, probe, write)
// The floor (baseline a) is empty + git of the same round. It then times
// allocate with 100 worktrees here and 100 indexed worktrees in 5 other
// repositories against the same allocate with an empty machine-wide index,
// races 32 fresh worktrees, runs the micro-benchmarks, and rewrites
// bench/README.md and the summary in the main README. Every run keeps its
// machine-wide index in a temporary folder, never the real home.

const ROOT = `${import.meta.dirname}/../`;
const CLI = `${ROOT}cli.ts`;
const CLI_FLAGS = [
  "--allow-run=git",
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.1,[::1],0.0.0.0,[::]",
  "--allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA",
];
const SIZES = [10, 100, 1000];
const RACERS = 32;
const RACE_ROUNDS = 3;
const CONFIG = { ports: { web: 10000, api: 40000 }, stride: 10, slots: 1500 };
const GIT_ENV = {
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_AUTHOR_NAME: "bench",
  GIT_AUTHOR_EMAIL: "bench@example.com",
  GIT_COMMITTER_NAME: "bench",
  GIT_COMMITTER_EMAIL: "bench@example.com",
};
const deno = Deno.execPath();
/** The machine-wide index of every run that does not name its own. */
const BENCH_HOME = await Deno.makeTempDir({ prefix: "worktree-ports-bench-home-" });
const quick = Deno.args.includes("--quick");

interface Run {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

async function run(
  command: string,
  args: string[],
  cwd: string,
  home: string = BENCH_HOME,
): Promise<Run> {
  const start = performance.now();
  const output = await new Deno.Command(command, {
    args,
    cwd,
    env: { ...GIT_ENV, WORKTREE_PORTS_HOME: home },
    stdin: "null",
  }).output();
  const ms = performance.now() - start;
  const decoder = new TextDecoder();
  return {
    ms,
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

async function git(cwd: string, ...args: string[]): Promise<void> {
  const result = await run("git", args, cwd);
  if (result.code !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr}`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** A repository with a committed config and `size` linked worktrees, the first half holding port files. */
async function buildRepository(base: string, size: number): Promise<string[]> {
  const main = `${base}/main`;
  await git(base, "init", "-q", "-b", "main", "main");
  await Deno.writeTextFile(`${main}/worktree-ports.config.json`, JSON.stringify(CONFIG) + "\n");
  await git(main, "add", ".");
  await git(main, "commit", "-q", "-m", "config");
  // As after the first allocation in any repository: git ignores port files.
  await Deno.writeTextFile(`${main}/.git/info/exclude`, "/.worktree-ports.json\n", {
    append: true,
  });
  const worktrees: string[] = [];
  for (let index = 0; index < size; index++) {
    const path = `${base}/wt${index}`;
    await git(main, "worktree", "add", "-q", "--detach", path);
    worktrees.push(path);
    if (index < size / 2) {
      const slot = index + 1;
      const file = {
        web: CONFIG.ports.web + slot * CONFIG.stride,
        api: CONFIG.ports.api + slot * CONFIG.stride,
        worktree_ports: { version: 1, slot, worktree: path, allocated_at: "2026-01-01T00:00:00Z" },
      };
      await Deno.writeTextFile(
        `${path}/.worktree-ports.json`,
        JSON.stringify(file, null, 2) + "\n",
      );
    }
  }
  return worktrees;
}

const hasTime = await run("/usr/bin/time", ["-f", "%M", "true"], "/").then(
  (result) => result.code === 0,
  () => false,
);

/** Peak resident memory of a command in KiB, from GNU time. */
async function peakMemory(command: string, args: string[], cwd: string): Promise<number> {
  const result = await run("/usr/bin/time", ["-f", "%M", command, ...args], cwd);
  return Number(result.stderr.trim().split("\n").at(-1));
}

interface SizeResult {
  size: number;
  rounds: number;
  empty: number;
  git: number;
  floor: number;
  gitOnly: number;
  eachOp: number;
  allocate: number;
  fresh: number;
  stages: { git: number; locked: number; total: number };
  memory?: { empty: number; gitOnly: number; eachOp: number; allocate: number; fresh: number };
}

async function benchSize(size: number): Promise<SizeResult> {
  const base = await Deno.makeTempDir({ prefix: `worktree-ports-bench-${size}-` });
  try {
    const built = performance.now();
    const worktrees = await buildRepository(base, size);
    console.error(
      `  built ${size} worktrees in ${((performance.now() - built) / 1000).toFixed(1)} s`,
    );
    const target = worktrees[Math.floor(size / 2)];
    const portFile = `${target}/.worktree-ports.json`;
    const allocateArgs = ["run", ...CLI_FLAGS, CLI, "allocate", "--timings"];
    const eachOpArgs = ["run", ...CLI_FLAGS, `${ROOT}bench/one_of_each.ts`];
    const first = await run(deno, allocateArgs, target);
    if (first.code !== 0) throw new Error(`allocate failed: ${first.stderr}`);
    const expected = first.stdout;

    const variants: Record<string, () => Promise<Run>> = {
      empty: () => run(deno, ["run", `${ROOT}bench/empty.ts`], target),
      git: () => run("git", ["worktree", "list", "--porcelain", "-z"], target),
      gitOnly: () => run(deno, ["run", "--allow-run=git", `${ROOT}bench/git_only.ts`], target),
      eachOp: () => run(deno, eachOpArgs, target),
      allocate: () => run(deno, allocateArgs, target),
      fresh: async () => {
        await Deno.remove(portFile);
        return await run(deno, allocateArgs, target);
      },
    };
    const names = Object.keys(variants);
    const times: Record<string, number[]> = Object.fromEntries(names.map((name) => [name, []]));
    const floors: number[] = [];
    const stages = { git: [] as number[], locked: [] as number[], total: [] as number[] };
    const rounds = quick ? 5 : size >= 1000 ? 21 : 31;
    for (let round = 0; round < rounds; round++) {
      // Rotate the order each round so that no variant always runs first.
      for (let step = 0; step < names.length; step++) {
        const name = names[(round + step) % names.length];
        const result = await variants[name]();
        if (result.code !== 0) throw new Error(`${name} failed: ${result.stderr}`);
        if (name === "allocate" || name === "fresh") {
          const stable = JSON.parse(result.stdout).worktree_ports.slot;
          if (stable !== JSON.parse(expected).worktree_ports.slot) {
            throw new Error(`${name} returned another slot: ${result.stdout}`);
          }
          const timings = /git ([\d.]+) ms.*locked ([\d.]+) ms, total ([\d.]+) ms/.exec(
            result.stderr,
          );
          if (name === "allocate" && timings) {
            stages.git.push(Number(timings[1]));
            stages.locked.push(Number(timings[2]));
            stages.total.push(Number(timings[3]));
          }
        }
        times[name].push(result.ms);
      }
      floors.push(times.empty[round] + times.git[round]);
    }
    const result: SizeResult = {
      size,
      rounds,
      empty: median(times.empty),
      git: median(times.git),
      floor: median(floors),
      gitOnly: median(times.gitOnly),
      eachOp: median(times.eachOp),
      allocate: median(times.allocate),
      fresh: median(times.fresh),
      stages: {
        git: median(stages.git),
        locked: median(stages.locked),
        total: median(stages.total),
      },
    };
    if (hasTime) {
      const samples: Record<string, number[]> = {
        empty: [],
        gitOnly: [],
        eachOp: [],
        allocate: [],
        fresh: [],
      };
      for (let round = 0; round < (quick ? 3 : 9); round++) {
        samples.empty.push(await peakMemory(deno, ["run", `${ROOT}bench/empty.ts`], target));
        samples.gitOnly.push(
          await peakMemory(deno, ["run", "--allow-run=git", `${ROOT}bench/git_only.ts`], target),
        );
        samples.eachOp.push(await peakMemory(deno, eachOpArgs, target));
        samples.allocate.push(await peakMemory(deno, allocateArgs, target));
        await Deno.remove(portFile);
        samples.fresh.push(await peakMemory(deno, allocateArgs, target));
      }
      result.memory = {
        empty: median(samples.empty),
        gitOnly: median(samples.gitOnly),
        eachOp: median(samples.eachOp),
        allocate: median(samples.allocate),
        fresh: median(samples.fresh),
      };
    }
    return result;
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

const OTHER_REPOSITORIES = 5;
const INDEXED_ELSEWHERE = 100;

interface MachineResult {
  rounds: number;
  empty: number;
  machine: number;
  emptyFresh: number;
  machineFresh: number;
  lockedEmpty: number;
  lockedMachine: number;
}

/**
 * Allocate in a repository of 100 worktrees (half with port files) with two
 * indexes, alternating: one that records only this repository's files, and
 * one that also records 100 worktrees' files in 5 other repositories, whose
 * slots lie beyond this repository's, so both choose the same slot.
 */
async function benchMachine(): Promise<MachineResult> {
  const base = await Deno.makeTempDir({ prefix: "worktree-ports-bench-machine-" });
  try {
    await Deno.mkdir(`${base}/here`);
    const worktrees = await buildRepository(`${base}/here`, 100);
    const emptyHome = `${base}/empty-home`;
    const fullHome = `${base}/full-home`;
    await Deno.mkdir(emptyHome);
    await Deno.mkdir(fullHome);
    const hereRepository = await Deno.realPath(`${base}/here/main/.git`);
    const entries: { path: string; repository: string; worktree: string }[] = worktrees
      .slice(0, 50).map((worktree) => ({
        path: `${worktree}/.worktree-ports.json`,
        repository: hereRepository,
        worktree,
      }));
    const perRepository = INDEXED_ELSEWHERE / OTHER_REPOSITORIES;
    for (let r = 0; r < OTHER_REPOSITORIES; r++) {
      const other = `${base}/other${r}`;
      await Deno.mkdir(other);
      await git(other, "init", "-q", "-b", "main", "main");
      await git(`${other}/main`, "commit", "-q", "--allow-empty", "-m", "initial");
      const repository = await Deno.realPath(`${other}/main/.git`);
      for (let index = 0; index < perRepository; index++) {
        const worktree = `${other}/wt${index}`;
        await git(`${other}/main`, "worktree", "add", "-q", "--detach", worktree);
        const slot = 52 + r * perRepository + index;
        const file = {
          web: CONFIG.ports.web + slot * CONFIG.stride,
          api: CONFIG.ports.api + slot * CONFIG.stride,
          worktree_ports: { version: 1, slot, worktree, allocated_at: "2026-01-01T00:00:00Z" },
        };
        await Deno.writeTextFile(
          `${worktree}/.worktree-ports.json`,
          JSON.stringify(file, null, 2) + "\n",
        );
        entries.push({ path: `${worktree}/.worktree-ports.json`, repository, worktree });
      }
    }
    await Deno.writeTextFile(
      `${fullHome}/index.json`,
      JSON.stringify({ version: 1, files: entries }, null, 2) + "\n",
    );
    const target = worktrees[50];
    const portFile = `${target}/.worktree-ports.json`;
    const allocateArgs = ["run", ...CLI_FLAGS, CLI, "allocate", "--timings"];
    // The first run in each index records this worktree; after that, both are steady.
    const slots = new Set<number>();
    for (const home of [emptyHome, fullHome]) {
      const first = await run(deno, allocateArgs, target, home);
      if (first.code !== 0) throw new Error(`allocate failed: ${first.stderr}`);
      slots.add(JSON.parse(first.stdout).worktree_ports.slot);
    }
    if (slots.size !== 1) throw new Error(`the two indexes gave different slots: ${[...slots]}`);
    const variants: Record<string, () => Promise<Run>> = {
      empty: () => run(deno, allocateArgs, target, emptyHome),
      machine: () => run(deno, allocateArgs, target, fullHome),
      emptyFresh: async () => {
        await Deno.remove(portFile);
        return await run(deno, allocateArgs, target, emptyHome);
      },
      machineFresh: async () => {
        await Deno.remove(portFile);
        return await run(deno, allocateArgs, target, fullHome);
      },
    };
    const names = Object.keys(variants);
    const times: Record<string, number[]> = Object.fromEntries(names.map((name) => [name, []]));
    const locked: Record<string, number[]> = { empty: [], machine: [] };
    const rounds = quick ? 5 : 31;
    for (let round = 0; round < rounds; round++) {
      for (let step = 0; step < names.length; step++) {
        const name = names[(round + step) % names.length];
        const result = await variants[name]();
        if (result.code !== 0) throw new Error(`${name} failed: ${result.stderr}`);
        if (JSON.parse(result.stdout).worktree_ports.slot !== [...slots][0]) {
          throw new Error(`${name} returned another slot: ${result.stdout}`);
        }
        // The config's ports lie partly in Linux's ephemeral range, which allocate says each time.
        const warnings = result.stderr.split("\n")
          .filter((line) => line.startsWith("warning:") && !line.includes("ephemeral range"));
        if (warnings.length > 0) throw new Error(`${name}: ${warnings.join("\n")}`);
        const timings = /locked ([\d.]+) ms/.exec(result.stderr);
        if (timings && (name === "empty" || name === "machine")) {
          locked[name].push(Number(timings[1]));
        }
        times[name].push(result.ms);
      }
    }
    const index = JSON.parse(await Deno.readTextFile(`${fullHome}/index.json`));
    if (index.files.length !== entries.length + 1) {
      throw new Error(`the index lost entries: ${index.files.length} of ${entries.length + 1}`);
    }
    return {
      rounds,
      empty: median(times.empty),
      machine: median(times.machine),
      emptyFresh: median(times.emptyFresh),
      machineFresh: median(times.machineFresh),
      lockedEmpty: median(locked.empty),
      lockedMachine: median(locked.machine),
    };
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

interface RaceResult {
  totalMs: number;
  distinct: number;
  lockWaits: number[];
  locked: number[];
}

async function race(): Promise<RaceResult> {
  const base = await Deno.makeTempDir({ prefix: "worktree-ports-race-" });
  try {
    await git(base, "init", "-q", "-b", "main", "main");
    await Deno.writeTextFile(`${base}/main/worktree-ports.config.json`, JSON.stringify(CONFIG));
    await git(`${base}/main`, "add", ".");
    await git(`${base}/main`, "commit", "-q", "-m", "config");
    const worktrees: string[] = [];
    for (let index = 0; index < RACERS; index++) {
      await git(`${base}/main`, "worktree", "add", "-q", "--detach", `${base}/wt${index}`);
      worktrees.push(`${base}/wt${index}`);
    }
    const start = performance.now();
    const results = await Promise.all(
      worktrees.map((cwd) => run(deno, ["run", ...CLI_FLAGS, CLI, "allocate", "--timings"], cwd)),
    );
    const totalMs = performance.now() - start;
    const bundles = new Set<string>();
    const lockWaits: number[] = [];
    const locked: number[] = [];
    for (const result of results) {
      if (result.code !== 0) throw new Error(`race allocation failed: ${result.stderr}`);
      const file = JSON.parse(result.stdout);
      bundles.add(`${file.web}/${file.api}`);
      const timings = /lock wait ([\d.]+) ms, locked ([\d.]+) ms/.exec(result.stderr)!;
      lockWaits.push(Number(timings[1]));
      locked.push(Number(timings[2]));
    }
    return { totalMs, distinct: bundles.size, lockWaits, locked };
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

interface MicroResult {
  name: string;
  avgNs: number;
}

async function micro(): Promise<MicroResult[]> {
  const result = await run(
    deno,
    ["bench", "--json", "--allow-read", "--allow-write", `${ROOT}bench/mod_bench.ts`],
    ROOT,
  );
  if (result.code !== 0) throw new Error(`deno bench failed: ${result.stderr}`);
  const report = JSON.parse(result.stdout) as {
    benches: { name: string; results: { ok?: { avg: number } }[] }[];
  };
  return report.benches.map((bench) => ({ name: bench.name, avgNs: bench.results[0].ok!.avg }));
}

async function machine(): Promise<Record<string, string>> {
  const cpu = (await run("sh", ["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], "/"))
    .stdout.trim();
  const memory = Deno.systemMemoryInfo().total / 2 ** 30;
  return {
    cpu: cpu || "unknown",
    cores: String(navigator.hardwareConcurrency),
    memory: `${memory.toFixed(0)} GiB`,
    os: `${Deno.build.os} ${Deno.osRelease()} (${Deno.build.arch})`,
    deno: Deno.version.deno,
    git: (await run("git", ["--version"], "/")).stdout.trim().replace(/^git version /, ""),
    date: new Date().toISOString().slice(0, 10),
  };
}

const ms = (value: number) => value.toFixed(1);
const ratio = (value: number) => value.toFixed(2);
const mib = (kib: number) => (kib / 1024).toFixed(1);
const verdict = (ok: boolean) => ok ? "met" : "**not met**";

console.error("machine");
const info = await machine();
const sizes: SizeResult[] = [];
for (const size of SIZES) {
  console.error(`size ${size}`);
  sizes.push(await benchSize(size));
  const last = sizes.at(-1)!;
  console.error(
    `  floor ${ms(last.floor)} ms, allocate ${ms(last.allocate)} ms (${
      ratio(last.allocate / last.floor)
    }), fresh ${ms(last.fresh)} ms (${ratio(last.fresh / last.floor)})`,
  );
}
console.error("machine-wide index");
const machineResult = await benchMachine();
console.error(
  `  allocate ${ms(machineResult.machine)} ms vs ${ms(machineResult.empty)} ms (${
    ratio(machineResult.machine / machineResult.empty)
  }), fresh ${ms(machineResult.machineFresh)} ms vs ${ms(machineResult.emptyFresh)} ms (${
    ratio(machineResult.machineFresh / machineResult.emptyFresh)
  })`,
);
console.error("race");
const races: RaceResult[] = [];
for (let round = 0; round < RACE_ROUNDS; round++) {
  races.push(await race());
  const last = races.at(-1)!;
  console.error(`  ${ms(last.totalMs)} ms, ${last.distinct} distinct bundles`);
}
console.error("micro-benchmarks");
const micros = await micro();

const bySize = (size: number) => sizes.find((result) => result.size === size)!;
const at100 = bySize(100);
const at1000 = bySize(1000);
const memoryRatio = (result: SizeResult) =>
  result.memory ? Math.max(result.memory.allocate, result.memory.fresh) / result.memory.empty : NaN;
/** What each extra worktree adds beyond the floor, between two repository sizes. */
const marginal = (from: SizeResult, to: SizeResult) =>
  ((to.allocate - to.floor) - (from.allocate - from.floor)) / (to.size - from.size);
const slowestRace = Math.max(...races.map((race) => race.totalMs));
const allDistinct = races.every((race) => race.distinct === RACERS);
const allWaits = races.flatMap((race) => race.lockWaits);
const allLocked = races.flatMap((race) => race.locked);

const lines = [
  "# Benchmarks",
  "",
  "Regenerated by `deno task bench` (`bench/bench.ts`); the numbers below are from its last run.",
  "Times are medians of alternating runs in one process, so ratios compare like with like; absolute",
  "times on a shared 2-core machine are noisy.",
  "",
  "## Machine",
  "",
  "| | |",
  "| --- | --- |",
  ...Object.entries(info).map(([key, value]) => `| ${key} | ${value} |`),
  "",
  "## Whole-process allocate against the floor",
  "",
  "`floor` is baseline (a): `deno run` of an empty script plus `git worktree list --porcelain -z`,",
  "summed per round. `git-only` is baseline (b): one Deno process doing nothing but that git call.",
  "`each-op` is one Deno process doing one of each kind of runtime operation allocate needs (the",
  "git call, a path resolution, a stat, a read, a missing-file read, JSON, a file lock, a permission",
  "query, a write to stdout) with none of its logic: what Deno costs before any of our code.",
  "`allocate` runs in a worktree that already has its port file (every dev-server start); `fresh`",
  "deletes the file first, so it scans, probes and writes (every new worktree).",
  "",
  "| worktrees | rounds | empty | git | floor (a) | git-only (b) | each-op | allocate | fresh | each-op / floor | allocate / floor | fresh / floor |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...sizes.map((r) =>
    `| ${r.size} | ${r.rounds} | ${ms(r.empty)} ms | ${ms(r.git)} ms | ${ms(r.floor)} ms | ${
      ms(r.gitOnly)
    } ms | ${ms(r.eachOp)} ms | ${ms(r.allocate)} ms | ${ms(r.fresh)} ms | ${
      ratio(r.eachOp / r.floor)
    } | ${ratio(r.allocate / r.floor)} | ${ratio(r.fresh / r.floor)} |`
  ),
  "",
  "Where allocate's own time goes (medians of `allocate --timings`, inside the process):",
  "",
  "| worktrees | git call and finding the worktree | holding the lock (scan, choice, write) | whole allocation |",
  "| ---: | ---: | ---: | ---: |",
  ...sizes.map((r) =>
    `| ${r.size} | ${ms(r.stages.git)} ms | ${ms(r.stages.locked)} ms | ${ms(r.stages.total)} ms |`
  ),
  "",
  "## Peak memory",
  "",
  hasTime
    ? "Maximum resident set size from GNU time, median of 9 runs."
    : "GNU time (`/usr/bin/time`) is not installed here, so peak memory was not measured.",
  "",
  ...(hasTime
    ? [
      "| worktrees | empty script | git-only | each-op | allocate | fresh | git-only / empty | each-op / empty | allocate / empty | fresh / empty |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      ...sizes.map((r) => {
        const m = r.memory!;
        return `| ${r.size} | ${mib(m.empty)} MiB | ${mib(m.gitOnly)} MiB | ${
          mib(m.eachOp)
        } MiB | ${mib(m.allocate)} MiB | ${mib(m.fresh)} MiB | ${ratio(m.gitOnly / m.empty)} | ${
          ratio(m.eachOp / m.empty)
        } | ${ratio(m.allocate / m.empty)} | ${ratio(m.fresh / m.empty)} |`;
      }),
      "",
    ]
    : []),
  "## Other repositories in the machine-wide index",
  "",
  "`allocate` in a repository of 100 worktrees (50 with port files), alternating between two",
  "indexes: `empty` records only this repository's files; `machine` also records 100 worktrees'",
  `files in ${OTHER_REPOSITORIES} other repositories, every one of which is checked, and read, on each run. Their`,
  "slots lie beyond this repository's, so both choose the same slot. `fresh` deletes the port file",
  "first. Medians of the whole process; `held` is the time under the locks (`--timings`).",
  "",
  "| rounds | allocate: empty | allocate: machine | machine / empty | fresh: empty | fresh: machine | machine / empty | held: empty | held: machine |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  `| ${machineResult.rounds} | ${ms(machineResult.empty)} ms | ${ms(machineResult.machine)} ms | ${
    ratio(machineResult.machine / machineResult.empty)
  } | ${ms(machineResult.emptyFresh)} ms | ${ms(machineResult.machineFresh)} ms | ${
    ratio(machineResult.machineFresh / machineResult.emptyFresh)
  } | ${ms(machineResult.lockedEmpty)} ms | ${ms(machineResult.lockedMachine)} ms |`,
  "",
  `## ${RACERS} simultaneous allocations`,
  "",
  `${RACERS} fresh worktrees run \`allocate\` at the same instant; time from the first spawn until`,
  "all have exited, and each process's wait for the lock and time holding it.",
  "",
  "| round | all done | distinct bundles | lock wait: median | lock wait: max | held: median | held: max |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...races.map((race, index) =>
    `| ${index + 1} | ${ms(race.totalMs)} ms | ${race.distinct} of ${RACERS} | ${
      ms(median(race.lockWaits))
    } ms | ${ms(Math.max(...race.lockWaits))} ms | ${ms(median(race.locked))} ms | ${
      ms(Math.max(...race.locked))
    } ms |`
  ),
  "",
  "## Micro-benchmarks",
  "",
  "`deno bench bench/mod_bench.ts`: the pure parts, average time per call.",
  "",
  "| benchmark | average |",
  "| --- | ---: |",
  ...micros.map((micro) => `| ${micro.name} | ${(micro.avgNs / 1000).toFixed(1)} µs |`),
  "",
  "## Targets",
  "",
  "| target | measured | |",
  "| --- | --- | --- |",
  `| allocate / floor ≤ 1.3 at 100 worktrees | ${ratio(at100.allocate / at100.floor)} (fresh ${
    ratio(at100.fresh / at100.floor)
  }) | ${verdict(at100.allocate / at100.floor <= 1.3 && at100.fresh / at100.floor <= 1.3)} |`,
  `| allocate / floor ≤ 1.6 at 1000 worktrees | ${ratio(at1000.allocate / at1000.floor)} (fresh ${
    ratio(at1000.fresh / at1000.floor)
  }) | ${verdict(at1000.allocate / at1000.floor <= 1.6 && at1000.fresh / at1000.floor <= 1.6)} |`,
  `| cost linear or better in worktrees, one git process | each worktree adds ${
    (marginal(bySize(10), at100) * 1000).toFixed(0)
  } µs beyond the floor from 10 to 100 worktrees, ${
    (marginal(at100, at1000) * 1000).toFixed(0)
  } µs from 100 to 1000; one git call (tested) | ${
    // Linear means the cost of one more worktree does not grow; noise gets 10 µs.
    verdict(marginal(at100, at1000) <= marginal(bySize(10), at100) + 0.01)} |`,
  `| ${RACERS} simultaneous allocations within 1.5 s, all distinct | slowest round ${
    ms(slowestRace)
  } ms, ${allDistinct ? "all" : "not all"} distinct | ${
    verdict(slowestRace <= 1500 && allDistinct)
  } |`,
  `| allocate with 100 indexed worktrees in ${OTHER_REPOSITORIES} other repositories ≤ 1.15 × with an empty index | ${
    ratio(machineResult.machine / machineResult.empty)
  } (fresh ${ratio(machineResult.machineFresh / machineResult.emptyFresh)}) | ${
    verdict(
      machineResult.machine / machineResult.empty <= 1.15 &&
        machineResult.machineFresh / machineResult.emptyFresh <= 1.15,
    )
  } |`,
  `| lock held briefly (scan, choice, write only) | held median ${ms(median(allLocked))} ms, max ${
    ms(Math.max(...allLocked))
  } ms; waits median ${ms(median(allWaits))} ms | |`,
  `| peak memory ≤ 1.2 × empty script | ${
    hasTime ? sizes.map((r) => ratio(memoryRatio(r))).join(", ") : "not measured"
  } at ${SIZES.join(", ")} | ${
    hasTime ? verdict(sizes.every((r) => memoryRatio(r) <= 1.2)) : "not measured"
  } |`,
  "",
];
await Deno.writeTextFile(`${ROOT}bench/README.md`, lines.join("\n"));

const summary = [
  "<!-- bench:start -->",
  `On ${info.cpu.replace(/\s+/g, " ")} (${info.cores} cores), Deno ${info.deno}, ${info.date}:`,
  `\`allocate\` takes ${ratio(at100.allocate / at100.floor)}× the floor (starting Deno plus one`,
  `\`git worktree list\`) at 100 worktrees and ${
    ratio(at1000.allocate / at1000.floor)
  }× at 1000; a first allocation`,
  `(scan, probe, write) ${ratio(at100.fresh / at100.floor)}× and ${
    ratio(at1000.fresh / at1000.floor)
  }×. ${RACERS} simultaneous allocations finish within`,
  `${ms(slowestRace)} ms with ${allDistinct ? "all" : "not all"} bundles distinct${
    hasTime
      ? `; peak memory is at most ${
        ratio(Math.max(...sizes.map(memoryRatio)))
      }× an empty Deno script`
      : ""
  }. Details in [bench/README.md](bench/README.md).`,
  "<!-- bench:end -->",
].join("\n");
const readme = await Deno.readTextFile(`${ROOT}README.md`);
await Deno.writeTextFile(
  `${ROOT}README.md`,
  readme.replace(/<!-- bench:start -->[\s\S]*<!-- bench:end -->/, summary),
);
await Deno.remove(BENCH_HOME, { recursive: true });
console.error("wrote bench/README.md and the summary in README.md");
