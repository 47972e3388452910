// Baseline (b): a Deno process that does nothing but the one git call allocate makes.
await new Deno.Command("git", { args: ["worktree", "list", "--porcelain", "-z"] }).output();
