// Overhead of one request through the proxy: the median time of a small GET
// straight to a worktree's server against the same GET by name through a
// running proxy, alternated in one process. Run from a checkout:
//   deno run --allow-run --allow-read --allow-write --allow-net=127.0.0.1,[::1] \
//     --allow-env bench/proxy_overhead.ts [rounds]

const rounds = Number(Deno.args[0] ?? 300);
const root = new URL("..", import.meta.url).pathname;
const home = await Deno.makeTempDir({ prefix: "worktree-ports-bench-" });
const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "worktree-ports-bench-" }));
const run = (cmd: string, args: string[], cwd: string) =>
  new Deno.Command(cmd, { args, cwd, env: { WORKTREE_PORTS_HOME: home }, stdout: "piped" })
    .outputSync();
run("git", ["init", "-q", "-b", "main", "app"], base);
const app = `${base}/app`;
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const web = (listener.addr as Deno.NetAddr).port;
listener.close();
await Deno.writeTextFile(`${app}/worktree-ports.config.json`, JSON.stringify({ ports: { web } }));
run("git", ["add", "."], app);
run("git", ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"], app);
run(Deno.execPath(), ["run", "-A", `${root}cli.ts`, "allocate"], app);
const server = Deno.serve(
  { port: web, hostname: "127.0.0.1", onListen() {} },
  () => new Response("ok"),
);
const proxyPort = web + 1;
const proxy = new Deno.Command(Deno.execPath(), {
  args: ["run", "-A", `${root}cli.ts`, "proxy", "--port", String(proxyPort)],
  env: { WORKTREE_PORTS_HOME: home },
  stderr: "piped",
}).spawn();
const reader = proxy.stderr.pipeThrough(new TextDecoderStream()).getReader();
for (let text = ""; !text.includes("proxy listening");) text += (await reader.read()).value;
const client = Deno.createHttpClient({ allowHost: true });
const time = async (url: string, host?: string) => {
  const start = performance.now();
  const response = await fetch(url, { client, headers: host ? { host } : {} });
  if ((await response.text()) !== "ok") throw new Error(`${url} ${host}: ${response.status}`);
  return performance.now() - start;
};
const direct: number[] = [];
const proxied: number[] = [];
for (let round = 0; round < rounds; round++) {
  direct.push(await time(`http://127.0.0.1:${web}/`));
  proxied.push(await time(`http://127.0.0.1:${proxyPort}/`, `web.main.app.localhost:${proxyPort}`));
}
const median = (values: number[]) =>
  values.toSorted((a, b) => a - b)[Math.floor(values.length / 2)];
console.log(
  `rounds ${rounds}: direct ${median(direct).toFixed(3)} ms, through the proxy ` +
    `${median(proxied).toFixed(3)} ms, overhead ${
      (median(proxied) - median(direct)).toFixed(3)
    } ms`,
);
client.close();
proxy.kill();
await proxy.status;
await reader.cancel();
await server.shutdown();
await Deno.remove(home, { recursive: true });
await Deno.remove(base, { recursive: true });
