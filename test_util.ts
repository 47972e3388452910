// Helpers shared by every test module (mod_test.ts, cli_test.ts, the unit
// tests beside their modules in src/ and the suites in tests/): real git
// repositories in temporary directories, ports picked at run time, the CLI as
// a real subprocess, and directory snapshots that prove a failed command
// changed nothing.

import assert from "node:assert/strict";
import denoJson from "./deno.json" with { type: "json" };
import {
  allocate,
  type AllocateOptions,
  type Allocation,
  BROWSER_BLOCKED_PORTS,
  WorktreePortsError,
} from "./mod.ts";
import { LISTENER_PROGRAMS } from "./src/listeners.ts";

/**
 * The package's root folder, with a trailing slash. From `import.meta.dirname`:
 * a URL's pathname is `/C:/...` on Windows, and escapes spaces.
 */
export const ROOT: string = `${slashed(import.meta.dirname!)}/`;

/** A path with forward slashes, as git writes paths on Windows too. */
export function slashed(path: string): string {
  return Deno.build.os === "windows" ? path.replaceAll("\\", "/") : path;
}

const CLI = `${ROOT}cli.ts`;

/** The exact permissions the CLI documents; tests run it with these and no others. */
export const CLI_FLAGS: readonly string[] = [
  `--allow-run=git,${LISTENER_PROGRAMS.join(",")}`,
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.1,[::1],0.0.0.0,[::]",
  "--allow-env=WORKTREE_PORTS_HOME,XDG_STATE_HOME,HOME,LOCALAPPDATA",
];

/**
 * The machine-wide index of every CLI run and library call in the tests: a
 * folder of their own, never the real home. Set in this process too, so that
 * library calls made in-process use it.
 */
export const TEST_HOME: string = Deno.makeTempDirSync({ prefix: "worktree-ports-home-" });
Deno.env.set("WORKTREE_PORTS_HOME", TEST_HOME);
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(TEST_HOME, { recursive: true });
  } catch {
    // Already gone.
  }
});

/** Git with no user or system config, so tests behave the same on every machine. */
export const GIT_ENV: Record<string, string> = {
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_AUTHOR_NAME: "test",
  GIT_AUTHOR_EMAIL: "test@example.com",
  GIT_COMMITTER_NAME: "test",
  GIT_COMMITTER_EMAIL: "test@example.com",
};

export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and collects its output; never throws on a non-zero exit. */
export async function run(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<Output> {
  const output = await new Deno.Command(command, {
    args: [...args],
    cwd: options.cwd,
    env: options.clearEnv
      ? { ...GIT_ENV, ...options.env }
      : { ...GIT_ENV, WORKTREE_PORTS_HOME: TEST_HOME, ...options.env },
    clearEnv: options.clearEnv,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Runs git and returns its stdout; throws with git's message when it fails. */
export async function git(cwd: string, ...args: string[]): Promise<string> {
  const output = await run("git", args, { cwd });
  if (output.code !== 0) {
    throw new Error(`git ${args.join(" ")} failed: ${output.stderr}`);
  }
  return output.stdout;
}

/** Runs `deno run <flags> cli.ts ...args` in `cwd`. */
export function runCli(
  cwd: string,
  args: readonly string[],
  options: { flags?: readonly string[]; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<Output> {
  return run(Deno.execPath(), ["run", ...(options.flags ?? CLI_FLAGS), CLI, ...args], {
    cwd,
    env: options.env,
    clearEnv: options.clearEnv,
  });
}

/** Starts the CLI without waiting for it, for races, lock and signal tests. */
export function spawnCli(
  cwd: string,
  args: readonly string[],
  options: { flags?: readonly string[]; env?: Record<string, string> } = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", ...(options.flags ?? CLI_FLAGS), CLI, ...args],
    cwd,
    env: { ...GIT_ENV, WORKTREE_PORTS_HOME: TEST_HOME, ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * A real server, as a worktree's stack starts one: a Deno process listening on
 * 127.0.0.1:`port`, started in `cwd`, so that the system names it and its
 * worktree. Stopped on dispose.
 */
export async function serveIn(
  cwd: string,
  port: number,
): Promise<AsyncDisposable & { pid: number; status: Promise<Deno.CommandStatus> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const l = Deno.listen({ hostname: "127.0.0.1", port: ${port} }); console.log("up");` +
      " for await (const c of l) c.close();",
    ],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  assert.equal(value, "up\n");
  return {
    pid: child.pid,
    status: child.status,
    async [Symbol.asyncDispose]() {
      try {
        child.kill();
      } catch {
        // Ended already.
      }
      await child.status;
      await reader.cancel();
    },
  };
}

/** A git repository with one commit in a temporary directory, removed on dispose. */
export class TempRepo implements AsyncDisposable {
  /** The temporary directory holding the repository and its worktrees. */
  readonly base: string;
  /** The main worktree. */
  readonly root: string;

  private constructor(base: string, root: string) {
    this.base = base;
    this.root = root;
  }

  /**
   * Creates the repository, optionally with a committed worktree-ports.config.json
   * (so every worktree has it), optionally bare (worktrees are then all linked),
   * and optionally in a folder of the caller's (`dir`) rather than the system's
   * temporary folder.
   */
  static async create(
    options: { bare?: boolean; config?: unknown; dir?: string } = {},
  ): Promise<TempRepo> {
    const base = slashed(
      await Deno.realPath(await Deno.makeTempDir({ prefix: "worktree-ports-", dir: options.dir })),
    );
    await git(base, "init", "-q", "-b", "main", "main");
    if (options.config !== undefined) {
      await writeJson(`${base}/main/worktree-ports.config.json`, options.config);
      await git(`${base}/main`, "add", "worktree-ports.config.json");
    }
    await git(`${base}/main`, "commit", "-q", "--allow-empty", "-m", "initial");
    if (!options.bare) return new TempRepo(base, `${base}/main`);
    await git(base, "clone", "-q", "--bare", "main", "bare.git");
    await Deno.remove(`${base}/main`, { recursive: true });
    return new TempRepo(base, `${base}/bare.git`);
  }

  /** Adds a linked worktree next to the main one and returns its path. */
  async addWorktree(name: string): Promise<string> {
    const path = `${this.base}/${name}`;
    await git(this.root, "worktree", "add", "-q", "--detach", path);
    return path;
  }

  /** Adds `count` linked worktrees named `${prefix}0`, `${prefix}1`, ... */
  async addWorktrees(prefix: string, count: number): Promise<string[]> {
    const paths: string[] = [];
    // Sequential: concurrent `git worktree add` calls contend on git's own locks.
    for (let index = 0; index < count; index++) {
      paths.push(await this.addWorktree(`${prefix}${index}`));
    }
    return paths;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.base, { recursive: true });
  }
}

/** Writes a JSON value the way a user or an older tool would. */
export async function writeJson(path: string, value: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(value, null, 2) + "\n");
}

/** Reads and parses a JSON file. */
export async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(path));
}

/** Every file under `dir` with its content, to show that a command changed nothing. */
export async function snapshot(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  async function walk(path: string) {
    for await (const entry of Deno.readDir(path)) {
      const child = `${path}/${entry.name}`;
      if (entry.isDirectory) {
        // Git's object store is large and no command of ours writes to it.
        if (entry.name !== "objects") await walk(child);
      } else if (entry.isFile) {
        files.set(child, await Deno.readTextFile(child));
      }
    }
  }
  await walk(dir);
  return files;
}

/** Whether file modes bind this process: they do not for root. */
export async function canCreateFileIn(dir: string): Promise<boolean> {
  try {
    await Deno.writeTextFile(`${dir}/probe`, "");
    await Deno.remove(`${dir}/probe`);
    return true;
  } catch {
    return false;
  }
}

/** Reads a stream until `text` appears; returns everything read so far. */
export async function readUntil(
  reader: ReadableStreamDefaultReader<string>,
  text: string,
): Promise<string> {
  let seen = "";
  while (!seen.includes(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before "${text}"; got: ${seen}`);
    seen += value;
  }
  return seen;
}

/** Reads a stream to its end; returns everything read. */
export async function readRest(reader: ReadableStreamDefaultReader<string>): Promise<string> {
  let rest = "";
  for (let read = await reader.read(); !read.done; read = await reader.read()) rest += read.value;
  return rest;
}

/** The CLI's flags, from their one source: the permission set in deno.json. */
export function permissionSetFlags(): string[] {
  const set = (denoJson as { permissions: Record<string, Record<string, true | string[]>> })
    .permissions["worktree-ports"];
  return Object.entries(set).map(([name, value]) =>
    value === true ? `--allow-${name}` : `--allow-${name}=${value.join(",")}`
  );
}

/** Whether this host can bind IPv6 loopback; probes treat it as not applicable otherwise. */
export function hasIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

/** A span of ports to pick from, both ends included. */
export interface PortRegion {
  low: number;
  high: number;
}

/**
 * Below Linux's ephemeral range (32768-60999), where no outgoing connection
 * takes a port and no ephemeral-range warning is printed; above most of the
 * ports development servers default to.
 */
export const BELOW_EPHEMERAL: PortRegion = { low: 10000, high: 32767 };

/** Linux's default ephemeral range, for the tests of its warning. */
export const LINUX_EPHEMERAL: PortRegion = { low: 32768, high: 60999 };

/** Base ports picked for one test, and what follows from them. */
export interface PickedPorts<K extends string> {
  /** Each key's port at slot 0. */
  readonly base: Readonly<Record<K, number>>;
  readonly stride: number;
  /** The highest slot the config has. */
  readonly slots: number;
  /** Each key's port at `slot`: its base plus `slot` strides. */
  at(slot: number): Record<K, number>;
  /** The config that gives these ports: `ports`, `stride` and `slots`, fresh objects each time. */
  config(): { ports: Record<K, number>; stride: number; slots: number };
  /** The same config as command-line flags: `--port KEY=BASE`... `--stride N --slots N`. */
  readonly args: readonly string[];
  /** The span each key's ports cover, from its base to its port at the last slot. */
  readonly ranges: readonly PortRegion[];
}

/** Options for {@linkcode pickPorts}. */
export interface PickPortsOptions<K extends string> {
  /** Distance between a key's ports in consecutive slots. */
  stride?: number;
  /** The highest slot; every slot from 0 to it is checked. */
  slots?: number;
  /** Where the keys' ports lie. */
  region?: PortRegion;
  /**
   * A key whose port at `slot` must be one browsers refuse, as a test of
   * blocked slots needs; its base is then taken from below the port.
   */
  blockedAt?: { key: K; slot: number };
  /** Ports picked earlier in the same test, whose ranges these keep clear of. */
  avoid?: readonly PickedPorts<string>[];
}

/** Whether a TCP port can be bound right now on every address a probe of the tool checks. */
function bindableEverywhere(port: number, ipv6: boolean): boolean {
  for (const hostname of ipv6 ? ["127.0.0.1", "::1", "0.0.0.0", "::"] : ["127.0.0.1", "0.0.0.0"]) {
    try {
      Deno.listen({ hostname, port }).close();
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Picks, at random, base ports for one test, so that it depends on no fixed
 * port being free: every port it can reach (each key's base plus 0 to `slots`
 * strides) is bindable right now on 127.0.0.1, ::1 (where the host has it)
 * and 0.0.0.0, no two keys' ranges overlap, and none of the ports is one
 * browsers refuse (but the one `blockedAt` asks for). Other programs, and
 * other copies of this suite, may hold any other ports meanwhile.
 *
 * @throws {Error} When no such ports are found in the region.
 */
export function pickPorts<K extends string>(
  keys: readonly K[],
  options: PickPortsOptions<K> = {},
): PickedPorts<K> {
  const { stride = 10, slots = 60, region = BELOW_EPHEMERAL, blockedAt, avoid = [] } = options;
  const span = slots * stride;
  const ipv6 = hasIpv6Loopback();
  const taken: PortRegion[] = avoid.flatMap((picked) => picked.ranges);
  const base = {} as Record<K, number>;
  const overlaps = (low: number) =>
    taken.some((range) => low <= range.high && range.low <= low + span);
  const usable = (low: number, blocked?: number) => {
    if (low < 1024 || low + span > 65535 || overlaps(low)) return false;
    for (let slot = 0; slot <= slots; slot++) {
      const port = low + slot * stride;
      if (port === blocked) continue;
      if (BROWSER_BLOCKED_PORTS.has(port) || !bindableEverywhere(port, ipv6)) return false;
    }
    return true;
  };
  for (const key of keys) {
    let found: number | undefined;
    if (blockedAt?.key === key) {
      const blocked = [...BROWSER_BLOCKED_PORTS];
      // In random order, so that no one blocked port's neighbours must be free.
      for (let index = blocked.length - 1; index > 0; index--) {
        const other = Math.floor(Math.random() * (index + 1));
        [blocked[index], blocked[other]] = [blocked[other], blocked[index]];
      }
      const port = blocked.find((port) => usable(port - blockedAt.slot * stride, port));
      if (port !== undefined) found = port - blockedAt.slot * stride;
    } else {
      for (let attempt = 0; attempt < 2000 && found === undefined; attempt++) {
        const low = region.low + Math.floor(Math.random() * (region.high - span - region.low + 1));
        if (usable(low)) found = low;
      }
    }
    if (found === undefined) {
      throw new Error(
        `Found no ${slots + 1} bindable ports ${stride} apart for "${key}" in ` +
          `${region.low}-${region.high}${blockedAt?.key === key ? " around a blocked port" : ""}`,
      );
    }
    base[key] = found;
    taken.push({ low: found, high: found + span });
  }
  const at = (slot: number) =>
    Object.fromEntries(keys.map((key) => [key, base[key] + slot * stride])) as Record<K, number>;
  return {
    base,
    stride,
    slots,
    at,
    config: () => ({ ports: at(0), stride, slots }),
    args: [
      ...keys.flatMap((key) => ["--port", `${key}=${base[key]}`]),
      ...["--stride", String(stride), "--slots", String(slots)],
    ],
    ranges: keys.map((key) => ({ low: base[key], high: base[key] + span })),
  };
}

/**
 * One test's ports: "web" at a base picked for it, where nothing listens, with
 * a small stride. Tests state what they expect relative to that base.
 */
export function webPorts(): PickedPorts<"web"> {
  return pickPorts(["web"], { stride: 10, slots: 40 });
}

/** Calls allocate() in `cwd` with the config of `ports`; `options` may override any of it. */
export function allocateIn(
  cwd: string,
  ports: PickedPorts<"web">,
  options: AllocateOptions = {},
): Promise<Allocation> {
  return allocate({ ...ports.config(), cwd, ...options });
}

/** A test's ports as a printed bundle holds them: "web" and then "api", at `slot`. */
export function portsAt(ports: PickedPorts<"web" | "api">, slot: number): number[] {
  const { web, api } = ports.at(slot);
  return [web, api];
}

/** Every port a CLI's printed bundle holds: its "web" and "api". */
export function portsOf(stdout: string): number[] {
  const bundle = JSON.parse(stdout);
  return [bundle.web, bundle.api];
}

/** A port file as this tool writes it, for a worktree at `slot` of a test's `ports`. */
export function portFileAt(
  ports: PickedPorts<"web" | "api">,
  worktree: string,
  slot: number,
): Record<string, unknown> {
  return {
    ...ports.at(slot),
    worktree_ports: { version: 1, slot, worktree, allocated_at: "2026-01-01T00:00:00.000Z" },
  };
}

/** The slot a port file or a printed bundle records. */
export function slotOf(file: Record<string, unknown>): number {
  return (file.worktree_ports as { slot: number }).slot;
}

/** An assert.rejects/throws check: a WorktreePortsError with this code. */
export function assertCode(code: string): (error: unknown) => true {
  return (error: unknown) => {
    assert.ok(error instanceof WorktreePortsError, `expected WorktreePortsError, got ${error}`);
    assert.equal(error.code, code);
    return true;
  };
}

/** A machine-wide index folder of one test's own, removed on dispose. */
export async function tempHome(): Promise<
  { dir: string; env: Record<string, string> } & AsyncDisposable
> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "worktree-ports-home-" }));
  return {
    dir,
    env: { WORKTREE_PORTS_HOME: dir },
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A repository whose committed config has a template holding a quote and a command substitution. */
export function repoWithOddTemplate(ports: PickedPorts<"web_port">): Promise<TempRepo> {
  return TempRepo.create({
    config: {
      ...ports.config(),
      templates: { odd: 'it\'s $(touch pwned) `touch pwned2` "{web_port}" $HOME \\ end' },
    },
  });
}

/** The odd template's value at slot 1 of `ports`. */
export function oddValue(ports: PickedPorts<"web_port">): string {
  return `it's $(touch pwned) \`touch pwned2\` "${ports.at(1).web_port}" $HOME \\ end`;
}

/** The ports of the README's compose recipe, at bases picked for one test, in its 50 slots. */
export function composePorts(): PickedPorts<"web_port" | "db_port"> {
  return pickPorts(["web_port", "db_port"], { slots: 50 });
}

/** The config of the README's compose recipe. */
export function composeRecipe(
  ports: PickedPorts<"web_port" | "db_port">,
): {
  ports: Record<"web_port" | "db_port", number>;
  templates: Record<string, string>;
  stride: number;
} {
  return {
    ports: ports.at(0),
    templates: {
      compose_project_name: "myapp-{slug}",
      public_url: "http://{slug}.localhost:{web_port}",
      database_url: "postgres://app@127.0.0.1:{db_port}/app_{slot}",
    },
    stride: ports.stride,
  };
}

/**
 * Runs `fn` as one step per loopback address a probe checks. Without IPv6
 * loopback on this host the `::1` step is reported as ignored, saying why.
 */
export async function forEachLoopback(
  t: Deno.TestContext,
  fn: (hostname: string) => void | Promise<void>,
): Promise<void> {
  const ipv6 = hasIpv6Loopback();
  for (const hostname of ["127.0.0.1", "0.0.0.0", "::1", "::"]) {
    const skip = hostname.includes(":") && !ipv6;
    await t.step({
      name: `listener on ${hostname}${skip ? " (skipped: no IPv6 loopback)" : ""}`,
      ignore: skip,
      fn: () => fn(hostname),
    });
  }
}

/**
 * Where `.ci/run` installs the dotenv readers that tests compare against: a
 * python-dotenv virtual environment and npm's `dotenv` (git ignores it).
 */
export const TOOLS_DIR: string = `${ROOT}.cache/tools/`;

/** A real program that reads dotenv files, or why it cannot be had here. */
export interface DotenvReader {
  name: string;
  /** Why the reader is not available, if it is not. */
  missing?: string;
  /** The values each file defines, `null` for a variable the reader could not parse. */
  read(files: readonly string[]): Promise<Record<string, string | null>[]>;
}

/** Whether a program runs and exits 0 with these arguments. */
export function runsOk(command: string, args: readonly string[]): boolean {
  try {
    return new Deno.Command(command, { args: [...args], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

async function readJsonOutput(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<unknown> {
  const output = await run(command, args, options);
  if (output.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} failed: ${output.stderr}`);
  }
  return JSON.parse(output.stdout);
}

/**
 * The dotenv readers whose quoting rules differ: python-dotenv (current,
 * from pip), docker-compose v1 (which uses the python-dotenv its package
 * brings), docker compose v2 where installed, npm's `dotenv`, node's
 * `--env-file` and direnv's `dotenv`. Each is run as a real process with HOME pointed at a temporary
 * directory.
 */
export function dotenvReaders(home: string): DotenvReader[] {
  const python = `${TOOLS_DIR}venv/bin/python`;
  const npmDotenv = `${TOOLS_DIR}npm/node_modules/dotenv`;
  const env = { HOME: home, XDG_CONFIG_HOME: home, XDG_DATA_HOME: home, XDG_CACHE_HOME: home };
  // docker-compose v1 is a Python program: the interpreter that runs it has PyYAML.
  let composePython: string | undefined;
  if (runsOk("docker-compose", ["version"])) {
    const where = new Deno.Command("sh", { args: ["-c", "command -v docker-compose"] })
      .outputSync();
    const path = new TextDecoder().decode(where.stdout).trim();
    const shebang = Deno.readTextFileSync(path).split("\n")[0];
    composePython = /^#!\s*(\S*python\S*)/.exec(shebang)?.[1];
  }
  return [
    {
      name: "python-dotenv",
      missing: runsOk(python, ["-c", "import dotenv"])
        ? undefined
        : `python-dotenv is not installed in ${TOOLS_DIR}venv (.ci/run installs it)`,
      read: async (files) =>
        await readJsonOutput(python, [
          "-c",
          "import sys, json, dotenv\n" +
          "print(json.dumps([dotenv.dotenv_values(f) for f in sys.argv[1:]]))",
          ...files,
        ], { env }) as Record<string, string | null>[],
    },
    {
      name: "npm dotenv",
      missing: runsOk("node", ["-e", `require(${JSON.stringify(npmDotenv)})`])
        ? undefined
        : `node or npm's dotenv in ${TOOLS_DIR}npm is not installed (.ci/run installs it)`,
      read: async (files) =>
        await readJsonOutput("node", [
          "-e",
          `const dotenv = require(${JSON.stringify(npmDotenv)});` +
          "const fs = require('fs');" +
          "console.log(JSON.stringify(process.argv.slice(1)" +
          ".map((f) => dotenv.parse(fs.readFileSync(f)))));",
          ...files,
        ], { env }) as Record<string, string | null>[],
    },
    {
      name: "direnv dotenv",
      missing: runsOk("direnv", ["version"]) ? undefined : "direnv is not installed",
      read: async (files) => {
        const values: Record<string, string | null>[] = [];
        for (const file of files) {
          // direnv refuses a whole file it cannot parse: every variable is lost.
          const output = await run("direnv", ["dotenv", "json", file], { env });
          values.push(output.code === 0 ? JSON.parse(output.stdout) : {});
        }
        return values;
      },
    },
    {
      name: "docker compose v2",
      missing: runsOk("docker", ["compose", "version"])
        ? undefined
        : "docker compose v2 is not installed",
      read: (files) =>
        readThroughCompose(
          files,
          { version: undefined, file: "compose.yaml" },
          (file, dir) =>
            run("docker", ["compose", "--env-file", file, "config", "--format", "json"], {
              cwd: dir,
              env,
            }).then((output) => ({
              ...output,
              stdout: output.code === 0
                ? JSON.stringify(JSON.parse(output.stdout).services.s.environment)
                : "",
            })),
        ),
    },
    {
      name: "node --env-file",
      missing: runsOk("node", ["--env-file=/dev/null", "-e", "0"])
        ? undefined
        : "node 20.6 or later (for --env-file) is not installed",
      read: async (files) => {
        const values: Record<string, string | null>[] = [];
        for (const file of files) {
          // Only the names the file defines: node adds them to the whole environment.
          const names = [...Deno.readTextFileSync(file).matchAll(/^([A-Za-z_]\w*)=/gm)]
            .map((match) => match[1]);
          values.push(
            await readJsonOutput("node", [
              `--env-file=${file}`,
              "-e",
              `console.log(JSON.stringify(Object.fromEntries(${
                JSON.stringify(names)
              }.filter((n) => n in process.env).map((n) => [n, process.env[n]]))))`,
            ], { env }) as Record<string, string | null>,
          );
        }
        return values;
      },
    },
    {
      name: "docker-compose v1",
      missing: composePython === undefined
        ? "docker-compose v1 is not installed"
        : runsOk(composePython, ["-c", "import yaml"])
        ? undefined
        : "docker-compose's Python has no PyYAML",
      read: (files) =>
        readThroughCompose(
          files,
          { version: "3", file: "docker-compose.yml" },
          (file, dir) =>
            run("bash", [
              "-c",
              'set -o pipefail; docker-compose --env-file "$1" config | "$2" -c "$3"',
              "compose",
              file,
              composePython!,
              "import sys, yaml, json\n" +
              "print(json.dumps(yaml.safe_load(sys.stdin)['services']['s']['environment']))",
            ], { cwd: dir, env }),
        ),
    },
  ];
}

/**
 * How to run a command as a user that file modes and privileged ports bind:
 * a prefix (empty when this process is not root), or why that cannot be done here.
 */
export const UNPRIVILEGED: { prefix: string[] } | { reason: string } = (() => {
  if (Deno.build.os !== "linux") return { reason: "not Linux" };
  const id = new Deno.Command("id", { args: ["-u"] }).outputSync();
  if (new TextDecoder().decode(id.stdout).trim() !== "0") return { prefix: [] };
  try {
    new Deno.Command("setpriv", { args: ["--version"] }).outputSync();
  } catch {
    return { reason: "running as root without setpriv" };
  }
  return { prefix: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] };
})();

/**
 * What compose reads from each dotenv file: each variable is interpolated into
 * one service's environment, which `config` renders without a Docker engine
 * (`$` doubled). `render` runs compose in the folder and prints that
 * environment as JSON; a file compose refuses reads as nothing.
 */
async function readThroughCompose(
  files: readonly string[],
  layout: { version: string | undefined; file: string },
  render: (file: string, dir: string) => Promise<Output>,
): Promise<Record<string, string | null>[]> {
  const values: Record<string, string | null>[] = [];
  for (const file of files) {
    const names = [...Deno.readTextFileSync(file).matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)]
      .map((match) => match[1]);
    const dir = await Deno.makeTempDir({ prefix: "worktree-ports-compose-" });
    try {
      const compose = {
        ...(layout.version === undefined ? {} : { version: layout.version }),
        services: {
          s: {
            image: "none",
            environment: Object.fromEntries(names.map((name) => [name, `\${${name}}`])),
          },
        },
      };
      await Deno.writeTextFile(`${dir}/${layout.file}`, JSON.stringify(compose));
      const output = await render(file, dir);
      values.push(output.code === 0 ? composeValues(JSON.parse(output.stdout)) : {});
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return values;
}

/** A compose service's environment as the values it holds: compose writes `$` as `$$`. */
function composeValues(environment: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(environment).map(([name, value]) => [name, String(value).replaceAll("$$", "$")]),
  );
}

/**
 * Copies the package's modules (`mod.ts`, `cli.ts`, `deno.json` and `src/`)
 * into `dir`, readable by every user, so that a test can run them as another
 * user wherever the checkout lies (a clone inside a private folder included).
 */
export async function copyPackage(dir: string): Promise<string> {
  const root = ROOT;
  async function copy(relative: string): Promise<void> {
    const info = await Deno.stat(`${root}${relative}`);
    if (info.isDirectory) {
      await Deno.mkdir(`${dir}/${relative}`, { recursive: true });
      await Deno.chmod(`${dir}/${relative}`, 0o755);
      for await (const entry of Deno.readDir(`${root}${relative}`)) {
        if (!entry.name.endsWith("_test.ts")) await copy(`${relative}/${entry.name}`);
      }
      return;
    }
    await Deno.copyFile(`${root}${relative}`, `${dir}/${relative}`);
    await Deno.chmod(`${dir}/${relative}`, 0o644);
  }
  await Deno.mkdir(dir, { recursive: true });
  await Deno.chmod(dir, 0o755);
  for (const name of ["mod.ts", "cli.ts", "deno.json", "src"]) await copy(name);
  return dir;
}

/** What a test needs of the system it runs on. */
export interface Needs {
  /** Why it needs Unix (Linux or macOS): what Windows lacks. */
  unix?: string;
  /** Why it needs Linux: what macOS and Windows lack. */
  linux?: string;
  /** Programs it runs, which must be installed. */
  tools?: readonly string[];
}

const found = new Map<string, boolean>();

/** Whether a program can be started: found on `PATH`, whatever it then says. */
export function installed(tool: string): boolean {
  let known = found.get(tool);
  if (known === undefined) {
    try {
      new Deno.Command(tool, { args: ["--version"], stdin: "null", stdout: "null", stderr: "null" })
        .outputSync();
      known = true;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      known = false;
    }
    found.set(tool, known);
  }
  return known;
}

/** Why a test cannot run on this system, or `undefined` when it can. */
export function unmetNeed(needs: Needs): string | undefined {
  if (needs.linux !== undefined && Deno.build.os !== "linux") return `needs Linux: ${needs.linux}`;
  if (needs.unix !== undefined && Deno.build.os === "windows") {
    return `needs Unix: ${needs.unix}`;
  }
  const missing = needs.tools?.find((tool) => !installed(tool));
  return missing === undefined ? undefined : `${missing} is not installed`;
}

/**
 * A test that runs where the system has what it `needs`; elsewhere it is
 * ignored, and its name says why.
 */
export function testWhere(
  needs: Needs,
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  const reason = unmetNeed(needs);
  Deno.test({
    name: reason === undefined ? name : `${name} (skipped: ${reason})`,
    ignore: reason !== undefined,
    fn,
  });
}
