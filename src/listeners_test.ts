import assert from "node:assert/strict";
import {
  parseDockerPs,
  parseLsofCwds,
  parseLsofListeners,
  parseNetstat,
  parsePs,
  parseTasklist,
} from "./listeners.ts";

Deno.test("parseLsofListeners() reads each process's listening ports once, IPv4 and IPv6 alike", () => {
  const text = [
    "p4242",
    "cpython3",
    "f3",
    "n127.0.0.1:31030",
    "p5000",
    "cnode",
    "f20",
    "n*:31040",
    "f21",
    "n[::1]:31040",
    "f22",
    "n[::]:31041",
    "",
  ].join("\n");
  assert.deepEqual(parseLsofListeners(text), [
    { port: 31030, pid: 4242, name: "python3" },
    { port: 31040, pid: 5000, name: "node" },
    { port: 31041, pid: 5000, name: "node" },
  ]);
  assert.deepEqual(parseLsofListeners(""), []);
});

Deno.test("parseLsofCwds() keeps the directories lsof could read, its escapes undone", () => {
  const text = [
    "p1",
    "fcwd",
    "n/proc/1/cwd (readlink: Permission denied)",
    "p7",
    "fcwd",
    "n/home/me/my app (old)",
    "p8",
    "n/tmp/gone (deleted)",
    // As lsof prints "/w/wt ünï<newline>new", "/w/a\\x41<tab>b" and "/w/🙂" under the C locale.
    "p9",
    "n/w/wt \\xc3\\xbcn\\xc3\\xaf\\nnew",
    "p10",
    "n/w/a\\\\x41\\tb",
    "p11",
    "n/w/\\xf0\\x9f\\x99\\x82 🙂",
    "",
  ].join("\n");
  assert.deepEqual(
    parseLsofCwds(text),
    new Map([
      [7, "/home/me/my app (old)"],
      [9, "/w/wt ünï\nnew"],
      [10, "/w/a\\x41\tb"],
      [11, "/w/🙂 🙂"],
    ]),
  );
});

Deno.test("parsePs() reads whole command lines after the process id", () => {
  const text = "   42 python3 -m http.server 31030\n 4242 node  server.js --port=1\n\n";
  assert.deepEqual(
    parsePs(text),
    new Map([[42, "python3 -m http.server 31030"], [4242, "node  server.js --port=1"]]),
  );
});

Deno.test("parseNetstat() tells listening sockets by their remote address, whatever the state is called", () => {
  const text = [
    "",
    "Aktive Verbindungen",
    "",
    "  Proto  Lokale Adresse         Remoteadresse          Status           PID",
    "  TCP    0.0.0.0:135            0.0.0.0:0              ABHÖREN          1000",
    "  TCP    127.0.0.1:31030        0.0.0.0:0              ABHÖREN          4242",
    "  TCP    127.0.0.1:31030        127.0.0.1:50000        HERGESTELLT      4242",
    "  TCP    [::]:31030             [::]:0                 ABHÖREN          4242",
    "  TCP    [::1]:31041            [::]:0                 LISTENING        77",
    "  UDP    0.0.0.0:5353           *:*                                     900",
  ].join("\r\n");
  assert.deepEqual(parseNetstat(text), [
    { port: 135, pid: 1000 },
    { port: 31030, pid: 4242 },
    { port: 31041, pid: 77 },
  ]);
});

Deno.test("parseTasklist() reads image names by process id", () => {
  const text =
    '"System Idle Process","0","Services","0","8 K"\r\n"node.exe","4242","Console","1","40,000 K"\r\n';
  assert.deepEqual(parseTasklist(text), new Map([[0, "System Idle Process"], [4242, "node.exe"]]));
});

Deno.test("parseDockerPs() reads published host ports, ranges, and compose's labels", () => {
  const text = [
    "myapp-wt-4-web-1\t0.0.0.0:31040->80/tcp, [::]:31040->80/tcp\tmyapp-wt-4\t/work/wt-4",
    "db\t127.0.0.1:31050-31051->5432-5433/tcp, 6379/tcp\t\t",
    "quiet\t\t\t",
    "",
  ].join("\n");
  assert.deepEqual(parseDockerPs(text), [
    { name: "myapp-wt-4-web-1", project: "myapp-wt-4", workingDir: "/work/wt-4", ports: [31040] },
    { name: "db", project: undefined, workingDir: undefined, ports: [31050, 31051] },
    { name: "quiet", project: undefined, workingDir: undefined, ports: [] },
  ]);
});

Deno.test("parseLsofCwds() keeps a directory that is there under a name like lsof's marks", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const named = `${dir}/app (deleted)`;
    await Deno.mkdir(named);
    const text = `p7\nfcwd\nn${named}\np8\nfcwd\nn${dir}/gone (deleted)\n`;
    assert.deepEqual(parseLsofCwds(text), new Map([[7, named]]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseLsofListeners() skips a process id that is no process id", () => {
  const text = "p0\nn*:80\npabc\nn*:81\np99999999999\nn*:82\np12\nn*:83\n";
  assert.deepEqual(parseLsofListeners(text), [{ port: 83, pid: 12, name: undefined }]);
});
