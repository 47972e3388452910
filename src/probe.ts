// Whether a port is free: the probe seam and its real default, Deno.listen.

/**
 * Addresses a port must be bindable on to count as free. The IPv6 ones are
 * skipped on hosts without IPv6. The IPv6 wildcard is bound as well as the
 * IPv4 ones: where listeners set `SO_REUSEADDR` with BSD's rules (macOS),
 * binding a specific address or the IPv4 wildcard succeeds while another
 * process listens on `[::]`, which is what Node's plain `listen(port)` opens;
 * only the same address is refused.
 */
export const PROBE_HOSTNAMES: readonly string[] = ["127.0.0.1", "::1", "0.0.0.0", "::"];

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
  return bindStatus(port, options.hostnames ?? PROBE_HOSTNAMES, listenAndClose);
}

function listenAndClose(hostname: string, port: number): void {
  Deno.listen({ hostname, port }).close();
}

/**
 * What binding `port` on each of `hostnames` with `bind` found. The binding
 * is a parameter so that the rules of another operating system can be put in
 * its place.
 */
export function bindStatus(
  port: number,
  hostnames: readonly string[],
  bind: (hostname: string, port: number) => void,
): PortStatus {
  for (const hostname of hostnames) {
    try {
      bind(hostname, port);
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
export async function probePort(probe: PortProbe, port: number): Promise<PortStatus> {
  if (probe.status) return await probe.status(port);
  return (await probe.isFree(port)) ? "free" : "in-use";
}
