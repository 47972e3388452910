import assert from "node:assert/strict";
import { renderBundle } from "./bundle.ts";
import { slugOf } from "./slug.ts";
import { parseConfig } from "./config.ts";

Deno.test("renderBundle() fills {slot}, {branch}, {name} and {slug} from the worktree, {{ and }} as braces", async (t) => {
  const config = parseConfig({
    ports: { web_port: 3000 },
    templates: {
      project: "app-{slug}",
      url: "http://{slug}.localhost:{web_port}",
      db: "app_{slot}_{name}",
      branch: "{branch}",
      braces: "{{web_port}} }}{{ {{{web_port}}} { x }",
    },
  });
  await t.step("on a branch", () => {
    const bundle = renderBundle(config, 2, {
      worktree: { path: "/src/app-login/", branch: "Feature/Login_Page" },
    });
    assert.deepEqual(bundle, {
      web_port: 3200,
      project: "app-feature-login-page",
      url: "http://feature-login-page.localhost:3200",
      db: "app_2_app-login",
      branch: "Feature/Login_Page",
      braces: "{web_port} }{ {3200} { x }",
    });
  });
  await t.step("detached: no branch, the slug from the directory's name", () => {
    const bundle = renderBundle(config, 1, { worktree: { path: "/src/Hot Fix 2" } });
    assert.equal(bundle.branch, "");
    assert.equal(bundle.project, "app-hot-fix-2");
  });
  await t.step("without a worktree", () => {
    const bundle = renderBundle(config, 3);
    assert.deepEqual([bundle.branch, bundle.project, bundle.db], ["", "app-slot-3", "app_3_"]);
  });
});

Deno.test("slugOf() makes a DNS label of at most 63 characters", () => {
  for (
    const [text, slug] of [
      ["Feature/Login_Page", "feature-login-page"],
      ["--main--", "main"],
      ["fix/Ünïcode  names!", "fix-unicode-names"],
      ["日本", ""],
      ["a".repeat(70), "a".repeat(63)],
      [`${"a".repeat(62)}/b`, "a".repeat(62)],
    ]
  ) {
    assert.equal(slugOf(text), slug, text);
  }
});
