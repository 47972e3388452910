// A bundle as environment variables, and the formats they are written in.

import { reservedEnvReason } from "./env_names.ts";
import { type EnvFormat, isPort, KEY_PATTERN, META_KEY } from "./names.ts";

/** Options for {@linkcode bundleEnv}. */
export interface BundleEnvOptions {
  /**
   * Called with a message for each key left out because it would set a
   * variable the environment depends on, or because it becomes the same
   * variable as another key.
   *
   * @default {undefined}
   */
  onWarning?: (warning: string) => void;
}

/**
 * A bundle's values as environment variables: each key upper-cased
 * (`cloud_port` becomes `CLOUD_PORT`). Only keys that are valid variable
 * names with port or string values are kept; the metadata is left out.
 *
 * A port file may come from anywhere (a commit, a copy), so no key may set a
 * variable that commands depend on (`PATH`, `HOME`, `LD_PRELOAD`, `GIT_DIR`
 * and the others a config refuses): such keys are left out. Keys that become
 * the same variable (`web_port` and `WEB_PORT`) are all left out, since
 * either value may be the wrong one.
 *
 * @param bundle The top-level values of a port file.
 * @param options Where to report the keys left out.
 * @returns Variable names and their values as strings.
 *
 * @example Usage
 * ```ts
 * import { bundleEnv } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   bundleEnv({ web_port: 3100, web_url: "http://127.0.0.1:3100", worktree_ports: {} }),
 *   { WEB_PORT: "3100", WEB_URL: "http://127.0.0.1:3100" },
 * );
 * ```
 */
export function bundleEnv(
  bundle: Record<string, unknown>,
  options: BundleEnvOptions = {},
): Record<string, string> {
  const byName = new Map<string, [string, string][]>();
  for (const [key, value] of Object.entries(bundle)) {
    if (key === META_KEY || !KEY_PATTERN.test(key)) continue;
    // A number that is not a port (Infinity from `1e400`, a negative one)
    // is damage, never a value to hand a program.
    if (!isPort(value) && typeof value !== "string") continue;
    const name = key.toUpperCase();
    byName.set(name, [...(byName.get(name) ?? []), [key, String(value)]]);
  }
  const env: Record<string, string> = {};
  const listed = (entries: readonly [string, string][]) =>
    entries.map(([key]) => `"${key}"`).join(" and ");
  for (const [name, entries] of byName) {
    const reason = reservedEnvReason(name);
    if (reason !== undefined) {
      options.onWarning?.(
        `Left out ${entries.length === 1 ? "key" : "keys"} ${listed(entries)} of the port file: ` +
          `${entries.length === 1 ? "it" : "they"} would set "${name}", ${reason} (no config ` +
          `may have such a key: run "worktree-ports allocate" to rewrite the file from the config)`,
      );
    } else if (entries.length > 1) {
      options.onWarning?.(
        `Left out keys ${listed(entries)} of the port file: they ${
          entries.length === 2 ? "both" : "all"
        } become the variable ` +
          `"${name}" (no config may have both: run "worktree-ports allocate" to rewrite the ` +
          `file from the config)`,
      );
    } else {
      env[name] = entries[0][1];
    }
  }
  return env;
}

/**
 * Writes environment variables for a shell, a dotenv file or JSON.
 *
 * `shell` prints `export NAME='value'` lines that are safe to `eval`: every
 * value is single-quoted, so no value can run a command. `dotenv` prints
 * `NAME=value` lines that python-dotenv, docker compose, npm's
 * `dotenv` and direnv's `dotenv` all read back exactly, quoting values that
 * need it; a value that no quoting keeps exact in all of them (one mixing
 * quotes, backslashes, `$` or line breaks in certain ways, or holding `${`)
 * is refused rather than written. `json` prints one object. `fish` prints
 * `set -gx NAME 'value'` lines for fish's `source`, quoted the way fish reads
 * single quotes (only `\\` and `\'` are escapes there). `powershell` prints
 * `$env:NAME = 'value'` lines for `Invoke-Expression`, in single quotes,
 * where nothing is expanded and a quote is written twice (PowerShell takes
 * the typographic quotes `‘ ’ ‚ ‛` for quotes too).
 *
 * @param env Variable names and values.
 * @param format The output format.
 * @returns The text, ending with a newline.
 * @throws {TypeError} When the format is unknown.
 * @throws {RangeError} For `dotenv`, naming the variable and the character,
 * when a value cannot be written so that every dotenv reader gets it exactly.
 *
 * @example Usage
 * ```ts
 * import { formatEnv } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatEnv({ NAME: "it's" }, "shell"), "export NAME='it'\\''s'\n");
 * assert.equal(formatEnv({ PORT: "3100" }, "dotenv"), "PORT=3100\n");
 * ```
 */
export function formatEnv(env: Record<string, string>, format: EnvFormat): string {
  const entries = Object.entries(env);
  switch (format) {
    case "shell":
      return entries.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join("");
    case "dotenv":
      return entries.map(([name, value]) => `${name}=${dotenvQuote(name, value)}\n`).join("");
    case "json":
      return JSON.stringify(env, null, 2) + "\n";
    case "fish":
      return entries.map(([name, value]) => `set -gx ${name} ${fishQuote(value)}\n`).join("");
    case "powershell":
      return entries.map(([name, value]) => `$env:${name} = ${powershellQuote(value)}\n`)
        .join("");
    default:
      throw new TypeError(
        `Unknown env format "${format}" (expected "shell", "dotenv", "json", "fish" or ` +
          `"powershell")`,
      );
  }
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** Fish reads `\\` and `\'` as escapes inside single quotes, and nothing else. */
function fishQuote(value: string): string {
  return `'${value.replace(/[\\']/g, "\\$&")}'`;
}

/** PowerShell's single quotes expand nothing; each of its four quote characters is doubled. */
function powershellQuote(value: string): string {
  return `'${value.replace(/['\u2018\u2019\u201a\u201b]/g, "$&$&")}'`;
}

/**
 * Dotenv has no standard: python-dotenv (and docker compose v1, which uses
 * it), npm's `dotenv`, node's `--env-file` and direnv each read quotes,
 * backslashes and `$` their own way. Each value is written in the first form
 * that all of them were found to read back exactly, and refused when there is
 * none:
 *
 * - bare, for plain characters;
 * - single quotes, unless the value holds `'`, `\\`, `${` or a line break, or
 *   ends with `\` (python-dotenv expands `${…}` and reads `\\` and `\'` as
 *   escapes there, direnv cannot read a line break there);
 * - double quotes, with `\n` for line breaks, unless the value holds
 *   `"`, `\` or `$` (npm keeps escape backslashes, direnv expands `$NAME`);
 * - bare again for other values with backslashes, which every reader keeps
 *   as they are outside quotes, as long as there is no space, quote, `#`, `$`
 *   or backtick.
 */
function dotenvQuote(name: string, value: string): string {
  // Node's --env-file reads "\r" in double quotes as a backslash and an "r",
  // and no other form keeps a carriage return: it is refused with the controls.
  const control = /(?![\t\n])\p{Cc}/u.exec(value);
  if (control) throw dotenvError(name, [control[0]]);
  if (/^[\w.:/@+,=%-]*$/.test(value)) return value;
  const single = /['\n\r]|\\\\|\\$|\$\{/.exec(value);
  if (!single) return `'${value}'`;
  const double = /["\\$]/.exec(value);
  if (!double) return `"${value.replaceAll("\n", "\\n")}"`;
  const bare = /[\s'"`#$]/.exec(value);
  if (!bare) return value;
  throw dotenvError(name, [single[0], double[0], bare[0]]);
}

function dotenvError(name: string, characters: string[]): RangeError {
  // "${" says more than the "$" in it.
  const shown = characters.includes("${") ? characters.filter((c) => c !== "$") : characters;
  const described = [...new Set(shown.map(describeCharacter))];
  const list = described.length === 1
    ? described[0]
    : `${described.slice(0, -1).join(", ")} and ${described.at(-1)}`;
  return new RangeError(
    `Cannot write "${name}" as dotenv: its value holds ${list}, which dotenv readers ` +
      `(python-dotenv, docker compose, npm dotenv, node --env-file, direnv) do not all read back ` +
      `the same in ` +
      `any quoting (use "--format json" or "--format shell")`,
  );
}

function describeCharacter(character: string): string {
  switch (character) {
    case "\n":
      return "a line break";
    case "\r":
      return "a carriage return";
    case " ":
      return "a space";
    case "\t":
      return "a tab";
  }
  if (/\s/.test(character)) return `a space character (U+${codePoint(character)})`;
  if (/\p{Cc}/u.test(character)) {
    return `the control character U+${codePoint(character)}`;
  }
  return `"${character}"`;
}

function codePoint(character: string): string {
  return character.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
}
