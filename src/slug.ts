// A DNS label made from a branch or a folder's name, for `{slug}` and the proxy's host names.

/** The longest DNS label. */
const MAX_SLUG_LENGTH = 63;

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
