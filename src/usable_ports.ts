// Ports a bundle should not hold: those browsers refuse and the ephemeral range.

import { portsForSlot } from "./bundle.ts";
import type { PortsConfig } from "./config.ts";
import { DEFAULT_PROXY_PORT } from "./proxy_names.ts";
import { isPort, MAX_PORT } from "./names.ts";

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
export function blockedPortsOf(
  config: Pick<PortsConfig, "ports" | "stride">,
  slot: number,
): number[] {
  return Object.values(portsForSlot(config, slot)).filter((port) =>
    BROWSER_BLOCKED_PORTS.has(port)
  );
}

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
  const proxied = Object.entries(config.ports).filter(([, port]) => port === DEFAULT_PROXY_PORT);
  if (proxied.length > 0) {
    warnings.push(
      `Slot 0 of this config, the main worktree's, holds ${DEFAULT_PROXY_PORT} ("${
        proxied[0][0]
      }"), the port of "worktree-ports proxy" (linked worktrees skip it, the main worktree cannot; change the base port)`,
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
        `(from ${range.source}): ${inside.join(", ")}. Outgoing connections take ports from ` +
        `it, so a server there can find its port taken${
          outside ? `; choose base ports ${outside}` : ""
        } (see "Configuration" in the README)`,
    );
  }
  return warnings;
}
