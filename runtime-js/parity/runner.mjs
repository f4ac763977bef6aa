// Copyright the mizan-render authors. MIT license.
//
// The parity runner for Node, Deno and Bun: renders every case of a request with the bundle,
// the same ABI call this node's render pool makes (docs/bundle-abi.md), and prints one JSON
// response on stdout, nothing else.
//
//   node runner.mjs request.json
//   deno run --no-config --no-lock --no-prompt --allow-read=<this directory>,<bundle> runner.mjs request.json
//   bun --no-env-file --no-install runner.mjs request.json
//
// (Deno needs to read only this directory, where request.json is too, and the bundle: no
// --allow-env. Run each with TZ=UTC and LC_ALL=C.UTF-8, as workerd and the edge: Node, Deno
// and workerd take the local time zone and the default locale from the environment.)
//
// Request: {"bundle": "<absolute path>", "deterministic": bool, "cases": [{"name", "input"}]},
// `input` the render input with `page`. Response: {"runtime", "version", "results"}, one result
// per case in order: {"status", "headers": [[name, value], …], "html", "intl"} or
// {"error", "intl"}. `intl` lists the Intl calls the render made (intl.js).
//
// Imports results.mjs (shared with worker.mjs) and reads two files next to itself: intl.js (always) and determinism.js (when
// "deterministic"), both classic scripts, evaluated before the bundle loads. Exits 0 whenever
// it answers (a bundle that fails to load is an error in every result); 2, with a message on
// stderr, when the request is unusable.

import { deadline, describe, normalise } from "./results.mjs";

const runtime =
  typeof globalThis.Bun === "object" && globalThis.Bun !== null
    ? "bun"
    : typeof globalThis.Deno === "object" && globalThis.Deno !== null
      ? "deno"
      : "node";
const version =
  runtime === "bun"
    ? globalThis.Bun.version
    : runtime === "deno"
      ? globalThis.Deno.version.deno
      : globalThis.process.versions.node;

const readText =
  runtime === "deno"
    ? (path) => globalThis.Deno.readTextFileSync(path)
    : await import("node:fs").then((fs) => (path) => fs.readFileSync(path, "utf8"));

function args() {
  return runtime === "deno" ? globalThis.Deno.args : globalThis.process.argv.slice(2);
}

function exit(code) {
  if (runtime === "deno") globalThis.Deno.exit(code);
  else globalThis.process.exit(code);
}

async function writeStdout(text) {
  if (runtime === "deno") {
    const bytes = new TextEncoder().encode(text);
    for (let at = 0; at < bytes.length; ) at += globalThis.Deno.stdout.writeSync(bytes.subarray(at));
  } else if (runtime === "bun") {
    await globalThis.Bun.write(globalThis.Bun.stdout, text);
  } else {
    await new Promise((resolve, reject) => globalThis.process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
  }
}

function fail(message) {
  const text = `parity runner (${runtime}): ${message}\n`;
  if (runtime === "deno") globalThis.Deno.stderr.writeSync(new TextEncoder().encode(text));
  else globalThis.process.stderr.write(text);
  exit(2);
}

/** A file: URL for an absolute path. */
function fileUrl(path) {
  return "file://" + path.split("/").map(encodeURIComponent).join("/");
}

/** Evaluates a classic script of this directory in the global scope. */
function evaluate(name) {
  const text = readText(new URL(`./${name}`, import.meta.url));
  (0, eval)(`${text}\n//# sourceURL=${name}`);
}


// The request.
const [requestPath] = args();
if (!requestPath) fail("usage: runner.mjs <request.json>");
let request;
try {
  request = JSON.parse(readText(requestPath));
} catch (e) {
  fail(`cannot read the request ${requestPath}: ${e?.message ?? e}`);
}
if (
  request === null || typeof request !== "object" || typeof request.bundle !== "string" ||
  !request.bundle.startsWith("/") || !Array.isArray(request.cases) ||
  !request.cases.every((c) => c !== null && typeof c === "object" && c.input !== null && typeof c.input === "object")
) {
  fail(`the request ${requestPath} is not {"bundle": "<absolute path>", "deterministic": bool, "cases": [{"name", "input": {...}}, ...]}`);
}

// Stdout carries the response alone: what the bundle logs goes to stderr.
const logToStderr = console.error.bind(console);
const toStderr = {
  group: (...data) => (data.length > 0 ? logToStderr(...data) : undefined),
  count: (label = "default") => logToStderr(`${label}`),
  countReset: () => {},
  timeLog: (label = "default", ...data) => logToStderr(`${label}`, ...data),
  trace: (...data) => logToStderr("Trace:", ...data, `\n${String(new Error().stack).split("\n").slice(2).join("\n")}`),
};
toStderr.groupCollapsed = toStderr.group;
toStderr.timeEnd = toStderr.timeLog;
for (const name of ["log", "info", "debug", "dir", "dirxml", "table", "group", "groupCollapsed", "count", "countReset", "timeLog", "timeEnd", "trace"]) {
  const method = toStderr[name] ?? logToStderr;
  Object.defineProperty(console, name, { value: method, writable: true, enumerable: true, configurable: true });
}

// The preludes, then the bundle.
if (request.deterministic === true) evaluate("determinism.js");
evaluate("intl.js");
const determinism = globalThis[Symbol.for("mizan.parity.determinism")];
const intl = globalThis[Symbol.for("mizan.parity.intl")];

let entry = null;
let loadError = null;
try {
  const namespace = await import(fileUrl(request.bundle));
  entry = namespace.default;
  if (entry === null || (typeof entry !== "object" && typeof entry !== "function")) {
    throw new TypeError("the bundle has no default export (expected { render(input) })");
  }
  if (typeof entry.render !== "function") throw new TypeError("the bundle's default export has no render(input) function");
} catch (e) {
  loadError = `the bundle failed to load: ${describe(e)}`;
}

const results = [];
for (const { input } of request.cases) {
  if (loadError !== null) {
    results.push({ error: loadError, intl: [] });
    continue;
  }
  determinism?.reset();
  intl?.start();
  let result;
  try {
    const out = await deadline(Promise.resolve().then(() => entry.render(input)));
    result = normalise(out);
  } catch (e) {
    result = { error: describe(e) };
  }
  result.intl = intl ? intl.stop() : [];
  results.push(result);
}

await writeStdout(JSON.stringify({ runtime, version, results }));
// Timers or handles a render left must not keep the runtime alive.
exit(0);
