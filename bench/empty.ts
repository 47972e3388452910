// Baseline (a): the cost of starting Deno at all.
