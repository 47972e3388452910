// A slot's bundle: its ports, then its templates filled in for a worktree.

import { PLACEHOLDER_PATTERN, type PortsConfig } from "./config.ts";
import { baseName } from "./paths.ts";
import { proxyPortForTemplates, repositoryLabelOf } from "./proxy_names.ts";
import { slugOf } from "./slug.ts";
import type { Worktree } from "./worktree_list.ts";

/** The longest DNS label. */

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
  for (const [key, template] of Object.entries(config.templates)) {
    bundle[key] = fillPlaceholders(template, ports, slot, options.worktree, config.name);
  }
  return bundle;
}

/**
 * A template with its placeholders filled: `{key}` from `values`, `{slot}`,
 * `{branch}`, `{name}`, `{slug}`, `{repo}` and `{proxy_port}` from the slot,
 * worktree and repository name (as
 * {@linkcode renderBundle} fills them), and `{{`, `}}` as braces. The config
 * allows no other placeholder.
 */
export function fillPlaceholders(
  template: string,
  values: Readonly<Record<string, number | string>>,
  slot: number,
  worktree?: Pick<Worktree, "path" | "branch">,
  repository?: string,
): string {
  const name = () => worktree === undefined ? "" : baseName(worktree.path);
  // Worked out only for the templates that use them: a slug costs a cold
  // process Unicode tables, which most configs never need.
  const value = (placeholder: string): string => {
    if (placeholder === "slot") return String(slot);
    if (placeholder === "branch") return worktree?.branch ?? "";
    if (placeholder === "name") return name();
    if (placeholder === "proxy_port") return String(proxyPortForTemplates());
    if (placeholder === "repo") {
      return worktree === undefined
        ? repository ?? "repo"
        : repositoryLabelOf(worktree.path, repository);
    }
    // A branch of only punctuation falls back to the name, and no worktree to the slot.
    return slugOf(worktree?.branch ?? "") || slugOf(name()) || `slot-${slot}`;
  };
  return template.replace(PLACEHOLDER_PATTERN, (token, name?: string) => {
    if (name === undefined) return token[0];
    return Object.hasOwn(values, name) ? String(values[name]) : value(name);
  });
}
