// The tables and lines that list, slots and check print.

import type { Move } from "../fix.ts";
import { holderName, holderPlace } from "../holders.ts";
import { strayHolders, type WorktreeStatus } from "../inspect.ts";
import type { SlotInfo } from "../slots.ts";

/** One table per repository, each under the repository's shared git directory. */
export function formatGroups(statuses: readonly WorktreeStatus[], color: boolean): string {
  const groups = new Map<string, WorktreeStatus[]>();
  for (const status of statuses) {
    const key = status.repository ?? "";
    groups.set(key, [...(groups.get(key) ?? []), status]);
  }
  return [...groups].map(([repository, group]) =>
    `repository ${printable(repository)}\n` + formatTable(group, color)
  ).join("\n");
}

const STATE_COLORS: Record<WorktreeStatus["state"], string> = {
  ok: "32",
  outdated: "33",
  none: "2",
  duplicate: "31",
  foreign: "33",
  unreadable: "31",
  invalid: "31",
  stale: "2",
  absent: "33",
  held: "31",
  gone: "2",
};

export function formatTable(statuses: readonly WorktreeStatus[], color: boolean): string {
  const paint = (code: string, text: string) => color ? `\x1b[${code}m${text}\x1b[0m` : text;
  const rows = statuses.map((status) => [
    (status.current ? "* " : "  ") + printable(status.path),
    status.branch ?? "-",
    status.slot === undefined ? "-" : String(status.slot),
    status.state,
    Object.entries(status.ports)
      .map(([key, port]) => `${printable(key)}=${port}${portNote(status, key, port)}`)
      .join(" "),
    noteOf(status),
  ]);
  const header = ["  WORKTREE", "BRANCH", "SLOT", "STATE", "PORTS", "NOTE"];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length))
  );
  // Colour goes on after padding, so the columns line up either way.
  const line = (cells: string[]) =>
    cells.map((cell, column) => {
      const padded = cell.padEnd(widths[column]);
      if (column === 3) return paint(STATE_COLORS[cell as WorktreeStatus["state"]], padded);
      return padded.replace(/\(listening\b/g, (word) => `(${paint("32", word.slice(1))}`);
    }).join("  ").trimEnd();
  const title = header.map((cell, column) => cell.padEnd(widths[column])).join("  ").trimEnd();
  return [paint("1", title), ...rows.map(line)].join("\n") + "\n";
}

/** A port held by another repository says so: whatever listens on it may well be theirs. */
function portNote(status: WorktreeStatus, key: string, port: number): string {
  const elsewhere = status.conflicts.some((conflict) =>
    conflict.repository !== undefined && conflict.repository !== status.repository &&
    conflict.ports.includes(port)
  );
  if (elsewhere) return " (held by another repository)";
  const holders = status.holders[key];
  if (holders !== undefined) return ` (listening: ${holders.map(holderName).join(", ")})`;
  return status.listening[key] ? " (listening)" : "";
}

/** A path in a line: quoted, with escapes where it holds control characters, so that it stays one line. */
function quotedPath(path: string): string {
  return /[\p{Cc}]/u.test(path) ? JSON.stringify(path) : `"${path}"`;
}

/** A path as one table cell: quoted, with escapes, when it holds control characters. */
function printable(text: string): string {
  return /[\p{Cc}]/u.test(text) ? JSON.stringify(text) : text;
}

function noteOf(status: WorktreeStatus): string {
  switch (status.state) {
    case "duplicate":
      return status.conflicts.map((c) =>
        `shares ${c.ports.join(", ")} with ${printable(c.worktree)}${
          c.repository !== undefined && c.repository !== status.repository
            ? " (another repository)"
            : ""
        }`
      )
        .join("; ");
    case "foreign":
      return `file written for ${printable(status.detail ?? "")}`;
    case "unreadable":
    case "invalid":
    case "absent":
      return status.detail ?? "";
    case "stale":
      return status.detail === undefined
        ? "directory gone"
        : `${status.detail} ("worktree-ports prune" runs it)`;
    case "outdated":
      return "config changed since written";
    case "none":
      return "no port file";
    case "gone":
      return status.detail?.includes("on_release")
        ? `${status.detail} ("worktree-ports prune" runs it)`
        : `${status.detail} ("worktree-ports prune" forgets it)`;
    case "held":
      return strayHolders(status).map(({ key, port, holder }) =>
        `${printable(key)} ${port} held by ${holderName(holder)} ${placeNote(holder.worktree)}`
      ).join("; ");
    default:
      return "";
  }
}

/** Where a stray holder runs, in a table cell. */
function placeNote(worktree: string | null | undefined): string {
  return worktree === null ? "outside every worktree" : `of ${printable(worktree ?? "")}`;
}

/** How wide the slots table may grow before its bundles wrap. */
const TABLE_WIDTH = 100;

export function formatSlots(slots: readonly SlotInfo[]): string {
  const value = (value: number | string) =>
    typeof value === "string" && /[\s"]|^$/.test(value) ? JSON.stringify(value) : String(value);
  const rows = slots.map((info) =>
    [
      String(info.slot),
      info.state,
      Object.entries(info.bundle).map(([key, v]) => `${key}=${printable(value(v))}`),
      slotNote(info),
    ] as const
  );
  const header = ["SLOT", "STATE", "BUNDLE", "NOTE"];
  const slotWidth = Math.max(4, ...rows.map((row) => row[0].length));
  const stateWidth = Math.max(5, ...rows.map((row) => row[1].length));
  const noteWidth = Math.max(4, ...rows.map((row) => row[3].length));
  // The bundle column takes what the others leave of the width, and its
  // items wrap onto lines of their own past it.
  const room = Math.max(20, TABLE_WIDTH - slotWidth - stateWidth - noteWidth - 6);
  const wrapped = rows.map(([slot, state, items, note]) => {
    const lines: string[] = [];
    for (const item of items) {
      const last = lines.at(-1);
      if (last !== undefined && last.length + 1 + item.length <= room) {
        lines[lines.length - 1] = `${last} ${item}`;
      } else {
        lines.push(item);
      }
    }
    return { slot, state, lines: lines.length === 0 ? [""] : lines, note };
  });
  const bundleWidth = Math.max(6, ...wrapped.flatMap((row) => row.lines.map((l) => l.length)));
  const line = (cells: readonly string[]) =>
    [
      cells[0].padEnd(slotWidth),
      cells[1].padEnd(stateWidth),
      cells[2].padEnd(bundleWidth),
      cells[3],
    ]
      .join("  ").trimEnd() + "\n";
  return line(header) +
    wrapped.map(({ slot, state, lines, note }) =>
      lines.map((text, index) =>
        index === 0 ? line([slot, state, text, note]) : line(["", "", text, ""])
      )
        .join("")
    ).join("");
}

function slotNote(info: SlotInfo): string {
  switch (info.state) {
    case "held":
      return info.holders.map(printable).join(", ") + (info.current ? " (this worktree)" : "");
    case "blocked":
      return `browsers refuse ${info.blocked.join(", ")}`;
    case "in-use":
      return `in use: ${info.busy.join(", ")}`;
    case "permission-denied":
      return `permission denied: ${info.denied.join(", ")}`;
    default:
      return info.slot === 0 ? "the main worktree's" : "";
  }
}

export function problemsOf(statuses: readonly WorktreeStatus[]): string[] {
  const problems: string[] = [];
  statuses.forEach((status, index) => {
    if (status.state === "foreign") {
      problems.push(`foreign: "${status.file}" was written for "${status.detail}"`);
    } else if (status.state === "unreadable") {
      problems.push(`unreadable: "${status.file}": ${status.detail}`);
    } else if (status.state === "invalid") {
      problems.push(`invalid: "${status.file}": ${status.detail}`);
    } else if (status.state === "outdated") {
      problems.push(
        status.detail === undefined
          ? `outdated: "${status.file}" is not what the config renders for slot ${status.slot} now`
          : `outdated: ${status.detail}`,
      );
    }
    for (const { key, port, holder } of strayHolders(status)) {
      const who = holder.pid === undefined ? holderName(holder) : `pid ${holder.pid}`;
      const what = holder.command === undefined ? "" : ` \`${holder.command}\``;
      const project = holder.composeProject === undefined
        ? ""
        : ` (compose project "${holder.composeProject}")`;
      const stays = status.primary
        ? " (the main worktree keeps slot 0: stop that process, or change the base port)"
        : "";
      problems.push(
        `held: ${who}${what}${project} ${holderPlace(holder)} holds ${key} ${port} of ${
          quotedPath(status.path)
        }${stays}`,
      );
    }
    for (const conflict of status.conflicts) {
      const other = statuses.findIndex((candidate) => candidate.path === conflict.worktree);
      if (other === -1) {
        problems.push(
          `conflict: "${status.path}" and "${conflict.worktree}" of the repository "${conflict.repository}" share ports ${
            conflict.ports.join(", ")
          }`,
        );
      } else if (other > index) {
        // Each pair once: from the worktree that comes first.
        problems.push(
          `conflict: "${status.path}" and "${conflict.worktree}" share ports ${
            conflict.ports.join(", ")
          }`,
        );
      }
    }
  });
  return problems;
}

export function formatMove(move: Move): string {
  const ports = (ports: Record<string, number>) =>
    Object.entries(ports).map(([key, port]) => `${printable(key)}=${port}`).join(" ") || "(none)";
  const verb = move.reason === "outdated" ? "updated" : "moved";
  const reason = move.detail === undefined ? move.reason : `${move.reason}: ${move.detail}`;
  // Only its env files differed: the ports stay, and saying "a -> a" says nothing.
  if (move.reason === "outdated" && ports(move.from) === ports(move.to)) {
    return `updated ${quotedPath(move.worktree)} (outdated): ${
      ports(move.to)
    } kept (slot ${move.slot})`;
  }
  return `${verb} ${quotedPath(move.worktree)} (${reason}): ${ports(move.from)} -> ${
    ports(move.to)
  } (slot ${move.slot})`;
}

/**
 * The slots branches without a worktree are remembered for, in one line
 * that says how long the memory lasts and how to forget it; empty when none.
 */
export function formatRemembered(slots: readonly { branch: string; slot: number }[]): string {
  if (slots.length === 0) return "";
  const listed = slots.map(({ branch, slot }) => `slot ${slot} for "${printable(branch)}"`)
    .join(", ");
  return `\nremembered: ${listed}: a new worktree of the branch gets its slot back while the ` +
    `slot is free, until another branch's worktree takes it ("worktree-ports prune --forget" ` +
    `forgets them)\n`;
}
