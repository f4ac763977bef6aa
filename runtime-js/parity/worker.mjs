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

// A render that has not settled after this long is an error (workerd would otherwise cancel
// the whole request as hung when nothing is left to wait for).
const TIMEOUT_MS = 60_000;

let deterministic = null; // the mode of the first request
let loading = null; // the bundle's default export, or the load error's text

/** What a thrown value says: an Error's stack (with its message), else its JSON. */
function describe(error) {
  if (error instanceof Error || (typeof error === "object" && error !== null && typeof error.stack === "string")) {
    const stack = String(error.stack ?? "");
    const head = `${error.name ?? "Error"}: ${error.message ?? ""}`;
    return stack.startsWith(head) || stack.includes(String(error.message)) ? stack : `${head}\n${stack}`;
  }
  try {
    const json = JSON.stringify(error);
    if (json !== undefined) return `render threw a value that is not an Error: ${json}`;
  } catch {
    // a cycle or a BigInt
  }
  return `render threw a value that is not an Error: ${String(error)}`;
}

/**
 * The result as this node takes it (src/abi.rs): `status` 200 and `headers` [] by default, an
 * object of headers as pairs sorted by name; anything else is an invalid render result.
 */
function normalise(out) {
  if (out === null || typeof out !== "object") throw new TypeError(`invalid render result: render() must return an object, got ${out === null ? "null" : typeof out}`);
  if (typeof out.html !== "string") throw new TypeError(`invalid render result: html must be a string, got ${typeof out.html}`);
  const status = out.status ?? 200;
  if (!Number.isInteger(status) || status < 100 || status > 599) throw new TypeError(`invalid render result: status must be an integer 100-599, got ${JSON.stringify(status)}`);
  let headers = out.headers ?? [];
  if (!Array.isArray(headers)) {
    if (typeof headers !== "object") throw new TypeError(`invalid render result: headers must be [[name, value], …] or {name: value}, got ${typeof headers}`);
    // Sorted by name, as this node takes an object (a BTreeMap).
    headers = Object.entries(headers).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
  for (const pair of headers) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
      throw new TypeError(`invalid render result: each header must be [name, value] strings, got ${JSON.stringify(pair)}`);
    }
  }
  return { status, headers, html: out.html };
}

/** `promise`, or a rejection after TIMEOUT_MS. */
function deadline(promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`render did not settle within ${TIMEOUT_MS / 1000} s`);
      error.stack = `Error: ${error.message}`; // the runner's timer is no part of the page
      reject(error);
    }, TIMEOUT_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

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
