// Path strings, joined and compared by hand: importing node:path would load Deno's
// Node compatibility layer, which costs every run several megabytes of memory.
//
// Every function takes the system's rules as its last parameter, defaulting
// to this one's, so that Windows' rules are tested wherever the suite runs.

export const IS_WINDOWS = Deno.build.os === "windows";

/**
 * The root a path starts with: `/` on Unix; on Windows also a drive's root
 * (`C:\`, `C:/`) or a UNC share (`\\server\share\`, `//wsl.localhost/Ubuntu/`),
 * which no `..` climbs out of. Empty for a relative path.
 */
export function rootOf(path: string, windows = IS_WINDOWS): string {
  if (!windows) return path.startsWith("/") ? "/" : "";
  // A long or device path (\\?\C:\, \\?\UNC\server\share\) has its root after the prefix.
  const long = /^[\\/]{2}[?.][\\/](UNC[\\/][^\\/]+[\\/]+[^\\/]+|[A-Za-z]:)?[\\/]*/i.exec(path);
  if (long !== null) return long[0];
  const unc = /^[\\/]{2}(?![\\/.?])[^\\/]+[\\/]+[^\\/]+[\\/]*/.exec(path);
  if (unc !== null) return unc[0];
  return /^([A-Za-z]:)?[\\/]/.exec(path)?.[0] ?? "";
}

export function isAbsolutePath(path: string, windows = IS_WINDOWS): boolean {
  return rootOf(path, windows) !== "";
}

/**
 * A path spelled so that two spellings of one file compare equal: on Windows
 * with forward slashes and in lower case, as its file systems ignore case.
 */
export function comparablePath(path: string, windows = IS_WINDOWS): string {
  return windows ? path.replaceAll("\\", "/").toLowerCase() : path;
}

/**
 * One spelling of a path for what is stored and shown: on Windows with
 * forward slashes, as git writes paths there, so that a file reached as
 * `C:\a\b` and as `C:/a/b` is kept once.
 */
export function slashedPath(path: string, windows = IS_WINDOWS): string {
  return windows ? path.replaceAll("\\", "/") : path;
}

/** The directory part of an absolute path; a root is its own parent. */
export function parentOf(path: string, windows = IS_WINDOWS): string {
  const root = rootOf(path, windows);
  const rest = path.slice(root.length).replace(/[\\/]+$/, "");
  const slash = rest.search(/[\\/][^\\/]*$/);
  return slash === -1 ? root || "/" : root + rest.slice(0, slash);
}

/** The last part of a path, as `basename` gives it. */
export function baseName(path: string): string {
  return path.replace(/[\\/]+$/, "").split(/[\\/]/).at(-1) ?? "";
}

export function joinPath(dir: string, name: string): string {
  return /[\\/]$/.test(dir) ? dir + name : `${dir}/${name}`;
}

/** `path` resolved against `base` when relative, with `.` and `..` taken out. */
export function resolvePath(base: string, path: string, windows = IS_WINDOWS): string {
  const joined = isAbsolutePath(path, windows) ? path : joinPath(base, path);
  const root = rootOf(joined, windows);
  const parts: string[] = [];
  for (const part of joined.slice(root.length).split(/[\\/]+/)) {
    if (part === "..") parts.pop();
    else if (part !== "." && part !== "") parts.push(part);
  }
  const rest = parts.join("/");
  if (root === "") return rest || "/";
  // A long path takes no forward slashes: it is passed on to the system unparsed.
  if (/^[\\/]{2}[?.]/.test(root)) {
    return root.replace(/[\\/]*$/, "\\") + rest.replaceAll("/", "\\");
  }
  // A drive's root keeps its slash: "C:" alone is the drive's current directory.
  const top = root.replaceAll("\\", "/").replace(/\/+$/, "");
  if (rest !== "") return `${top}/${rest}`;
  return /^\/\//.test(top) ? top : `${top}/`;
}

/** `path` relative to `dir` when it lies inside it, else `undefined`. */
export function relativeInside(
  dir: string,
  path: string,
  windows = IS_WINDOWS,
): string | undefined {
  const prefix = comparablePath(dir, windows).replace(/\/+$/, "") + "/";
  return comparablePath(path, windows).startsWith(prefix) ? path.slice(prefix.length) : undefined;
}

export function isInside(dir: string, path: string, windows = IS_WINDOWS): boolean {
  return relativeInside(dir, path, windows) !== undefined;
}
