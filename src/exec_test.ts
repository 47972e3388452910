import assert from "node:assert/strict";
import { passesOn } from "./exec.ts";

Deno.test("passesOn() leaves keyboard signals to the terminal, and every signal to the Windows console", () => {
  const table: [Deno.Signal, { windows: boolean; fromKeyboard: boolean }, boolean][] = [
    ["SIGTERM", { windows: false, fromKeyboard: false }, true],
    ["SIGINT", { windows: false, fromKeyboard: false }, true],
    ["SIGTERM", { windows: false, fromKeyboard: true }, true],
    ["SIGHUP", { windows: false, fromKeyboard: true }, true],
    ["SIGINT", { windows: false, fromKeyboard: true }, false],
    ["SIGQUIT", { windows: false, fromKeyboard: true }, false],
    // Ctrl-C and Ctrl-Break reach the child through the console it shares,
    // and Deno's kill() there is a hard termination.
    ["SIGINT", { windows: true, fromKeyboard: false }, false],
    ["SIGBREAK", { windows: true, fromKeyboard: false }, false],
    ["SIGINT", { windows: true, fromKeyboard: true }, false],
  ];
  for (const [signal, where, expected] of table) {
    assert.equal(passesOn(signal, where), expected, `${signal} ${JSON.stringify(where)}`);
  }
});
