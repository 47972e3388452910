// Baseline (c): one of each kind of runtime operation allocate performs in a
// linked worktree, with none of its logic: one git call, resolving a path,
// stat and read of a file, a read of a missing file, JSON parsing, taking and
// dropping a file lock, a permission query, and a write to stdout. It shows
// what Deno itself costs for the work before any of worktree-ports' code.
const output = new Deno.Command("git", {
  args: ["worktree", "list", "--porcelain", "-z"],
  env: { LC_ALL: "C" },
  stdin: "null",
}).outputSync();
const fields = new TextDecoder().decode(output.stdout).split("\0");
const root = Deno.realPathSync(".");
Deno.statSync(`${root}/.git`);
const gitFile = Deno.readTextFileSync(`${root}/.git`);
try {
  Deno.readTextFileSync(`${root}/no-such-file.json`);
} catch {
  // Missing, as most sibling port files are.
}
JSON.parse(JSON.stringify({ gitFile }));
const lock = Deno.openSync(`${root}/.git`, { read: true });
lock.tryLockSync(true);
lock.close();
Deno.permissions.querySync({ name: "read" });
Deno.stdout.writeSync(new TextEncoder().encode(`${fields.length}\n`));
