// Copyright the mizan-render authors. MIT license.
//
// The parity worker for workerd: `fetch` takes a parity request as a POST body and answers the
// parity response, rendering every case with the bundle, the same ABI call this node's render
// pool makes (docs/bundle-abi.md). The config (workerd.capnp.tmpl) gives it four modules:
//
//   worker.mjs       this file, the main module
//   bundle.mjs       the bundle
//   intl.js          the Intl recorder (imported here, before the bundle)
//   determinism.js   the determinism prelude (imported, before the bundle, when the first
//                    request says "deterministic")
//
// Request: {"bundle": "<path, ignored here>", "deterministic": bool, "cases": [{"name",
// "input"}]}. Response: {"runtime": "workerd", "version", "results"}, one result per case in
// order: {"status", "headers": [[name, value], …], "html", "intl"} or {"error", "intl"}.
// `version` is the text binding WORKERD_VERSION. The bundle loads once, on the first request,
// so every request a process serves must ask for the same "deterministic" (another answers
// 409). A request that is not a parity request answers 400.
import "./intl.js";
import { deadline, describe, normalise } from "./results.mjs";

let deterministic = null; // the mode of the first request
let loading = null; // the bundle's default export, or the load error's text


async function load(wantDeterminism) {
  // Without its module the run cannot be deterministic: that fails the request (500).
  if (wantDeterminism) await import("./determinism.js");
  try {
    const namespace = await import("./bundle.mjs");
    const entry = namespace.default;
    if (entry === null || (typeof entry !== "object" && typeof entry !== "function")) {
      throw new TypeError("the bundle has no default export (expected { render(input) })");
    }
    if (typeof entry.render !== "function") throw new TypeError("the bundle's default export has no render(input) function");
    return entry;
  } catch (e) {
    return `the bundle failed to load: ${describe(e)}`;
  }
}

function answer(status, text) {
  return new Response(text, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}

export default {
  async fetch(request, env) {
    if (request.method !== "POST") return answer(405, "POST a parity request");
    let body;
    try {
      body = await request.json();
    } catch (e) {
      return answer(400, `the request is not JSON: ${e?.message ?? e}`);
    }
    if (
      body === null || typeof body !== "object" || !Array.isArray(body.cases) ||
      !body.cases.every((c) => c !== null && typeof c === "object" && c.input !== null && typeof c.input === "object")
    ) {
      return answer(400, 'the request is not {"bundle", "deterministic": bool, "cases": [{"name", "input": {...}}, ...]}');
    }
    const wanted = body.deterministic === true;
    if (deterministic === null) {
      deterministic = wanted;
      loading = load(wanted);
    } else if (deterministic !== wanted) {
      return answer(409, `this workerd loaded the bundle with deterministic=${deterministic}; start another for deterministic=${wanted}`);
    }
    let entry;
    try {
      entry = await loading;
    } catch (e) {
      return answer(500, `cannot set up the render: ${describe(e)}`);
    }
    const determinism = globalThis[Symbol.for("mizan.parity.determinism")];
    const intl = globalThis[Symbol.for("mizan.parity.intl")];

    const results = [];
    for (const { input } of body.cases) {
      if (typeof entry === "string") {
        results.push({ error: entry, intl: [] });
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
    const version = typeof env?.WORKERD_VERSION === "string" ? env.WORKERD_VERSION : "unknown";
    return new Response(JSON.stringify({ runtime: "workerd", version, results }), {
      headers: { "content-type": "application/json; charset=utf-8" },
    });
  },
};
