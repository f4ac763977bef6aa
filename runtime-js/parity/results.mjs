// Copyright the mizan-render authors. MIT license.
//
// What the parity runner (runner.mjs: Node, Deno, Bun) and the workerd worker (worker.mjs)
// share: how a render's result or error becomes one result of the response, and the deadline
// of a render.

// A render that has not settled after this long is an error (its promise may never settle;
// workerd would otherwise cancel the whole request as hung when nothing is left to wait for).
const TIMEOUT_MS = 60_000;

/** What a thrown value says: an Error's stack (with its message), else its JSON. */
export function describe(error) {
  if (error instanceof Error || (typeof error === "object" && error !== null && typeof error.stack === "string")) {
    const stack = String(error.stack ?? "");
    const head = `${error.name ?? "Error"}: ${error.message ?? ""}`;
    // V8 puts the message first in the stack; JavaScriptCore does not.
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
export function normalise(out) {
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
export function deadline(promise) {
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
