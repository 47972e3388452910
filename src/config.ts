// The config: parsing and validating it, one function per section, and loading it
// from a worktree.

import { reservedEnvReason } from "./env_names.ts";
import type { Scope } from "./environment.ts";
import { clip, quoted, quoteValue, WorktreePortsError } from "./errors.ts";
import {
  fileProblemOf,
  isPlainObject,
  isSymlink,
  nestingExceeds,
  readRegularTextFile,
} from "./files.ts";
import {
  CONFIG_FILE_NAME,
  KEY_PATTERN,
  MAX_NESTING,
  MAX_PORT,
  META_KEY,
  PORT_FILE_NAME,
} from "./names.ts";
import { joinPath, resolvePath } from "./paths.ts";

/** The config used when a worktree has no config file. */
export const DEFAULT_CONFIG: Readonly<PortsConfig> = Object.freeze({
  ports: Object.freeze({ port: 3000 }),
  templates: Object.freeze({}),
  stride: 100,
  slots: 50,
});

/** A template's parts: `{{` and `}}` are literal braces, `{name}` a placeholder. */
export const PLACEHOLDER_PATTERN = /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/** Placeholders that describe the worktree rather than a port. */
const WORKTREE_PLACEHOLDERS: readonly string[] = [
  "slot",
  "branch",
  "name",
  "slug",
  "repo",
  "proxy_port",
];

/** Which ports a repository's worktrees share out, and how. */
export interface PortsConfig {
  /** Base port of each key: the ports of slot 0, the primary worktree. */
  ports: Record<string, number>;
  /** Extra values written beside the ports, with `{key}` replaced by that port. */
  templates: Record<string, string>;
  /** Distance between the ports of one slot and the next. */
  stride: number;
  /** How many slots linked worktrees can take: slots 1 to `slots`. */
  slots: number;
  /** `repository` keeps this repository's allocations out of the machine-wide index. */
  scope?: Scope;
  /**
   * Env files written with the port file, in dotenv form: paths relative to
   * the worktree root, with forward slashes (the config's `env_file`).
   */
  envFiles?: string[];
  /**
   * A command, as a program and its arguments, that `release` and `prune`
   * run before a worktree's ports are freed: each argument with `{key}` (a
   * port or template key), `{slot}`, `{branch}`, `{name}` and `{slug}` filled
   * in (the config's `on_release`).
   */
  onRelease?: string[];
  /** The repository's name in the proxy's host names, instead of its main worktree's folder (the config's `name`). */
  name?: string;
  /** The port keys the proxy routes, when not every one (the config's `hosts`). */
  hosts?: string[];
}

/** Values that change those of the config file, as the CLI's flags do. */
export interface ConfigOverrides {
  /**
   * Base ports added to the config's `ports`, replacing those of the same
   * keys. Without a config file (or without `ports` in it) they replace the
   * default `{ port: 3000 }`.
   *
   * @default {undefined}
   */
  ports?: Record<string, number>;
  /**
   * Replaces the config's `stride`.
   *
   * @default {undefined}
   */
  stride?: number;
  /**
   * Replaces the config's `slots`.
   *
   * @default {undefined}
   */
  slots?: number;
  /**
   * How error messages name each override, e.g. the command-line flag that
   * set it, so that an error an override causes blames the override.
   *
   * @default {undefined} `option "ports"`, `option "stride"` and `option "slots"`
   */
  overrideNames?: OverrideNames;
}

/** How error messages name the overrides of {@linkcode ConfigOverrides}. */
export interface OverrideNames {
  /** The name of `ports`, e.g. `"--port"`. */
  ports?: string;
  /** The name of `stride`, e.g. `"--stride"`. */
  stride?: string;
  /** The name of `slots`, e.g. `"--slots"`. */
  slots?: string;
}

/** Options for {@linkcode parseConfig}. */
export interface ParseConfigOptions extends ConfigOverrides {
  /**
   * Where the value came from, named in error messages, e.g. a quoted path.
   *
   * @default {undefined}
   */
  source?: string;
}

/**
 * Validates a parsed config value, applies overrides and fills in defaults.
 *
 * Every problem is caught here, before anything is written: unknown keys,
 * non-integer or out-of-range numbers, an empty `ports`, a template naming a
 * missing key, a port of any slot outside 1..65535, two (key, slot) pairs
 * that land on the same port, two keys that become the same upper-case
 * variable, and a key that would set a variable the environment depends on
 * (`PATH`, `HOME`, `SHELL`, `USER`, `PWD`, `LANG`, `TERM`, `TMPDIR`, or one
 * starting with `LC_`, `DENO_` or `GIT_`) or one that makes a shell or a
 * program run code (`NODE_OPTIONS`, `PROMPT_COMMAND`, `PS0` to `PS4`,
 * `BASH_ENV`, `ENV`, `ZDOTDIR`, `PYTHONSTARTUP`, `PYTHONPATH`, `PERL5OPT`,
 * `RUBYOPT`, `JAVA_TOOL_OPTIONS` and their like, `EDITOR`, `VISUAL`,
 * `PAGER`, or one starting with `LD_`, `DYLD_` or `NPM_CONFIG_`).
 *
 * @param value The parsed JSON of a config file, or `undefined` for none.
 * @param options Overrides and the name of the source for messages.
 * @returns The complete, validated config.
 * @throws {WorktreePortsError} With code `INVALID_CONFIG`, naming the problem.
 *
 * @example Usage
 * ```ts
 * import { parseConfig } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { web_port: 3000 } }, { stride: 10 });
 * assert.deepEqual(config, {
 *   ports: { web_port: 3000 },
 *   templates: {},
 *   stride: 10,
 *   slots: 50,
 * });
 * ```
 */
export function parseConfig(
  value: unknown,
  options: ParseConfigOptions = {},
): PortsConfig {
  const raw = value ?? {};
  const record = isPlainObject(raw) ? raw : {};
  const blame = new Blame(options, record);
  if (!isPlainObject(raw)) blame.fail("it must be a JSON object");
  checkSections(record, blame);
  const ports = parsePorts(record.ports, options, blame);
  const templates = parseTemplates(record.templates, ports, blame);
  checkEnvNames(
    [...Object.keys(ports), ...Object.keys(templates)],
    (problem, keys) => blame.fail(problem, keys.map((key) => blame.keyOrigin(key))),
  );
  const config: PortsConfig = {
    ports,
    templates,
    stride: parseNumber("stride", options.stride ?? record.stride, blame),
    slots: parseNumber("slots", options.slots ?? record.slots, blame),
  };
  checkSlotPorts(config, (problem, keys) =>
    blame.fail(problem, [
      ...keys.map((key) => blame.keyOrigin(key)),
      blame.numberOrigin("stride"),
      blame.numberOrigin("slots"),
    ]));
  if (record.scope !== undefined) config.scope = parseScope(record.scope, (p) => blame.fail(p));
  if (record.env_file !== undefined) {
    config.envFiles = parseEnvFiles(record.env_file, (p) => blame.fail(p));
  }
  if (record.on_release !== undefined) {
    config.onRelease = parseOnRelease(record.on_release, config, (p) => blame.fail(p));
  }
  if (record.name !== undefined) config.name = parseName(record.name, (p) => blame.fail(p));
  if (record.hosts !== undefined) {
    config.hosts = parseHosts(record.hosts, ports, (p) => blame.fail(p));
  }
  return config;
}

/**
 * Says where the values a problem involves came from (the config, the
 * overrides by their names, or both) and throws it.
 */
class Blame {
  readonly #options: ParseConfigOptions;
  readonly #record: Record<string, unknown>;

  constructor(options: ParseConfigOptions, record: Record<string, unknown>) {
    this.#options = options;
    this.#record = record;
  }

  /** How messages name an override. */
  overrideName(name: keyof OverrideNames): string {
    return this.#options.overrideNames?.[name] ?? `option "${name}"`;
  }

  /** Where a key of `ports` came from. */
  keyOrigin(key: string): string {
    const { ports } = this.#options;
    return ports !== undefined && Object.hasOwn(ports, key) ? this.overrideName("ports") : "config";
  }

  /** Where `stride` or `slots` came from; `undefined` for the default. */
  numberOrigin(name: "stride" | "slots"): string | undefined {
    return this.#options[name] !== undefined
      ? this.overrideName(name)
      : this.#record[name] !== undefined
      ? "config"
      : undefined;
  }

  /** Throws `problem`, blaming the origins given (the config by default). */
  fail(problem: string, origins: readonly (string | undefined)[] = ["config"]): never {
    const overrides = [...new Set(origins.filter((o) => o !== undefined && o !== "config"))];
    const source = this.#options.source ? ` ${this.#options.source}` : "";
    const blamed = overrides.length === 0
      ? `config${source}`
      : origins.includes("config")
      ? `${overrides.join(" and ")} with config${source}`
      : overrides.join(" and ");
    throw new WorktreePortsError("INVALID_CONFIG", `Invalid ${blamed}: ${problem}`);
  }
}

const SECTIONS: readonly string[] = [
  "ports",
  "templates",
  "stride",
  "slots",
  "scope",
  "env_file",
  "on_release",
  "name",
  "hosts",
];

function checkSections(record: Record<string, unknown>, blame: Blame): void {
  for (const key of Object.keys(record)) {
    if (!SECTIONS.includes(key)) {
      blame.fail(
        `unknown key ${
          quoted(clip(key))
        } (expected "ports", "templates", "stride", "slots", "scope", "env_file", "on_release", "name" or "hosts")`,
      );
    }
  }
}

/** The config's `ports`, or the default's, with the override's added. */
function parsePorts(
  value: unknown,
  options: ParseConfigOptions,
  blame: Blame,
): Record<string, number> {
  const configPorts = value === undefined ? { ...DEFAULT_CONFIG.ports } : value;
  if (!isPlainObject(configPorts)) blame.fail(`"ports" must be an object of key to base port`);
  if (options.ports !== undefined && !isPlainObject(options.ports)) {
    blame.fail(`"ports" must be an object of key to base port`, [blame.overrideName("ports")]);
  }
  const ports: Record<string, unknown> = options.ports === undefined
    ? configPorts
    : value === undefined
    ? { ...options.ports }
    : { ...configPorts, ...options.ports };
  const entries = Object.entries(ports);
  if (entries.length === 0) blame.fail(`"ports" must name at least one port`);
  for (const [key, base] of entries) {
    const failKey = (problem: string) => blame.fail(problem, [blame.keyOrigin(key)]);
    checkKey(key, "ports", failKey);
    checkInteger(base, `port "${clip(key)}"`, 1, MAX_PORT, failKey);
    if (WORKTREE_PLACEHOLDERS.includes(key)) {
      failKey(`port "${key}" has the name of the placeholder "{${key}}" (rename it)`);
    }
  }
  return ports as Record<string, number>;
}

/** The config's `templates`: strings whose placeholders name a port or the worktree. */
function parseTemplates(
  value: unknown,
  ports: Record<string, number>,
  blame: Blame,
): Record<string, string> {
  const templates = value ?? {};
  if (!isPlainObject(templates)) blame.fail(`"templates" must be an object of key to string`);
  for (const [key, template] of Object.entries(templates)) {
    checkKey(key, "templates", (problem) => blame.fail(problem));
    if (Object.hasOwn(ports, key)) {
      blame.fail(`template "${clip(key)}" has the same name as a port`, [
        "config",
        blame.keyOrigin(key),
      ]);
    }
    if (typeof template !== "string") blame.fail(`template "${clip(key)}" must be a string`);
    checkTemplate(key, template, ports, blame);
  }
  return templates as Record<string, string>;
}

function checkTemplate(
  key: string,
  template: string,
  ports: Record<string, number>,
  blame: Blame,
): void {
  // No environment variable can carry a NUL, and half a surrogate pair is
  // written differently by every format.
  if (template.includes("\0")) {
    blame.fail(
      `template "${clip(key)}" holds a NUL character, which no environment variable can carry`,
    );
  }
  if (!template.isWellFormed()) {
    blame.fail(
      `template "${clip(key)}" holds half of a UTF-16 surrogate pair (not valid Unicode)`,
    );
  }
  for (const [, name] of template.matchAll(PLACEHOLDER_PATTERN)) {
    if (
      name !== undefined && !Object.hasOwn(ports, name) && !WORKTREE_PLACEHOLDERS.includes(name)
    ) {
      blame.fail(
        `template "${clip(key)}" names "{${clip(name)}}", which is neither in "ports" nor one of ` +
          `"{slot}", "{branch}", "{name}", "{slug}", "{repo}" or "{proxy_port}" (write "{{" and "}}" for literal braces)`,
      );
    }
  }
}

/**
 * The config's `on_release`: a program and its arguments, as a list (no
 * shell), whose placeholders name a port, a template or the worktree.
 */
function parseOnRelease(
  value: unknown,
  config: Pick<PortsConfig, "ports" | "templates">,
  fail: (problem: string) => never,
): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.some((arg) => typeof arg !== "string")) {
    fail(
      `"on_release" must be a command as a list of strings, such as ` +
        `["docker", "compose", "-p", "{compose_project}", "down"], got ${
          clip(JSON.stringify(value))
        }`,
    );
  }
  const args = value as string[];
  if (args[0] === "") fail(`"on_release" must start with the program to run, got ""`);
  for (const arg of args) {
    if (arg.includes("\0")) fail(`"on_release" holds a NUL character, which no argument can carry`);
    for (const [, name] of arg.matchAll(PLACEHOLDER_PATTERN)) {
      if (
        name !== undefined && !Object.hasOwn(config.ports, name) &&
        !Object.hasOwn(config.templates, name) && !WORKTREE_PLACEHOLDERS.includes(name)
      ) {
        fail(
          `"on_release" names "{${clip(name)}}", which is neither in "ports" nor in "templates" ` +
            `nor one of "{slot}", "{branch}", "{name}", "{slug}", "{repo}" or "{proxy_port}" (write "{{" and "}}" for literal braces)`,
        );
      }
    }
  }
  return args;
}

/** The config's `name`: the repository's label in the proxy's host names. */
function parseName(value: unknown, fail: (problem: string) => never): string {
  if (typeof value !== "string" || !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(value)) {
    fail(
      `"name" must be a DNS label (a-z, 0-9 and "-", at most 63, no "-" at either end), got ${
        clip(JSON.stringify(value))
      }`,
    );
  }
  return value as string;
}

/** The config's `hosts`: the port keys the proxy routes. */
function parseHosts(
  value: unknown,
  ports: Record<string, number>,
  fail: (problem: string) => never,
): string[] {
  if (!Array.isArray(value) || value.some((key) => typeof key !== "string")) {
    fail(`"hosts" must be a list of port keys, got ${clip(JSON.stringify(value))}`);
  }
  for (const key of value as string[]) {
    if (!Object.hasOwn(ports, key)) {
      fail(`"hosts" names ${quoted(clip(key))}, which is not in "ports"`);
    }
  }
  return value as string[];
}

/** `stride` or `slots`, given or the default's. */
function parseNumber(name: "stride" | "slots", value: unknown, blame: Blame): number {
  const number = value ?? DEFAULT_CONFIG[name];
  checkInteger(number, `"${name}"`, 1, MAX_PORT, (p) => blame.fail(p, [blame.numberOrigin(name)]));
  return number;
}

/**
 * The config's `env_file`: one path or a list, each relative to the worktree
 * root and inside it, never in git's directory nor on the port file or the
 * config; given back with forward slashes, `.` parts dropped.
 */
function parseEnvFiles(value: unknown, fail: (p: string) => never): string[] {
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list) || list.some((item) => typeof item !== "string")) {
    fail(`"env_file" must be a path or a list of paths, got ${clip(JSON.stringify(value))}`);
  }
  const files: string[] = [];
  for (const given of list as string[]) {
    const problem = (why: string) => fail(`"env_file" ${quoted(clip(given))} ${why}`);
    if (given === "" || /[\0\r\n]/.test(given)) problem("must be a path on one line");
    if (/^([\\/]|[A-Za-z]:)/.test(given)) {
      problem('must be relative to the worktree root (like ".env.ports")');
    }
    if (/[\\/]$/.test(given)) problem("names a folder; name a file in it");
    const parts = given.split(/[\\/]+/).filter((part) => part !== ".");
    if (parts.includes("..")) problem(`must stay inside the worktree (no "..")`);
    if (parts.length === 0) problem("names a folder; name a file in it");
    const path = parts.join("/");
    if (parts[0].toLowerCase() === ".git") problem("is inside git's own directory");
    if (path === PORT_FILE_NAME || path === CONFIG_FILE_NAME) {
      problem(`is the ${path === PORT_FILE_NAME ? "port file" : "config"} itself`);
    }
    if (files.includes(path)) problem("is named twice");
    files.push(path);
  }
  return files;
}

function parseScope(value: unknown, fail: (p: string) => never): Scope {
  if (value !== "machine" && value !== "repository") {
    fail(`"scope" must be "machine" or "repository", got ${JSON.stringify(value)}`);
  }
  return value as Scope;
}

function checkKey(key: string, section: string, fail: (p: string) => never) {
  if (!KEY_PATTERN.test(key)) {
    fail(
      `key ${
        quoted(clip(key))
      } in "${section}" must match ${KEY_PATTERN.source} (letters, digits, underscores)`,
    );
  }
  if (key === META_KEY) {
    fail(`"${META_KEY}" is reserved for the port file's own metadata`);
  }
}

/**
 * Every key becomes its upper-case variable name: two keys must not become
 * the same variable, and none may become one the environment depends on or
 * one that makes a shell or a program run code.
 */
function checkEnvNames(
  keys: readonly string[],
  fail: (problem: string, keys: string[]) => never,
) {
  const listed = (names: readonly string[]) => names.map((name) => `"${name}"`).join(" and ");
  const byName = new Map<string, string[]>();
  for (const key of keys) {
    const name = key.toUpperCase();
    byName.set(name, [...(byName.get(name) ?? []), key]);
  }
  for (const [name, same] of byName) {
    if (same.length > 1) {
      fail(
        `keys ${listed(same)} both become the variable "${name}" (rename all but one)`,
        same,
      );
    }
  }
  const first = keys.find((key) => reservedEnvReason(key.toUpperCase()) !== undefined);
  if (first !== undefined) {
    // The keys refused for the same reason as the first, named together.
    const reason = reservedEnvReason(first.toUpperCase())!;
    const reserved = keys.filter((key) => reservedEnvReason(key.toUpperCase()) === reason);
    fail(
      `${reserved.length === 1 ? "key" : "keys"} ${listed(reserved)} would set ${
        listed(reserved.map((key) => key.toUpperCase()))
      }, ${reason} (rename ${reserved.length === 1 ? "it" : "them"}, e.g. "app_${reserved[0]}")`,
      reserved,
    );
  }
}

function checkInteger(
  value: unknown,
  name: string,
  min: number,
  max: number,
  fail: (p: string) => never,
): asserts value is number {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    const got = typeof value === "number" && !Number.isFinite(value)
      ? "a number too large to use"
      : quoteValue(value);
    fail(`${name} must be an integer from ${min} to ${max}, got ${got}`);
  }
}

/**
 * Every port of every slot must exist and belong to exactly one (key, slot).
 * Both follow from the base ports without listing the slots: a key's highest
 * port is at the last slot, and two keys collide exactly when their bases are
 * a whole number of strides apart, no more than `slots` strides.
 */
function checkSlotPorts(
  config: PortsConfig,
  fail: (problem: string, keys: string[]) => never,
) {
  const { stride, slots } = config;
  const entries = Object.entries(config.ports);
  let highest: [string, number] | undefined;
  for (const [key, base] of entries) {
    const slot = Math.ceil((MAX_PORT + 1 - base) / stride);
    if (slot <= slots && (highest === undefined || slot < highest[1])) highest = [key, slot];
  }
  if (highest) {
    const [key, slot] = highest;
    fail(
      `port "${key}" at slot ${slot} would be ${
        config.ports[key] + slot * stride
      }, above ${MAX_PORT} (lower "slots", "stride" or the base port)`,
      [key],
    );
  }
  let first: { low: string; high: string; slot: number; port: number } | undefined;
  entries.forEach(([keyA, baseA], index) => {
    for (const [keyB, baseB] of entries.slice(index + 1)) {
      const distance = Math.abs(baseA - baseB);
      const slot = distance / stride;
      if (distance % stride !== 0 || slot > slots || (first && first.slot <= slot)) continue;
      // The key with the lower base climbs onto the other's base port.
      const [low, high] = baseA < baseB ? [keyA, keyB] : [keyB, keyA];
      first = { low, high, slot, port: Math.max(baseA, baseB) };
    }
  });
  if (first) {
    const fixes = [
      first.slot > 1 ? `lower "slots" to ${first.slot - 1}` : undefined,
      workingStride(config) === undefined ? undefined : `make "stride" ${workingStride(config)}`,
    ].filter(Boolean);
    fail(
      `port "${first.low}" at slot ${first.slot} and port "${first.high}" at slot 0 both land on ${first.port} (${
        fixes.length > 0 ? `${fixes.join(", or ")}, or change a base port` : `change a base port`
      } so that the ranges do not overlap)`,
      [first.low, first.high],
    );
  }
}

/**
 * The stride nearest to the config's (the smaller one first, when two are as
 * near) with which no two ports of any slots meet and none passes 65535.
 */
function workingStride(config: PortsConfig): number | undefined {
  const bases = Object.values(config.ports);
  const fits = (stride: number) =>
    bases.every((base) => base + config.slots * stride <= MAX_PORT) &&
    bases.every((a, index) =>
      bases.slice(index + 1).every((b) => {
        const distance = Math.abs(a - b);
        return distance % stride !== 0 || distance / stride > config.slots;
      })
    );
  for (let step = 1; step < MAX_PORT; step++) {
    for (const stride of [config.stride - step, config.stride + step]) {
      if (stride >= 1 && stride <= MAX_PORT && fits(stride)) return stride;
    }
    if (config.stride - step < 1 && config.stride + step > MAX_PORT) break;
  }
  return undefined;
}

/** Options for {@linkcode loadConfig}. */
export interface LoadConfigOptions extends ConfigOverrides {
  /**
   * Path of the config file. When given, the file must exist; relative paths
   * are resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
}

/**
 * Reads and validates the config of a worktree.
 *
 * @param root The worktree root, where `worktree-ports.config.json` is looked for.
 * @param options A config path and overrides.
 * @returns The validated config; the defaults when there is no config file.
 * @throws {WorktreePortsError} With code `INVALID_CONFIG` when the file is
 * missing (if named), not JSON, or not valid.
 *
 * @example Usage
 * ```ts ignore
 * import { loadConfig } from "@org/worktree-ports";
 *
 * const config = loadConfig("/path/to/worktree", { stride: 10 });
 * console.log(config.ports);
 * ```
 */
export function loadConfig(root: string, options: LoadConfigOptions = {}): PortsConfig {
  const path = options.config === undefined
    ? joinPath(root, CONFIG_FILE_NAME)
    : resolvePath(root, options.config);
  let text: string | undefined;
  try {
    text = readRegularTextFile(path);
  } catch (error) {
    if (
      !(error instanceof Deno.errors.NotFound) || options.config !== undefined ||
      isSymlink(path)
    ) {
      throw asConfigError(error, path);
    }
  }
  if (text === undefined) return parseConfig(undefined, options);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Invalid config "${path}": not valid JSON (${(error as Error).message})`,
      { cause: error },
    );
  }
  const source = `"${path}"`;
  if (value === null || value === undefined) {
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Invalid config ${source}: it must be a JSON object, got null (delete the file to use the defaults)`,
    );
  }
  if (nestingExceeds(text, value, MAX_NESTING)) {
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Invalid config ${source}: nested more than ${MAX_NESTING} levels deep`,
    );
  }
  return parseConfig(value, { ...options, source });
}

function asConfigError(error: unknown, path: string): unknown {
  if (error instanceof Deno.errors.NotCapable) return error;
  const reason = error instanceof Deno.errors.NotFound
    ? isSymlink(path)
      ? "it is a symbolic link to a file that does not exist"
      : "the file does not exist"
    : error instanceof Deno.errors.FilesystemLoop
    ? "it is a symbolic link loop (point the link at a file, or remove it)"
    : fileProblemOf(error);
  return new WorktreePortsError(
    "INVALID_CONFIG",
    `Cannot read config "${path}": ${reason}`,
    { cause: error },
  );
}
