// Renders pages with a bundle in Node, for the parity test: the same ABI call the render
// pool makes. Usage: node tests/parity/render.mjs <cases.json>, where cases.json is
// [{ "bundle": "<path>", "page": "...", "input": {...} }]; prints a JSON array of
// { status, headers, html } (or { error }) in the same order.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const modules = new Map();
const results = [];
for (const { bundle, page, input } of cases) {
  const path = resolve(bundle);
  if (!modules.has(path)) modules.set(path, (await import(pathToFileURL(path).href)).default);
  try {
    const out = await modules.get(path).render({ page, ...input });
    results.push({ status: out.status ?? 200, headers: out.headers ?? [], html: out.html });
  } catch (error) {
    results.push({ error: String(error?.stack ?? error) });
  }
}
process.stdout.write(JSON.stringify(results));
