// An independent implementation of docs/protocol.md, "Secret and subkeys" and "Keys", written
// from the specification text (not ported from src/cache/key.rs), checked against every pinned
// value of tests/vectors/keys.json:
//
//   node tests/vectors/independent.mjs tests/vectors/keys.json
//   -> {"checked": N, "mismatches": [...]}   exit status 1 on any mismatch or error
//
// Node.js built-ins only. What is counted in N: the two subkeys, each jcs `canonical`, each data
// `key`, each page's `parts.path`, `parts.query`, `parts.vary` and `key`, and each `same_as`
// claim (the named vectors' keys are equal as computed here).
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

// --- Secret and subkeys -------------------------------------------------------------------

const hmac = (key, ...parts) => {
  const mac = createHmac("sha256", key);
  for (const part of parts) mac.update(part);
  return mac.digest();
};

// k_cache = HMAC-SHA256(secret, "mizan/v1/cache-key"); k_purge = HMAC-SHA256(secret, "mizan/v1/purge")
function subkeys(secret) {
  const bytes = Buffer.from(secret, "utf8");
  return { cache: hmac(bytes, "mizan/v1/cache-key"), purge: hmac(bytes, "mizan/v1/purge") };
}

// --- RFC 8785 (JCS) -----------------------------------------------------------------------

// Strings compare by UTF-16 code units (RFC 8785 §3.2.3), not by code points.
function compareUtf16(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

function jcs(value) {
  if (value === null || value === true || value === false) return String(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error("JCS: a number must be finite");
    // ECMAScript Number::toString, which is what RFC 8785 §3.2.2.3 prescribes; -0 serialises as 0.
    return JSON.stringify(value);
  }
  if (typeof value === "string") {
    // RFC 8785 §3.2.2.2 is ECMAScript's JSON.stringify string form; lone surrogates are an error.
    if (!value.isWellFormed()) throw new Error("JCS: a string holds a lone surrogate");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
  if (typeof value === "object") {
    const names = Object.keys(value).sort(compareUtf16);
    return `{${names.map((name) => `${jcs(name)}:${jcs(value[name])}`).join(",")}}`;
  }
  throw new Error(`JCS: not a JSON value: ${typeof value}`);
}

function paramsObject(text) {
  const params = JSON.parse(text);
  if (params === null || typeof params !== "object" || Array.isArray(params)) {
    throw new Error("params must be an object");
  }
  return params;
}

// --- Keys ---------------------------------------------------------------------------------

const NUL = Buffer.from([0]);
const hex = (bytes) => bytes.toString("hex");

// data key = "mz1:d:" + hex(HMAC-SHA256(k_cache, "data" 0x00 context 0x00 JCS(params)))
function dataKey(kCache, context, params) {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(context)) throw new Error(`context is not an identifier: ${context}`);
  return "mz1:d:" + hex(hmac(kCache, "data", NUL, Buffer.from(context, "utf8"), NUL, Buffer.from(jcs(params), "utf8")));
}

// page key = "mz1:p:" + hex(HMAC-SHA256(k_cache, "page" 0x00 site 0x00 method 0x00 path 0x00
//                                                  canonical_query 0x00 canonical_vary))
function pageKey(kCache, { site, method, path, query, vary }) {
  const fields = [site, method, path, query, vary].map((s) => Buffer.from(s, "utf8"));
  const parts = ["page"];
  for (const field of fields) parts.push(NUL, field);
  return "mz1:p:" + hex(hmac(kCache, ...parts));
}

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const HEX2 = /^[0-9A-Fa-f]{2}$/;

// RFC 3986 §6.2.2: percent-encodings of unreserved characters decoded, all others upper-cased;
// then §5.2.4 remove_dot_segments. Refused: no leading "/", a byte outside visible ASCII
// (0x21-0x7E), a bad percent-encoding.
function normalisePath(path) {
  if (!path.startsWith("/")) throw new Error(`path does not start with "/": ${path}`);
  let out = "";
  for (let i = 0; i < path.length; i++) {
    const c = path[i];
    const code = path.charCodeAt(i);
    if (code < 0x21 || code > 0x7e) throw new Error(`path holds a byte outside visible ASCII: ${path}`);
    if (c !== "%") {
      out += c;
      continue;
    }
    const digits = path.slice(i + 1, i + 3);
    if (!HEX2.test(digits)) throw new Error(`bad percent-encoding in path: ${path}`);
    const decoded = String.fromCharCode(parseInt(digits, 16));
    out += UNRESERVED.test(decoded) ? decoded : `%${digits.toUpperCase()}`;
    i += 2;
  }
  return removeDotSegments(out);
}

// RFC 3986 §5.2.4, step by step.
function removeDotSegments(path) {
  let input = path;
  let output = "";
  while (input.length > 0) {
    if (input.startsWith("../")) input = input.slice(3);
    else if (input.startsWith("./")) input = input.slice(2);
    else if (input.startsWith("/./")) input = "/" + input.slice(3);
    else if (input === "/.") input = "/";
    else if (input.startsWith("/../") || input === "/..") {
      input = "/" + input.slice(input === "/.." ? 3 : 4);
      const cut = output.lastIndexOf("/");
      output = cut < 0 ? "" : output.slice(0, cut);
    } else if (input === "." || input === "..") input = "";
    else {
      const next = input.indexOf("/", input.startsWith("/") ? 1 : 0);
      const segment = next < 0 ? input : input.slice(0, next);
      output += segment;
      input = input.slice(segment.length);
    }
  }
  return output;
}

// application/x-www-form-urlencoded parsing (WHATWG URL §5.1): split on "&", drop empty pieces,
// split at the first "=", "+" is a space, then percent-decode bytes and read them as UTF-8.
function parseForm(query) {
  const decode = (s) => {
    const bytes = [];
    const raw = Buffer.from(s.replaceAll("+", " "), "utf8");
    for (let i = 0; i < raw.length; i++) {
      const digits = raw.subarray(i + 1, i + 3).toString("latin1");
      if (raw[i] === 0x25 && HEX2.test(digits)) {
        bytes.push(parseInt(digits, 16));
        i += 2;
      } else bytes.push(raw[i]);
    }
    return new TextDecoder("utf-8").decode(Uint8Array.from(bytes));
  };
  const pairs = [];
  for (const piece of query.split("&")) {
    if (piece === "") continue;
    const eq = piece.indexOf("=");
    const [name, value] = eq < 0 ? [piece, ""] : [piece.slice(0, eq), piece.slice(eq + 1)];
    pairs.push([decode(name), decode(value)]);
  }
  return pairs;
}

// Every byte of the UTF-8 form except unreserved characters, upper-case hex (a space is %20).
function encodeComponent(s) {
  let out = "";
  for (const byte of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(byte);
    out += UNRESERVED.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

// Sorted by name, then value: the parsed (decoded) strings, compared as UTF-8 bytes (the same
// order as code points).
function compareBytes(a, b) {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function canonicalQuery(query, declared) {
  const keep = new Set(declared);
  return parseForm(query)
    .filter(([name]) => keep.has(name))
    .sort(([n1, v1], [n2, v2]) => compareBytes(n1, n2) || compareBytes(v1, v2))
    .map(([name, value]) => `${encodeComponent(name)}=${encodeComponent(value)}`)
    .join("&");
}

// For each declared header: lower-case name, value trimmed with inner runs of spaces and tabs
// collapsed to one space, as name=value; an absent header contributes nothing, a present empty
// one "name="; sorted; joined with "\n".
function canonicalVary(declared, headers) {
  const byName = new Map(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
  const lines = [];
  for (const header of declared) {
    const name = header.toLowerCase();
    if (!byName.has(name)) continue;
    const value = byName.get(name).replace(/^[ \t]+|[ \t]+$/g, "").replace(/[ \t]+/g, " ");
    lines.push(`${name}=${value}`);
  }
  return lines.sort(compareBytes).join("\n");
}

// --- Checking keys.json --------------------------------------------------------------------

const file = process.argv[2];
if (!file) {
  process.stderr.write("usage: node tests/vectors/independent.mjs <keys.json>\n");
  process.exit(2);
}
const doc = JSON.parse(readFileSync(file, "utf8"));
let checked = 0;
const mismatches = [];
const check = (what, pinned, computed) => {
  checked += 1;
  if (pinned !== computed) mismatches.push({ what, pinned, computed });
};
const attempt = (what, f) => {
  try {
    return f();
  } catch (e) {
    mismatches.push({ what, error: String(e?.message ?? e) });
    return undefined;
  }
};

const { cache: kCache, purge: kPurge } = subkeys(doc.secret);
check("k_cache", doc.subkeys.cache, hex(kCache));
check("k_purge", doc.subkeys.purge, hex(kPurge));

for (const v of doc.jcs) {
  check(`jcs ${JSON.stringify(v.name)}`, v.canonical, attempt(`jcs ${v.name}`, () => jcs(JSON.parse(v.input))));
}

const computed = { data: new Map(), page: new Map() };
for (const v of doc.data) {
  const key = attempt(`data ${v.name}`, () => dataKey(kCache, v.context, paramsObject(v.params)));
  computed.data.set(v.name, key);
  check(`data ${JSON.stringify(v.name)}`, v.key, key);
}

for (const v of doc.page) {
  const what = `page ${JSON.stringify(v.name)}`;
  const parts = attempt(what, () => ({
    site: v.site,
    method: v.method.toUpperCase(),
    path: normalisePath(v.path),
    query: canonicalQuery(v.query, v.declared_query),
    vary: canonicalVary(v.declared_vary, v.headers),
  }));
  for (const field of ["path", "query", "vary"]) check(`${what} parts.${field}`, v.parts[field], parts?.[field]);
  const key = parts && pageKey(kCache, parts);
  computed.page.set(v.name, key);
  check(`${what} key`, v.key, key);
}

for (const section of ["data", "page"]) {
  for (const v of doc[section]) {
    if (v.same_as === undefined) continue;
    checked += 1;
    const [mine, other] = [computed[section].get(v.name), computed[section].get(v.same_as)];
    if (mine === undefined || mine !== other) {
      mismatches.push({ what: `${section} ${JSON.stringify(v.name)} same_as ${JSON.stringify(v.same_as)}`, computed: [mine, other] });
    }
  }
}

process.stdout.write(JSON.stringify({ checked, mismatches }, null, 2) + "\n");
process.exit(mismatches.length === 0 ? 0 : 1);
