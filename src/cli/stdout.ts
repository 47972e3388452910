// Writing results to stdout and warnings to stderr.

export function printWarning(warning: string): void {
  console.error(`warning: ${warning}`);
}

/** Writes synchronously: the first asynchronous write to a pipe costs a process milliseconds. */
export function writeStdout(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let written = 0; written < bytes.length;) {
    written += Deno.stdout.writeSync(bytes.subarray(written));
  }
}
