// Choosing a worktree's slot.

import { portsForSlot } from "./bundle.ts";
import type { PortsConfig } from "./config.ts";
import { type Environment, environmentOf } from "./environment.ts";
import { listPorts, WorktreePortsError } from "./errors.ts";
import { type PortProbe, type PortStatus, probePort } from "./probe.ts";
import { blockedPortsOf } from "./usable_ports.ts";

/** Options for {@linkcode chooseSlot}. */
export interface ChooseSlotOptions extends Pick<Environment, "probe"> {
  /**
   * The slot the worktree holds now, from its own port file.
   *
   * @default {undefined}
   */
  current?: number;
  /**
   * A slot the worktree's branch held before, taken again when it is in
   * range, unreserved and free (a linked worktree without a slot of its own).
   *
   * @default {undefined}
   */
  remembered?: number;
  /**
   * Choose afresh even when the current slot could be kept.
   *
   * @default {false}
   */
  force?: boolean;
  /**
   * The worktree is the main worktree, which takes slot 0 unless a worktree
   * of another repository holds one of its ports (see `othersHold`).
   *
   * @default {false}
   */
  primary?: boolean;
  /**
   * The ports that worktrees of other repositories hold. The main worktree
   * takes slot 0 unless one of them is a base port; then it takes a slot as
   * a linked worktree does. A main worktree whose file is at slot 0 keeps it.
   *
   * @default {undefined} none
   */
  othersHold?: Pick<ReadonlySet<number>, "has">;
}

/** The slot {@linkcode chooseSlot} picked. */
export interface SlotChoice {
  /** The slot. */
  slot: number;
  /** It is the worktree's current slot, kept without probing. */
  kept: boolean;
}

/**
 * Picks a worktree's slot. A worktree keeps its current slot when it is in
 * range and no other worktree reserves any of its ports (without probing:
 * its own services may be listening); the main worktree keeps slot 0
 * whatever else holds it. Otherwise the main worktree gets slot 0, unless a
 * worktree of another repository holds one of its base ports
 * (`othersHold`), and a linked worktree, or a main worktree whose base ports
 * are held, gets the slot its branch held before (`remembered`) when that
 * is unreserved and free, else the lowest slot from 1 whose ports are all
 * unreserved and free.
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
  const bases = Object.values(config.ports);
  const isReserved = (slot: number) =>
    bases.some((base) => reserved.has(base + slot * config.stride));
  const { current } = options;
  // The current slot is kept without probing: its own services may be listening there.
  if (options.primary && !options.force && current === 0) return { slot: 0, kept: true };
  if (
    !options.force && current !== undefined && current >= 1 &&
    current <= config.slots && !isReserved(current) && blockedPortsOf(config, current).length === 0
  ) {
    return { slot: current, kept: true };
  }
  if (options.primary && !bases.some((base) => options.othersHold?.has(base))) {
    return { slot: 0, kept: false };
  }
  const { probe } = environmentOf(options);
  const { remembered } = options;
  if (
    !options.force && !options.primary && current === undefined && remembered !== undefined &&
    remembered >= 1 && remembered <= config.slots && !isReserved(remembered) &&
    blockedPortsOf(config, remembered).length === 0 &&
    (await firstUnusable(probe, Object.values(portsForSlot(config, remembered)))) === undefined
  ) {
    return { slot: remembered, kept: false };
  }
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
