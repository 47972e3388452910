// Who listens on a TCP port: the system's answer, behind one seam. On Unix
// lsof lists the listening sockets and working directories and ps the command
// lines; on Windows netstat and tasklist; docker names a container's ports.

import { fileInfo } from "./files.ts";
import { IS_WINDOWS } from "./paths.ts";
import { runProgram } from "./programs.ts";

/** A process listening on a TCP port, as the system lists it. */
export interface Listener {
  /** The port. */
  port: number;
  /** The process's id. */
  pid: number;
  /** Its short name, where the listing gives one. */
  name?: string;
}

/** A running container that publishes ports on the host. */
export interface Container {
  /** Its name. */
  name: string;
  /** Its compose project, if compose started it. */
  project?: string;
  /** The directory compose was run in, if compose started it. */
  workingDir?: string;
  /** The host ports it publishes. */
  ports: number[];
}

/** The system's answer, or why there is none. */
export type SystemAnswer<T> = { found: T } | { unknown: string };

/**
 * Asks the system who listens on TCP ports. Injected so that tests and
 * embedders can give their own answers.
 */
export interface ListenerLookup {
  /**
   * Every process listening on a TCP port that the system shows this user
   * (another user's processes are usually hidden).
   */
  listeners(): Promise<SystemAnswer<Listener[]>>;
  /** The working directory of each process, where the system tells. */
  workingDirectories(pids: readonly number[]): Promise<Map<number, string>>;
  /** The command line of each process (its name, where the system gives no more). */
  commandLines(pids: readonly number[]): Promise<Map<number, string>>;
  /** The running containers that publish ports. */
  containers(): Promise<SystemAnswer<Container[]>>;
}

/** The programs the real {@linkcode ListenerLookup} runs on this system, besides docker. */
export const LISTENER_PROGRAMS: readonly string[] = IS_WINDOWS
  ? ["netstat", "tasklist"]
  : ["lsof", "ps"];

/**
 * How long a program may take before its part of the answer counts as
 * unknown: lsof can hang on an unreachable network file system, and docker on
 * a daemon that does not answer.
 */
const ASK_TIMEOUT_MS = 3000;

/**
 * The real {@linkcode ListenerLookup}: lsof and ps on Unix, netstat and
 * tasklist on Windows, and docker for containers. Each program is run only
 * when Deno's permissions already allow it (nothing prompts); one that is
 * missing or not allowed makes its part of the answer unknown.
 */
export const denoListeners: ListenerLookup = {
  async listeners(): Promise<SystemAnswer<Listener[]>> {
    if (IS_WINDOWS) {
      const answer = await ask("netstat", ["-ano"]);
      return "unknown" in answer ? answer : { found: parseNetstat(answer.found) };
    }
    // -b and -w: no call that can hang on an unreachable file system, and no warning about it.
    const answer = await ask("lsof", ["-nPbw", "-iTCP", "-sTCP:LISTEN", "-Fpcn"]);
    return "unknown" in answer ? answer : { found: parseLsofListeners(answer.found) };
  },

  async workingDirectories(pids: readonly number[]): Promise<Map<number, string>> {
    // Windows tells no other process's working directory.
    if (pids.length === 0 || IS_WINDOWS) return new Map();
    const answer = await ask("lsof", ["-nPbw", "-a", "-d", "cwd", "-p", pids.join(","), "-Fpn"]);
    return "found" in answer ? parseLsofCwds(answer.found) : new Map();
  },

  async commandLines(pids: readonly number[]): Promise<Map<number, string>> {
    if (pids.length === 0) return new Map();
    if (IS_WINDOWS) {
      // tasklist names the image; the command line would take WMI.
      const answer = await ask("tasklist", ["/fo", "csv", "/nh"]);
      return "found" in answer ? parseTasklist(answer.found) : new Map();
    }
    // In the user's locale: under C, ps prints "?" for every byte of a non-ASCII character.
    const answer = await ask("ps", ["-ww", "-o", "pid=,args=", "-p", pids.join(",")], {});
    return "found" in answer ? parsePs(answer.found) : new Map();
  },

  async containers(): Promise<SystemAnswer<Container[]>> {
    const format = [
      "{{.Names}}",
      "{{.Ports}}",
      '{{.Label "com.docker.compose.project"}}',
      '{{.Label "com.docker.compose.project.working_dir"}}',
    ].join("\t");
    const answer = await ask("docker", ["ps", "--format", format]);
    return "unknown" in answer ? answer : { found: parseDockerPs(answer.found) };
  },
};

/**
 * Runs a program if Deno already allows it, and gives its output. lsof exits
 * 1 when it finds nothing, so a failure with no message is an empty answer.
 */
async function ask(
  program: string,
  args: string[],
  env: Record<string, string> = { LC_ALL: "C" },
): Promise<SystemAnswer<string>> {
  // Deno also reports a program named in --allow-run as not granted when it is not on PATH.
  const notAllowed = `${program} is not installed, or not allowed to run${
    LISTENER_PROGRAMS.includes(program)
      ? ` (run again with --allow-run=git,${LISTENER_PROGRAMS.join(",")})`
      : ""
  }`;
  if (Deno.permissions.querySync({ name: "run", command: program }).state !== "granted") {
    return { unknown: notAllowed };
  }
  let output: Deno.CommandOutput;
  try {
    output = await runProgram(program, {
      args,
      env,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
    });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { unknown: `${program} is not installed` };
    if (error instanceof Deno.errors.NotCapable) return { unknown: notAllowed };
    throw error;
  }
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr).trim();
  if (!output.success && (stderr !== "" || output.signal !== null)) {
    const why = output.signal !== null ? "took too long" : stderr.split("\n")[0];
    return { unknown: `${program} failed: ${why}` };
  }
  return { found: stdout };
}

/** The port of a listening address as lsof, ss, netstat and docker print it (`*:80`, `[::1]:80`). */
function portOf(address: string): number | undefined {
  const match = /:(\d+)$/.exec(address);
  const port = match === null ? NaN : Number(match[1]);
  return Number.isInteger(port) && port > 0 && port <= 65535 ? port : undefined;
}

/** A process id as the system prints it, or `undefined` for anything else. */
function asPid(text: string): number | undefined {
  const pid = /^\d{1,10}$/.test(text.trim()) ? Number(text) : NaN;
  return pid > 0 && pid < 2 ** 32 ? pid : undefined;
}

/** lsof's field output (`-Fpcn`): `p` starts a process, `c` names it, `n` is a socket's address. */
export function parseLsofListeners(text: string): Listener[] {
  const found: Listener[] = [];
  let pid: number | undefined;
  let name: string | undefined;
  for (const line of text.split("\n")) {
    const value = line.slice(1);
    if (line.startsWith("p")) {
      pid = asPid(value);
      name = undefined;
    } else if (line.startsWith("c")) {
      name = unescapeLsof(value);
    } else if (line.startsWith("n") && pid !== undefined) {
      const port = portOf(value);
      if (port !== undefined && !found.some((l) => l.pid === pid && l.port === port)) {
        found.push({ port, pid, name });
      }
    }
  }
  return found;
}

/**
 * lsof's field output for working directories (`-d cwd -Fpn`). A directory
 * lsof could not read, or one since deleted, is marked (`/x (deleted)`) and
 * left out, unless a directory of that very name is there.
 */
export function parseLsofCwds(text: string): Map<number, string> {
  const found = new Map<number, string>();
  let pid: number | undefined;
  for (const line of text.split("\n")) {
    if (line.startsWith("p")) pid = asPid(line.slice(1));
    else if (line.startsWith("n/") && pid !== undefined) {
      const name = unescapeLsof(line.slice(1));
      // A directory may be named like a mark ("x (deleted)"): one that is there is kept.
      if (!LSOF_MARK.test(name) || fileInfo(name)?.isDirectory) found.set(pid, name);
    }
  }
  return found;
}

/** What lsof adds to a name it could not follow: `(deleted)`, `(readlink: Permission denied)`. */
const LSOF_MARK = / \((deleted|readlink: [^)]*|stat: [^)]*)\)$/;

const LSOF_ESCAPES: Record<string, number> = {
  "\\": 0x5c,
  n: 0x0a,
  t: 0x09,
  r: 0x0d,
  b: 0x08,
  f: 0x0c,
};

/**
 * A name as lsof prints it, its escapes undone: `\\`, `\n`, `\t` and the
 * like, and `\xNN` for each byte it does not print as is (under the C
 * locale, every byte of a UTF-8 character).
 */
export function unescapeLsof(name: string): string {
  if (!name.includes("\\")) return name;
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let index = 0; index < name.length; index++) {
    // By code point, so that a character outside the BMP is kept whole.
    const char = String.fromCodePoint(name.codePointAt(index)!);
    const next = name[index + 1];
    if (
      char === "\\" && next === "x" && /^[0-9a-fA-F]{2}$/.test(name.slice(index + 2, index + 4))
    ) {
      bytes.push(parseInt(name.slice(index + 2, index + 4), 16));
      index += 3;
    } else if (char === "\\" && next !== undefined && next in LSOF_ESCAPES) {
      bytes.push(LSOF_ESCAPES[next]);
      index += 1;
    } else {
      bytes.push(...encoder.encode(char));
      index += char.length - 1;
    }
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** `ps -o pid=,args=`: a process id, spaces, the command line. */
export function parsePs(text: string): Map<number, string> {
  const found = new Map<number, string>();
  for (const line of text.split("\n")) {
    const match = /^\s*(\d+)\s+(.*\S)\s*$/.exec(line);
    if (match !== null) found.set(Number(match[1]), match[2]);
  }
  return found;
}

/**
 * `netstat -ano` on Windows. A listening socket is told by its remote address
 * (`0.0.0.0:0`, `[::]:0`) rather than by its state's name, which Windows
 * translates.
 */
export function parseNetstat(text: string): Listener[] {
  const found: Listener[] = [];
  for (const line of text.split(/\r?\n/)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length !== 5 || fields[0].toUpperCase() !== "TCP") continue;
    const [, local, remote, , pidText] = fields;
    const port = portOf(local);
    const pid = Number(pidText);
    if (port === undefined || !/:0$/.test(remote) || !Number.isInteger(pid) || pid <= 0) continue;
    if (!found.some((l) => l.pid === pid && l.port === port)) found.push({ port, pid });
  }
  return found;
}

/** `tasklist /fo csv /nh`: `"image","pid",...` per line. */
export function parseTasklist(text: string): Map<number, string> {
  const found = new Map<number, string>();
  for (const line of text.split(/\r?\n/)) {
    const match = /^"([^"]*)","(\d+)"/.exec(line);
    if (match !== null) found.set(Number(match[2]), match[1]);
  }
  return found;
}

/**
 * `docker ps` with the format {@linkcode denoListeners} asks for: name,
 * published ports (`0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`, ranges as
 * `8000-8001->8000-8001/tcp`), compose project, compose working directory.
 */
export function parseDockerPs(text: string): Container[] {
  const found: Container[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "") continue;
    const [name, published = "", project = "", workingDir = ""] = line.split("\t");
    const ports = new Set<number>();
    for (const mapping of published.split(/,\s*/)) {
      const match = /:(\d+)(?:-(\d+))?->/.exec(mapping);
      if (match === null) continue;
      const first = Number(match[1]);
      const last = match[2] === undefined ? first : Number(match[2]);
      for (let port = first; port <= last && port - first < 65536; port++) ports.add(port);
    }
    found.push({
      name,
      project: project || undefined,
      workingDir: workingDir || undefined,
      ports: [...ports],
    });
  }
  return found;
}
