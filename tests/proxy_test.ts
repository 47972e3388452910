// The proxy: real servers in real worktrees answer under their own
// *.localhost names through a real proxy process; WebSockets, server-sent
// events, a stopped service and an unknown name, and a real browser.

import assert from "node:assert/strict";
import {
  CLI_FLAGS,
  git,
  readJson,
  ROOT,
  runCli,
  slotOf,
  tempHome,
  TempRepo,
  TEST_HOME,
  TOOLS_DIR,
  unmetNeed,
  webPorts,
} from "../test_util.ts";

/** A proxy started as the CLI runs it, stopped on dispose. */
async function startProxy(port: number): Promise<AsyncDisposable & { stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_FLAGS, `${ROOT}cli.ts`, "proxy", "--port", String(port)],
    env: { WORKTREE_PORTS_HOME: TEST_HOME },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let stderr = "";
  while (!stderr.includes("proxy listening")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the proxy did not start: ${stderr}`);
    stderr += value;
  }
  return {
    stderr,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await reader.cancel();
    },
  };
}

/** A free port for the proxy, from the picked range of a test. */
function proxyPort(): number {
  return webPorts().base.web;
}

/** An app server in a worktree: answers with its name, the Host it got and the forwarded headers. */
function serveApp(dir: string, port: number, name: string): Deno.HttpServer {
  return Deno.serve({ port, hostname: "127.0.0.1", onListen() {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/events") {
      let step = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          step++;
          if (step > 2) return controller.close();
          // The second event waits for the client to ask: it must have the first by then.
          if (step === 2) await new Promise((resolve) => sseGate.push(resolve));
          controller.enqueue(new TextEncoder().encode(`data: event ${step}\n\n`));
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    }
    if (url.pathname === "/ws") {
      const { socket, response } = Deno.upgradeWebSocket(request, { protocol: "echo" });
      socket.onmessage = (event) => socket.send(`${name}: ${event.data}`);
      return response;
    }
    if (url.pathname === "/redirect") {
      return Response.redirect(`http://${request.headers.get("host")}/elsewhere`, 302);
    }
    return new Response(
      JSON.stringify({
        name,
        dir,
        host: request.headers.get("host"),
        forwardedHost: request.headers.get("x-forwarded-host"),
        forwardedProto: request.headers.get("x-forwarded-proto"),
        forwardedFor: request.headers.get("x-forwarded-for"),
      }),
      { headers: { "content-type": "application/json" } },
    );
  });
}

const sseGate: ((value: unknown) => void)[] = [];

/** Fetch through the proxy with a Host of our choosing (fetch drops Host without allowHost). */
const client = Deno.createHttpClient({ allowHost: true });

function viaProxy(port: number, host: string, path = "/", init: RequestInit = {}) {
  return fetch(`http://127.0.0.1:${port}${path}`, {
    ...init,
    headers: { host, ...init.headers },
    client,
    redirect: "manual",
  });
}

/** Two worktrees, feature/a and b, of a repository named "shop", allocated. */
async function twoWorktrees() {
  const ports = webPorts();
  const repo = await TempRepo.create({ config: { ...ports.config(), name: "shop" } });
  await git(repo.root, "worktree", "add", "-q", "-b", "feature/a", `${repo.base}/a`);
  await git(repo.root, "worktree", "add", "-q", "-b", "b", `${repo.base}/b`);
  const webs: number[] = [];
  for (const dir of ["a", "b"]) {
    assert.equal((await runCli(`${repo.base}/${dir}`, ["allocate"])).code, 0);
    webs.push((await readJson(`${repo.base}/${dir}/.worktree-ports.json`)).web as number);
  }
  return { repo, webs };
}

Deno.test("proxy: each worktree's service answers under its own name, with Host kept and X-Forwarded-* added", async () => {
  const { repo, webs } = await twoWorktrees();
  await using _repo = repo;
  const port = proxyPort();
  await using _proxy = await startProxy(port);
  await using _a = serveApp(`${repo.base}/a`, webs[0], "a");
  await using _b = serveApp(`${repo.base}/b`, webs[1], "b");
  for (const [label, name] of [["feature-a", "a"], ["b", "b"]]) {
    const host = `web.${label}.shop.localhost:${port}`;
    const response = await viaProxy(port, host);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      name,
      dir: `${repo.base}/${name}`,
      host,
      forwardedHost: host,
      forwardedProto: "http",
      forwardedFor: "127.0.0.1",
    });
  }
  // A redirect is passed back, not followed.
  const redirect = await viaProxy(port, `web.b.shop.localhost:${port}`, "/redirect");
  assert.equal(redirect.status, 302);
  assert.equal(redirect.headers.get("location"), `http://web.b.shop.localhost:${port}/elsewhere`);
  await redirect.body?.cancel();
  // list shows the URLs while the proxy runs.
  const listed = JSON.parse((await runCli(`${repo.base}/a`, ["list", "--json"])).stdout);
  const a = listed.find((row: { path: string }) => row.path === `${repo.base}/a`);
  assert.deepEqual(a.urls, { web: `http://web.feature-a.shop.localhost:${port}/` });
});

Deno.test("proxy: server-sent events arrive as they are sent, and a WebSocket upgrade is bridged with its subprotocol", async () => {
  const { repo, webs } = await twoWorktrees();
  await using _repo = repo;
  const port = proxyPort();
  await using _proxy = await startProxy(port);
  await using _a = serveApp(`${repo.base}/a`, webs[0], "a");
  const events = await viaProxy(port, `web.feature-a.shop.localhost:${port}`, "/events");
  const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
  assert.equal((await reader.read()).value, "data: event 1\n\n");
  // Only now may the server send the second: the first came through before it.
  while (sseGate.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  sseGate.shift()!(undefined);
  assert.equal((await reader.read()).value, "data: event 2\n\n");
  await reader.cancel();

  // A WebSocket handshake and one frame each way, over a raw socket with our own Host.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const key = btoa("0123456789abcdef");
  await conn.write(new TextEncoder().encode(
    `GET /ws HTTP/1.1\r\nHost: web.feature-a.shop.localhost:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Protocol: echo\r\n\r\n`,
  ));
  const buffer = new Uint8Array(4096);
  let received = "";
  while (!received.includes("\r\n\r\n")) {
    const read = await conn.read(buffer);
    assert.ok(read !== null, received);
    received += new TextDecoder("latin1").decode(buffer.subarray(0, read));
  }
  assert.match(received, /^HTTP\/1\.1 101 /);
  assert.match(received, /\r\nsec-websocket-protocol: echo\r\n/i);
  const payload = new TextEncoder().encode("hi");
  const mask = [1, 2, 3, 4];
  await conn.write(
    new Uint8Array([
      0x81,
      0x80 | payload.length,
      ...mask,
      ...payload.map((byte, i) => byte ^ mask[i % 4]),
    ]),
  );
  const read = await conn.read(buffer);
  assert.ok(read !== null);
  assert.equal(buffer[0], 0x81);
  assert.equal(new TextDecoder().decode(buffer.subarray(2, 2 + buffer[1])), "a: hi");
  conn.close();
});

Deno.test("proxy: a stopped service gets a 502 page naming it, and an unknown name a 404 listing every route", async () => {
  const { repo, webs } = await twoWorktrees();
  await using _repo = repo;
  const port = proxyPort();
  await using _proxy = await startProxy(port);
  await using _b = serveApp(`${repo.base}/b`, webs[1], "b");
  const down = await viaProxy(port, `web.feature-a.shop.localhost:${port}`);
  assert.equal(down.status, 502);
  const page = await down.text();
  assert.match(
    page,
    new RegExp(
      `Nothing listens on port ${
        webs[0]
      }, the <code>web</code> of the worktree <code>${repo.base}/a</code> \\(feature-a\\) of the repository shop`,
    ),
  );
  assert.match(page, new RegExp(`web ${webs[0]}: down`));
  assert.match(page, /worktree-ports exec -- /);
  const unknown = await viaProxy(port, `web.nope.shop.localhost:${port}`);
  assert.equal(unknown.status, 404);
  const routes = await unknown.text();
  assert.match(routes, /No service is named <code>web\.nope\.shop\.localhost<\/code>/);
  assert.match(routes, new RegExp(`http://web\\.feature-a\\.shop\\.localhost:${port}/`));
  assert.match(routes, new RegExp(`http://web\\.b\\.shop\\.localhost:${port}/`));
  // Never another worktree's service instead.
  assert.doesNotMatch(routes, /"name":"b"/);
});

Deno.test("proxy: a second one on the port says which process holds it", async () => {
  const port = proxyPort();
  await using _proxy = await startProxy(port);
  const second = await runCli(ROOT, ["proxy", "--port", String(port)]);
  assert.equal(second.code, 1);
  assert.match(
    second.stderr,
    new RegExp(`^error: Cannot start the proxy: port ${port} is taken by `, "m"),
  );
});

Deno.test("allocate never hands out the proxy's port, and templates name the repository and the proxy's port", async () => {
  // An index folder no proxy has run from: the default port.
  await using home = await tempHome();
  await using repo = await TempRepo.create({
    config: {
      ports: { web: 1345 },
      stride: 10,
      slots: 20,
      templates: { url: "http://web.{slug}.{repo}.localhost:{proxy_port}/" },
    },
  });
  const [a] = await repo.addWorktrees("wt", 1);
  const allocated = JSON.parse((await runCli(a, ["allocate"], { env: home.env })).stdout);
  assert.notEqual(allocated.web, 1355);
  assert.notEqual(slotOf(allocated), 1);
  const folder = repo.root.split("/").at(-1);
  assert.equal(allocated.url, `http://web.wt0.${folder}.localhost:1355/`);
});

/** playwright-core, which .ci/run installs; it drives the system's chromium. */
const PLAYWRIGHT = `${TOOLS_DIR}playwright/node_modules/playwright-core`;

/** Why the browser test cannot run here, if it cannot. */
const NO_BROWSER = unmetNeed({ tools: ["chromium", "node"] }) ??
  (existsSync(PLAYWRIGHT)
    ? undefined
    : `playwright-core is not installed in ${TOOLS_DIR}playwright`);

const BROWSER_TEST =
  "proxy: a real browser loads two worktrees' apps by name, and keeps their cookies apart";

Deno.test({
  name: NO_BROWSER === undefined ? BROWSER_TEST : `${BROWSER_TEST} (skipped: ${NO_BROWSER})`,
  ignore: NO_BROWSER !== undefined,
  fn: async () => {
    const playwright = PLAYWRIGHT;
    const { repo, webs } = await twoWorktrees();
    await using _repo = repo;
    const port = proxyPort();
    await using _proxy = await startProxy(port);
    const apps = webs.map((web, index) => {
      const name = ["a", "b"][index];
      return Deno.serve({ port: web, hostname: "127.0.0.1", onListen() {} }, (request) => {
        const cookie = request.headers.get("cookie") ?? "";
        const headers = new Headers({ "content-type": "text/html" });
        if (!cookie.includes("session=")) headers.set("set-cookie", `session=${name}; Path=/`);
        return new Response(`<title>${name}</title><p id="cookie">${cookie}</p>`, { headers });
      });
    });
    try {
      const script = `
        const { chromium } = require(${JSON.stringify(playwright)});
        (async () => {
          const browser = await chromium.launch({ executablePath: process.argv[1], args: ["--no-sandbox"] });
          const page = await browser.newPage();
          const seen = [];
          for (const host of process.argv.slice(2)) {
            await page.goto("http://" + host + "/");
            seen.push([await page.title(), await page.textContent("#cookie")]);
          }
          await browser.close();
          console.log(JSON.stringify(seen));
        })().catch((error) => { console.error(error); process.exit(1); });
      `;
      const chromium = new TextDecoder().decode(
        new Deno.Command("sh", { args: ["-c", "command -v chromium"], stdout: "piped" })
          .outputSync()
          .stdout,
      ).trim();
      const a = `web.feature-a.shop.localhost:${port}`;
      const b = `web.b.shop.localhost:${port}`;
      const output = await new Deno.Command("node", {
        args: ["-e", script, chromium, a, b, a, b],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
      assert.deepEqual(JSON.parse(new TextDecoder().decode(output.stdout)), [
        ["a", ""],
        ["b", ""],
        ["a", "session=a"],
        ["b", "session=b"],
      ]);
    } finally {
      for (const app of apps) await app.shutdown();
    }
  },
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("proxy: a backend listening only on ::1 is reached, and a name that leads back to the proxy stops at the hop limit", async () => {
  const { repo, webs } = await twoWorktrees();
  await using _repo = repo;
  const port = proxyPort();
  await using _proxy = await startProxy(port);
  const ipv6 = (() => {
    try {
      Deno.listen({ hostname: "::1", port: 0 }).close();
      return true;
    } catch {
      return false;
    }
  })();
  if (ipv6) {
    await using _a = Deno.serve(
      { port: webs[0], hostname: "::1", onListen() {} },
      () => new Response("on ::1"),
    );
    const response = await viaProxy(port, `web.feature-a.shop.localhost:${port}`);
    assert.equal(await response.text(), "on ::1");
  } else {
    console.log("skipped the ::1 step: this host has no IPv6 loopback");
  }
  // b's server passes every request on to the proxy under its own name, with the hop header.
  await using _b = Deno.serve(
    { port: webs[1], hostname: "127.0.0.1", onListen() {} },
    async (request) => {
      const hops = request.headers.get("x-worktree-ports-hops") ?? "0";
      const inner = await viaProxy(port, request.headers.get("host")!, "/", {
        headers: { "x-worktree-ports-hops": hops },
      });
      return new Response(await inner.text(), { status: inner.status });
    },
  );
  const looped = await viaProxy(port, `web.b.shop.localhost:${port}`);
  assert.equal(looped.status, 508);
  assert.match(await looped.text(), /passed through the proxy 5 times/);
  // A client's own hop count cannot buy more passes, nor a negative one.
  const forged = await viaProxy(port, `web.b.shop.localhost:${port}`, "/", {
    headers: { "x-worktree-ports-hops": "-100" },
  });
  assert.equal(forged.status, 508);
  await forged.body?.cancel();
});

Deno.test("proxy: a HEAD request gets the status page's head alone, and a head over 64 KiB a 431", async () => {
  const port = proxyPort();
  await using _proxy = await startProxy(port);
  const head = await viaProxy(port, "web.nothing.none.localhost", "/", { method: "HEAD" });
  assert.equal(head.status, 404);
  assert.equal(await head.text(), "");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(70_000)}\r\n\r\n`),
  );
  const buffer = new Uint8Array(1024);
  const read = await conn.read(buffer);
  assert.match(
    new TextDecoder().decode(buffer.subarray(0, read ?? 0)),
    /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/,
  );
  conn.close();
});
