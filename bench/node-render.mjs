// Node's side of the render benchmark: the same bundle, the same input, the same ABI call.
// Usage: node bench/node-render.mjs <bundle.mjs> <input.json> <renders>
// Prints {"ms_per_render": ..., "bytes": ...} after warming up.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [bundlePath, inputPath, count] = process.argv.slice(2);
const bundle = (await import(pathToFileURL(resolve(bundlePath)).href)).default;
const inputJson = readFileSync(inputPath, "utf8");
const renders = Number(count);

let bytes = 0;
// Same work per render as the isolate: parse the input JSON, render, keep the HTML.
const once = async () => (bytes = Buffer.byteLength((await bundle.render(JSON.parse(inputJson))).html));
for (let i = 0; i < Math.min(200, renders); i++) await once();
const start = process.hrtime.bigint();
for (let i = 0; i < renders; i++) await once();
const ms = Number(process.hrtime.bigint() - start) / 1e6;
process.stdout.write(JSON.stringify({ ms_per_render: ms / renders, bytes }));
