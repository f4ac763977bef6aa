// The render alone, in whichever runtime runs this (Node, Deno, Bun): the peers' handler
// (handler.mjs, the same input building and `bundle.render` call every peer serves) rendering
// /search?q=<n> in a loop, one at a time, no HTTP; then the HTML encoded to UTF-8, as a server
// must. The node's own figure for the same page: `mizan-render render --repeat N`.
//
//   node bench/peers/render-loop.mjs <bundle.mjs> <data.mjs> [renders]
//   deno run -A bench/peers/render-loop.mjs ... ; bun bench/peers/render-loop.mjs ...
//
// data.mjs: what bench/peers/run writes per framework (bench/out/peers/<app>/data.mjs).
// Prints {"ms_per_render": ..., "bytes": ...} after 500 renders of warm-up.
import { createHandler } from "./handler.mjs";

const args = globalThis.Deno ? Deno.args : (globalThis.Bun ? Bun.argv : globalThis.process.argv).slice(2);
const [bundlePath, dataPath, count] = args;
const absolute = (p) => (p.startsWith("/") ? p : `${globalThis.Deno ? Deno.cwd() : globalThis.process.cwd()}/${p}`);
const bundle = (await import(absolute(bundlePath))).default;
const data = await import(absolute(dataPath));
const handler = createHandler(bundle, data);
const renders = Number(count || 3000);
const encoder = new TextEncoder();
let bytes = 0;
for (let i = 0; i < 500; i++) bytes = encoder.encode((await handler.page(`/search?q=warm-${i}`)).html).length;
const started = performance.now();
for (let i = 0; i < renders; i++) bytes = encoder.encode((await handler.page(`/search?q=x-${i}`)).html).length;
const ms = (performance.now() - started) / renders;
console.log(JSON.stringify({ ms_per_render: Number(ms.toFixed(3)), bytes }));
