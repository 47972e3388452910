/**
 * Gives every git worktree of a repository its own bundle of ports, even when
 * many worktrees allocate at the same instant.
 *
 * Slot `k` shifts every base port by `k * stride`. The primary worktree owns
 * slot 0; linked worktrees get the lowest slot that no sibling worktree's
 * `.worktree-ports.json` reserves and whose ports are free on loopback. The
 * scan, the choice and the write happen under one lock shared by all
 * worktrees of the repository, so simultaneous allocations never collide.
 * Every port file written is recorded in a per-user, machine-wide index, and
 * the ports of other repositories' recorded files are reserved too, so no two
 * worktrees on the machine share a port, whichever repository they belong to.
 *
 * ```ts
 * import { allocate, machineIndexAt } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * const index = await Deno.makeTempDir();
 * await new Deno.Command("git", { args: ["init", "-q", dir] }).output();
 * try {
 *   const allocation = await allocate({
 *     cwd: dir,
 *     ports: { web_port: 3000, api_port: 9000 },
 *     // The machine-wide index; by default it is kept in the user's home.
 *     index: machineIndexAt(index),
 *   });
 *   // The main worktree owns slot 0, the base ports; linked worktrees get 1, 2, ...
 *   assert.equal(allocation.slot, 0);
 *   assert.deepEqual(allocation.bundle, { web_port: 3000, api_port: 9000 });
 *   assert.equal(allocation.path, `${await Deno.realPath(dir)}/.worktree-ports.json`);
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 *   await Deno.remove(index, { recursive: true });
 * }
 * ```
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** Machine-readable reason carried by {@linkcode WorktreePortsError}. */
export type ErrorCode =
  | "NO_FREE_SLOT"
  | "LOCK_TIMEOUT"
  | "LOCK_FAILED"
  | "NOT_A_WORKTREE"
  | "GIT_FAILED"
  | "INVALID_CONFIG"
  | "INVALID_OUTPUT";

/**
 * The error callers are expected to catch: every slot taken, the lock not
 * acquired in time or not openable, not inside a git worktree, git failing, a
 * bad config, or an output path inside another worktree or holding a file
 * that is no port file.
 *
 * @example Usage
 * ```ts ignore
 * import { allocate, WorktreePortsError } from "@org/worktree-ports";
 *
 * try {
 *   await allocate();
 * } catch (error) {
 *   if (error instanceof WorktreePortsError && error.code === "NO_FREE_SLOT") {
 *     console.error("every slot is taken");
 *   } else {
 *     throw error;
 *   }
 * }
 * ```
 */
export class WorktreePortsError extends Error {
  /** Why the operation failed. */
  readonly code: ErrorCode;

  /**
   * Creates an error with a code and a message that says what to do.
   *
   * @param code Why the operation failed.
   * @param message What went wrong and how to fix it.
   * @param options The underlying `cause`, if any.
   */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WorktreePortsError";
    this.code = code;
  }
}

// ---------------------------------------------------------------------------
// Names and defaults
// ---------------------------------------------------------------------------

/** Name of the port file written at the root of each worktree. */
export const PORT_FILE_NAME = ".worktree-ports.json";
/** Name of the optional config file at the root of a worktree. */
export const CONFIG_FILE_NAME = "worktree-ports.config.json";
/** Name of the lock file in the repository's common git directory. */
export const LOCK_FILE_NAME = "worktree-ports.lock";
/** Version of the `worktree_ports` metadata written into port files. */
export const PORT_FILE_VERSION = 1;
/** How long {@linkcode allocate} waits for the lock by default. */
export const DEFAULT_LOCK_TIMEOUT_MS = 10_000;
/**
 * Addresses a port must be bindable on to count as free. `::1` is skipped on
 * hosts without IPv6 loopback.
 */
export const PROBE_HOSTNAMES: readonly string[] = ["127.0.0.1", "::1", "0.0.0.0"];

/** The config used when a worktree has no config file. */
export const DEFAULT_CONFIG: Readonly<PortsConfig> = Object.freeze({
  ports: Object.freeze({ port: 3000 }),
  templates: Object.freeze({}),
  stride: 100,
  slots: 50,
});

const IS_WINDOWS = Deno.build.os === "windows";
const KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A template's parts: `{{` and `}}` are literal braces, `{name}` a placeholder. */
const PLACEHOLDER_PATTERN = /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
/** Placeholders that describe the worktree rather than a port. */
const WORKTREE_PLACEHOLDERS: readonly string[] = ["slot", "branch", "name", "slug"];
/** The longest DNS label. */
const MAX_SLUG_LENGTH = 63;
const META_KEY = "worktree_ports";
const MAX_PORT = 65535;
/** Port files and configs are a few hundred bytes; a larger file is not one. */
const MAX_FILE_BYTES = 1 << 20;
/** Deeper JSON than this is not a port file, and would overflow the stack when printed. */
const MAX_NESTING = 64;

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

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
 * starting with `LC_`, `DENO_`, `GIT_`, `LD_` or `DYLD_`).
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
  const record = (isPlainObject(raw) ? raw : {}) as Record<string, unknown>;
  // Each problem names where the values it involves came from: the config,
  // the overrides (by their names), or both.
  const overrideName = (name: keyof OverrideNames) =>
    options.overrideNames?.[name] ?? `option "${name}"`;
  const keyOrigin = (key: string): string =>
    options.ports !== undefined && Object.hasOwn(options.ports, key)
      ? overrideName("ports")
      : "config";
  const numberOrigin = (name: "stride" | "slots"): string | undefined =>
    options[name] !== undefined
      ? overrideName(name)
      : record[name] !== undefined
      ? "config"
      : undefined;
  const fail = (problem: string, origins: readonly (string | undefined)[] = ["config"]): never => {
    const overrides = [...new Set(origins.filter((o) => o !== undefined && o !== "config"))];
    const source = options.source ? ` ${options.source}` : "";
    const blamed = overrides.length === 0
      ? `config${source}`
      : origins.includes("config")
      ? `${overrides.join(" and ")} with config${source}`
      : overrides.join(" and ");
    throw new WorktreePortsError("INVALID_CONFIG", `Invalid ${blamed}: ${problem}`);
  };
  if (!isPlainObject(raw)) fail("it must be a JSON object");
  for (const key of Object.keys(record)) {
    if (!["ports", "templates", "stride", "slots", "scope"].includes(key)) {
      fail(
        `unknown key ${
          quoteKey(clip(key))
        } (expected "ports", "templates", "stride", "slots" or "scope")`,
      );
    }
  }

  const configPorts = record.ports === undefined ? { ...DEFAULT_CONFIG.ports } : record.ports;
  if (!isPlainObject(configPorts)) fail(`"ports" must be an object of key to base port`);
  if (options.ports !== undefined && !isPlainObject(options.ports)) {
    fail(`"ports" must be an object of key to base port`, [overrideName("ports")]);
  }
  const ports = options.ports === undefined
    ? configPorts
    : record.ports === undefined
    ? { ...options.ports }
    : { ...configPorts as object, ...options.ports };
  const portEntries = Object.entries(ports as Record<string, unknown>);
  if (portEntries.length === 0) fail(`"ports" must name at least one port`);
  for (const [key, base] of portEntries) {
    const failKey = (problem: string) => fail(problem, [keyOrigin(key)]);
    checkKey(key, "ports", failKey);
    checkInteger(base, `port "${clip(key)}"`, 1, MAX_PORT, failKey);
    if (WORKTREE_PLACEHOLDERS.includes(key)) {
      failKey(`port "${key}" has the name of the placeholder "{${key}}" (rename it)`);
    }
  }

  const templates = record.templates ?? {};
  if (!isPlainObject(templates)) {
    fail(`"templates" must be an object of key to string`);
  }
  for (const [key, template] of Object.entries(templates as object)) {
    checkKey(key, "templates", fail);
    if (Object.hasOwn(ports as object, key)) {
      fail(`template "${clip(key)}" has the same name as a port`, ["config", keyOrigin(key)]);
    }
    if (typeof template !== "string") {
      fail(`template "${clip(key)}" must be a string`);
    }
    // No environment variable can carry a NUL, and half a surrogate pair is
    // written differently by every format.
    if ((template as string).includes("\0")) {
      fail(
        `template "${clip(key)}" holds a NUL character, which no environment variable can carry`,
      );
    }
    if (!(template as string).isWellFormed()) {
      fail(`template "${clip(key)}" holds half of a UTF-16 surrogate pair (not valid Unicode)`);
    }
    for (const [, name] of (template as string).matchAll(PLACEHOLDER_PATTERN)) {
      if (
        name !== undefined && !Object.hasOwn(ports as object, name) &&
        !WORKTREE_PLACEHOLDERS.includes(name)
      ) {
        fail(
          `template "${clip(key)}" names "{${
            clip(name)
          }}", which is neither in "ports" nor one of ` +
            `"{slot}", "{branch}", "{name}" or "{slug}" (write "{{" and "}}" for literal braces)`,
        );
      }
    }
  }

  checkEnvNames(
    [...Object.keys(ports as object), ...Object.keys(templates as object)],
    (problem, keys) => fail(problem, keys.map(keyOrigin)),
  );

  const stride = options.stride ?? record.stride ?? DEFAULT_CONFIG.stride;
  checkInteger(stride, `"stride"`, 1, MAX_PORT, (p) => fail(p, [numberOrigin("stride")]));
  const slots = options.slots ?? record.slots ?? DEFAULT_CONFIG.slots;
  checkInteger(slots, `"slots"`, 1, MAX_PORT, (p) => fail(p, [numberOrigin("slots")]));

  const config: PortsConfig = {
    ports: ports as Record<string, number>,
    templates: templates as Record<string, string>,
    stride: stride as number,
    slots: slots as number,
  };
  checkSlotPorts(config, (problem, keys) =>
    fail(problem, [
      ...keys.map(keyOrigin),
      numberOrigin("stride"),
      numberOrigin("slots"),
    ]));
  if (record.scope !== undefined) config.scope = parseScope(record.scope, fail);
  return config;
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
        quoteKey(clip(key))
      } in "${section}" must match ${KEY_PATTERN.source} (letters, digits, underscores)`,
    );
  }
  if (key === META_KEY) {
    fail(`"${META_KEY}" is reserved for the port file's own metadata`);
  }
}

/**
 * Variables that the process environment depends on: a bundle key that set
 * one would break `exec` and every shell that loads the bundle.
 */
const RESERVED_ENV_NAMES: ReadonlySet<string> = new Set([
  "PATH",
  "HOME",
  "SHELL",
  "USER",
  "PWD",
  "LANG",
  "TERM",
  "TMPDIR",
  // Shells give these a meaning of their own, or refuse to set them.
  "IFS",
  "UID",
  "EUID",
  "PPID",
  "SHLVL",
  "OLDPWD",
  "CDPATH",
  "ENV",
  "BASH_ENV",
]);
const RESERVED_ENV_PREFIXES: readonly string[] = ["LC_", "DENO_", "GIT_", "LD_", "DYLD_"];

/** A variable the environment depends on, which no bundle key may set. */
function isReservedEnvName(name: string): boolean {
  return RESERVED_ENV_NAMES.has(name) ||
    RESERVED_ENV_PREFIXES.some((prefix) => name.startsWith(prefix));
}

/**
 * Every key becomes its upper-case variable name: two keys must not become
 * the same variable, and none may become one the environment depends on.
 */
function checkEnvNames(
  keys: readonly string[],
  fail: (problem: string, keys: string[]) => never,
) {
  const quoted = (names: readonly string[]) => names.map((name) => `"${name}"`).join(" and ");
  const byName = new Map<string, string[]>();
  for (const key of keys) {
    const name = key.toUpperCase();
    byName.set(name, [...(byName.get(name) ?? []), key]);
  }
  for (const [name, same] of byName) {
    if (same.length > 1) {
      fail(
        `keys ${quoted(same)} both become the variable "${name}" (rename all but one)`,
        same,
      );
    }
  }
  const reserved = keys.filter((key) => isReservedEnvName(key.toUpperCase()));
  if (reserved.length > 0) {
    fail(
      `${reserved.length === 1 ? "key" : "keys"} ${quoted(reserved)} would set ${
        quoted(reserved.map((key) => key.toUpperCase()))
      }, which commands need from the environment (rename ${
        reserved.length === 1 ? "it" : "them"
      }, e.g. "app_${reserved[0]}")`,
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
) {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    const got = typeof value === "number" && !Number.isFinite(value)
      ? "a number too large to use"
      : quoteValue(value);
    fail(`${name} must be an integer from ${min} to ${max}, got ${got}`);
  }
}

/** A value for an error message: its JSON, cut to about 200 characters. */
function quoteValue(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return clip(text);
}

/** Text for an error message, cut to about 200 characters: a message must stay readable. */
function clip(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}… (${text.length} characters)` : text;
}

/**
 * A key for a message, in double quotes; JSON-escaped when it holds control
 * characters, which would otherwise reach the terminal raw (a key read from
 * a port file can hold anything).
 */
function quoteKey(key: string): string {
  return /\p{Cc}/u.test(key) ? JSON.stringify(key) : `"${key}"`;
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
    fail(
      `port "${first.low}" at slot ${first.slot} and port "${first.high}" at slot 0 both land on ${first.port} (change "stride" or a base port so the ranges do not overlap)`,
      [first.low, first.high],
    );
  }
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

/**
 * The port of every key at one slot: `base + slot * stride`.
 *
 * @param config The config to read base ports and stride from.
 * @param slot The slot: 0 for the primary worktree.
 * @returns Each key with its port, in config order.
 *
 * @example Usage
 * ```ts
 * import { parseConfig, portsForSlot } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { web: 3000, db: 5432 } });
 * assert.deepEqual(portsForSlot(config, 2), { web: 3200, db: 5632 });
 * ```
 */
export function portsForSlot(
  config: Pick<PortsConfig, "ports" | "stride">,
  slot: number,
): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const [key, base] of Object.entries(config.ports)) {
    ports[key] = base + slot * config.stride;
  }
  return ports;
}

/** Options for {@linkcode renderBundle}. */
export interface RenderBundleOptions {
  /**
   * The worktree the bundle is for, which fills `{branch}`, `{name}` and
   * `{slug}`: its path (as git reports it) and its branch, if one is checked out.
   *
   * @default {undefined} `{branch}` and `{name}` are empty, `{slug}` is `slot-N`
   */
  worktree?: Pick<Worktree, "path" | "branch">;
}

/**
 * The full bundle of a slot: its ports, then the templates filled in.
 *
 * In a template, `{key}` is that key's port at the slot; `{slot}` the slot;
 * `{branch}` the worktree's branch (empty when detached); `{name}` the base
 * name of the worktree's directory; `{slug}` a DNS label made from the
 * branch, or from the name when detached (see {@linkcode slugOf}); and `{{`
 * and `}}` are literal braces.
 *
 * @param config The config to render.
 * @param slot The slot to render.
 * @param options The worktree the bundle is for.
 * @returns Each port key and template key with its value, in config order.
 *
 * @example Usage
 * ```ts
 * import { parseConfig, renderBundle } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({
 *   ports: { api: 8000 },
 *   templates: {
 *     api_url: "http://{slug}.localhost:{api}",
 *     compose_project_name: "app-{slug}",
 *     json: '{{"slot": {slot}}}',
 *   },
 * });
 * const worktree = { path: "/src/app-login", branch: "Feature/Login_Page" };
 * assert.deepEqual(renderBundle(config, 1, { worktree }), {
 *   api: 8100,
 *   api_url: "http://feature-login-page.localhost:8100",
 *   compose_project_name: "app-feature-login-page",
 *   json: '{"slot": 1}',
 * });
 * ```
 */
export function renderBundle(
  config: PortsConfig,
  slot: number,
  options: RenderBundleOptions = {},
): Record<string, number | string> {
  const ports = portsForSlot(config, slot);
  const bundle: Record<string, number | string> = { ...ports };
  const { worktree } = options;
  const name = () => worktree === undefined ? "" : baseName(worktree.path);
  // Worked out only for the templates that use them: a slug costs a cold
  // process Unicode tables, which most configs never need.
  const value = (placeholder: string): string => {
    if (placeholder === "slot") return String(slot);
    if (placeholder === "branch") return worktree?.branch ?? "";
    if (placeholder === "name") return name();
    // A branch of only punctuation falls back to the name, and no worktree to the slot.
    return slugOf(worktree?.branch ?? "") || slugOf(name()) || `slot-${slot}`;
  };
  for (const [key, template] of Object.entries(config.templates)) {
    bundle[key] = template.replace(PLACEHOLDER_PATTERN, (token, name?: string) => {
      if (name === undefined) return token[0];
      return Object.hasOwn(ports, name) ? String(ports[name]) : value(name);
    });
  }
  return bundle;
}

/**
 * A DNS label made from a branch or directory name, for `{slug}`: lower
 * case, accents dropped, every run of other characters than `a-z` and `0-9`
 * one `-`, no `-` at either end, at most 63 characters.
 *
 * @param text A branch or directory name.
 * @returns The label; empty when `text` has no letter or digit.
 *
 * @example Usage
 * ```ts
 * import { slugOf } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(slugOf("Feature/Login_Page"), "feature-login-page");
 * assert.equal(slugOf("fix/Ünïcode--names!"), "fix-unicode-names");
 * ```
 */
export function slugOf(text: string): string {
  // deno-lint-ignore no-control-regex
  const ascii = /^[\x00-\x7f]*$/.test(text);
  return (ascii ? text : text.normalize("NFKD").replace(/\p{M}/gu, "")).toLowerCase()
    .replace(/[^a-z0-9]+/g, "-").replace(/^-+/, "")
    .slice(0, MAX_SLUG_LENGTH).replace(/-+$/, "");
}

// ---------------------------------------------------------------------------
// Worktrees
// ---------------------------------------------------------------------------

/** Runs git. Injected so that tests and embedders can replace it. */
export interface GitRunner {
  /**
   * Runs `git` with `args` in `cwd`.
   *
   * @returns Its standard output.
   * @throws {WorktreePortsError} With code `GIT_FAILED` when git cannot be
   * run or exits with an error; the message includes git's own.
   */
  run(args: readonly string[], cwd: string): Promise<string>;
}

/**
 * The real {@linkcode GitRunner}: runs `git` with `Deno.Command`. It waits
 * for git synchronously: collecting the output as streams loads machinery
 * that costs a short-lived process about 2 MB and a few milliseconds, more
 * than git itself takes. Inject an asynchronous runner where blocking the
 * event loop for one git call matters.
 */
export const denoGit: GitRunner = {
  run(args: readonly string[], cwd: string): Promise<string> {
    try {
      return Promise.resolve(runGitSync(args, cwd));
    } catch (error) {
      return Promise.reject(error);
    }
  },
};

function runGitSync(args: readonly string[], cwd: string): string {
  let output: Deno.CommandOutput;
  try {
    output = new Deno.Command("git", {
      args: [...args],
      cwd,
      // Messages are matched below, so keep them untranslated.
      env: { LC_ALL: "C" },
      stdin: "null",
    }).outputSync();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new WorktreePortsError(
        "GIT_FAILED",
        "Cannot run git: it is not installed or not on PATH",
        { cause: error },
      );
    }
    throw error;
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr);
    throw new WorktreePortsError(
      "GIT_FAILED",
      `"git ${args.join(" ")}" failed with exit code ${output.code}: ${firstGitError(stderr)}`,
    );
  }
  return new TextDecoder().decode(output.stdout);
}

/**
 * The line of git's standard error that says what went wrong: the first
 * `fatal:` or `error:` line, else the first line. Git follows a bad option
 * with its whole usage text, which says nothing about the failure.
 */
function firstGitError(stderr: string): string {
  const lines = stderr.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  return lines.find((line) => /^(fatal|error):/.test(line)) ?? lines[0] ?? "(no message)";
}

/** One entry of `git worktree list`. */
export interface Worktree {
  /** Directory of the worktree, as git reports it (for a bare repository, the repository itself). */
  path: string;
  /** Commit checked out, absent for a bare repository. */
  head?: string;
  /** Branch checked out, without `refs/heads/`; absent when detached or bare. */
  branch?: string;
  /** The entry is a bare repository: it has no files and no port file. */
  bare: boolean;
  /** HEAD is detached. */
  detached: boolean;
  /** The worktree is locked against pruning (git 2.31 and later report it; older git, never). */
  locked: boolean;
  /**
   * The worktree's directory is gone: git reports it from 2.31 on; with older
   * git, {@linkcode listWorktrees} checks the directory itself.
   */
  prunable: boolean;
}

/**
 * Parses the output of `git worktree list --porcelain -z` or, from git older
 * than 2.36, which lacks `-z`, of `git worktree list --porcelain`.
 *
 * @param output The raw output: NUL-terminated attributes, records separated
 * by an empty one; or the same with newlines, which is how it is read when it
 * holds no NUL.
 * @returns The worktrees in git's order: the main worktree (or bare repository) first.
 *
 * @example Usage
 * ```ts
 * import { parseWorktreeList } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const output = "worktree /repo\0HEAD abc\0branch refs/heads/main\0\0" +
 *   "worktree /repo wt\0HEAD abc\0detached\0\0";
 * const [main, linked] = parseWorktreeList(output);
 * assert.equal(main.branch, "main");
 * assert.equal(linked.path, "/repo wt");
 * assert.equal(linked.detached, true);
 * ```
 */
export function parseWorktreeList(output: string): Worktree[] {
  if (output !== "" && !output.includes("\0")) return parseWorktreeLines(output);
  const worktrees: Worktree[] = [];
  let current: Worktree | undefined;
  for (const field of output.split("\0")) {
    if (field === "") {
      current = undefined;
      continue;
    }
    const space = field.indexOf(" ");
    const name = space === -1 ? field : field.slice(0, space);
    const value = space === -1 ? "" : field.slice(space + 1);
    if (name === "worktree") {
      current = {
        path: value,
        bare: false,
        detached: false,
        locked: false,
        prunable: false,
      };
      worktrees.push(current);
    } else if (current === undefined) {
      continue;
    } else if (name === "HEAD") {
      current.head = value;
    } else if (name === "branch") {
      current.branch = value.replace(/^refs\/heads\//, "");
    } else if (name === "bare" || name === "detached" || name === "locked" || name === "prunable") {
      current[name] = true;
    }
  }
  return worktrees;
}

/** Options for {@linkcode listWorktrees}. */
export interface ListWorktreesOptions {
  /**
   * A directory inside the repository.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
}

/**
 * Lists every worktree of the repository that contains `cwd`, with one
 * `git worktree list --porcelain -z` call. A listing that fails while
 * another worktree is being added is tried again a few times, for about 200 ms.
 *
 * @param options The directory and the git runner.
 * @returns The worktrees in git's order: the main worktree (or bare repository) first.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` outside a git
 * repository, `GIT_FAILED` when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { listWorktrees } from "@org/worktree-ports";
 *
 * for (const worktree of await listWorktrees()) console.log(worktree.path);
 * ```
 */
export async function listWorktrees(
  options: ListWorktreesOptions = {},
): Promise<Worktree[]> {
  const cwd = options.cwd ?? Deno.cwd();
  const git = options.git ?? denoGit;
  for (let attempt = 0;; attempt++) {
    try {
      return await runWorktreeList(git, cwd);
    } catch (error) {
      if (!(error instanceof WorktreePortsError) || error.code !== "GIT_FAILED") throw error;
      if (/not a git repository/i.test(error.message)) throw notAWorktree(cwd, error);
      // While "git worktree add" runs, a listing can fail on the half-made
      // entry ("failed to read .../commondir"); it is whole moments later.
      if (attempt >= LIST_RETRY_DELAYS_MS.length) throw error;
      await new Promise((resolve) => setTimeout(resolve, LIST_RETRY_DELAYS_MS[attempt]));
    }
  }
}

/** Pauses between attempts to list the worktrees: about 200 ms in all. */
const LIST_RETRY_DELAYS_MS: readonly number[] = [20, 40, 60, 80];

// ---------------------------------------------------------------------------
// Worktrees: git before 2.36
// ---------------------------------------------------------------------------

/**
 * Which `git worktree list` each git runner understands, learnt from its
 * first listing: `-z` (git 2.36 and later) or newline-separated lines. New
 * git is asked once per listing; old git is asked without `-z` from its
 * second listing on.
 */
const WORKTREE_LIST_FORMATS = new WeakMap<GitRunner, "nul" | "lines">();

/** Lists the worktrees with whichever porcelain format `git` supports. */
async function runWorktreeList(git: GitRunner, cwd: string): Promise<Worktree[]> {
  if (WORKTREE_LIST_FORMATS.get(git) !== "lines") {
    try {
      const output = await git.run(["worktree", "list", "--porcelain", "-z"], cwd);
      WORKTREE_LIST_FORMATS.set(git, "nul");
      return await withSubmoduleWorktree(parseWorktreeList(output), git);
    } catch (error) {
      if (!(error instanceof WorktreePortsError && /unknown switch `z'/.test(error.message))) {
        throw error;
      }
      WORKTREE_LIST_FORMATS.set(git, "lines");
    }
  }
  const worktrees = await withSubmoduleWorktree(
    parseWorktreeList(await git.run(["worktree", "list", "--porcelain"], cwd)),
    git,
  );
  // Git reports a worktree whose directory is gone as `prunable` only from
  // 2.31 on, and a locked one as `locked` only from 2.36; before that, the
  // directory and the admin entry's `locked` file tell.
  for (const worktree of worktrees) {
    if (!worktree.bare && !worktree.prunable && !pathExists(worktree.path)) {
      worktree.locked = isLockedAway(worktrees, worktree.path);
      worktree.prunable = !worktree.locked;
    }
  }
  return worktrees;
}

/**
 * Whether git keeps a worktree whose directory is gone because it is locked
 * (`<common dir>/worktrees/<id>/locked` exists), as git does not prune it.
 */
function isLockedAway(worktrees: readonly Worktree[], path: string): boolean {
  const main = worktrees[0];
  let commonDir: string;
  try {
    commonDir = main.bare ? main.path : gitDirsOf(main.path).commonDir;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return false;
  }
  const admin = adminDirOf(commonDir, path);
  return admin !== undefined && pathExists(joinPath(admin, "locked"));
}

/**
 * Git names a submodule's main worktree by its git directory, the
 * superproject's `.git/modules/NAME`, whose `core.worktree` says where the
 * files are. A main worktree without `.git` but with a `HEAD` is such a git
 * directory; only then is git asked a second time.
 */
async function withSubmoduleWorktree(worktrees: Worktree[], git: GitRunner): Promise<Worktree[]> {
  const main = worktrees[0];
  if (
    main === undefined || main.bare || main.prunable ||
    pathExists(joinPath(main.path, ".git")) || !pathExists(joinPath(main.path, "HEAD"))
  ) {
    return worktrees;
  }
  try {
    const configured = await git.run(
      ["config", "--file", joinPath(main.path, "config"), "core.worktree"],
      main.path,
    );
    main.path = resolvePath(main.path, configured.replace(/\r?\n$/, ""));
  } catch (error) {
    // No core.worktree: git's own name for it is the best there is.
    if (!(error instanceof WorktreePortsError)) throw error;
  }
  return worktrees;
}

/**
 * Parses newline-separated porcelain. Git before 2.36 writes paths as they
 * are, so a path holding a newline continues on the next lines, up to the
 * `HEAD` or `bare` line that always follows it. A path written in double
 * quotes, C-style, as git quotes unusual names elsewhere, is unquoted: an
 * absolute path never starts with a quote.
 */
function parseWorktreeLines(output: string): Worktree[] {
  const fields: string[] = [];
  let path: string[] | undefined;
  for (const line of output.replace(/\n$/, "").split("\n")) {
    if (path !== undefined && line !== "bare" && !/^HEAD [0-9a-f]+$/.test(line)) {
      path.push(line);
      continue;
    }
    if (path !== undefined) fields.push(unquoteGitPath(path.join("\n")));
    path = line.startsWith("worktree ") ? [line] : undefined;
    if (path === undefined) fields.push(line);
  }
  if (path !== undefined) fields.push(unquoteGitPath(path.join("\n")));
  return parseWorktreeList(fields.join("\0") + "\0");
}

/** `worktree "…"` with git's C-style quoting undone; any other line as it is. */
function unquoteGitPath(line: string): string {
  const match = /^worktree "((?:[^"\\]|\\.)*)"$/s.exec(line);
  if (match === null) return line;
  const escapes: Record<string, number> = {
    a: 7,
    b: 8,
    t: 9,
    n: 10,
    v: 11,
    f: 12,
    r: 13,
    '"': 34,
    "\\": 92,
  };
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (let index = 0; index < match[1].length; index++) {
    const char = match[1][index];
    if (char !== "\\") {
      bytes.push(...encoder.encode(char));
      continue;
    }
    const octal = /^[0-3][0-7]{2}/.exec(match[1].slice(index + 1));
    if (octal !== null) {
      bytes.push(parseInt(octal[0], 8));
      index += 3;
    } else {
      const next = match[1][++index];
      bytes.push(escapes[next] ?? next.charCodeAt(0));
    }
  }
  return "worktree " + new TextDecoder().decode(new Uint8Array(bytes));
}

/**
 * What `stat` (or, for `link`, `lstat`) says of a path; `undefined` when it
 * cannot say (nothing there, a loop, no access). A missing permission is
 * never that: it is thrown.
 */
function fileInfo(path: string, link = false): Deno.FileInfo | undefined {
  try {
    return link ? Deno.lstatSync(path) : Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return undefined;
  }
}

function pathExists(path: string): boolean {
  return fileInfo(path) !== undefined;
}

function isSymlink(path: string): boolean {
  return fileInfo(path, true)?.isSymlink ?? false;
}

/** A worktree whose `.git` is gone is no worktree there any more (moved, removed or pruneable). */
function worktreeExists(worktree: string): boolean {
  return pathExists(joinPath(worktree, ".git"));
}

function notAWorktree(dir: string, cause?: unknown): WorktreePortsError {
  return new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${dir}" is not inside a git worktree (run this inside a git repository's working tree)`,
    { cause },
  );
}

/** The repository around a directory, as {@linkcode openRepository} finds it. */
export interface Repository {
  /** Every worktree of the repository, the main one (or the bare repository) first. */
  worktrees: Worktree[];
  /** The worktree containing the directory. */
  current: Worktree;
  /** The real path of the current worktree's root. */
  root: string;
  /** The current worktree is the main worktree, which owns slot 0. */
  primary: boolean;
  /** The git directory shared by all worktrees, where the lock lives. */
  commonDir: string;
}

/**
 * Finds the worktree containing a directory, its siblings and the shared git
 * directory, with a single git call.
 *
 * @param options The directory and the git runner.
 * @returns The repository as seen from that directory.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` when the directory
 * is not inside a worktree (including inside a bare repository), `GIT_FAILED`
 * when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { openRepository } from "@org/worktree-ports";
 *
 * const repository = await openRepository();
 * console.log(repository.root, repository.primary);
 * ```
 */
export async function openRepository(
  options: ListWorktreesOptions = {},
): Promise<Repository> {
  const repository = await openRepositoryOrBare(options);
  if (repository.current.bare) throw inBareRepository(repository);
  return repository;
}

/**
 * {@linkcode openRepository}, also from a bare repository's directory, where
 * `current` is the bare repository: enough for commands that only read the
 * linked worktrees.
 */
async function openRepositoryOrBare(options: ListWorktreesOptions): Promise<Repository> {
  const git = options.git ?? denoGit;
  const start = options.cwd ?? Deno.cwd();
  let dir: string;
  try {
    dir = Deno.realPathSync(start);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw notAWorktree(start, error);
  }
  // The admin entries are taken before git lists the worktrees, so that a
  // worktree added after the listing shows up as a difference under the lock
  // (see currentListing).
  const near = nearestGitDirs(dir);
  const entries = near === undefined ? undefined : adminEntries(near.commonDir);
  const worktrees = await listWorktrees({ cwd: dir, git });
  const current = findContaining(worktrees, dir, (w) => w.path) ??
    findContaining(await realPaths(worktrees), dir, (w) => w.real)?.worktree ??
    mainNamedByGitDir(worktrees, near);
  if (current === undefined) throw notAWorktree(dir);
  const root = Deno.realPathSync(current.path);
  // Git's own directory sits inside the main worktree but is not part of it.
  if (/^\.git(\/|$)/.test(relativeInside(root, dir) ?? "")) throw notAWorktree(dir);
  // The `.git` found from `dir` is usually the root's own: no need to read it twice.
  const own = near !== undefined && comparablePath(near.at) === comparablePath(root)
    ? near
    : undefined;
  const repository: Repository = {
    worktrees,
    current,
    root,
    primary: current === worktrees[0],
    commonDir: current.bare ? root : own?.commonDir ?? await findCommonDir(root, git),
  };
  if (own !== undefined && !current.bare) GIT_DIRS.set(repository, own.gitDir);
  if (entries !== undefined && near!.commonDir === repository.commonDir) {
    LISTED_ENTRIES.set(repository, entries);
  }
  return repository;
}

/**
 * The main worktree when git names it by its git directory, so that no listed
 * worktree contains `dir`: a worktree made with `git init --separate-git-dir`,
 * or the folder whose `.git` file points to a bare repository beside it
 * (`gitdir: ./.bare`). The nearest `.git` above `dir`, found as git finds it,
 * leads to the main entry's directory; the main entry then takes the folder
 * holding that `.git` as its path, while a bare one stays the bare repository.
 */
function mainNamedByGitDir(
  worktrees: Worktree[],
  found: ReturnType<typeof nearestGitDirs>,
): Worktree | undefined {
  const main = worktrees[0];
  if (main === undefined || main.prunable) return undefined;
  // A linked worktree's `.git` leads to its admin entry, never straight to
  // the common directory; one moved away from its listed path is not the
  // main worktree.
  if (
    found === undefined || found.gitDir !== found.commonDir ||
    comparablePath(realPathOr(found.commonDir)) !== comparablePath(realPathOr(main.path))
  ) {
    return undefined;
  }
  if (!main.bare) main.path = found.at;
  return main;
}

/**
 * The nearest `.git` at or above `dir`, found as git finds it, with the git
 * directory and common directory it leads to; `undefined` when there is none
 * or it cannot be read.
 */
function nearestGitDirs(
  dir: string,
): { at: string; gitDir: string; commonDir: string } | undefined {
  for (let candidate = dir;;) {
    try {
      return { at: candidate, ...gitDirsOf(candidate) };
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      if (!(error instanceof Deno.errors.NotFound)) return undefined;
    }
    const parent = candidate.replace(/[\\/][^\\/]*$/, "");
    if (parent === candidate || parent === "") return undefined;
    candidate = parent;
  }
}

/**
 * The admin entries (`<common dir>/worktrees/*`) that existed just before a
 * repository's worktrees were listed. Git adds an entry for every new linked
 * worktree and removes it with the worktree, so the same entries under the
 * lock mean no worktree was added or removed since the listing.
 */
const LISTED_ENTRIES = new WeakMap<Repository, string>();

/** The git directory of an opened worktree, when it was read while opening it. */
const GIT_DIRS = new WeakMap<Repository, string>();

/** The names of the admin entries, sorted; `undefined` when they cannot be read. */
function adminEntries(commonDir: string): string | undefined {
  try {
    const names: string[] = [];
    for (const entry of Deno.readDirSync(joinPath(commonDir, "worktrees"))) names.push(entry.name);
    return names.sort().join("\0");
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return error instanceof Deno.errors.NotFound ? "" : undefined;
  }
}

/**
 * The repository as it is now, for a caller holding the lock. The listing
 * taken before the lock is kept when no worktree has been added or removed
 * since (one directory read); otherwise git lists the worktrees again. A
 * worktree created while an allocation waited for the lock is then scanned
 * like any other.
 */
async function currentListing(repository: Repository, git: GitRunner): Promise<Repository> {
  const listed = LISTED_ENTRIES.get(repository);
  if (listed !== undefined && listed === adminEntries(repository.commonDir)) return repository;
  return await relist(repository, git);
}

/** Lists the worktrees again, from the same worktree (or bare repository). */
async function relist(repository: Repository, git: GitRunner): Promise<Repository> {
  return await openRepositoryOrBare({ cwd: repository.root, git });
}

/** What to say in a bare repository to a command that needs a worktree: where they are. */
function inBareRepository(repository: Repository): WorktreePortsError {
  const linked = repository.worktrees.filter((worktree) => !worktree.bare);
  const names = linked.slice(0, 5).map((worktree) => `"${worktree.path}"`).join(", ") +
    (linked.length > 5 ? ` and ${linked.length - 5} more` : "");
  return new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${repository.root}" is a bare repository, which has no files and so no ports of its own ` +
      (linked.length === 0
        ? `(add a worktree with "git worktree add" and run this there)`
        : `(run this in one of its worktrees: ${names})`),
  );
}

/** The entry whose path is the longest one containing `dir`: worktrees may nest. */
function findContaining<T>(
  entries: readonly T[],
  dir: string,
  pathOf: (entry: T) => string | undefined,
): T | undefined {
  let best: T | undefined;
  let bestLength = -1;
  const target = comparablePath(dir);
  for (const entry of entries) {
    const path = pathOf(entry);
    if (path === undefined) continue;
    const candidate = comparablePath(path).replace(/\/+$/, "");
    if (
      (target === candidate || target.startsWith(candidate + "/")) &&
      candidate.length > bestLength
    ) {
      best = entry;
      bestLength = candidate.length;
    }
  }
  return best;
}

async function realPaths(
  worktrees: readonly Worktree[],
): Promise<{ worktree: Worktree; real?: string }[]> {
  return await Promise.all(worktrees.map(async (worktree) => {
    try {
      return { worktree, real: await Deno.realPath(worktree.path) };
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      return { worktree };
    }
  }));
}

/**
 * Follows `.git` the way git does (a directory, or a file saying `gitdir:`,
 * then the `commondir` file of a linked worktree) so that finding the lock
 * costs no second git process. Falls back to asking git.
 */
async function findCommonDir(root: string, git: GitRunner): Promise<string> {
  try {
    return gitDirsOf(root).commonDir;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const output = await git.run(["rev-parse", "--git-common-dir"], root);
    return resolvePath(root, output.replace(/\r?\n$/, ""));
  }
}

/**
 * The git directory of the worktree at `root` and the repository's common
 * directory, found by reading `.git` and `commondir` as git does.
 *
 * @throws {Deno.errors.NotFound} When `root` has no `.git`.
 */
function gitDirsOf(root: string): { gitDir: string; commonDir: string } {
  const dotGit = joinPath(root, ".git");
  let gitDir = dotGit;
  if (Deno.statSync(dotGit).isFile) {
    const text = readRegularTextFile(dotGit);
    if (!text.startsWith("gitdir: ")) throw new SyntaxError(`Unexpected "${dotGit}"`);
    gitDir = resolvePath(root, text.slice("gitdir: ".length).replace(/\r?\n$/, ""));
  }
  try {
    const common = readRegularTextFile(joinPath(gitDir, "commondir"));
    return { gitDir, commonDir: resolvePath(gitDir, common.replace(/\r?\n$/, "")) };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { gitDir, commonDir: gitDir };
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Reservations
// ---------------------------------------------------------------------------

/** The `worktree_ports` metadata that this tool writes into a port file. */
export interface PortFileMeta {
  /** Format version. */
  version: number;
  /** The slot the bundle belongs to. */
  slot: number;
  /** Real path of the worktree the file was written for. */
  worktree: string;
  /** When the slot was first given to that worktree (ISO 8601). */
  allocated_at: string;
}

/** What {@linkcode readPortFile} found at a path. */
export type PortFileRead =
  | {
    /** There is no file. */
    state: "missing";
  }
  | {
    /** The file exists but cannot be used. */
    state: "unreadable";
    /** Why, e.g. "not valid JSON" or "it is a FIFO (named pipe), not a file". */
    reason: string;
    /** It is no regular file at all: a directory, FIFO, socket or device. */
    irregular?: boolean;
    /** The ports recovered from its text: every `"key": integer` pair that is a port. */
    ports: number[];
  }
  | {
    /** The file was read. */
    state: "read";
    /** Its top-level values. */
    data: Record<string, unknown>;
    /** The ports it reserves, per {@linkcode reservedPortsOf}. */
    ports: number[];
    /** Its metadata, when this tool (or a compatible one) wrote it. */
    meta?: PortFileMeta;
    /** Each top-level number that is not a port, e.g. `"web" is too large to be a number`. */
    invalid?: string[];
  };

/**
 * Reads one port file, whatever tool wrote it.
 *
 * @param path The file to read.
 * @returns Whether it is missing, unreadable (with the reason), or its values and reserved ports.
 * @throws {Deno.errors.NotCapable} When read permission is missing: that is never "unreadable".
 *
 * @example Usage
 * ```ts ignore
 * import { readPortFile } from "@org/worktree-ports";
 *
 * const file = readPortFile("/path/to/worktree/.worktree-ports.json");
 * if (file.state === "read") console.log(file.ports);
 * ```
 */
export function readPortFile(path: string): PortFileRead {
  let text: string;
  try {
    text = readRegularTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { state: "missing" };
    // Deno opens the kernel's files (/proc) only with --allow-all: no flag
    // the tool asks for helps, and no port file lives there.
    if (error instanceof Deno.errors.NotCapable && !/requires all access/i.test(error.message)) {
      throw error;
    }
    if (error instanceof Deno.errors.NotCapable) {
      return {
        state: "unreadable",
        reason: "a special file of the system, not a port file",
        ports: [],
        irregular: true,
      };
    }
    const irregular = error instanceof FileProblem && error.irregular;
    return { state: "unreadable", reason: fileProblemOf(error), ports: [], irregular };
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return { state: "unreadable", reason: "not valid JSON", ports: recoverPorts(text) };
  }
  if (!isPlainObject(data)) {
    return { state: "unreadable", reason: "not a JSON object", ports: recoverPorts(text) };
  }
  if (nestingExceeds(text, data, MAX_NESTING)) {
    return {
      state: "unreadable",
      reason: `nested more than ${MAX_NESTING} levels deep`,
      ports: recoverPorts(text),
    };
  }
  const record = data as Record<string, unknown>;
  const notPorts = Object.entries(record).filter(([, value]) =>
    typeof value === "number" && !isPort(value)
  ).map(([key, value]) => `${quoteKey(key)} is ${describeNumber(value as number)}`);
  return {
    state: "read",
    data: record,
    ports: reservedPortsOf(record),
    meta: metaOf(record[META_KEY]),
    ...(notPorts.length > 0 ? { invalid: notPorts } : {}),
  };
}

/**
 * The ports named in text that is not valid JSON, read liberally: every
 * `"key": integer` pair with an integer from 1 to 65535, except the
 * metadata's `slot` and `version`. A damaged file still holds its worktree's
 * ports.
 */
function recoverPorts(text: string): number[] {
  const ports = new Set<number>();
  const pairs = text.matchAll(/"((?:[^"\\\n]|\\.)*)"\s*:\s*(\d{1,5})(?![\d.eE])/g);
  for (const [, key, digits] of pairs) {
    const port = Number(digits);
    // The metadata's own numbers are not ports.
    if (isPort(port) && key !== "slot" && key !== "version") ports.add(port);
  }
  return [...ports];
}

/**
 * Whether a parsed JSON value nests deeper than `limit`, found without
 * recursion. Text with no more brackets than that cannot, and a port file
 * has a handful, so the value is walked only when the text has many.
 */
function nestingExceeds(text: string, value: unknown, limit: number): boolean {
  if (text.replace(/[^[{]+/g, "").length <= limit) return false;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (typeof current !== "object" || current === null) continue;
    if (depth > limit) return true;
    for (const child of Object.values(current)) stack.push([child, depth + 1]);
  }
  return false;
}

/** A number for a message: JSON turns `1e400` into `Infinity`, which is too large. */
function describeNumber(value: number): string {
  if (!Number.isFinite(value)) return "too large to be a number";
  return Number.isInteger(value)
    ? `${value}, not a port (1 to ${MAX_PORT})`
    : `${value}, not a port`;
}

function metaOf(value: unknown): PortFileMeta | undefined {
  if (!isPlainObject(value)) return undefined;
  const meta = value as Record<string, unknown>;
  if (!Number.isInteger(meta.slot) || typeof meta.worktree !== "string") {
    return undefined;
  }
  return {
    version: Number.isInteger(meta.version) ? meta.version as number : PORT_FILE_VERSION,
    slot: meta.slot as number,
    worktree: meta.worktree,
    allocated_at: typeof meta.allocated_at === "string" ? meta.allocated_at : "",
  };
}

/**
 * The ports a port file reserves, read liberally so that files written by
 * older tools count: every top-level integer from 1 to 65535, and the explicit
 * port of every top-level string that parses as a URL.
 *
 * @param data A parsed port file.
 * @returns The reserved ports, without duplicates, in file order.
 *
 * @example Usage
 * ```ts
 * import { reservedPortsOf } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const ports = reservedPortsOf({
 *   cloud_port: 8100,
 *   cloud_url: "http://127.0.0.1:8101",
 *   name: "not a port",
 * });
 * assert.deepEqual(ports, [8100, 8101]);
 * ```
 */
export function reservedPortsOf(data: Record<string, unknown>): number[] {
  const ports = new Set<number>();
  for (const value of Object.values(data)) {
    if (Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_PORT) {
      ports.add(value as number);
    } else if (typeof value === "string" && value.includes(":")) {
      const port = URL.parse(value)?.port;
      if (port) ports.add(Number(port));
    }
  }
  return [...ports];
}

/** The ports that other worktrees' files reserve. */
export interface ReservedPorts {
  /** Each reserved port and the file that reserves it. */
  holders: Map<number, string>;
  /** One line for each file that exists but could not be read. */
  warnings: string[];
}

/**
 * Reads the ports reserved by a set of port files. Missing files reserve
 * nothing; unreadable ones are skipped with a warning, never an error.
 *
 * @param paths The port files to read.
 * @returns Every reserved port with a file that holds it, and the warnings.
 *
 * @example Usage
 * ```ts ignore
 * import { readReservedPorts } from "@org/worktree-ports";
 *
 * const reserved = readReservedPorts(["/repo-wt1/.worktree-ports.json"]);
 * console.log(reserved.holders.has(3100));
 * ```
 */
export function readReservedPorts(paths: readonly string[]): ReservedPorts {
  const holders = new Map<number, string>();
  const warnings: string[] = [];
  for (const path of paths) {
    const ports = reservedPortsOfPath(path, readPortFile(path), warnings);
    for (const port of ports) {
      if (!holders.has(port)) holders.set(port, path);
    }
  }
  return { holders, warnings };
}

/**
 * The ports another worktree's file reserves. A damaged file keeps the ports
 * its text still names; one that cannot be read at all reserves what
 * `fallback` knows of it (the copy kept in git's directory), and is named in
 * a warning either way, with the fix.
 */
function reservedPortsOfPath(
  path: string,
  file: PortFileRead,
  warnings: string[],
  fallback?: () => PortFileRead,
): number[] {
  if (file.state === "read") return file.ports;
  if (file.state === "missing") return [];
  let ports = file.ports;
  let source = ports.length > 0 ? `reserving the ports its text names (${ports.join(", ")})` : "";
  if (ports.length === 0) {
    const kept = fallback?.();
    if (kept?.state === "read" && kept.ports.length > 0) {
      ports = kept.ports;
      source = `reserving the ports it held when last written (${ports.join(", ")})`;
    }
  }
  const fix = file.reason === "permission denied"
    ? `make it readable ("chmod u+r ${path}")`
    : `run "worktree-ports allocate" in its worktree to rewrite it`;
  warnings.push(
    `Port file "${path}" is unreadable (${file.reason}); ` +
      `${source || "its ports are not reserved"}; to fix, ${fix}`,
  );
  return ports;
}

// ---------------------------------------------------------------------------
// Ports a browser refuses
// ---------------------------------------------------------------------------

/**
 * The ports browsers refuse to connect to (`ERR_UNSAFE_PORT` in Chrome,
 * "This address is restricted" in Firefox): the "bad ports" of the Fetch
 * standard, https://fetch.spec.whatwg.org/#port-blocking. A web server on one
 * of them cannot be reached from a browser, so no slot whose bundle holds one
 * is handed out to a linked worktree.
 *
 * @example Usage
 * ```ts
 * import { BROWSER_BLOCKED_PORTS } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(BROWSER_BLOCKED_PORTS.has(6000), true);
 * assert.equal(BROWSER_BLOCKED_PORTS.has(3000), false);
 * ```
 */
export const BROWSER_BLOCKED_PORTS: ReadonlySet<number> = new Set(
  // deno-fmt-ignore
  [
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102,
    103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465,
    512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993,
    995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668,
    6669, 6679, 6697, 10080,
  ],
);

/** The ports of a slot that browsers refuse, in config order. */
function blockedPortsOf(config: Pick<PortsConfig, "ports" | "stride">, slot: number): number[] {
  return Object.values(portsForSlot(config, slot)).filter((port) =>
    BROWSER_BLOCKED_PORTS.has(port)
  );
}

// ---------------------------------------------------------------------------
// The ephemeral range
// ---------------------------------------------------------------------------

/** An inclusive range of ports, and where it was found. */
export interface PortRange {
  /** The lowest port of the range. */
  low: number;
  /** The highest port of the range. */
  high: number;
  /** Where the range came from, for messages: the file read, or whose default it is. */
  source: string;
}

/** Where Linux keeps the range it takes outgoing connections' local ports from. */
const LINUX_EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range";

/**
 * The operating system's ephemeral port range, from which outgoing
 * connections take their local port: a server on a port inside it can fail
 * with "address in use" at any moment. On Linux it is read from
 * `/proc/sys/net/ipv4/ip_local_port_range`; when that cannot be read (Deno
 * opens `/proc` only with `--allow-all`) it is Linux's default, 32768-60999,
 * and `source` says why. Elsewhere it is the platform's documented default,
 * 49152-65535 (macOS, Windows, and IANA's dynamic ports).
 *
 * @returns The range and where it came from.
 *
 * @example Usage
 * ```ts ignore
 * import { ephemeralPortRange } from "@org/worktree-ports";
 *
 * const { low, high, source } = ephemeralPortRange();
 * console.log(`${low}-${high} (${source})`);
 * ```
 */
export function ephemeralPortRange(): PortRange {
  if (Deno.build.os !== "linux" && Deno.build.os !== "android") {
    const platform = Deno.build.os === "darwin"
      ? "macOS"
      : Deno.build.os === "windows"
      ? "Windows"
      : "IANA";
    return { low: 49152, high: 65535, source: `${platform}'s default` };
  }
  let text: string;
  try {
    text = Deno.readTextFileSync(LINUX_EPHEMERAL_RANGE_FILE);
  } catch (error) {
    // Deno opens files under /proc only with --allow-all, whatever
    // --allow-read grants; asking for that would be far more than a warning
    // is worth, so the range is Linux's default and the warning says why.
    const why = error instanceof Deno.errors.NotCapable
      ? `Deno reads "${LINUX_EPHEMERAL_RANGE_FILE}" only with --allow-all`
      : `"${LINUX_EPHEMERAL_RANGE_FILE}" cannot be read: ${(error as Error).message}`;
    return { low: 32768, high: 60999, source: `Linux's default; ${why}` };
  }
  const [low, high] = text.trim().split(/\s+/).map(Number);
  if (!isPort(low) || !isPort(high) || low > high) {
    return {
      low: 32768,
      high: 60999,
      source: `Linux's default; "${LINUX_EPHEMERAL_RANGE_FILE}" holds "${text.trim()}"`,
    };
  }
  return { low, high, source: `"${LINUX_EPHEMERAL_RANGE_FILE}"` };
}

// ---------------------------------------------------------------------------
// Config warnings
// ---------------------------------------------------------------------------

/** Options for {@linkcode configWarnings}. */
export interface ConfigWarningsOptions {
  /**
   * The ephemeral port range to warn about.
   *
   * @default {ephemeralPortRange()}
   */
  ephemeralRange?: PortRange;
}

/**
 * Problems of a config that do not stop an allocation, one line each: slot 0,
 * which the main worktree always gets, holding a port browsers refuse; and
 * ports of any slot inside the operating system's ephemeral range, where an
 * outgoing connection can take them at any moment.
 *
 * @param config The config to look at.
 * @param options The ephemeral range, read from the system by default.
 * @returns The warnings; none for a config without such problems.
 *
 * @example Usage
 * ```ts
 * import { configWarnings, parseConfig } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { x11: 6000 } });
 * const ephemeralRange = { low: 49152, high: 65535, source: "a test" };
 * const [warning] = configWarnings(config, { ephemeralRange });
 * assert.match(warning, /holds 6000 \("x11"\), a port browsers refuse/);
 * ```
 */
export function configWarnings(
  config: PortsConfig,
  options: ConfigWarningsOptions = {},
): string[] {
  const warnings: string[] = [];
  const refused = Object.entries(config.ports).filter(([, port]) =>
    BROWSER_BLOCKED_PORTS.has(port)
  );
  if (refused.length > 0) {
    warnings.push(
      `Slot 0 of this config, the main worktree's, holds ${
        refused.map(([key, port]) => `${port} ("${key}")`).join(", ")
      }, a port browsers refuse to connect to (a web server there cannot be reached from a browser; change the base port)`,
    );
  }
  const range = options.ephemeralRange ?? ephemeralPortRange();
  const inside: string[] = [];
  for (const [key, base] of Object.entries(config.ports)) {
    const first = Math.max(0, Math.ceil((range.low - base) / config.stride));
    const last = Math.min(config.slots, Math.floor((range.high - base) / config.stride));
    if (first > last) continue;
    const from = base + first * config.stride;
    const to = base + last * config.stride;
    inside.push(
      first === last
        ? `"${key}" ${from} (slot ${first})`
        : `"${key}" ${from} to ${to} (slots ${first} to ${last})`,
    );
  }
  if (inside.length > 0) {
    const outside = [
      range.low > 1 ? `below ${range.low}` : "",
      range.high < MAX_PORT ? `above ${range.high}` : "",
    ].filter(Boolean).join(" or ");
    warnings.push(
      `Ports of this config lie in the ephemeral range ${range.low}-${range.high} ` +
        `(from ${range.source}): ${inside.join(", ")}. The operating system gives these ports ` +
        `to outgoing connections, so one can be taken at any moment and a server fails with ` +
        `"address in use"${outside ? ` (choose base ports ${outside})` : ""}`,
    );
  }
  return warnings;
}

// ---------------------------------------------------------------------------
// Probing
// ---------------------------------------------------------------------------

/**
 * What a probe found at a port: `free` to bind; `in-use`, a process listens
 * on it; `permission-denied`, the operating system refuses to let this user
 * bind it (a privileged port, or one of Windows' reserved port ranges).
 */
export type PortStatus = "free" | "in-use" | "permission-denied";

/** Tells whether a port is free. Injected so that tests can replace it. */
export interface PortProbe {
  /**
   * Checks one port.
   *
   * @returns `true` when no process listens on it and it can be bound.
   */
  isFree(port: number): boolean | Promise<boolean>;
  /**
   * Checks one port and says why it is not free, for the message when no
   * slot is left. Optional: without it, a port that `isFree` calls not free
   * counts as in use.
   *
   * @returns What the probe found.
   */
  status?(port: number): PortStatus | Promise<PortStatus>;
}

/** Options for {@linkcode isPortFree}. */
export interface IsPortFreeOptions {
  /**
   * The addresses to bind. An address the host lacks does not count.
   *
   * @default {PROBE_HOSTNAMES}
   */
  hostnames?: readonly string[];
}

/**
 * Tells whether a TCP port is free by binding it on each address and
 * releasing it at once. A port the operating system refuses to bind is not
 * free either.
 *
 * @param port The port to probe.
 * @param options The addresses to bind.
 * @returns `false` when any address has the port in use or refuses it.
 * @throws {Deno.errors.NotCapable} When net permission for an address is missing.
 *
 * @example Usage
 * ```ts ignore
 * import { isPortFree } from "@org/worktree-ports";
 *
 * console.log(isPortFree(3000));
 * ```
 */
export function isPortFree(port: number, options: IsPortFreeOptions = {}): boolean {
  return portStatus(port, options) === "free";
}

/**
 * Probes a TCP port like {@linkcode isPortFree} and says why it is not free:
 * in use by a process, or refused by the operating system (binding a port
 * below 1024 needs privileges on most systems, and Windows reserves ranges
 * of ports for Hyper-V and others).
 *
 * @param port The port to probe.
 * @param options The addresses to bind.
 * @returns What binding the port found.
 * @throws {Deno.errors.NotCapable} When net permission for an address is
 * missing: a missing permission is never taken for a refused port.
 *
 * @example Usage
 * ```ts ignore
 * import { portStatus } from "@org/worktree-ports";
 *
 * console.log(portStatus(80)); // "permission-denied" for a normal user on Linux
 * ```
 */
export function portStatus(port: number, options: IsPortFreeOptions = {}): PortStatus {
  for (const hostname of options.hostnames ?? PROBE_HOSTNAMES) {
    try {
      Deno.listen({ hostname, port }).close();
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      if (error instanceof Deno.errors.AddrInUse) return "in-use";
      if (error instanceof Deno.errors.PermissionDenied) return "permission-denied";
      // An address this host lacks (no IPv6 loopback, or no IPv6 at all) is
      // not applicable rather than busy.
      if (
        error instanceof Deno.errors.AddrNotAvailable ||
        (error as { code?: string }).code === "EAFNOSUPPORT"
      ) continue;
      throw error;
    }
  }
  return "free";
}

/** The real {@linkcode PortProbe}: {@linkcode isPortFree} and {@linkcode portStatus} with `Deno.listen`. */
export const denoProbe: PortProbe = {
  isFree(port: number): boolean {
    return isPortFree(port);
  },
  status(port: number): PortStatus {
    return portStatus(port);
  },
};

/** Asks a probe what it found at a port, from `isFree` when it cannot say why. */
async function probePort(probe: PortProbe, port: number): Promise<PortStatus> {
  if (probe.status) return await probe.status(port);
  return (await probe.isFree(port)) ? "free" : "in-use";
}

// ---------------------------------------------------------------------------
// The lock
// ---------------------------------------------------------------------------

/** Options for {@linkcode lockRepository}. */
export interface LockOptions {
  /**
   * How long to wait for another holder before giving up, in milliseconds.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  timeoutMs?: number;
  /**
   * Called once, with the lock's path, when another process holds the lock
   * and waiting begins.
   *
   * @default {undefined}
   */
  onWait?: (path: string) => void;
}

/** A held repository lock. Released by `release()` or at the end of a `using` block. */
export interface RepositoryLock extends Disposable {
  /** The lock file. */
  readonly path: string;
  /** Releases the lock; calling it again does nothing. */
  release(): void;
}

/**
 * Takes the exclusive lock shared by every worktree of a repository: a kernel
 * file lock on `worktree-ports.lock` in the common git directory, so a holder
 * that dies releases it and no stale lock is ever left behind.
 *
 * @param commonDir The repository's common git directory.
 * @param options How long to wait, and a callback for when waiting begins.
 * @returns The held lock.
 * @throws {WorktreePortsError} With code `LOCK_TIMEOUT` when it stays held past the timeout,
 * `LOCK_FAILED` when the lock file cannot be opened (a directory in its place, say).
 * @throws {RangeError} When the timeout is negative or not a number.
 *
 * @example Usage
 * ```ts ignore
 * import { lockRepository, openRepository } from "@org/worktree-ports";
 *
 * const { commonDir } = await openRepository();
 * using lock = await lockRepository(commonDir, { timeoutMs: 2000 });
 * console.log("holding", lock.path);
 * ```
 */
export async function lockRepository(
  commonDir: string,
  options: LockOptions = {},
): Promise<RepositoryLock> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  if (!(timeoutMs >= 0)) {
    throw new RangeError(`Lock timeout must be 0 or more milliseconds, got ${timeoutMs}`);
  }
  const path = joinPath(commonDir, LOCK_FILE_NAME);
  const file = openLockFile(path);
  try {
    if (!file.tryLockSync(true)) {
      options.onWait?.(path);
      const deadline = performance.now() + timeoutMs;
      let pause = 1;
      // Polling keeps the wait cancellable; the holders' critical section is
      // a few milliseconds, so short pauses hand the lock over quickly.
      while (!file.tryLockSync(true)) {
        const left = deadline - performance.now();
        if (left <= 0) {
          throw new WorktreePortsError(
            "LOCK_TIMEOUT",
            `Timed out after ${timeoutMs / 1000} s waiting for the lock "${path}" ` +
              `(another worktree-ports process holds it; it is released when that process exits)`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
        pause = Math.min(pause * 2, 16);
      }
    }
  } catch (error) {
    file.close();
    throw error;
  }
  let held = true;
  const release = () => {
    if (held) {
      held = false;
      file.close();
    }
  };
  return { path, release, [Symbol.dispose]: release };
}

/**
 * Opens (creating it if need be) the lock file. What stands in its place is
 * named in one line with the fix, rather than as the operating system's
 * error: a directory, a symbolic link loop, a file this user may not open.
 */
function openLockFile(path: string): Deno.FsFile {
  try {
    return Deno.openSync(path, { read: true, write: true, create: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const recreate = "worktree-ports creates the lock again as an empty file";
    const reason = error instanceof Deno.errors.IsADirectory
      ? `it is a directory (remove it; ${recreate})`
      : error instanceof Deno.errors.FilesystemLoop
      ? `it is a symbolic link loop (remove the link; ${recreate})`
      : error instanceof Deno.errors.NotFound && isSymlink(path)
      ? `it is a symbolic link to a folder that does not exist (remove the link; ${recreate})`
      : error instanceof Deno.errors.PermissionDenied
      ? `permission denied (make it, and the folder "${
        parentOf(path)
      }", readable and writable by this user)`
      : `${osErrorText(error)} (remove or repair it; ${recreate})`;
    throw new WorktreePortsError("LOCK_FAILED", `Cannot open the lock "${path}": ${reason}`, {
      cause: error,
    });
  }
}

/** An operating system error's own words, without the code and the call Deno appends. */
function osErrorText(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/ \(os error \d+\)(: \w+ '.*')?$/s, "");
}

// ---------------------------------------------------------------------------
// The machine-wide index
// ---------------------------------------------------------------------------

// Lock order, everywhere: the repository lock first, then the machine lock
// in the index folder, never the other way round (repairing every repository
// takes all their locks, in order of path, before the machine lock). A process
// holding the machine lock never waits for a repository lock, so no two
// processes can wait on each other. Both are kernel locks: a holder that dies
// releases both.

/** Name of the machine-wide index file in the index folder. */
export const INDEX_FILE_NAME = "index.json";
/** Version of the index file format. */
export const INDEX_VERSION = 1;
/**
 * The environment variables the default index location is read from, and
 * the only ones this package reads.
 */
export const INDEX_ENV_VARIABLES: readonly string[] = [
  "WORKTREE_PORTS_HOME",
  "XDG_STATE_HOME",
  "HOME",
  "LOCALAPPDATA",
];
/** A port file is a few hundred bytes; an index entry never makes us read a large file. */
const MAX_INDEXED_FILE_BYTES = 1 << 20;

/**
 * How far an allocation looks for ports held by others: `machine`, every
 * port file recorded in the machine-wide index as well as the repository's
 * own worktrees; `repository`, only the repository's own worktrees.
 */
export type Scope = "machine" | "repository";

/**
 * Where the machine-wide index lives. Injected like {@linkcode GitRunner}
 * and {@linkcode PortProbe}, so that library users and tests can keep it in
 * a folder of their own.
 */
export interface MachineIndex {
  /**
   * The folder holding the index file and the machine lock.
   *
   * @returns The folder, or `undefined` when there is no home to keep it in.
   */
  dir(): string | undefined;
}

/**
 * Where the index folder goes, given how to read environment variables:
 * `$WORKTREE_PORTS_HOME` if set, else `$XDG_STATE_HOME/worktree-ports`, else
 * `~/.local/state/worktree-ports` (`%LOCALAPPDATA%\worktree-ports` on Windows).
 *
 * @param getEnv Reads one variable; `undefined` when it is not set.
 * @param os The operating system, as in `Deno.build.os`.
 * @returns The folder, or `undefined` when none of the variables says where home is.
 *
 * @example Usage
 * ```ts
 * import { machineIndexDir } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const env: Record<string, string> = { HOME: "/home/ada" };
 * assert.equal(
 *   machineIndexDir((name) => env[name], "linux"),
 *   "/home/ada/.local/state/worktree-ports",
 * );
 * ```
 */
export function machineIndexDir(
  getEnv: (name: string) => string | undefined,
  os: typeof Deno.build.os = Deno.build.os,
): string | undefined {
  const home = getEnv("WORKTREE_PORTS_HOME");
  if (home) return home;
  if (os === "windows") {
    const local = getEnv("LOCALAPPDATA");
    return local ? `${local.replace(/[\\/]+$/, "")}\\worktree-ports` : undefined;
  }
  // The XDG spec ignores a relative XDG_STATE_HOME.
  const state = getEnv("XDG_STATE_HOME");
  if (state && state.startsWith("/")) return joinPath(state, "worktree-ports");
  const user = getEnv("HOME");
  return user ? joinPath(user, ".local/state/worktree-ports") : undefined;
}

/**
 * The real {@linkcode MachineIndex}: {@linkcode machineIndexDir} with the
 * process's environment. Reading it needs `--allow-env` for the variables in
 * {@linkcode INDEX_ENV_VARIABLES}.
 */
export const denoMachineIndex: MachineIndex = {
  dir(): string | undefined {
    return machineIndexDir((name) => Deno.env.get(name), Deno.build.os);
  },
};

/**
 * A {@linkcode MachineIndex} kept in a given folder, for tests and for tools
 * that keep their own state.
 *
 * @param dir The folder; it is created when first needed.
 * @returns The index.
 *
 * @example Usage
 * ```ts
 * import { machineIndexAt } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(machineIndexAt("/tmp/ports-index").dir(), "/tmp/ports-index");
 * ```
 */
export function machineIndexAt(dir: string): MachineIndex {
  return { dir: () => dir };
}

/** One port file recorded in the machine-wide index: a pointer, never the ports themselves. */
export interface IndexEntry {
  /** Absolute path of the port file. */
  path: string;
  /** Real path of its repository's common git directory. */
  repository: string;
  /** Real path of its worktree's root. */
  worktree: string;
}

/** What {@linkcode readMachineIndex} found. */
export interface IndexRead {
  /** The index file. */
  path: string;
  /** Every well-formed entry. */
  entries: IndexEntry[];
  /** The file's entries exactly as stored, well-formed or not, so that rewriting loses none. */
  raw: unknown[];
}

/**
 * Reads the machine-wide index in a folder. A missing file is an empty index.
 *
 * @param dir The index folder.
 * @returns The entries, and the file's entries as stored.
 * @throws {SyntaxError} When the file is not an index (not JSON, or not of this shape).
 * @throws {Error} When the file exists but cannot be read.
 *
 * @example Usage
 * ```ts ignore
 * import { denoMachineIndex, readMachineIndex } from "@org/worktree-ports";
 *
 * const dir = denoMachineIndex.dir();
 * if (dir) for (const entry of readMachineIndex(dir).entries) console.log(entry.path);
 * ```
 */
export function readMachineIndex(dir: string): IndexRead {
  const path = joinPath(dir, INDEX_FILE_NAME);
  let text: string;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile) throw new Error("it is not a regular file");
    if (info.size > 64 * MAX_INDEXED_FILE_BYTES) {
      throw new Error(`it is too large (${info.size} bytes)`);
    }
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { path, entries: [], raw: [] };
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot read the index "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`The index "${path}" is not valid JSON`, { cause: error });
  }
  const files = isPlainObject(value) ? (value as Record<string, unknown>).files : undefined;
  if (!Array.isArray(files)) {
    throw new SyntaxError(`The index "${path}" is not an object with a "files" array`);
  }
  const entries: IndexEntry[] = [];
  for (const item of files) {
    const entry = asIndexEntry(item);
    if (entry !== undefined) entries.push(entry);
  }
  return { path, entries, raw: files };
}

/** The index as one operation holds it: under the machine lock, or not in use. */
interface MachineSession extends Disposable {
  /** The index is in use; `false` with repository scope or when it could not be used. */
  active: boolean;
  /** Milliseconds spent waiting for another process to release the machine lock. */
  lockWait: number;
  /** Every port another repository's recorded file reserves, and that file. */
  holders: Map<number, string>;
  /** The index's well-formed entries, as read (entries whose file is gone dropped). */
  entries: IndexEntry[];
  /** Problems met, to pass on as warnings. */
  warnings: string[];
  /**
   * Records a port file of the locked repository, or of `repository`;
   * writes the index only if it changed.
   */
  record(path: string, worktree: string, repository?: string): void;
  /** Records port files (path and worktree) of one repository at once, as `record` does. */
  recordAll(files: readonly (readonly [string, string])[], repository?: string): void;
}

/**
 * The port files that the worktrees of another repository have now, found
 * without git: the main worktree beside the common directory, and every
 * linked one through its admin entry's `gitdir`, which git keeps current
 * when a worktree moves. Each file sits where `entry`'s sat in its worktree.
 */
function portFilesOfRepository(commonDir: string, entry: IndexEntry): IndexEntry[] {
  const inside = relativeInside(entry.worktree, entry.path) ?? PORT_FILE_NAME;
  const worktrees: string[] = [];
  if (/[\\/]\.git$/.test(commonDir)) worktrees.push(parentOf(commonDir));
  try {
    for (const admin of Deno.readDirSync(joinPath(commonDir, "worktrees"))) {
      try {
        const gitdir = readRegularTextFile(joinPath(commonDir, `worktrees/${admin.name}/gitdir`));
        worktrees.push(parentOf(gitdir.replace(/\r?\n$/, "")));
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw error;
      }
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  return worktrees.filter((worktree) => worktreeExists(worktree)).map((worktree) => ({
    path: joinPath(worktree, inside),
    repository: commonDir,
    worktree,
  }));
}

/** Options of {@linkcode openMachineIndex}. */
interface MachineSessionOptions {
  scope?: Scope;
  index?: MachineIndex;
  lockOptions?: LockOptions;
  /** Only read: no folder is created, no lock taken, nothing recorded (for inspecting). */
  readOnly?: boolean;
  /** The port file being allocated, which never reserves anything against itself. */
  ownFile?: string;
}

/**
 * Takes the machine lock (the caller holds the repository lock already; see
 * the lock order above) and reads the index: the ports that other
 * repositories' recorded files reserve. Bad state never blocks: an index
 * that cannot be used gives a warning and an inactive session, which is
 * repository scope for this run, and nothing on disk is changed.
 */
async function openMachineIndex(
  commonDir: string | undefined,
  options: MachineSessionOptions,
): Promise<MachineSession> {
  const warnings: string[] = [];
  const inactive = (): MachineSession => ({
    active: false,
    lockWait: 0,
    holders: new Map(),
    entries: [],
    warnings,
    record() {},
    recordAll() {},
    [Symbol.dispose]() {},
  });
  if (options.scope === "repository") return inactive();
  const fallback = options.readOnly
    ? "looking at this repository only this time"
    : "allocating for this repository only this time";
  const dir = (options.index ?? denoMachineIndex).dir();
  if (dir === undefined) {
    warnings.push(
      `No home folder for the machine-wide index (set HOME or WORKTREE_PORTS_HOME); ${fallback}`,
    );
    return inactive();
  }
  // A relative folder would give every directory an index of its own.
  if (!isAbsolutePath(dir)) {
    warnings.push(
      `The machine-wide index folder "${dir}" is not an absolute path (set WORKTREE_PORTS_HOME ` +
        `to one); ${fallback}`,
    );
    return inactive();
  }
  let lock: RepositoryLock | undefined;
  let lockWait = 0;
  try {
    if (!options.readOnly) {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const waitStart = performance.now();
      lock = await lockRepository(dir, options.lockOptions);
      lockWait = performance.now() - waitStart;
    }
  } catch (error) {
    if (
      error instanceof Deno.errors.NotCapable ||
      (error instanceof WorktreePortsError && error.code !== "LOCK_FAILED")
    ) {
      throw error;
    }
    warnings.push(
      `Cannot use the machine-wide index in "${dir}": ${(error as Error).message}; ${fallback}`,
    );
    return inactive();
  }
  let index: IndexRead;
  try {
    index = readMachineIndex(dir);
  } catch (error) {
    lock?.release();
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `${(error as Error).message}; ${fallback} (move the file away to start a new index)`,
    );
    return inactive();
  }
  const repository = commonDir === undefined ? undefined : realPathOr(commonDir);
  const kept: unknown[] = [];
  const entries: IndexEntry[] = [];
  const holders = new Map<number, string>();
  const vanished = new Map<string, IndexEntry>();
  let changed = false;
  for (const item of index.raw) {
    const entry = asIndexEntry(item);
    // This repository's own files are its worktrees', scanned as siblings;
    // they are checked (and dropped when gone) when another repository allocates.
    if (entry === undefined || entry.repository === repository || entry.path === options.ownFile) {
      kept.push(item);
      if (entry !== undefined) entries.push(entry);
      continue;
    }
    // Read the way sibling files are: never opened unless a small regular file.
    const file = readPortFile(entry.path);
    if (file.state === "missing" || (file.state === "unreadable" && file.irregular)) {
      changed = true;
      // Gone from where it was recorded: moved with its worktree, perhaps,
      // while its repository lives on. Its worktrees are looked up below.
      if (file.state === "missing") vanished.set(entry.repository, entry);
      continue;
    }
    kept.push(item);
    entries.push(entry);
    // A worktree git would call prunable reserves nothing: one stat, not a git
    // process per repository, and only for a file outside its worktree (one
    // inside shows by existing that the directory does).
    if (isInside(entry.worktree, entry.path) || worktreeExists(entry.worktree)) {
      for (const port of reservedPortsOfPath(entry.path, file, warnings)) {
        if (!holders.has(port)) holders.set(port, entry.path);
      }
    }
  }
  const recorded = new Set(entries.map((entry) => entry.path));
  for (const [other, entry] of vanished) {
    if (other === repository) continue;
    for (const found of portFilesOfRepository(other, entry)) {
      if (recorded.has(found.path)) continue;
      recorded.add(found.path);
      const file = readPortFile(found.path);
      if (file.state === "missing") continue;
      kept.push(found);
      entries.push(found);
      changed = true;
      for (const port of reservedPortsOfPath(found.path, file, warnings)) {
        if (!holders.has(port)) holders.set(port, found.path);
      }
    }
  }
  const recordAll = (files: readonly (readonly [string, string])[], of = repository) => {
    if (of === undefined || lock === undefined) return;
    const at = new Map<string, number>();
    kept.forEach((item, position) => {
      const path = asIndexEntry(item)?.path;
      if (path !== undefined) at.set(path, position);
    });
    for (const [path, worktree] of files) {
      const entry: IndexEntry = { path, repository: of, worktree };
      const position = at.get(path);
      if (position !== undefined && JSON.stringify(kept[position]) === JSON.stringify(entry)) {
        continue;
      }
      if (position === undefined) kept.push(entry);
      else kept[position] = entry;
      changed = true;
    }
    if (!changed) return;
    const path = files[0]?.[0] ?? index.path;
    try {
      // Through a symbolic link, if the user made index.json one.
      writeFileAtomic(
        realPathOr(index.path),
        JSON.stringify({ version: INDEX_VERSION, files: kept }, null, 2) + "\n",
      );
      changed = false;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      warnings.push(
        `Cannot record "${path}" in the machine-wide index: ${(error as Error).message}`,
      );
    }
  };
  const session: MachineSession = {
    active: true,
    lockWait,
    holders,
    entries,
    warnings,
    record: (path: string, worktree: string, of?: string) => recordAll([[path, worktree]], of),
    recordAll,
    [Symbol.dispose]: () => lock?.release(),
  };
  return session;
}

function asIndexEntry(item: unknown): IndexEntry | undefined {
  if (!isPlainObject(item)) return undefined;
  const { path, repository, worktree } = item as Record<string, unknown>;
  if (typeof path !== "string" || typeof repository !== "string" || typeof worktree !== "string") {
    return undefined;
  }
  // Relative paths would be read against whatever directory we run in.
  if (!isAbsolutePath(path) || !isAbsolutePath(worktree)) return undefined;
  return { path, repository, worktree };
}

/** This repository's reservations and other repositories', as one set for {@linkcode chooseSlot}. */
function withOtherRepositories(
  own: ReadonlyMap<number, string>,
  others: ReadonlyMap<number, string>,
): Pick<ReadonlySet<number>, "has"> {
  if (others.size === 0) return own;
  return { has: (port: number) => own.has(port) || others.has(port) };
}

/**
 * The main worktree keeps slot 0 whatever other repositories hold, so a
 * clash there is reported rather than moved.
 */
function warnAboutMainWorktree(
  allocation: Pick<Allocation, "slot" | "bundle" | "warnings">,
  siblings: ReadonlyMap<number, string>,
  others: ReadonlyMap<number, string>,
): void {
  if (allocation.slot !== 0) return;
  for (const [key, port] of Object.entries(allocation.bundle)) {
    // A linked worktree on a base port: its config (another branch's) differs.
    const sibling = typeof port === "number" ? siblings.get(port) : undefined;
    if (sibling !== undefined) {
      allocation.warnings.push(
        `Port ${port} ("${key}") of this main worktree is also held by "${sibling}"; the main ` +
          `worktree keeps its base ports (run "worktree-ports check --fix" to move the other one)`,
      );
      continue;
    }
    const holder = typeof port === "number" ? others.get(port) : undefined;
    if (holder === undefined) continue;
    allocation.warnings.push(
      `Port ${port} ("${key}") of this main worktree is also held by "${holder}" of another ` +
        `repository; the main worktree keeps its base ports (change the base ports of one ` +
        `repository, or see "worktree-ports check --all")`,
    );
  }
}

/** Marks the ports that other repositories' recorded files hold as conflicts with those worktrees. */
function markOtherRepositories(
  statuses: readonly InspectedStatus[],
  machine: Pick<MachineSession, "holders" | "entries">,
): void {
  if (machine.holders.size === 0) return;
  const entries = new Map(machine.entries.map((entry) => [entry.path, entry]));
  for (const status of statuses) {
    const shared = new Map<string, number[]>();
    for (const port of status.reserved) {
      const holder = machine.holders.get(port);
      if (holder !== undefined) shared.set(holder, [...(shared.get(holder) ?? []), port]);
    }
    for (const [holder, ports] of shared) {
      const entry = entries.get(holder)!;
      status.conflicts.push({ worktree: entry.worktree, ports, repository: entry.repository });
      status.state = "duplicate";
    }
  }
}

/** Adds the conflicts between worktrees of different repositories. */
function addCrossRepositoryConflicts(statuses: readonly InspectedStatus[]): void {
  const holders = new Map<number, number[]>();
  statuses.forEach((status, index) => {
    for (const port of status.reserved) holders.set(port, [...(holders.get(port) ?? []), index]);
  });
  for (const status of statuses) {
    const shared = new Map<number, number[]>();
    for (const port of status.reserved) {
      for (const other of holders.get(port)!) {
        if (statuses[other].repository !== status.repository) {
          shared.set(other, [...(shared.get(other) ?? []), port]);
        }
      }
    }
    for (const [other, ports] of shared) {
      const { path, repository } = statuses[other];
      status.conflicts.push({ worktree: path, ports, repository });
      status.state = "duplicate";
    }
  }
}

/**
 * The repository around `cwd` (if any) and every other repository with a
 * worktree recorded in the index, each opened through one of its worktrees
 * that still exists. Git runs once per repository: this is for `--all`,
 * not for allocating.
 */
async function openIndexedRepositories(
  options: Pick<InspectOptions, "cwd" | "git" | "index" | "onWarning">,
): Promise<{ repositories: Repository[]; here: boolean }> {
  const repositories: Repository[] = [];
  try {
    repositories.push(await openRepository({ cwd: options.cwd, git: options.git }));
  } catch (error) {
    if (!(error instanceof WorktreePortsError && error.code === "NOT_A_WORKTREE")) throw error;
  }
  using machine = await openMachineIndex(undefined, { index: options.index, readOnly: true });
  for (const warning of machine.warnings) options.onWarning?.(warning);
  const here = repositories.length > 0;
  const seen = new Set(repositories.map((repository) => realPathOr(repository.commonDir)));
  const groups = new Map<string, string[]>();
  for (const entry of machine.entries) {
    if (seen.has(entry.repository)) continue;
    groups.set(entry.repository, [...(groups.get(entry.repository) ?? []), entry.worktree]);
  }
  for (const key of [...groups.keys()].sort()) {
    let problem: string | undefined;
    for (const worktree of groups.get(key)!) {
      if (!worktreeExists(worktree)) continue;
      try {
        const repository = await openRepository({ cwd: worktree, git: options.git });
        // Entries may name a repository by a path it had before it moved:
        // opened, it may be one already open, whose lock is already held.
        const real = realPathOr(repository.commonDir);
        if (!seen.has(real)) repositories.push(repository);
        seen.add(real);
        problem = undefined;
        break;
      } catch (error) {
        if (!(error instanceof WorktreePortsError)) throw error;
        problem = error.message;
      }
    }
    if (problem !== undefined) {
      options.onWarning?.(`Skipped the indexed repository "${key}": ${problem}`);
    }
  }
  return { repositories, here };
}

/** Every worktree of every repository given, with the conflicts between them. */
async function inspectAll(
  { repositories, here }: { repositories: readonly Repository[]; here: boolean },
  options: InspectOptions,
): Promise<InspectedStatus[]> {
  const all: InspectedStatus[] = [];
  for (const [index, repository] of repositories.entries()) {
    // The first repository is the one around `cwd`, when there is one; a
    // custom output path belongs to it.
    const isHere = here && index === 0;
    const statuses = await inspectRepository(repository, {
      ...options,
      output: isHere ? options.output : undefined,
      listening: false,
    });
    const key = realPathOr(repository.commonDir);
    for (const status of statuses) {
      all.push({ ...status, current: status.current && isHere, repository: key });
    }
  }
  addCrossRepositoryConflicts(all);
  if (options.listening !== false) {
    for (const status of all) await probeListening(status, options.probe ?? denoProbe);
  }
  return all;
}

function isInside(dir: string, path: string): boolean {
  return relativeInside(dir, path) !== undefined;
}

/** The real path of `path`; `undefined` when it cannot be resolved. */
function realPathOf(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return undefined;
  }
}

/** The real path of `path`, or `path` itself when it cannot be resolved. */
function realPathOr(path: string): string {
  return realPathOf(path) ?? path;
}

// ---------------------------------------------------------------------------
// Choosing a slot
// ---------------------------------------------------------------------------

/** Options for {@linkcode chooseSlot}. */
export interface ChooseSlotOptions {
  /**
   * The slot the worktree holds now, from its own port file.
   *
   * @default {undefined}
   */
  current?: number;
  /**
   * Choose afresh even when the current slot could be kept.
   *
   * @default {false}
   */
  force?: boolean;
  /**
   * The worktree is the main worktree, which always gets slot 0.
   *
   * @default {false}
   */
  primary?: boolean;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
}

/** The slot {@linkcode chooseSlot} picked. */
export interface SlotChoice {
  /** The slot. */
  slot: number;
  /** It is the worktree's current slot, kept without probing. */
  kept: boolean;
}

/**
 * Picks a worktree's slot. The main worktree gets slot 0. A linked worktree
 * keeps its current slot when it is in range and no sibling reserves any of
 * its ports (without probing: its own services may be listening); otherwise
 * it gets the lowest slot from 1 whose ports are all unreserved and free.
 * A slot holding a port browsers refuse ({@linkcode BROWSER_BLOCKED_PORTS})
 * is never handed out or kept.
 *
 * @param config The config that defines the slots.
 * @param reserved The ports that other worktrees reserve.
 * @param options The current slot, `force`, `primary` and the probe.
 * @returns The slot and whether it was kept.
 * @throws {WorktreePortsError} With code `NO_FREE_SLOT` when every slot is reserved or busy.
 *
 * @example Usage
 * ```ts
 * import { chooseSlot, parseConfig } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const config = parseConfig({ ports: { web: 3000 } });
 * const reserved = new Set([3100]);
 * const probe = { isFree: (port: number) => port !== 3200 };
 * const choice = await chooseSlot(config, reserved, { probe });
 * assert.deepEqual(choice, { slot: 3, kept: false });
 * ```
 */
export async function chooseSlot(
  config: PortsConfig,
  reserved: Pick<ReadonlySet<number>, "has">,
  options: ChooseSlotOptions = {},
): Promise<SlotChoice> {
  if (options.primary) return { slot: 0, kept: options.current === 0 };
  const bases = Object.values(config.ports);
  const isReserved = (slot: number) =>
    bases.some((base) => reserved.has(base + slot * config.stride));
  const { current } = options;
  if (
    !options.force && current !== undefined && current >= 1 &&
    current <= config.slots && !isReserved(current) && blockedPortsOf(config, current).length === 0
  ) {
    return { slot: current, kept: true };
  }
  const probe = options.probe ?? denoProbe;
  let busy = 0;
  const blocked = new Set<number>();
  let blockedSlots = 0;
  const denied = new Set<number>();
  let deniedSlots = 0;
  for (let slot = 1; slot <= config.slots; slot++) {
    if (isReserved(slot)) continue;
    const refused = blockedPortsOf(config, slot);
    if (refused.length > 0) {
      for (const port of refused) blocked.add(port);
      blockedSlots++;
      continue;
    }
    const unusable = await firstUnusable(probe, Object.values(portsForSlot(config, slot)));
    if (unusable === undefined) return { slot, kept: false };
    if (unusable.status === "permission-denied") {
      denied.add(unusable.port);
      deniedSlots++;
    } else {
      busy++;
    }
  }
  const reservedSlots = config.slots - busy - blockedSlots - deniedSlots;
  throw new WorktreePortsError(
    "NO_FREE_SLOT",
    `Cannot allocate ports: all ${config.slots} slots are taken ` +
      `(${reservedSlots} reserved by other worktrees, ${busy} in use by other processes` +
      (blockedSlots > 0
        ? `, ${blockedSlots} holding a port browsers refuse: ${listPorts([...blocked])}`
        : "") +
      (deniedSlots > 0
        ? `, ${deniedSlots} refused by the operating system: permission denied binding ${
          listPorts([...denied])
        }, as for a port below 1024 without privileges or in a range Windows reserves`
        : "") +
      `; run "worktree-ports slots" to see each slot and who holds it, or raise "slots")`,
  );
}

/** Ports for a message: the first few, then how many more. */
function listPorts(ports: readonly number[]): string {
  const shown = ports.slice(0, 5).join(", ");
  return ports.length > 5 ? `${shown} and ${ports.length - 5} more` : shown;
}

/** The first port of a slot that cannot be used, and why; none when all are free. */
async function firstUnusable(
  probe: PortProbe,
  ports: readonly number[],
): Promise<{ port: number; status: Exclude<PortStatus, "free"> } | undefined> {
  for (const port of ports) {
    const status = await probePort(probe, port);
    if (status !== "free") return { port, status };
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Writing the file
// ---------------------------------------------------------------------------

/**
 * Writes a file atomically: a temporary file in the same directory, then a
 * rename over the target. Readers see the old file or the new one, never a
 * partial one, and a crash leaves the old file intact.
 *
 * @param path The file to write.
 * @param text The whole content.
 * @throws {Error} Naming the path when it cannot be written; no temporary file is left.
 *
 * @example Usage
 * ```ts ignore
 * import { writeFileAtomic } from "@org/worktree-ports";
 *
 * writeFileAtomic("/tmp/ports.json", '{"port": 3100}\n');
 * ```
 */
export function writeFileAtomic(path: string, text: string): void {
  // Unique per process and call; Web Crypto would cost a cold process milliseconds to load.
  const temp = `${path}.${Deno.pid}-${Math.random().toString(36).slice(2, 10)}.tmp`;
  try {
    Deno.writeTextFileSync(temp, text, { createNew: true });
    Deno.renameSync(temp, path);
  } catch (error) {
    try {
      Deno.removeSync(temp);
    } catch {
      // It was never created.
    }
    if (error instanceof Deno.errors.NotCapable) throw error;
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The text of a port file: the bundle flat at the top level, so existing
 * readers keep finding their keys, then the `worktree_ports` metadata.
 *
 * @param allocation The bundle and its metadata.
 * @returns Pretty-printed JSON ending with a newline.
 *
 * @example Usage
 * ```ts
 * import { formatPortFile } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * const text = formatPortFile({
 *   bundle: { port: 3100 },
 *   slot: 1,
 *   worktree: "/repo-feature",
 *   allocatedAt: "2026-01-01T00:00:00.000Z",
 * });
 * assert.equal(JSON.parse(text).worktree_ports.slot, 1);
 * ```
 */
export function formatPortFile(
  allocation: Pick<Allocation, "bundle" | "slot" | "worktree" | "allocatedAt">,
): string {
  return JSON.stringify(portFileData(allocation), null, 2) + "\n";
}

/** The top-level values of a port file: the bundle, then the metadata. */
function portFileData(
  allocation: Pick<Allocation, "bundle" | "slot" | "worktree" | "allocatedAt">,
): Record<string, unknown> {
  const meta: PortFileMeta = {
    version: PORT_FILE_VERSION,
    slot: allocation.slot,
    worktree: allocation.worktree,
    allocated_at: allocation.allocatedAt,
  };
  return { ...allocation.bundle, [META_KEY]: meta };
}

/** A temporary file of {@linkcode writeFileAtomic} for `name`: `<name>.<pid>-<random>.tmp`. */
function temporaryFilePattern(name: string): RegExp {
  return new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.\\d+-[0-9a-z]+\\.tmp$`);
}

/**
 * Removes what a process killed between writing a temporary file and
 * renaming it left beside `path`. Every write happens under the lock, so a
 * temporary file found by a holder of the lock belongs to no live writer.
 */
function removeStaleTemporaryFiles(path: string): void {
  const dir = parentOf(path);
  const pattern = temporaryFilePattern(path.slice(dir.length + 1));
  let entries: Iterable<Deno.DirEntry>;
  try {
    entries = Deno.readDirSync(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return;
  }
  for (const entry of entries) {
    if (!entry.isFile || !pattern.test(entry.name)) continue;
    try {
      Deno.removeSync(joinPath(dir, entry.name));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
}

// ---------------------------------------------------------------------------
// The copy kept in git's directory
// ---------------------------------------------------------------------------

/**
 * Name of the copy of a linked worktree's port file kept in its directory
 * under `<common dir>/worktrees/`. Git deletes that directory when the
 * worktree is removed or pruned, so the copy lives exactly as long as the
 * worktree. It answers for a worktree whose own file cannot be read: one whose
 * file is unreadable, or a locked worktree whose directory is away.
 */
const KEPT_COPY_NAME = "worktree-ports.json";

/**
 * Where the copy of a linked worktree's port file is kept; `undefined` if its
 * git directory is unknown. `known` is its git directory, when already read.
 */
function keptCopyPath(
  root: string,
  known?: { gitDir: string; commonDir: string },
): string | undefined {
  try {
    const { gitDir, commonDir } = known ?? gitDirsOf(root);
    return gitDir === commonDir ? undefined : joinPath(gitDir, KEPT_COPY_NAME);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return undefined;
  }
}

/** Refreshes the kept copy when the file changed or the copy is missing; a failure is a warning. */
function keepCopy(path: string, text: string, changed: boolean, warnings: string[]): void {
  try {
    if (!changed && Deno.statSync(path).isFile) return;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  try {
    removeStaleTemporaryFiles(path);
    writeFileAtomic(path, text);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot keep a copy of the port file in git's directory: ${(error as Error).message}`,
    );
  }
}

function knownGitDirs(repository: Repository): { gitDir: string; commonDir: string } | undefined {
  const gitDir = GIT_DIRS.get(repository);
  return gitDir === undefined ? undefined : { gitDir, commonDir: repository.commonDir };
}

/** Deletes the kept copy of a released worktree's file. */
function dropKeptCopy(root: string): void {
  const path = keptCopyPath(root);
  if (path === undefined) return;
  try {
    Deno.removeSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
}

/**
 * The kept copy of a worktree known by its path, found through the `gitdir`
 * files of the admin entries (its own `.git` file may be gone with it).
 */
function readKeptCopy(commonDir: string, worktreePath: string): PortFileRead {
  const admin = adminDirOf(commonDir, worktreePath);
  return admin === undefined ? { state: "missing" } : readPortFile(joinPath(admin, KEPT_COPY_NAME));
}

/** The admin entry, `<common dir>/worktrees/<id>`, whose `gitdir` names the worktree at `path`. */
function adminDirOf(commonDir: string, worktreePath: string): string | undefined {
  const target = comparablePath(joinPath(worktreePath, ".git"));
  const admin = joinPath(commonDir, "worktrees");
  try {
    for (const entry of Deno.readDirSync(admin)) {
      const dir = joinPath(admin, entry.name);
      let gitdir: string;
      try {
        gitdir = readRegularTextFile(joinPath(dir, "gitdir")).replace(/\r?\n$/, "");
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw error;
        continue;
      }
      if (comparablePath(gitdir) === target) return dir;
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  return undefined;
}

/**
 * The file was written for another worktree (it was copied); `root` is this
 * worktree's real path. Given the repository, a file whose recorded worktree
 * is no live worktree of it is not foreign: it moved with its worktree.
 */
function isForeign(
  file: PortFileRead,
  root: string,
  repository?: Pick<Repository, "current" | "worktrees">,
): boolean {
  return file.state === "read" && file.meta !== undefined && file.meta.worktree !== root &&
    (repository === undefined ||
      namesOtherWorktree(file.meta.worktree, repository.current, repository.worktrees));
}

/**
 * Whether a port file's recorded worktree is another live worktree of the
 * repository, from which the file was copied. A recorded path that is no
 * worktree at all was left behind by `git worktree move`: the file moved with
 * its worktree and is still its own, to be rewritten with the new path.
 */
function namesOtherWorktree(
  recorded: string,
  self: Worktree,
  worktrees: readonly Worktree[],
): boolean {
  const live = worktrees.filter((worktree) =>
    worktree !== self && !worktree.bare && !worktree.prunable
  );
  const target = comparablePath(recorded);
  if (live.some((worktree) => comparablePath(worktree.path) === target)) return true;
  // Git may spell a path through a symbolic link; only a path that exists can be one.
  const real = (path: string) => {
    const resolved = realPathOf(path);
    return resolved === undefined ? undefined : comparablePath(resolved);
  };
  const recordedReal = real(recorded);
  return recordedReal !== undefined &&
    live.some((worktree) => real(worktree.path) === recordedReal);
}

/**
 * What a worktree's config renders for a slot now, or `undefined` when the
 * config cannot be loaded: that error is for whoever allocates there.
 */
function expectedBundle(
  worktree: Pick<Worktree, "path" | "branch">,
  slot: number,
  options: LoadConfigOptions,
): Record<string, number | string> | undefined {
  try {
    const config = judgingConfig(worktree.path, options);
    return config && renderBundle(config, slot, { worktree });
  } catch (error) {
    if (error instanceof WorktreePortsError) return undefined;
    throw error;
  }
}

/**
 * The config a port file is judged against: none when the worktree has no
 * config file and no overrides are given. A file allocated with overrides
 * alone (`--port` flags) is not outdated just because a later call gives none.
 */
function judgingConfig(root: string, options: LoadConfigOptions): PortsConfig | undefined {
  const overridden = options.config !== undefined || options.ports !== undefined ||
    options.stride !== undefined || options.slots !== undefined;
  if (!overridden) {
    try {
      Deno.statSync(joinPath(root, CONFIG_FILE_NAME));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      if (error instanceof Deno.errors.NotCapable) throw error;
    }
  }
  return loadConfig(root, options);
}

/** {@linkcode isOutdated} against {@linkcode judgingConfig}; config errors are thrown. */
function isOutdatedFor(
  repository: Repository,
  data: Record<string, unknown>,
  slot: number,
  options: LoadConfigOptions,
): boolean {
  const config = judgingConfig(repository.root, options);
  return config !== undefined &&
    isOutdated(data, renderBundle(config, slot, { worktree: repository.current }));
}

/** A file's keys or values differ from the bundle its config renders now (order aside). */
function isOutdated(
  data: Record<string, unknown>,
  bundle: Record<string, number | string> | undefined,
): boolean {
  if (bundle === undefined) return false;
  const keys = Object.keys(data).filter((key) => key !== META_KEY);
  return keys.length !== Object.keys(bundle).length ||
    keys.some((key) => !Object.hasOwn(bundle, key) || bundle[key] !== data[key]);
}

// ---------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------

/** Options for {@linkcode allocate}. */
export interface AllocateOptions extends ConfigOverrides {
  /**
   * A directory inside the worktree to allocate for.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
  /**
   * The port file to write; relative paths are resolved against `cwd`.
   * Sibling worktrees' files are read at the same path relative to their root.
   *
   * @default {undefined} `.worktree-ports.json` in the worktree root
   */
  output?: string;
  /**
   * Do not count the ports in the output file itself as reserved, so that
   * rewriting a worktree's own file never blocks its own bundle.
   *
   * @default {true}
   */
  excludeOutput?: boolean;
  /**
   * The config file; relative paths are resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
  /**
   * Choose a slot afresh even when the current one could be kept.
   *
   * @default {false}
   */
  force?: boolean;
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * Called with the lock's path when another process holds it and waiting begins.
   *
   * @default {undefined}
   */
  onLockWait?: (path: string) => void;
  /**
   * After writing a port file inside the worktree, make sure git ignores it:
   * when no ignore rule covers it, its path is added to `info/exclude` in the
   * common git directory. A port file tracked by git gets a warning.
   *
   * @default {true}
   */
  ignoreOutput?: boolean;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
  /**
   * Choose the slot exactly as a real allocation would, under the lock with
   * the same scan and probes, and write nothing: no port file, no exclude
   * rule, no entry in the machine-wide index. The result is what would be
   * written, with `written` `false`; a real allocation made next, with
   * nothing changed meanwhile, gets the same slot and bundle.
   *
   * @default {false}
   */
  dryRun?: boolean;
  /**
   * `machine` also reserves the ports of every other repository's port file
   * recorded in the machine-wide index, and records this one there;
   * `repository` looks at this repository's worktrees only.
   *
   * @default {"machine"} unless the config says `"scope": "repository"`
   */
  scope?: Scope;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
}

/** The result of {@linkcode allocate}. */
export interface Allocation {
  /** The slot: 0 for the main worktree, 1 or more for linked ones. */
  slot: number;
  /** The ports and filled-in templates, as written at the top level of the file. */
  bundle: Record<string, number | string>;
  /** Real path of the worktree root. */
  worktree: string;
  /** The port file. */
  path: string;
  /** When the worktree first got this slot (ISO 8601). */
  allocatedAt: string;
  /** The worktree kept the slot it already had. */
  kept: boolean;
  /** The file was written; `false` when it already held exactly this allocation. */
  written: boolean;
  /** Problems that did not stop the allocation, such as an unreadable sibling file. */
  warnings: string[];
  /** Where the time went, for diagnosing slow or contended allocations. */
  timings: AllocationTimings;
}

/** Milliseconds spent in each stage of {@linkcode allocate}. */
export interface AllocationTimings {
  /** Asking git for the worktrees and finding this one. */
  git: number;
  /** Waiting for other processes to release the locks (the repository's, then the machine's). */
  lockWait: number;
  /** Holding the locks: the scan, the choice and the write. */
  locked: number;
  /** The whole allocation. */
  total: number;
}

/**
 * Allocates the current worktree's bundle of ports and writes its port file.
 *
 * Git is asked once for the worktrees; then, under the repository lock, the
 * sibling worktrees' port files are scanned, a slot is chosen and the file is
 * written atomically. Allocating again returns the same bundle. With
 * `dryRun`, the same choice is made and nothing is written.
 *
 * @param options Where, which config, and the injected git and probe.
 * @returns The allocation that was written.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`; `INVALID_OUTPUT` when
 * `output` is inside another worktree, or names an existing file that is no
 * port file (not a JSON object of ports and strings, or not a regular file).
 * @throws {Error} When the port file cannot be written; nothing is changed then.
 *
 * @example Usage
 * ```ts ignore
 * import { allocate } from "@org/worktree-ports";
 *
 * const { slot, bundle, path } = await allocate({ ports: { web: 3000, api: 9000 } });
 * console.log(`slot ${slot}: web on ${bundle.web}, written to ${path}`);
 * ```
 */
export async function allocate(options: AllocateOptions = {}): Promise<Allocation> {
  const start = performance.now();
  const git = options.git ?? denoGit;
  const repository = await openRepository({ cwd: options.cwd, git });
  return await allocateIn(repository, options, git, start);
}

async function allocateIn(
  repository: Repository,
  options: AllocateOptions,
  git: GitRunner,
  start: number,
): Promise<Allocation> {
  const gitDone = performance.now();
  const path = portFilePath(repository.root, options);
  const inside = relativeInside(repository.root, path);
  // Everything that can be known before the lock is read before it, so the
  // critical section is only the scan, the choice and the write.
  if (options.output !== undefined) {
    await assertOwnOutput(repository, path, inside);
    assertReplaceableOutput(path);
  }
  const config = loadConfig(repository.root, options);
  assertNotDirectory(path);
  const lockOptions = { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait };
  const keptCopy = !repository.primary && inside === PORT_FILE_NAME
    ? keptCopyPath(repository.root, knownGitDirs(repository))
    : undefined;

  let allocation: Omit<Allocation, "timings">;
  let previous: PortFileRead;
  let lockWait: number;
  const ruleWarnings: string[] = [];
  let locked: number;
  {
    const waitStart = performance.now();
    using _lock = await lockRepository(repository.commonDir, lockOptions);
    const lockedStart = performance.now();
    lockWait = lockedStart - waitStart;
    using machine = await openMachineIndex(repository.commonDir, {
      scope: options.scope ?? config.scope,
      index: options.index,
      lockOptions,
      ownFile: path,
    });
    lockWait += machine.lockWait;
    const reserved = await scanCurrentReservations(repository, git, path, inside, options);
    assertStillWorktree(repository.root);
    if (!options.dryRun) {
      removeStaleTemporaryFiles(path);
      if (keptCopy !== undefined) removeStaleTemporaryFiles(keptCopy);
    }
    // The rules go in before the file: a process killed in between leaves
    // nothing for "git status" to show.
    const beforeWrite = inside !== undefined && options.ignoreOutput !== false
      ? () => excludeFromGit(repository.commonDir, excludePatterns(inside), ruleWarnings)
      : undefined;
    const own = readPortFile(path);
    allocation = await allocateSlot(
      {
        root: repository.root,
        path,
        primary: repository.primary,
        keptCopy,
        repository: reserved.repository,
        worktree: repository.current,
      },
      config,
      own,
      withOtherRepositories(reserved.holders, machine.holders),
      {
        force: options.force,
        probe: options.probe,
        dryRun: options.dryRun,
        makeParent: inside !== undefined,
        beforeWrite,
      },
    );
    // Every file of this repository, its siblings' included: one written
    // before the index existed, or with it lost, must reserve its ports for
    // other repositories too.
    if (!options.dryRun) machine.recordAll([[path, repository.root], ...reserved.files]);
    warnAboutMainWorktree(allocation, reserved.holders, machine.holders);
    allocation.warnings.unshift(...reserved.warnings, ...machine.warnings, ...ruleWarnings);
    previous = own;
    locked = performance.now() - lockedStart - machine.lockWait;
  }
  allocation.warnings.push(...configWarnings(config));
  allocation.warnings.push(...movedOffBlocked(previous, repository.root, allocation.slot));
  const ownBefore = previous.state === "read" &&
    !isForeign(previous, repository.root, repository);
  if (repository.primary && !ownBefore) {
    allocation.warnings.push(...await busyBaseWarnings(config, options.probe ?? denoProbe));
  }
  // A file this tool did not write for this worktree may be one git checked out.
  const checkedOut = allocation.written && previous.state !== "missing" &&
    !(ownBefore && previous.state === "read" && previous.meta !== undefined);
  if (inside !== undefined && options.ignoreOutput !== false && checkedOut) {
    await warnIfTracked(git, repository, inside, allocation.warnings);
  }
  const total = performance.now() - start;
  return { ...allocation, timings: { git: gitDone - start, lockWait, locked, total } };
}

/**
 * Reads, under the lock, the ports every other worktree reserves. The
 * listing is made current first (see {@linkcode currentListing}); a listed
 * worktree whose directory has gone since means it was moved or replaced, and
 * git is asked again once.
 */
async function scanCurrentReservations(
  repository: Repository,
  git: GitRunner,
  path: string,
  inside: string | undefined,
  options: Pick<AllocateOptions, "excludeOutput">,
): Promise<ReservedPorts & { repository: Repository; files: [string, string][] }> {
  let listed = await currentListing(repository, git);
  let scan = scanReservations(listed, path, inside, options);
  if (scan.gone) {
    listed = await relist(repository, git);
    scan = scanReservations(listed, path, inside, options);
  }
  return { ...scan, repository: listed };
}

/** The ports reserved by the other worktrees' files, and whether a listed directory is gone. */
function scanReservations(
  repository: Repository,
  path: string,
  inside: string | undefined,
  options: Pick<AllocateOptions, "excludeOutput">,
): ReservedPorts & { gone: boolean; files: [string, string][] } {
  const holders = new Map<number, string>();
  const warnings: string[] = [];
  const files: [string, string][] = [];
  let gone = false;
  const reserve = (file: string, ports: readonly number[]) => {
    for (const port of ports) if (!holders.has(port)) holders.set(port, file);
  };
  for (const worktree of repository.worktrees) {
    if (worktree === repository.current || worktree.bare || worktree.prunable) continue;
    const file = joinPath(worktree.path, inside ?? PORT_FILE_NAME);
    const read = readPortFile(file);
    const kept = () => readKeptCopy(repository.commonDir, worktree.path);
    if (read.state === "missing") {
      // A directory without its .git is not the worktree any more: moved,
      // with a new directory made at the old place.
      if (worktreeExists(worktree.path)) continue;
      // Git keeps a locked worktree whose directory is away (removable media):
      // it still holds the ports it had when last written.
      if (worktree.locked) {
        const copy = kept();
        if (copy.state === "read") reserve(file, copy.ports);
      } else {
        gone = true;
      }
      continue;
    }
    reserve(file, reservedPortsOfPath(file, read, warnings, kept));
    files.push([file, worktree.path]);
  }
  // An output outside every worktree (a preview) must not get a bundle any
  // worktree holds, this one's own included.
  if (inside === undefined) {
    const usual = joinPath(repository.root, PORT_FILE_NAME);
    reserve(usual, reservedPortsOfPath(usual, readPortFile(usual), warnings));
  }
  if (options.excludeOutput === false) {
    reserve(path, reservedPortsOfPath(path, readPortFile(path), warnings));
  }
  return { holders, warnings, gone, files };
}

/**
 * Refuses to write for a worktree that was moved or removed while the caller
 * waited for the lock: writing at its old place would make a stray file.
 */
function assertStillWorktree(root: string): void {
  if (worktreeExists(root)) return;
  throw new WorktreePortsError(
    "NOT_A_WORKTREE",
    `"${root}" is not a worktree any more: it was moved or removed while this command waited ` +
      `for the lock (run it again where the worktree is now)`,
  );
}

/** Whether a listed linked worktree has lost its `.git`: the listing is out of date. */
function hasVanishedWorktree(repository: Repository): boolean {
  return repository.worktrees.some((worktree) =>
    worktree !== repository.worktrees[0] && !worktree.bare && !worktree.prunable &&
    !worktree.locked && !worktreeExists(worktree.path)
  );
}

/**
 * Refuses an output inside another worktree's tree: a port file there would
 * be read as that worktree's own.
 */
async function assertOwnOutput(
  repository: Repository,
  path: string,
  inside: string | undefined,
): Promise<void> {
  const refuse = (why: string) => {
    throw new WorktreePortsError("INVALID_OUTPUT", `Cannot write "${path}": ${why}`);
  };
  if (inside !== undefined && /[\r\n]/.test(inside)) {
    refuse("a path with a line break cannot be kept out of git (choose another name)");
  }
  const real = realPathOfNearest(path);
  const gitDirs = [joinPath(repository.root, ".git"), repository.commonDir];
  try {
    gitDirs.push((knownGitDirs(repository) ?? gitDirsOf(repository.root)).gitDir);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
  }
  for (const dir of gitDirs) {
    const realDir = realPathOr(dir);
    if (
      [path, real].some((candidate) =>
        comparablePath(candidate) === comparablePath(dir) ||
        comparablePath(candidate) === comparablePath(realDir) ||
        relativeInside(dir, candidate) !== undefined ||
        relativeInside(realDir, candidate) !== undefined
      )
    ) {
      refuse(`it is inside git's own directory "${dir}" (choose a path in the worktree)`);
    }
  }
  const worktrees = repository.worktrees.filter((worktree) => !worktree.bare);
  let holder = findContaining(worktrees, path, (worktree) => worktree.path);
  if (holder === undefined || holder === repository.current) {
    holder = findContaining(await realPaths(worktrees), real, (entry) => entry.real)?.worktree ??
      holder;
  }
  if (holder !== undefined && holder !== repository.current) {
    throw new WorktreePortsError(
      "INVALID_OUTPUT",
      `Cannot write "${path}": it is inside the worktree "${holder.path}", not this one ` +
        `("${repository.root}"); run "worktree-ports allocate" in that worktree instead`,
    );
  }
}

/**
 * Refuses an output that exists and is no port file: `--output README.md`
 * must not replace a file someone keeps. A port file is a JSON object of
 * ports and strings (and its metadata); an empty file, as `mktemp` makes,
 * holds nothing to lose. A directory is left for the write to refuse.
 */
function assertReplaceableOutput(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    return;
  }
  if (info.isDirectory || (info.isFile && info.size === 0)) return;
  const file = readPortFile(path);
  const nested = file.state === "read"
    ? Object.keys(file.data).find((key) => {
      const value = file.data[key];
      return key !== META_KEY && typeof value === "object" && value !== null;
    })
    : undefined;
  const problem = file.state === "unreadable"
    ? file.reason
    : nested !== undefined
    ? `its "${clip(nested)}" holds an object or array, which no port file has`
    : undefined;
  if (problem === undefined) return;
  throw new WorktreePortsError(
    "INVALID_OUTPUT",
    `Cannot write "${path}": it is not a port file (${problem}), and writing would replace it ` +
      `(choose another output path, or remove the file first)`,
  );
}

/** The real path of `path`, resolving its nearest existing ancestor. */
function realPathOfNearest(path: string): string {
  let rest = "";
  for (let current = path;;) {
    try {
      return Deno.realPathSync(current) + rest;
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      const slash = current.search(/[\\/][^\\/]*$/);
      if (slash <= 0) return path;
      rest = current.slice(slash) + rest;
      current = current.slice(0, slash);
    }
  }
}

/** Says why a worktree's own file, from before bad ports were skipped, loses its slot. */
function movedOffBlocked(previous: PortFileRead, root: string, slot: number): string[] {
  if (previous.state !== "read" || previous.meta === undefined || isForeign(previous, root)) {
    return [];
  }
  const refused = previous.ports.filter((port) => BROWSER_BLOCKED_PORTS.has(port));
  if (previous.meta.slot === slot || refused.length === 0) return [];
  return [
    `This worktree's bundle at slot ${previous.meta.slot} holds ${listPorts(refused)}, ` +
    `a port browsers refuse to connect to; it gets slot ${slot} instead`,
  ];
}

/**
 * The main worktree takes slot 0 without probing, since its own services may
 * be listening there. Before it has a port file of its own, though, whatever
 * listens on a base port is someone else, and its services will clash with it.
 */
async function busyBaseWarnings(config: PortsConfig, probe: PortProbe): Promise<string[]> {
  const busy: string[] = [];
  for (const [key, port] of Object.entries(portsForSlot(config, 0))) {
    if ((await probePort(probe, port)) === "in-use") busy.push(`${port} ("${key}")`);
  }
  if (busy.length === 0) return [];
  return [
    `${busy.length === 1 ? "Port" : "Ports"} ${busy.join(", ")} of slot 0 ${
      busy.length === 1 ? "is" : "are"
    } already in use, but the main worktree, which always gets slot 0, had no port file of its ` +
    `own, so the listener is not one of its services (stop that process, or change the base port)`,
  ];
}

/**
 * Where a port file goes: its worktree's root, its path, whether it is the
 * main worktree, and where git's directory for the worktree keeps a copy.
 */
interface Target {
  root: string;
  path: string;
  primary: boolean;
  keptCopy?: string;
  /** Its repository, to tell a moved worktree's file from a copied one. */
  repository?: Pick<Repository, "current" | "worktrees">;
  /** The worktree, for the placeholders of templates. */
  worktree: Pick<Worktree, "path" | "branch">;
}

/**
 * Chooses and writes the slot of one worktree. The caller holds the lock and
 * has read the worktree's own file and the other worktrees' reservations.
 */
async function allocateSlot(
  target: Target,
  config: PortsConfig,
  own: PortFileRead,
  reserved: Pick<ReadonlySet<number>, "has">,
  options: Pick<AllocateOptions, "force" | "probe" | "dryRun"> & {
    makeParent?: boolean;
    beforeWrite?: () => void;
  },
): Promise<Omit<Allocation, "timings">> {
  const warnings: string[] = [];
  const current = ownMeta(own, target, warnings, options.dryRun);
  const choice = await chooseSlot(config, reserved, {
    current: current?.slot,
    force: options.force,
    primary: target.primary,
    probe: options.probe,
  });
  warnLostMovedSlot(current, target, choice.slot, warnings);
  const allocation: Omit<Allocation, "timings"> = {
    slot: choice.slot,
    bundle: renderBundle(config, choice.slot, { worktree: target.worktree }),
    worktree: target.root,
    path: target.path,
    allocatedAt: current?.slot === choice.slot && current.allocated_at
      ? current.allocated_at
      : new Date().toISOString(),
    kept: choice.kept,
    written: false,
    warnings,
  };
  const text = formatPortFile(allocation);
  // A file larger than the reader takes would reserve nothing for the others.
  if (text.length > MAX_FILE_BYTES / 4 && new TextEncoder().encode(text).length > MAX_FILE_BYTES) {
    throw new WorktreePortsError(
      "INVALID_CONFIG",
      `Invalid config: its templates render a port file larger than ${MAX_FILE_BYTES} bytes, ` +
        `which no worktree could read back (shorten the templates)`,
    );
  }
  // Called whether or not the file changes: a file kept as it was may still
  // lack what a failed run did not finish (the ignore rules).
  if (!options.dryRun) options.beforeWrite?.();
  if (
    !options.dryRun && (own.state !== "read" || JSON.stringify(own.data, null, 2) + "\n" !== text)
  ) {
    if (own.state === "read") warnDroppedKeys(own.data, allocation, warnings);
    if (options.makeParent) Deno.mkdirSync(parentOf(target.path), { recursive: true });
    writeFileAtomic(target.path, text);
    allocation.written = true;
  }
  if (target.keptCopy !== undefined && !options.dryRun) {
    keepCopy(target.keptCopy, text, allocation.written, warnings);
  }
  return allocation;
}

/**
 * A file that names a path that is no worktree now moved with its worktree,
 * or was copied from a removed one; when its slot is held by another
 * worktree, it was the copy, and this worktree gets another slot.
 */
function warnLostMovedSlot(
  current: PortFileMeta | undefined,
  target: Target,
  slot: number,
  warnings: string[],
): void {
  if (current === undefined || current.worktree === target.root || current.slot === slot) return;
  warnings.push(
    `"${target.path}" was written for "${current.worktree}", which is no worktree now ` +
      `(copied from a removed worktree?), and its slot ${current.slot} is another worktree's; ` +
      `this worktree gets slot ${slot} instead`,
  );
}

/** Warns about keys of the old file that the new one no longer has: someone put them there. */
function warnDroppedKeys(
  old: Record<string, unknown>,
  allocation: Pick<Allocation, "bundle" | "path">,
  warnings: string[],
): void {
  const dropped = Object.keys(old).filter((key) =>
    key !== META_KEY && !Object.hasOwn(allocation.bundle, key)
  );
  if (dropped.length === 0) return;
  warnings.push(
    `Rewriting "${allocation.path}" dropped ${dropped.map(quoteKey).join(", ")}, ` +
      `which the config does not produce (add them to the config's "ports" or "templates" to keep them)`,
  );
}

/** The metadata of the worktree's own file, if the file is really its own. */
function ownMeta(
  own: PortFileRead,
  target: Target,
  warnings: string[],
  dryRun = false,
): PortFileMeta | undefined {
  if (own.state === "unreadable") {
    warnings.push(
      `This worktree's port file "${target.path}" is unusable (${own.reason}); ${
        dryRun ? "allocate would replace it" : "replacing it"
      } with a fresh allocation`,
    );
    return undefined;
  }
  if (own.state !== "read" || own.meta === undefined) return undefined;
  if (isForeign(own, target.root, target.repository)) {
    warnings.push(
      `"${target.path}" was written for the worktree "${own.meta.worktree}" (copied?); ${
        dryRun ? "allocate would allocate" : "allocating"
      } a fresh bundle for this one`,
    );
    return undefined;
  }
  return own.meta;
}

// ---------------------------------------------------------------------------
// Keeping the file out of git
// ---------------------------------------------------------------------------

/**
 * Warns when git tracks the port file: a committed port file gives every new
 * worktree the same bundle. Asked only when the file replaced one this tool
 * did not write for this worktree, which git may have checked out.
 */
async function warnIfTracked(
  git: GitRunner,
  repository: Repository,
  inside: string,
  warnings: string[],
): Promise<void> {
  const output = await git.run(["ls-files", "-z", "--cached", "--", inside], repository.root);
  if (output === "") return;
  warnings.push(
    `"${joinPath(repository.root, inside)}" is tracked by git: every new worktree checks out ` +
      `the same ports. Untrack it with "git rm --cached ${inside}" and commit`,
  );
}

/**
 * Makes git ignore a port file and its temporary files, with two rules in
 * `info/exclude` in the common git directory: they apply to every worktree
 * and never touch a tracked `.gitignore`. The caller holds the lock. Missing
 * rules are added atomically (a full disk leaves the old file whole, and the
 * next allocation tries again), through a symbolic link if the file is one.
 */
function excludeFromGit(
  commonDir: string,
  patterns: readonly string[],
  warnings: string[],
): void {
  const lines = readExcludes(commonDir, warnings);
  if (lines === undefined) return;
  const added = patterns.filter((pattern) => !lines.includes(pattern));
  if (added.length === 0) return;
  const dir = joinPath(commonDir, "info");
  const link = joinPath(dir, "exclude");
  try {
    Deno.mkdirSync(dir, { recursive: true });
    const path = realPathOr(link);
    removeStaleTemporaryFiles(path);
    const text = lines.join("\n");
    const separator = text === "" || text.endsWith("\n") ? "" : "\n";
    writeFileAtomic(path, `${text}${separator}${added.join("\n")}\n`);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot add the port file to "${link}" (${(error as Error).message}), so it may show in ` +
        `"git status"; the next allocation tries again`,
    );
  }
}

/**
 * The lines of `info/exclude` in the common git directory; none when it does
 * not exist, and `undefined`, with a warning, when it cannot be read.
 */
function readExcludes(commonDir: string, warnings: string[]): string[] | undefined {
  const path = joinPath(commonDir, "info/exclude");
  try {
    return readRegularTextFile(path).split(/\r?\n/);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    if (error instanceof Deno.errors.NotCapable) throw error;
    warnings.push(
      `Cannot read "${path}" (${fileProblemOf(error)}), so the port file may show in "git status"`,
    );
    return undefined;
  }
}

/**
 * The gitignore patterns that match exactly one path relative to the worktree
 * root, and the temporary files written beside it.
 */
function excludePatterns(inside: string): [string, string] {
  const slashed = IS_WINDOWS ? inside.replaceAll("\\", "/") : inside;
  const escaped = "/" + slashed.replace(/[\\*?[\]]/g, "\\$&");
  return [escaped.replace(/ $/, "\\ "), `${escaped}.*.tmp`];
}

/** Options for {@linkcode portFilePath}. */
export interface PortFilePathOptions {
  /**
   * An explicit port file, resolved against `cwd` when relative.
   *
   * @default {undefined}
   */
  output?: string;
  /**
   * The directory relative outputs are resolved against.
   *
   * @default {Deno.cwd()}
   */
  cwd?: string;
}

/**
 * Where a worktree's port file lives.
 *
 * @param root The worktree root.
 * @param options An explicit output path and the directory it is relative to.
 * @returns The absolute path of the port file.
 *
 * @example Usage
 * ```ts
 * import { portFilePath } from "@org/worktree-ports";
 * import assert from "node:assert/strict";
 *
 * assert.equal(portFilePath("/repo"), "/repo/.worktree-ports.json");
 * assert.equal(portFilePath("/repo", { output: "ports.json", cwd: "/repo/app" }), "/repo/app/ports.json");
 * ```
 */
export function portFilePath(root: string, options: PortFilePathOptions = {}): string {
  if (options.output === undefined) return joinPath(root, PORT_FILE_NAME);
  return resolvePath(options.cwd ?? Deno.cwd(), options.output);
}

function assertNotDirectory(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    if (error instanceof Deno.errors.NotCapable) throw error;
    // A link that leads nowhere (a loop) is replaced by the write, not followed.
    if (isSymlink(path)) return;
    throw new Error(`Cannot write "${path}": ${(error as Error).message}`, { cause: error });
  }
  if (info.isDirectory) {
    throw new Error(`Cannot write "${path}": it is a directory`);
  }
}

/** Options for {@linkcode readBundle}. */
export interface ReadBundleOptions extends PortFilePathOptions {
  /**
   * The config file the port file is compared with; relative paths are
   * resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
}

/** The current worktree's port file, as {@linkcode readBundle} found it. */
export interface CurrentBundle {
  /** The port file. */
  path: string;
  /** Its top-level values, exactly as stored. */
  data: Record<string, unknown>;
  /** The file names another worktree: it was copied, and its ports are not this worktree's. */
  foreign: boolean;
  /**
   * The file names a path that is no worktree now: it moved with its worktree
   * (`git worktree move`), or was copied from a removed worktree, whose slot
   * another worktree may hold by now. {@linkcode loadBundle} checks it against
   * the other worktrees and rewrites it.
   */
  moved: boolean;
  /**
   * The file's keys or values are not what the config renders for its slot
   * now: {@linkcode loadBundle} would rewrite it.
   */
  outdated: boolean;
}

/**
 * Reads the current worktree's port file without changing anything.
 *
 * @param options Where, which output file, and the git runner.
 * @returns The file's values, or `undefined` when there is no file yet.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`, or
 * `INVALID_CONFIG` when the config the file is compared with is not valid.
 * @throws {Error} When the file exists but cannot be read or parsed.
 *
 * @example Usage
 * ```ts ignore
 * import { readBundle } from "@org/worktree-ports";
 *
 * const bundle = await readBundle();
 * console.log(bundle?.data.port);
 * ```
 */
export async function readBundle(
  options: ReadBundleOptions = {},
): Promise<CurrentBundle | undefined> {
  const repository = await openRepository({ cwd: options.cwd, git: options.git });
  const path = portFilePath(repository.root, options);
  const file = readPortFile(path);
  if (file.state === "missing") return undefined;
  if (file.state === "unreadable") {
    throw new Error(
      `Cannot read "${path}": ${file.reason} (run "worktree-ports allocate" to replace it)`,
    );
  }
  const foreign = isForeign(file, repository.root, repository);
  return {
    path,
    data: file.data,
    foreign,
    moved: !foreign && file.meta !== undefined && file.meta.worktree !== repository.root,
    outdated: !foreign && file.meta !== undefined &&
      isOutdatedFor(repository, file.data, file.meta.slot, options),
  };
}

// ---------------------------------------------------------------------------
// The state of every worktree
// ---------------------------------------------------------------------------

/**
 * How a worktree's port file stands: `ok`; `none`, no file; `duplicate`, it
 * shares a port with another worktree; `foreign`, the file names another
 * live worktree (it was copied; a file naming a path that is no worktree any
 * more moved with its worktree, and is its own); `unreadable`; `invalid`, it
 * holds numbers that are not ports; `stale`, git reports the worktree's
 * directory as gone (it reserves nothing); `absent`, a locked worktree whose
 * directory is away (it keeps the ports of its last written file, when a copy
 * of it is known); `outdated`, its keys or values are not what the worktree's
 * config renders for its slot now.
 */
export type WorktreeState =
  | "ok"
  | "none"
  | "duplicate"
  | "foreign"
  | "unreadable"
  | "invalid"
  | "stale"
  | "absent"
  | "outdated";

/** Ports that one worktree shares with another. */
export interface PortConflict {
  /** The other worktree's path. */
  worktree: string;
  /** The ports both reserve. */
  ports: number[];
  /** When the other worktree belongs to another repository: that repository's shared git directory. */
  repository?: string;
}

/** One row of {@linkcode inspectWorktrees}. */
export interface WorktreeStatus {
  /** The worktree's path, as git reports it. */
  path: string;
  /** The branch checked out, if any. */
  branch?: string;
  /** It is the main worktree. */
  primary: boolean;
  /** It is the worktree the inspection ran from. */
  current: boolean;
  /** How its port file stands. */
  state: WorktreeState;
  /** Its port file. */
  file: string;
  /** The slot the file records, if it records one. */
  slot?: number;
  /** Each top-level key of the file whose value is a port. */
  ports: Record<string, number>;
  /** For each key of `ports`, whether something listens on that port now. */
  listening: Record<string, boolean>;
  /** When the file's slot was allocated, if the file says. */
  allocatedAt?: string;
  /** For `duplicate`: every other worktree it shares ports with. */
  conflicts: PortConflict[];
  /** For `foreign`: the worktree the file names; for `unreadable`, `invalid` and `absent`: why. */
  detail?: string;
  /** The shared git directory of its repository, in {@linkcode inspectMachine}'s results. */
  repository?: string;
}

/** Options for {@linkcode inspectWorktrees}. */
export interface InspectOptions extends PortFilePathOptions, ConfigOverrides {
  /**
   * The config file each worktree's file is compared with, to tell an
   * outdated one; relative paths are resolved against each worktree's root.
   *
   * @default {undefined} `worktree-ports.config.json` in each worktree's root, if present
   */
  config?: string;
  /**
   * Probe every port to report whether it is listening now.
   *
   * @default {true}
   */
  listening?: boolean;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
  /**
   * `machine` also looks at other repositories' port files recorded in the
   * machine-wide index; `repository` at this repository's worktrees only.
   *
   * @default {"machine"}
   */
  scope?: Scope;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
  /**
   * Called with each problem that did not stop the inspection, such as an
   * unreadable machine-wide index.
   *
   * @default {undefined}
   */
  onWarning?: (warning: string) => void;
}

/**
 * Reports every worktree of the repository: its port file's state, slot and
 * ports, which of them are listening now, and the ports it shares with
 * others. Changes nothing. Works from a bare repository's directory too.
 *
 * @param options Where, which port file, and the injected git and probe.
 * @returns One status per worktree, in git's order (bare repositories are left out).
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE` or `GIT_FAILED`.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectWorktrees } from "@org/worktree-ports";
 *
 * for (const status of await inspectWorktrees()) {
 *   console.log(status.path, status.state, status.ports);
 * }
 * ```
 */
export async function inspectWorktrees(
  options: InspectOptions = {},
): Promise<WorktreeStatus[]> {
  const repository = await openRepositoryOrBare({ cwd: options.cwd, git: options.git });
  const statuses = await inspectRepository(repository, options);
  using machine = await openMachineIndex(repository.commonDir, { ...options, readOnly: true });
  for (const warning of machine.warnings) options.onWarning?.(warning);
  markOtherRepositories(statuses, machine);
  return statuses.map(({ reserved: _, ...status }) => status);
}

/**
 * Reports every worktree on the machine: those of the repository around
 * `cwd` (if any) and of every repository with a port file recorded in the
 * machine-wide index, grouped by repository, each status naming its
 * repository. Ports shared across repositories are conflicts, as within one.
 * Changes nothing.
 *
 * @param options Where, the injected git, probe and index, and a warning callback.
 * @returns One status per worktree, the current repository's first.
 * @throws {WorktreePortsError} With code `GIT_FAILED` when git cannot be run.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectMachine } from "@org/worktree-ports";
 *
 * for (const status of await inspectMachine()) {
 *   console.log(status.repository, status.path, status.state);
 * }
 * ```
 */
export async function inspectMachine(options: InspectOptions = {}): Promise<WorktreeStatus[]> {
  const statuses = await inspectAll(await openIndexedRepositories(options), options);
  return statuses.map(({ reserved: _, ...status }) => status);
}

/** A status with every port its file reserves, read liberally (URL ports included). */
type InspectedStatus = WorktreeStatus & { reserved: number[] };

async function inspectRepository(
  repository: Repository,
  options: InspectOptions,
): Promise<InspectedStatus[]> {
  const ownPath = portFilePath(repository.root, options);
  const inside = relativeInside(repository.root, ownPath) ?? PORT_FILE_NAME;
  const probe = options.probe ?? denoProbe;
  const worktrees = repository.worktrees.filter((worktree) => !worktree.bare);
  const statuses = await Promise.all(worktrees.map(async (worktree) => {
    const current = worktree === repository.current;
    const status: WorktreeStatus = {
      path: worktree.path,
      branch: worktree.branch,
      primary: worktree === repository.worktrees[0],
      current,
      state: "ok",
      file: current ? ownPath : joinPath(worktree.path, inside),
      ports: {},
      listening: {},
      conflicts: [],
    };
    if (worktree.prunable) return { ...status, state: "stale" as const, reserved: [] };
    let file = readPortFile(status.file);
    if (file.state === "missing" && !current && !(fileInfo(worktree.path)?.isDirectory ?? false)) {
      if (!worktree.locked) return { ...status, state: "stale" as const, reserved: [] };
      file = readKeptCopy(repository.commonDir, worktree.path);
      if (file.state !== "read") {
        const detail = "locked, directory absent; its ports are unknown";
        return { ...status, state: "absent" as const, detail, reserved: [] };
      }
      for (const [key, value] of Object.entries(file.data)) {
        if (isPort(value)) status.ports[key] = value;
      }
      status.slot = file.meta?.slot;
      const detail = "locked, directory absent; holds the ports of its last written file";
      return { ...status, state: "absent" as const, detail, reserved: file.ports };
    }
    if (file.state === "missing") return { ...status, state: "none" as const, reserved: [] };
    if (file.state === "unreadable") {
      return { ...status, state: "unreadable" as const, detail: file.reason, reserved: [] };
    }
    for (const [key, value] of Object.entries(file.data)) {
      if (isPort(value)) status.ports[key] = value;
    }
    status.slot = file.meta?.slot;
    status.allocatedAt = file.meta?.allocated_at || undefined;
    if (
      file.meta && !(await isSameDirectory(file.meta.worktree, worktree.path)) &&
      namesOtherWorktree(file.meta.worktree, worktree, repository.worktrees)
    ) {
      return { ...status, state: "foreign" as const, detail: file.meta.worktree, reserved: [] };
    }
    if (file.invalid !== undefined) {
      return {
        ...status,
        state: "invalid" as const,
        detail: file.invalid.join("; "),
        reserved: file.ports,
      };
    }
    if (
      file.meta && isOutdated(file.data, expectedBundle(worktree, file.meta.slot, options))
    ) {
      return { ...status, state: "outdated" as const, reserved: file.ports };
    }
    return { ...status, reserved: file.ports };
  }));

  // Foreign and unreadable files are reported as such, not as duplicates:
  // a copied file shares its origin's ports by definition.
  const holders = new Map<number, number[]>();
  statuses.forEach((status, index) => {
    for (const port of status.reserved) holders.set(port, [...(holders.get(port) ?? []), index]);
  });
  statuses.forEach((status, index) => {
    const shared = new Map<number, number[]>();
    for (const port of status.reserved) {
      for (const other of holders.get(port)!) {
        if (other !== index) shared.set(other, [...(shared.get(other) ?? []), port]);
      }
    }
    for (const [other, ports] of shared) {
      status.conflicts.push({ worktree: statuses[other].path, ports });
    }
    if (status.conflicts.length > 0 && status.state === "ok") status.state = "duplicate";
  });

  if (options.listening !== false) {
    for (const status of statuses) await probeListening(status, probe);
  }
  return statuses;
}

/** Fills in which of a status's ports something listens on now. */
async function probeListening(status: WorktreeStatus, probe: PortProbe): Promise<void> {
  for (const [key, port] of Object.entries(status.ports)) {
    status.listening[key] = (await probePort(probe, port)) === "in-use";
  }
}

function isPort(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_PORT;
}

/** Compares two spellings of a directory, resolving symbolic links only when they differ. */
async function isSameDirectory(a: string, b: string): Promise<boolean> {
  if (comparablePath(a) === comparablePath(b)) return true;
  const real = async (path: string) => {
    try {
      return comparablePath(await Deno.realPath(path));
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      return undefined;
    }
  };
  const [realA, realB] = await Promise.all([real(a), real(b)]);
  return realA !== undefined && realA === realB;
}

// ---------------------------------------------------------------------------
// Every slot
// ---------------------------------------------------------------------------

/**
 * How a slot stands: `held`, a worktree's port file reserves one of its
 * ports; `blocked`, it holds a port browsers refuse, so it is never handed
 * out; `in-use`, a process listens on one of its ports; `permission-denied`,
 * the operating system refuses to bind one; `free`, an allocation could take
 * it now.
 */
export type SlotState = "free" | "held" | "blocked" | "in-use" | "permission-denied";

/** One row of {@linkcode listSlots}. */
export interface SlotInfo {
  /** The slot: 0 is the main worktree's. */
  slot: number;
  /** How it stands; `held` comes first, then `blocked`, then what probing found. */
  state: SlotState;
  /** Its ports and filled-in templates, as its port file would hold them. */
  bundle: Record<string, number | string>;
  /** The worktrees whose port files reserve any of its ports; more than one is a conflict. */
  holders: string[];
  /** The current worktree is one of the holders. */
  current: boolean;
  /** Its ports that browsers refuse. */
  blocked: number[];
  /** Its ports a process listens on; probed only in slots neither held nor blocked. */
  busy: number[];
  /** Its ports the operating system refuses to bind; probed as `busy` is. */
  denied: number[];
}

/** Options for {@linkcode listSlots}. */
export interface ListSlotsOptions extends ConfigOverrides, PortFilePathOptions {
  /**
   * The config file; relative paths are resolved against the worktree root.
   *
   * @default {undefined} `worktree-ports.config.json` in the worktree root, if present
   */
  config?: string;
  /**
   * Probe the ports of slots that no worktree holds, to find those in use.
   *
   * @default {true}
   */
  listening?: boolean;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
  /**
   * Called with each problem that did not stop the listing, such as a port
   * file that cannot be read.
   *
   * @default {undefined}
   */
  onWarning?: (warning: string) => void;
}

/**
 * Lists every slot of the current worktree's config, 0 to `slots`, with its
 * bundle, the worktrees that hold it, and why a free-looking one would be
 * skipped: a port browsers refuse, a port in use, or one the operating system
 * refuses. Useful for registering redirect URIs or tunnel hosts for a
 * bounded set of slots up front. Changes nothing and takes no lock.
 *
 * @param options Where, which config and port file, and the injected git and probe.
 * @returns One row per slot, from slot 0.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED` or `INVALID_CONFIG`.
 *
 * @example Usage
 * ```ts ignore
 * import { listSlots } from "@org/worktree-ports";
 *
 * for (const { slot, state, bundle } of await listSlots()) {
 *   console.log(slot, state, bundle);
 * }
 * ```
 */
export async function listSlots(options: ListSlotsOptions = {}): Promise<SlotInfo[]> {
  const repository = await openRepository({ cwd: options.cwd, git: options.git });
  const config = loadConfig(repository.root, options);
  const ownPath = portFilePath(repository.root, options);
  const inside = relativeInside(repository.root, ownPath) ?? PORT_FILE_NAME;
  const probe = options.probe ?? denoProbe;
  const holders = heldPorts(repository, ownPath, inside, options.onWarning);
  const slots: SlotInfo[] = [];
  for (let slot = 0; slot <= config.slots; slot++) {
    const ports = Object.values(portsForSlot(config, slot));
    const held = [...new Set(ports.flatMap((port) => holders.get(port) ?? []))];
    const blocked = ports.filter((port) => BROWSER_BLOCKED_PORTS.has(port));
    const busy: number[] = [];
    const denied: number[] = [];
    if (held.length === 0 && blocked.length === 0 && options.listening !== false) {
      for (const port of ports) {
        const status = await probePort(probe, port);
        if (status === "in-use") busy.push(port);
        if (status === "permission-denied") denied.push(port);
      }
    }
    slots.push({
      slot,
      state: held.length > 0
        ? "held"
        : blocked.length > 0
        ? "blocked"
        : denied.length > 0
        ? "permission-denied"
        : busy.length > 0
        ? "in-use"
        : "free",
      bundle: renderBundle(config, slot),
      holders: held.map((worktree) => worktree.path),
      current: held.includes(repository.current),
      blocked,
      busy,
      denied,
    });
  }
  return slots;
}

/**
 * Every port a worktree's file reserves, with each worktree holding it. The
 * other worktrees' files are read as an allocation reads them (see
 * {@linkcode scanReservations}), one worktree at a time so that a port two
 * of them hold names both: a damaged file keeps the ports its text names, an
 * unreadable one and a locked worktree whose directory is away the ports of
 * the copy kept in git's directory.
 */
function heldPorts(
  repository: Repository,
  ownPath: string,
  inside: string,
  onWarning: ((warning: string) => void) | undefined,
): Map<number, Worktree[]> {
  const holders = new Map<number, Worktree[]>();
  const hold = (port: number, worktree: Worktree) =>
    holders.set(port, [...(holders.get(port) ?? []), worktree]);
  for (const worktree of repository.worktrees) {
    if (worktree.bare || worktree.prunable) continue;
    if (worktree === repository.current) {
      const file = readPortFile(ownPath);
      if (file.state === "read") { for (const port of file.ports) hold(port, worktree); }
      continue;
    }
    const scan = scanReservations({ ...repository, worktrees: [worktree] }, ownPath, inside, {});
    for (const warning of scan.warnings) onWarning?.(warning);
    for (const port of scan.holders.keys()) hold(port, worktree);
  }
  return holders;
}
// ---------------------------------------------------------------------------
// Repairing
// ---------------------------------------------------------------------------

/** Options for {@linkcode fixWorktrees}. */
export interface FixOptions extends ConfigOverrides, PortFilePathOptions {
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * Called with the lock's path when another process holds it and waiting begins.
   *
   * @default {undefined}
   */
  onLockWait?: (path: string) => void;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
  /**
   * How ports are checked for listeners.
   *
   * @default {denoProbe}
   */
  probe?: PortProbe;
  /**
   * `machine` also looks at other repositories' port files recorded in the
   * machine-wide index; `repository` at this repository's worktrees only.
   *
   * @default {"machine"}
   */
  scope?: Scope;
  /**
   * Where the machine-wide index lives.
   *
   * @default {denoMachineIndex}
   */
  index?: MachineIndex;
}

/** One worktree moved by {@linkcode fixWorktrees} or {@linkcode fixMachine}. */
export interface Move {
  /** The worktree's path, as git reports it. */
  worktree: string;
  /**
   * Why it moved; `outdated` and `invalid` files are rewritten for the same
   * slot unless its new ports collide.
   */
  reason: "duplicate" | "foreign" | "unreadable" | "invalid" | "outdated";
  /** Its ports before (empty for an unreadable file). */
  from: Record<string, number>;
  /** The slot it was given. */
  slot: number;
  /** Its ports now. */
  to: Record<string, number>;
  /**
   * Problems that did not stop the move, such as keys of the old file (added
   * by hand) that the rewritten file no longer has.
   */
  warnings: string[];
}

/**
 * Repairs what {@linkcode inspectWorktrees} finds, under the same lock as
 * {@linkcode allocate}. Of two worktrees that share ports, the one whose
 * services are not listening moves; when neither or both are, the one
 * allocated later moves. Foreign, unreadable and invalid files are
 * reallocated for their own worktree. Running it again changes nothing.
 * Works from a bare repository's directory too.
 *
 * A port both files hold cannot tell whose service listens on it (finding
 * the owning process needs `/proc`, which Deno opens only with
 * `--allow-all`), so only the ports a worktree holds alone count as its
 * services listening.
 *
 * @param options Where, config overrides, the lock timeout, and the injected git and probe.
 * @returns Every move made, in git's order of worktrees.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED`,
 * `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
 *
 * @example Usage
 * ```ts ignore
 * import { fixWorktrees } from "@org/worktree-ports";
 *
 * for (const move of await fixWorktrees()) {
 *   console.log(move.worktree, move.from, "->", move.to);
 * }
 * ```
 */
export async function fixWorktrees(options: FixOptions = {}): Promise<Move[]> {
  const git = options.git ?? denoGit;
  const listed = await openRepositoryOrBare({ cwd: options.cwd, git });
  using _lock = await lockRepository(listed.commonDir, {
    timeoutMs: options.lockTimeoutMs,
    onWait: options.onLockWait,
  });
  using machine = await openMachineIndex(listed.commonDir, {
    scope: options.scope,
    index: options.index,
    lockOptions: { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait },
  });
  let repository = await currentListing(listed, git);
  if (hasVanishedWorktree(repository)) repository = await relist(listed, git);
  // Only the worktrees of a conflicting pair are probed, so the lock is held
  // for reading the files, not for binding every port of every worktree.
  const statuses = await inspectRepository(repository, { ...options, listening: false });
  return await repairStatuses(statuses, machine, options);
}

/**
 * Moves one worktree of each conflicting pair, and every foreign or
 * unreadable file, avoiding the ports the others keep and those that the
 * machine-wide index says other repositories hold. The caller holds the locks.
 */
async function repairStatuses(
  statuses: readonly InspectedStatus[],
  machine: Pick<MachineSession, "holders" | "record">,
  options: FixOptions,
): Promise<Move[]> {
  const probe = options.probe ?? denoProbe;
  const movers = new Map<WorktreeStatus, Move["reason"]>();
  for (const status of statuses) {
    if (
      status.state === "foreign" || status.state === "unreadable" ||
      status.state === "invalid" || status.state === "outdated"
    ) {
      movers.set(status, status.state);
    }
  }
  for (const status of statuses) {
    for (const conflict of status.conflicts) {
      const other = statuses.find((candidate) => candidate.path === conflict.worktree)!;
      if (movers.has(status) || movers.has(other)) continue;
      // Main worktrees (of two repositories, here) keep slot 0, and an absent
      // worktree cannot be written to: of a pair of those, neither moves.
      const pinned = (candidate: WorktreeStatus) =>
        candidate.primary || candidate.state === "absent";
      if (pinned(status) && pinned(other)) continue;
      const mover = pinned(status)
        ? other
        : pinned(other)
        ? status
        : await chooseMover(status, other, probe);
      movers.set(mover, "duplicate");
    }
  }

  const reserved = new Set<number>(machine.holders.keys());
  for (const status of statuses) {
    if (!movers.has(status)) { for (const port of status.reserved) reserved.add(port); }
  }
  const moves: Move[] = [];
  for (const [status, reason] of movers) {
    const root = await Deno.realPath(status.path);
    const config = loadConfig(root, options);
    const keptCopy = !status.primary && relativeInside(status.path, status.file) === PORT_FILE_NAME
      ? keptCopyPath(root)
      : undefined;
    // An outdated or invalid file keeps its slot unless the ports its config gives it now collide.
    const outdated = reason === "outdated" || reason === "invalid";
    const old = readPortFile(status.file);
    const allocation = await allocateSlot(
      { root, path: status.file, primary: status.primary, keptCopy, worktree: status },
      config,
      outdated ? old : { state: "missing" },
      reserved,
      { force: !outdated, probe: options.probe },
    );
    // allocateSlot warns about the keys it drops only from a file it was given.
    if (!outdated && old.state === "read" && allocation.written) {
      warnDroppedKeys(old.data, allocation, allocation.warnings);
    }
    const to = portsForSlot(config, allocation.slot);
    machine.record(status.file, root, status.repository);
    for (const port of Object.values(to)) reserved.add(port);
    moves.push({
      worktree: status.path,
      reason,
      from: status.ports,
      slot: allocation.slot,
      to,
      warnings: allocation.warnings,
    });
  }
  return moves;
}

/** Of two worktrees that share ports, the one that should move. */
async function chooseMover(
  a: WorktreeStatus,
  b: WorktreeStatus,
  probe: PortProbe,
): Promise<WorktreeStatus> {
  for (const status of [a, b]) {
    if (Object.keys(status.listening).length === 0) await probeListening(status, probe);
  }
  const listensAlone = (status: WorktreeStatus, other: WorktreeStatus) =>
    Object.entries(status.ports).some(([key, port]) =>
      status.listening[key] && !Object.values(other.ports).includes(port)
    );
  const aListens = listensAlone(a, b);
  if (aListens !== listensAlone(b, a)) return aListens ? b : a;
  const [aTime, bTime] = await Promise.all([allocationTime(a), allocationTime(b)]);
  return aTime > bTime ? a : b;
}

/** When a file's slot was allocated: its metadata, or the file's modification time for older files. */
async function allocationTime(status: WorktreeStatus): Promise<number> {
  if (status.allocatedAt !== undefined) return Date.parse(status.allocatedAt) || 0;
  try {
    return (await Deno.stat(status.file)).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Repairs what {@linkcode inspectMachine} finds, by the rules of
 * {@linkcode fixWorktrees}, across every repository in the machine-wide
 * index. The main worktrees of two repositories that share base ports cannot
 * move, and are left for the user. Every repository lock is taken, in order
 * of path, then the machine lock.
 *
 * @param options Where, config overrides (applied to every repository), the lock timeout, and the injected git, probe and index.
 * @returns Every move made.
 * @throws {WorktreePortsError} With code `GIT_FAILED`, `INVALID_CONFIG`, `LOCK_TIMEOUT` or `NO_FREE_SLOT`.
 *
 * @example Usage
 * ```ts ignore
 * import { fixMachine } from "@org/worktree-ports";
 *
 * for (const move of await fixMachine()) console.log(move.worktree, "->", move.to);
 * ```
 */
export async function fixMachine(options: FixOptions = {}): Promise<Move[]> {
  const found = await openIndexedRepositories(options);
  const lockOptions = { timeoutMs: options.lockTimeoutMs, onWait: options.onLockWait };
  const ordered = found.repositories.map((repository) => realPathOr(repository.commonDir)).sort();
  const locks: RepositoryLock[] = [];
  try {
    for (const commonDir of ordered) locks.push(await lockRepository(commonDir, lockOptions));
    using machine = await openMachineIndex(undefined, { index: options.index, lockOptions });
    const statuses = await inspectAll(found, { ...options, listening: false });
    return await repairStatuses(statuses, machine, options);
  } finally {
    for (const lock of locks.reverse()) lock.release();
  }
}

// ---------------------------------------------------------------------------
// Releasing
// ---------------------------------------------------------------------------

/** Options for {@linkcode releasePorts}. */
export interface ReleaseOptions extends PortFilePathOptions {
  /**
   * How long to wait for another allocation to release the lock.
   *
   * @default {DEFAULT_LOCK_TIMEOUT_MS}
   */
  lockTimeoutMs?: number;
  /**
   * How git is run.
   *
   * @default {denoGit}
   */
  git?: GitRunner;
}

/** What {@linkcode releasePorts} did. */
export interface Release {
  /** The port file. */
  path: string;
  /** The file existed and was deleted. */
  released: boolean;
}

/**
 * Deletes the current worktree's port file under the lock, so that its slot
 * is free for the next allocation. A missing file is not an error.
 *
 * @param options Where, which port file, the lock timeout and the git runner.
 * @returns The path and whether a file was deleted.
 * @throws {WorktreePortsError} With code `NOT_A_WORKTREE`, `GIT_FAILED` or `LOCK_TIMEOUT`.
 *
 * @example Usage
 * ```ts ignore
 * import { releasePorts } from "@org/worktree-ports";
 *
 * const { released, path } = await releasePorts();
 * console.log(released ? `deleted ${path}` : "nothing to release");
 * ```
 */
export async function releasePorts(options: ReleaseOptions = {}): Promise<Release> {
  const git = options.git ?? denoGit;
  const listed = await openRepository({ cwd: options.cwd, git });
  assertNotDirectory(portFilePath(listed.root, options));
  using _lock = await lockRepository(listed.commonDir, { timeoutMs: options.lockTimeoutMs });
  const repository = await currentListing(listed, git);
  assertStillWorktree(repository.root);
  const path = portFilePath(repository.root, options);
  removeStaleTemporaryFiles(path);
  if (path === joinPath(repository.root, PORT_FILE_NAME)) dropKeptCopy(repository.root);
  try {
    await Deno.remove(path);
    return { path, released: true };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { path, released: false };
    throw error;
  }
}

// ---------------------------------------------------------------------------
// Environment variables
// ---------------------------------------------------------------------------

/** How {@linkcode formatEnv} writes variables. */
export type EnvFormat = "shell" | "dotenv" | "json" | "fish";

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
  const quoted = (entries: readonly [string, string][]) =>
    entries.map(([key]) => `"${key}"`).join(" and ");
  for (const [name, entries] of byName) {
    if (isReservedEnvName(name)) {
      options.onWarning?.(
        `Left out ${entries.length === 1 ? "key" : "keys"} ${quoted(entries)} of the port file: ` +
          `${entries.length === 1 ? "it" : "they"} would set "${name}", which commands need from ` +
          `the environment (no config may have such a key: run "worktree-ports allocate" to ` +
          `rewrite the file from the config)`,
      );
    } else if (entries.length > 1) {
      options.onWarning?.(
        `Left out keys ${quoted(entries)} of the port file: they ${
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
 * single quotes (only `\\` and `\'` are escapes there).
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
    default:
      throw new TypeError(
        `Unknown env format "${format}" (expected "shell", "dotenv", "json" or "fish")`,
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

/**
 * Dotenv has no standard: python-dotenv (and docker compose v1, which uses
 * it), npm's `dotenv` and direnv each read quotes,
 * backslashes and `$` their own way. Each value is written in the first form
 * that all of them were found to read back exactly, and refused when there is
 * none:
 *
 * - bare, for plain characters;
 * - single quotes, unless the value holds `'`, `\\`, `${` or a line break, or
 *   ends with `\` (python-dotenv expands `${…}` and reads `\\` and `\'` as
 *   escapes there, direnv cannot read a line break there);
 * - double quotes, with `\n` and `\r` for line breaks, unless the value holds
 *   `"`, `\` or `$` (npm keeps escape backslashes, direnv expands `$NAME`);
 * - bare again for other values with backslashes, which every reader keeps
 *   as they are outside quotes, as long as there is no space, quote, `#`, `$`
 *   or backtick.
 */
function dotenvQuote(name: string, value: string): string {
  const control = /(?![\t\n\r])\p{Cc}/u.exec(value);
  if (control) throw dotenvError(name, [control[0]]);
  if (/^[\w.:/@+,=%-]*$/.test(value)) return value;
  const single = /['\n\r]|\\\\|\\$|\$\{/.exec(value);
  if (!single) return `'${value}'`;
  const double = /["\\$]/.exec(value);
  if (!double) return `"${value.replaceAll("\n", "\\n").replaceAll("\r", "\\r")}"`;
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
      `(python-dotenv, docker compose, npm dotenv, direnv) do not all read back the same in ` +
      `any quoting (use "--format json" or "--format shell")`,
  );
}

function describeCharacter(character: string): string {
  switch (character) {
    case "\n":
    case "\r":
      return "a line break";
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

/** The current worktree's bundle, as {@linkcode loadBundle} found or made it. */
export interface LoadedBundle {
  /** The port file. */
  path: string;
  /** The bundle's top-level values. */
  data: Record<string, unknown>;
  /** The allocation made because the worktree had no port file of its own, if one was made. */
  allocation?: Allocation;
  /**
   * The file was rewritten, as `allocation`, because its keys or values were
   * not what the config renders for its slot now.
   *
   * @default {false}
   */
  outdated?: boolean;
  /**
   * The file, as `allocation`, was rewritten because it named a path that is
   * no worktree now: it moved with its worktree, or was copied from a removed
   * one. It keeps its slot unless another worktree holds it.
   *
   * @default {false}
   */
  moved?: boolean;
}

/**
 * The current worktree's bundle: its own port file when it has one,
 * otherwise a fresh allocation (a missing, unreadable or copied file). A file
 * the config has changed under (keys added, removed or rendered differently),
 * or holding a number that is not a port, is rewritten for the same slot
 * under the lock, as {@linkcode allocate} would; the slot changes only when
 * the new ports collide.
 *
 * @param options The same options as {@linkcode allocate}, used when allocating.
 * @returns The bundle's values, and the allocation if one was made.
 * @throws {WorktreePortsError} As {@linkcode allocate} does, when it allocates.
 *
 * @example Usage
 * ```ts ignore
 * import { bundleEnv, loadBundle } from "@org/worktree-ports";
 *
 * const { data } = await loadBundle();
 * console.log(bundleEnv(data));
 * ```
 */
export async function loadBundle(options: AllocateOptions = {}): Promise<LoadedBundle> {
  const start = performance.now();
  const git = options.git ?? denoGit;
  const repository = await openRepository({ cwd: options.cwd, git });
  const path = portFilePath(repository.root, options);
  const file = readPortFile(path);
  let outdated = false;
  // A file that names another path (a moved worktree's, or a copy from a
  // removed one) is checked against the siblings under the lock: its slot
  // may be another worktree's by now.
  if (
    file.state === "read" && (file.meta === undefined || file.meta.worktree === repository.root)
  ) {
    outdated = file.invalid !== undefined || (file.meta !== undefined &&
      isOutdatedFor(repository, file.data, file.meta.slot, options));
    if (!outdated) return { path, data: file.data };
  }
  const moved = file.state === "read" && file.meta !== undefined &&
    file.meta.worktree !== repository.root && !isForeign(file, repository.root, repository);
  const allocation = await allocateIn(repository, options, git, start);
  return {
    path,
    data: portFileData(allocation),
    allocation,
    outdated,
    ...(moved ? { moved } : {}),
  };
}

// ---------------------------------------------------------------------------
// Running a command with the ports
// ---------------------------------------------------------------------------

/** Signals passed on to the child while it runs (Windows delivers only these two). */
const FORWARDED_SIGNALS: readonly Deno.Signal[] = IS_WINDOWS
  ? ["SIGINT", "SIGBREAK"]
  : ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

/** Signals a terminal raises from the keyboard, for every process in its foreground group. */
const KEYBOARD_SIGNALS: ReadonlySet<Deno.Signal> = new Set(["SIGINT", "SIGQUIT", "SIGBREAK"]);

/** How a command run by {@linkcode runWithPorts} ended. */
export interface RunResult {
  /** The exit code; for a child killed by a signal, 128 plus the signal's number. */
  code: number;
  /** The signal that killed the child, if one did. */
  signal: Deno.Signal | null;
  /** The allocation made first, if the worktree had no port file of its own. */
  allocation?: Allocation;
}

/** Options for {@linkcode runWithPorts}: those of {@linkcode allocate}, used when allocating, and one more. */
export interface RunOptions extends AllocateOptions {
  /**
   * The bundle to run the command with, from {@linkcode loadBundle}. Without
   * it the bundle is loaded (and allocated, if need be) first. Loading it
   * yourself lets you report a new allocation before a long-running command
   * starts.
   */
  bundle?: LoadedBundle;
}

/**
 * Runs a command with the current worktree's bundle added to its environment,
 * allocating first if needed. No shell is involved: the arguments reach the
 * command exactly as given. Standard input and output pass through, and
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT received meanwhile are passed on to it,
 * except that when standard input is a terminal, SIGINT and SIGQUIT are left
 * to the terminal: the key that raised them signals the command directly, and
 * passing them on too would deliver them twice.
 *
 * @param command The program to run, looked up on `PATH`.
 * @param args Its arguments.
 * @param options The options of {@linkcode allocate}, used when allocating, and `bundle`.
 * @returns How the command ended.
 * @throws {Deno.errors.NotFound} When the program does not exist.
 *
 * @example Usage
 * ```ts ignore
 * import { runWithPorts } from "@org/worktree-ports";
 *
 * const { code } = await runWithPorts("npm", ["run", "dev"]);
 * Deno.exitCode = code;
 * ```
 */
export async function runWithPorts(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const bundle = options.bundle ?? await loadBundle(options);
  // Listen before spawning: a signal that arrives while the child starts up
  // would otherwise take its default action and kill us, leaving the child
  // running. A listener runs on a later turn, by when `child` is set.
  let child: Deno.ChildProcess | undefined;
  // Ctrl-C on a terminal reaches the whole foreground process group, the
  // command included; a second copy makes many servers skip their graceful
  // shutdown. Such a signal is still listened for, so that we outlive it.
  const fromKeyboard = Deno.stdin.isTerminal();
  const forwarders = FORWARDED_SIGNALS.map((signal) => {
    const forward = () => {
      if (fromKeyboard && KEYBOARD_SIGNALS.has(signal)) return;
      try {
        child?.kill(signal);
      } catch {
        // The child has exited already.
      }
    };
    Deno.addSignalListener(signal, forward);
    return [signal, forward] as const;
  });
  try {
    child = new Deno.Command(command, {
      args: [...args],
      cwd: options.cwd,
      env: bundleEnv(bundle.data),
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    const code = status.signal === null ? status.code : 128 + (SIGNAL_NUMBERS[status.signal] ?? 0);
    return { code, signal: status.signal, allocation: bundle.allocation };
  } finally {
    for (const [signal, forward] of forwarders) Deno.removeSignalListener(signal, forward);
  }
}

/** The POSIX signal numbers that are the same on Linux and macOS. */
const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

function isPlainObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A file that exists but is not one this tool reads: a FIFO, a device, a huge file. */
class FileProblem extends Error {
  /** It is no regular file at all, rather than one too large. */
  readonly irregular: boolean;
  constructor(message: string, irregular: boolean) {
    super(message);
    this.name = "FileProblem";
    this.irregular = irregular;
  }
}

/**
 * Reads a small regular text file, without its UTF-8 byte-order mark.
 * Anything else is never opened: opening a FIFO for reading blocks until a
 * writer appears, and a device may never end. A file swapped for one between
 * the `stat` and the open is not caught; Deno has no non-blocking open.
 *
 * @throws {Deno.errors.NotFound} When nothing is there (a broken symbolic link included).
 * @throws {FileProblem} When the path is not a small regular file, saying what it is.
 */
function readRegularTextFile(path: string): string {
  const info = Deno.statSync(path);
  if (!info.isFile) throw new FileProblem(irregularFileKind(info), true);
  if (info.size > MAX_FILE_BYTES) {
    throw new FileProblem(`it is larger than ${MAX_FILE_BYTES} bytes`, false);
  }
  const text = Deno.readTextFileSync(path);
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function irregularFileKind(info: Deno.FileInfo): string {
  if (info.isDirectory) return "it is a directory";
  if (info.isFifo) return "it is a FIFO (named pipe), not a file";
  if (info.isSocket) return "it is a socket, not a file";
  if (info.isCharDevice || info.isBlockDevice) return "it is a device, not a file";
  return "it is not a regular file";
}

/** Why a file could not be read, in a few words. */
function fileProblemOf(error: unknown): string {
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.FilesystemLoop) return "it is a symbolic link loop";
  return (error as Error).message;
}

// Paths are joined by hand: importing node:path would load Deno's Node
// compatibility layer, which costs every run several megabytes of memory.

function comparablePath(path: string): string {
  return IS_WINDOWS ? path.replaceAll("\\", "/").toLowerCase() : path;
}

function isAbsolutePath(path: string): boolean {
  return path.startsWith("/") || (IS_WINDOWS && /^([A-Za-z]:)?[\\/]/.test(path));
}

/** The directory part of an absolute path. */
function parentOf(path: string): string {
  const slash = path.search(/[\\/][^\\/]*$/);
  return slash <= 0 ? path.slice(0, slash + 1) || "/" : path.slice(0, slash);
}

/** The last part of a path, as `basename` gives it. */
function baseName(path: string): string {
  return path.replace(/[\\/]+$/, "").split(/[\\/]/).at(-1) ?? "";
}

function joinPath(dir: string, name: string): string {
  return /[\\/]$/.test(dir) ? dir + name : `${dir}/${name}`;
}

function resolvePath(base: string, path: string): string {
  const joined = isAbsolutePath(path) ? path : joinPath(base, path);
  const parts: string[] = [];
  for (const part of joined.split(/[\\/]+/)) {
    if (part === "..") {
      if (parts.length > 1) parts.pop();
    } else if (part !== "." && (part !== "" || parts.length === 0)) {
      parts.push(part);
    }
  }
  return parts.join("/") || "/";
}

/** `path` relative to `dir` when it lies inside it, else `undefined`. */
function relativeInside(dir: string, path: string): string | undefined {
  const prefix = comparablePath(dir).replace(/\/+$/, "") + "/";
  return comparablePath(path).startsWith(prefix) ? path.slice(prefix.length) : undefined;
}

// ---------------------------------------------------------------------------
// The package root as a program
// ---------------------------------------------------------------------------

// `deno run jsr:@org/worktree-ports allocate` runs this module, the package's
// root, as the program: it behaves exactly as the command line. The CLI is
// loaded only then, and without a top-level await, so that importing this
// module stays free of side effects and `cli.ts` (which imports this module)
// finds it fully evaluated.
if (import.meta.main) {
  import("./cli.ts").then(async ({ main }) => Deno.exit(await main(Deno.args)));
}
