// proxy: serves every worktree's services under stable *.localhost names.

import { serveProxy } from "../../proxy.ts";
import { DEFAULT_PROXY_PORT } from "../../proxy_names.ts";
import { readRoutes } from "../../proxy_routes.ts";
import { denoMachineIndex } from "../../index_home.ts";
import { UsageError } from "../args.ts";
import type { Values } from "../spec.ts";

export async function run(values: Values): Promise<number> {
  let port = DEFAULT_PROXY_PORT;
  if (values.port !== undefined) {
    const text = values.port as string;
    port = Number(text);
    if (!/^\d+$/.test(text) || port < 1 || port > 65535) {
      throw new UsageError(
        `Option "--port" must be a port from 1 to 65535, got "${text}"`,
        "proxy",
      );
    }
  }
  const stop = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, () => stop.abort());
  await serveProxy({
    port,
    signal: stop.signal,
    onListen: (port, hostnames) => {
      console.error(
        `proxy listening on ${
          hostnames.map((host) => host.includes(":") ? `[${host}]` : host).join(" and ")
        } ` +
          `port ${port}: http://<service>.<worktree>.<repo>.localhost:${port}/ (Ctrl-C stops it)`,
      );
      for (const route of readRoutes(denoMachineIndex).routes.values()) {
        console.error(`  http://${route.host}:${port}/ -> ${route.port} (${route.worktree})`);
      }
    },
  });
  return 0;
}
