import assert from "node:assert/strict";
import { reservedPortsOf } from "./port_file.ts";

Deno.test("reservedPortsOf() reads top-level integers and URL ports only", () => {
  assert.deepEqual(
    reservedPortsOf({
      cloud_port: 8100,
      cloud_url: "http://127.0.0.1:8101/path",
      plain_url: "http://127.0.0.1/",
      db: "postgres://u:p@localhost:5532/db",
      big: 70000,
      zero: 0,
      fraction: 3.5,
      name: "web:app",
      nested: { port: 9999 },
      list: [9998],
      worktree_ports: { slot: 1, version: 1 },
    }),
    [8100, 8101, 5532],
  );
});
