// Starting a program other than the command `exec` runs: with the dynamic
// loader's variables blanked, which Deno otherwise refuses.

/**
 * The dynamic loader's variables (`LD_*`, `DYLD_*`) of our environment, each
 * set to empty for the programs this tool runs. Deno refuses to start a
 * program with any of them set unless every program may be run
 * (`--allow-run` with no list), and CUDA, conda, Nix and many editors set
 * `LD_LIBRARY_PATH`. Reading the whole environment to find them would need
 * permission for every variable, so they are learnt from Deno's refusal,
 * which names them, and blanked from then on: an empty value is what Deno
 * allows and what the loader ignores.
 */
const blankedLoaderVariables: Record<string, string> = {};

/**
 * Runs `program` to completion, blocking, with the loader variables blanked
 * and `env` added.
 *
 * @throws {Deno.errors.NotFound} When the program is not installed.
 * @throws {Deno.errors.NotCapable} When Deno may not run it.
 */
export function runProgramSync(
  program: string,
  options: Omit<Deno.CommandOptions, "stdin">,
): Deno.CommandOutput {
  for (;;) {
    try {
      return new Deno.Command(program, {
        ...options,
        env: { ...blankedLoaderVariables, ...options.env },
        stdin: "null",
      }).outputSync();
    } catch (error) {
      if (!learnRefusal(error)) throw error;
    }
  }
}

/** {@linkcode runProgramSync}, without blocking. */
export async function runProgram(
  program: string,
  options: Omit<Deno.CommandOptions, "stdin">,
): Promise<Deno.CommandOutput> {
  for (;;) {
    try {
      return await new Deno.Command(program, {
        ...options,
        env: { ...blankedLoaderVariables, ...options.env },
        stdin: "null",
      }).output();
    } catch (error) {
      if (!learnRefusal(error)) throw error;
    }
  }
}

/** Blanks the variables a refusal names; `false` when it names none not blanked already. */
function learnRefusal(error: unknown): boolean {
  const names = refusedLoaderVariables(error);
  if (names === undefined || names.every((name) => name in blankedLoaderVariables)) return false;
  for (const name of names) blankedLoaderVariables[name] = "";
  return true;
}

/**
 * The variables named by Deno's refusal to start a program with loader
 * variables set, or `undefined` for any other error.
 */
export function refusedLoaderVariables(error: unknown): string[] | undefined {
  if (!(error instanceof Deno.errors.NotCapable)) return undefined;
  const match = /subprocess with (.+?) environment variables?\b/.exec(error.message);
  const names = match?.[1].split(", ");
  return names?.every((name) => /^(LD|DYLD)_/i.test(name)) ? names : undefined;
}
