// A local HTTP proxy that gives every worktree's services stable names:
// <service>.<worktree>.<repo>.localhost on one port, forwarded to the
// worktree's port. Bytes pass through as they come: bodies stream both ways,
// server-sent events arrive as sent, and WebSocket upgrades are bridged.

import { type Environment, environmentOf } from "./environment.ts";
import { WorktreePortsError } from "./errors.ts";
import { writeFileAtomic } from "./files.ts";
import { holderName } from "./holders.ts";
import { joinPath } from "./paths.ts";
import { DEFAULT_PROXY_PORT, PROXY_FILE_NAME, readProxyRecord } from "./proxy_names.ts";
import { readRoutes, type Route, type RouteTable } from "./proxy_routes.ts";

/** Options for {@linkcode serveProxy}. */
export interface ProxyOptions extends Pick<Environment, "index" | "listeners"> {
  /**
   * The port to listen on, on 127.0.0.1 and ::1.
   *
   * @default {DEFAULT_PROXY_PORT}
   */
  port?: number;
  /**
   * Stops the proxy when aborted.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
  /**
   * Called once it listens, with the port and the addresses.
   *
   * @default {undefined}
   */
  onListen?: (port: number, hostnames: string[]) => void;
}

/** The routes are read again when a name is unknown, or when they are older than this. */
const ROUTES_MAX_AGE_MS = 1000;

/** A request's head larger than this is refused. */
const MAX_HEAD_BYTES = 64 * 1024;

/** How long a backend may go on answering a client that closed its side. */
const GRACE_MS = 30_000;

/** A client that has not sent a whole head by then is dropped: idle sockets cost descriptors. */
const HEAD_TIMEOUT_MS = 30_000;

/** How many times a request may pass through the proxy: more is a loop. */
const MAX_HOPS = 5;

/** The header that counts a request's passes through the proxy. */
const HOPS_HEADER = "x-worktree-ports-hops";

/**
 * Serves the proxy until `signal` aborts: on 127.0.0.1 and ::1 only, one
 * per user (the port it took is recorded in the machine-wide index folder,
 * for `list` and `{proxy_port}`). Changes no port file.
 *
 * @param options The port, the abort signal and the injected index and listeners.
 * @throws {WorktreePortsError} With code `PORT_TAKEN` when the port is taken, naming who holds it.
 *
 * @example Usage
 * ```ts ignore
 * import { serveProxy } from "@org/worktree-ports";
 *
 * const stop = new AbortController();
 * Deno.addSignalListener("SIGINT", () => stop.abort());
 * await serveProxy({ signal: stop.signal });
 * ```
 */
export async function serveProxy(options: ProxyOptions = {}): Promise<void> {
  const env = environmentOf(options);
  const port = options.port ?? DEFAULT_PROXY_PORT;
  const listeners: Deno.TcpListener[] = [];
  try {
    listeners.push(Deno.listen({ hostname: "127.0.0.1", port }));
  } catch (error) {
    if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    throw new WorktreePortsError("PORT_TAKEN", await takenMessage(port, env.listeners));
  }
  try {
    listeners.push(Deno.listen({ hostname: "::1", port }));
  } catch (error) {
    // A host without IPv6 loopback serves on 127.0.0.1 alone.
    if (error instanceof Deno.errors.AddrInUse) {
      listeners[0].close();
      throw new WorktreePortsError("PORT_TAKEN", await takenMessage(port, env.listeners));
    }
  }
  // Kept after it stops: templates' {proxy_port} stays what it was.
  recordPort(env.index, port);
  let table: RouteTable & { readAt: number } = { routes: new Map(), notes: [], readAt: -Infinity };
  const routesFor = (host: string) => {
    const age = performance.now() - table.readAt;
    // An unknown name reads them again, but not more often than every 100 ms.
    if (age > ROUTES_MAX_AGE_MS || (!table.routes.has(host) && age > 100)) {
      table = { ...readRoutes(env.index), readAt: performance.now() };
    }
    return table;
  };
  options.onListen?.(port, listeners.map((listener) => listener.addr.hostname));
  const connections = new Set<Deno.Conn>();
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    for (const listener of listeners) {
      try {
        listener.close();
      } catch {
        // Closed already.
      }
    }
    for (const conn of connections) closeQuietly(conn);
  };
  options.signal?.addEventListener("abort", stop, { once: true });
  try {
    await Promise.all(listeners.map(async (listener) => {
      for (;;) {
        let conn: Deno.Conn;
        try {
          conn = await listener.accept();
        } catch (error) {
          if (stopped || error instanceof Deno.errors.BadResource) return;
          // Out of file descriptors, say: wait for some to close, and go on serving.
          await new Promise((resolve) => setTimeout(resolve, 100));
          continue;
        }
        connections.add(conn);
        handle(conn, port, routesFor).finally(() => connections.delete(conn));
      }
    }));
  } finally {
    options.signal?.removeEventListener("abort", stop);
    stop();
  }
}

/** Says who holds the port, as far as the system tells. */
async function takenMessage(
  port: number,
  lookup: Environment["listeners"],
): Promise<string> {
  let who = "another process";
  if (lookup !== undefined) {
    const answer = await lookup.listeners();
    if ("found" in answer) {
      const holder = answer.found.find((listener) => listener.port === port);
      if (holder !== undefined) {
        const commands = await lookup.commandLines([holder.pid]);
        const command = commands.get(holder.pid) ?? holder.name;
        who = `${holderName({ pid: holder.pid, command })}` +
          (command === undefined ? "" : ` (\`${command}\`)`);
      }
    }
  }
  return `Cannot start the proxy: port ${port} is taken by ${who}; is a proxy running already? ` +
    `(stop it, or start this one with "--port N")`;
}

/** Records the port in the index folder, for list, allocate and `{proxy_port}`. */
function recordPort(index: Environment["index"], port: number): void {
  const dir = index?.dir();
  if (dir === undefined) return;
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileAtomic(joinPath(dir, PROXY_FILE_NAME), JSON.stringify({ port, pid: Deno.pid }) + "\n");
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
}

/** Whether the proxy is running: its record names a port something listens on. */
export function runningProxyPort(index: Environment["index"]): number | undefined {
  const record = readProxyRecord(index);
  if (record === undefined) return undefined;
  try {
    Deno.listen({ hostname: "127.0.0.1", port: record.port }).close();
    return undefined;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return record.port;
  }
}

/** A request's head: the request line, and each header as written. */
interface RequestHead {
  line: string;
  headers: [string, string][];
  /** What was read past the head: the start of the body. */
  rest: Uint8Array;
}

async function handle(
  conn: Deno.Conn,
  port: number,
  routesFor: (host: string) => RouteTable,
): Promise<void> {
  let backend: Deno.Conn | undefined;
  try {
    const timer = setTimeout(() => closeQuietly(conn), HEAD_TIMEOUT_MS);
    const head = await readHead(conn).finally(() => clearTimeout(timer));
    if (head === undefined) return;
    if (head === "too large") {
      await respond(
        conn,
        431,
        "Request Header Fields Too Large",
        "<p>The request's head is too large.</p>",
      );
      return;
    }
    const isHead = /^HEAD /.test(head.line);
    const header = (name: string) =>
      head.headers.find(([key]) => key.toLowerCase() === name)?.[1].trim();
    const hostHeader = header("host") ?? "";
    const host = hostHeader.toLowerCase().replace(/:\d+$/, "").replace(/\.$/, "");
    const table = routesFor(host);
    const route = table.routes.get(host);
    if (route === undefined) {
      await respond(conn, 404, "Not Found", notFoundPage(host, table, port), isHead);
      return;
    }
    const given = Number(header(HOPS_HEADER) ?? 0);
    const hops = Number.isInteger(given) && given > 0 ? Math.min(given, MAX_HOPS) : 0;
    if (hops >= MAX_HOPS) {
      await respond(
        conn,
        508,
        "Loop Detected",
        `<p>This request passed through the proxy ${hops} times: ${
          escape(route.host)
        } leads back to it.</p>`,
      );
      return;
    }
    backend = await connectBackend(route.port);
    if (backend === undefined) {
      await respond(conn, 502, "Bad Gateway", await downPage(route, table, port), isHead);
      return;
    }
    const upgrade = /\bupgrade\b/i.test(header("connection") ?? "") &&
      header("upgrade") !== undefined;
    const client = (conn.remoteAddr as Deno.NetAddr).hostname;
    const headers = head.headers.filter(([key]) => {
      const name = key.toLowerCase();
      if (name === "proxy-connection" || name === HOPS_HEADER) return false;
      // Each request on a connection of its own: the next may be for another name.
      return name !== "connection" && name !== "keep-alive";
    });
    const forwardedFor = header("x-forwarded-for");
    const set = (name: string, value: string) => {
      const at = headers.findIndex(([key]) => key.toLowerCase() === name.toLowerCase());
      if (at === -1) headers.push([name, value]);
      else headers[at] = [headers[at][0], value];
    };
    if (header("x-forwarded-host") === undefined) set("X-Forwarded-Host", hostHeader);
    if (header("x-forwarded-proto") === undefined) set("X-Forwarded-Proto", "http");
    set("X-Forwarded-For", forwardedFor === undefined ? client : `${forwardedFor}, ${client}`);
    set("X-Worktree-Ports-Hops", String(hops + 1));
    // An upgrade the server declines ends with its response all the same: the
    // next request on the connection may be for another name.
    headers.push(["Connection", upgrade ? "Upgrade, close" : "close"]);
    const text = [head.line, ...headers.map(([key, value]) => `${key}: ${value}`), "", ""]
      .join("\r\n");
    await writeAll(backend, new TextEncoder().encode(text));
    if (head.rest.length > 0) await writeAll(backend, head.rest);
    // The response ends the exchange. A client that closed its side (gone, or
    // done sending) gets a while longer, not for ever: a backend that never
    // answers would hold two descriptors for good.
    const toBackend = pump(conn, backend);
    const toClient = pump(backend, conn);
    let grace: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      toClient,
      toBackend.then(() => new Promise((resolve) => grace = setTimeout(resolve, GRACE_MS))),
    ]);
    clearTimeout(grace);
    closeQuietly(backend);
    closeQuietly(conn);
    await Promise.all([toBackend, toClient]);
  } catch {
    // A peer that went away mid-exchange: nothing to answer.
  } finally {
    if (backend !== undefined) closeQuietly(backend);
    closeQuietly(conn);
  }
}

/** Reads up to the end of the head; `undefined` when the client left first. */
async function readHead(conn: Deno.Conn): Promise<RequestHead | "too large" | undefined> {
  let buffer = new Uint8Array(0);
  const chunk = new Uint8Array(16 * 1024);
  for (;;) {
    const end = indexOfBlankLine(buffer);
    if (end > MAX_HEAD_BYTES) return "too large";
    if (end !== -1) {
      const text = new TextDecoder("latin1").decode(buffer.subarray(0, end));
      const [line, ...rest] = text.split("\r\n");
      const headers = rest.filter(Boolean).map((raw): [string, string] => {
        const colon = raw.indexOf(":");
        return colon === -1 ? [raw, ""] : [raw.slice(0, colon), raw.slice(colon + 1).trim()];
      });
      return { line, headers, rest: buffer.subarray(end + 4) };
    }
    const read = await conn.read(chunk);
    if (read === null) return undefined;
    const grown = new Uint8Array(buffer.length + read);
    grown.set(buffer);
    grown.set(chunk.subarray(0, read), buffer.length);
    buffer = grown;
    if (buffer.length > MAX_HEAD_BYTES && indexOfBlankLine(buffer) === -1) return "too large";
  }
}

function indexOfBlankLine(bytes: Uint8Array): number {
  for (let at = 0; at + 3 < bytes.length; at++) {
    if (bytes[at] === 13 && bytes[at + 1] === 10 && bytes[at + 2] === 13 && bytes[at + 3] === 10) {
      return at;
    }
  }
  return -1;
}

/** The backend: on 127.0.0.1, else on ::1 (a server that listens only there). */
async function connectBackend(port: number): Promise<Deno.Conn | undefined> {
  for (const hostname of ["127.0.0.1", "::1"]) {
    try {
      return await Deno.connect({ hostname, port });
    } catch {
      // Not there; try the other.
    }
  }
  return undefined;
}

/** Copies one way until the end, then says so to the other side. */
async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    let read: number | null;
    try {
      read = await from.read(buffer);
    } catch {
      break;
    }
    if (read === null) break;
    try {
      await writeAll(to, buffer.subarray(0, read));
    } catch {
      break;
    }
  }
  try {
    await to.closeWrite();
  } catch {
    // Closed already.
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

async function respond(
  conn: Deno.Conn,
  status: number,
  reason: string,
  body: string,
  headOnly = false,
): Promise<void> {
  const page = new TextEncoder().encode(
    `<!doctype html><meta charset="utf-8"><title>${status} ${reason}</title>` +
      `<body style="font-family:system-ui,sans-serif;max-width:50em;margin:2em auto">` +
      `<h1>${status} ${reason}</h1>${body}</body>\n`,
  );
  const head = `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/html; charset=utf-8\r\n` +
    `Content-Length: ${page.length}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n`;
  await writeAll(conn, new TextEncoder().encode(head));
  if (!headOnly) await writeAll(conn, page);
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

function link(route: Route, port: number): string {
  const url = `http://${route.host}:${port}/`;
  return `<a href="${escape(url)}">${escape(url)}</a>`;
}

function notFoundPage(host: string, table: RouteTable, port: number): string {
  const routes = [...table.routes.values()];
  const list = routes.length === 0
    ? "<p>No worktree's port file is recorded in the machine-wide index yet: run " +
      "<code>worktree-ports allocate</code> in a worktree.</p>"
    : `<ul>${
      routes.map((route) =>
        `<li>${link(route, port)} → ${escape(route.key)} ${route.port} of ${
          escape(route.worktree)
        }</li>`
      ).join("")
    }</ul>`;
  return `<p>No service is named <code>${escape(host || "(no Host header)")}</code>. ` +
    `Names are <code>&lt;service&gt;.&lt;worktree&gt;.&lt;repo&gt;.localhost</code>; these are known:</p>` +
    list +
    `<p>Repositories that keep their ports out of the machine-wide index ` +
    `(<code>"scope": "repository"</code>) are not routed.</p>` +
    table.notes.map((note) => `<p>${escape(note)}</p>`).join("");
}

async function downPage(route: Route, table: RouteTable, port: number): Promise<string> {
  const siblings = [...table.routes.values()].filter((other) => other.worktree === route.worktree);
  const rows: string[] = [];
  for (const other of siblings) {
    const backend = await connectBackend(other.port);
    if (backend !== undefined) closeQuietly(backend);
    rows.push(
      `<li>${escape(other.key)} ${other.port}: ${backend === undefined ? "down" : "up"} (${
        link(other, port)
      })</li>`,
    );
  }
  return `<p>Nothing listens on port ${route.port}, the <code>${escape(route.key)}</code> of ` +
    `the worktree <code>${escape(route.worktree)}</code> (${escape(route.worktreeLabel)}) ` +
    `of the repository ${escape(route.repositoryLabel)}.</p>` +
    `<p>Its services:</p><ul>${rows.join("")}</ul>` +
    `<p>Start it in that worktree with its ports in the environment, for example ` +
    `<code>cd ${
      escape(shellQuoted(route.worktree))
    } &amp;&amp; worktree-ports exec -- npm run dev</code>.</p>`;
}

/** A path as a POSIX shell reads it back. */
function shellQuoted(path: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", `'\\''`)}'`;
}
