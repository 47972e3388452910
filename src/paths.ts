// Path strings, joined and compared by hand: importing node:path would load Deno's
// Node compatibility layer, which costs every run several megabytes of memory.

export const IS_WINDOWS = Deno.build.os === "windows";

export function isInside(dir: string, path: string): boolean {
  return relativeInside(dir, path) !== undefined;
}

// Paths are joined by hand: importing node:path would load Deno's Node
// compatibility layer, which costs every run several megabytes of memory.

export function comparablePath(path: string): string {
  return IS_WINDOWS ? path.replaceAll("\\", "/").toLowerCase() : path;
}

export function isAbsolutePath(path: string): boolean {
  return path.startsWith("/") || (IS_WINDOWS && /^([A-Za-z]:)?[\\/]/.test(path));
}

/** The directory part of an absolute path. */
export function parentOf(path: string): string {
  const slash = path.search(/[\\/][^\\/]*$/);
  return slash <= 0 ? path.slice(0, slash + 1) || "/" : path.slice(0, slash);
}

/** The last part of a path, as `basename` gives it. */
export function baseName(path: string): string {
  return path.replace(/[\\/]+$/, "").split(/[\\/]/).at(-1) ?? "";
}

export function joinPath(dir: string, name: string): string {
  return /[\\/]$/.test(dir) ? dir + name : `${dir}/${name}`;
}

export function resolvePath(base: string, path: string): string {
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
export function relativeInside(dir: string, path: string): string | undefined {
  const prefix = comparablePath(dir).replace(/\/+$/, "") + "/";
  return comparablePath(path).startsWith(prefix) ? path.slice(prefix.length) : undefined;
}
