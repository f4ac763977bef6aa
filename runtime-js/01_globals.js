// Copyright the mizan-render authors. MIT license.
//
// Bootstrap of every render isolate: installs the Workers-compatible globals that framework
// SSR bundles expect, taken from deno_web (never hand-written), and the internal dispatch
// table that the Rust side calls to render a page. Runs once, at build time, into the base
// startup snapshot; nothing here runs per isolate or per render.
import { core, primordials } from "ext:core/mod.js";
import { op_mizan_chunk, op_mizan_console } from "ext:core/ops";

const {
  ArrayPrototypePush,
  Error,
  JSONParse,
  JSONStringify,
  String,
  ObjectDefineProperties,
  ObjectDefineProperty,
  ObjectFreeze,
  ObjectPrototypeIsPrototypeOf,
  SafeMap,
  SymbolFor,
  TypeError,
  TypedArrayPrototypeGetSymbolToStringTag,
} = primordials;

const web = (name) => core.loadExtScript(`ext:deno_web/${name}`);
const url = web("00_url.js");
const consoleMod = web("01_console.js");
const domException = web("01_dom_exception.js");
const event = web("02_event.js");
const timers = web("02_timers.js");
const abortSignal = web("03_abort_signal.js");
const base64 = web("05_base64.js");
const streams = web("06_streams.js");
const encoding = web("08_text_encoding.js");
const file = web("09_file.js");
const messagePort = web("13_message_port.js");
const performance = web("15_performance.js");

// Console levels as deno_web passes them: 0 debug, 1 log/info, 2 warn, 3 error.
const console = new consoleMod.Console((msg, level) => op_mizan_console(level, msg));

// Timers scheduled since the last render settled: cancelled when it settles, so no timer of
// one render fires during another (settle(), called from Rust).
let scheduled = [];
const { setTimeout: webSetTimeout, setInterval: webSetInterval, clearTimeout: webClearTimeout } = timers;
function setTimeout(callback, delay = 0, ...args) {
  const id = webSetTimeout(callback, delay, ...args);
  ArrayPrototypePush(scheduled, id);
  return id;
}
function setInterval(callback, delay = 0, ...args) {
  const id = webSetInterval(callback, delay, ...args);
  ArrayPrototypePush(scheduled, id);
  return id;
}

ObjectDefineProperties(globalThis, {
  AbortController: core.propNonEnumerable(abortSignal.AbortController),
  AbortSignal: core.propNonEnumerable(abortSignal.AbortSignal),
  Blob: core.propNonEnumerable(file.Blob),
  ByteLengthQueuingStrategy: core.propNonEnumerable(streams.ByteLengthQueuingStrategy),
  CountQueuingStrategy: core.propNonEnumerable(streams.CountQueuingStrategy),
  CustomEvent: core.propNonEnumerable(event.CustomEvent),
  DOMException: core.propNonEnumerable(domException.DOMException),
  ErrorEvent: core.propNonEnumerable(event.ErrorEvent),
  Event: core.propNonEnumerable(event.Event),
  EventTarget: core.propNonEnumerable(event.EventTarget),
  File: core.propNonEnumerable(file.File),
  MessageChannel: core.propNonEnumerable(messagePort.MessageChannel),
  MessageEvent: core.propNonEnumerable(event.MessageEvent),
  MessagePort: core.propNonEnumerable(messagePort.MessagePort),
  ReadableByteStreamController: core.propNonEnumerable(streams.ReadableByteStreamController),
  ReadableStream: core.propNonEnumerable(streams.ReadableStream),
  ReadableStreamBYOBReader: core.propNonEnumerable(streams.ReadableStreamBYOBReader),
  ReadableStreamBYOBRequest: core.propNonEnumerable(streams.ReadableStreamBYOBRequest),
  ReadableStreamDefaultController: core.propNonEnumerable(
    streams.ReadableStreamDefaultController,
  ),
  ReadableStreamDefaultReader: core.propNonEnumerable(streams.ReadableStreamDefaultReader),
  TextDecoder: core.propNonEnumerable(encoding.TextDecoder),
  TextDecoderStream: core.propNonEnumerable(encoding.TextDecoderStream),
  TextEncoder: core.propNonEnumerable(encoding.TextEncoder),
  TextEncoderStream: core.propNonEnumerable(encoding.TextEncoderStream),
  TransformStream: core.propNonEnumerable(streams.TransformStream),
  TransformStreamDefaultController: core.propNonEnumerable(
    streams.TransformStreamDefaultController,
  ),
  URL: core.propNonEnumerable(url.URL),
  URLSearchParams: core.propNonEnumerable(url.URLSearchParams),
  WritableStream: core.propNonEnumerable(streams.WritableStream),
  WritableStreamDefaultController: core.propNonEnumerable(
    streams.WritableStreamDefaultController,
  ),
  WritableStreamDefaultWriter: core.propNonEnumerable(streams.WritableStreamDefaultWriter),
  atob: core.propWritable(base64.atob),
  btoa: core.propWritable(base64.btoa),
  clearInterval: core.propWritable(timers.clearInterval),
  clearTimeout: core.propWritable(timers.clearTimeout),
  console: core.propNonEnumerable(console),
  performance: core.propWritable(performance.performance),
  reportError: core.propWritable(event.reportError),
  self: core.propGetterOnly(() => globalThis),
  setInterval: core.propWritable(setInterval),
  setTimeout: core.propWritable(setTimeout),
  structuredClone: core.propWritable(messagePort.structuredClone),
});

// Bundles registered while the app snapshot is built, by manifest name.
const bundles = new SafeMap();

// The bundle this isolate renders (init), and whether bundles may still register: both
// settle before any bundle code runs at render time, so a bundle cannot render another.
let owner = null;
let sealed = false;

/** Called from Rust once per bundle, with the evaluated module's namespace. */
function register(name, namespace) {
  if (sealed) throw new TypeError("bundles register only while the app snapshot is made");
  const entry = namespace.default;
  if (entry === null || typeof entry !== "object" && typeof entry !== "function") {
    throw new TypeError(`bundle "${name}" has no default export (expected { render(input) })`);
  }
  if (typeof entry.render !== "function") {
    throw new TypeError(`bundle "${name}": default export has no render(input) function`);
  }
  bundles.set(name, entry);
}

// Own property names of the globals every bundle of a node shares, as the last shape() saw
// them: bundles evaluate one after another in one realm at start-up.
const SHARED = [
  ["globalThis", globalThis],
  ["Object.prototype", Object.prototype],
  ["Array.prototype", Array.prototype],
  ["Function.prototype", Function.prototype],
  ["String.prototype", String.prototype],
  ["Promise.prototype", Promise.prototype],
];
let lastShape = null;

/**
 * Called from Rust before and after each bundle loads: the names added to or removed from the
 * shared globals since the last call, comma-separated ("" when nothing changed).
 */
function shape() {
  const now = SHARED.map(([label, object]) => [label, new Set(Reflect.ownKeys(object).map(String))]);
  const changes = [];
  if (lastShape !== null) {
    for (let i = 0; i < now.length; i++) {
      const [label, names] = now[i];
      const before = lastShape[i][1];
      for (const name of names) if (!before.has(name)) changes.push(`+${label}.${name}`);
      for (const name of before) if (!names.has(name)) changes.push(`-${label}.${name}`);
    }
  }
  lastShape = now;
  return changes.join(", ");
}

/**
 * Called from Rust once per isolate, after it was created from the snapshot. Returns whether
 * the bundle can stream a page (its default export has `renderStream(input)`).
 */
function init(name) {
  if (owner !== null) throw new TypeError("this isolate already renders a bundle");
  owner = name;
  sealed = true;
  // The runtime's internals stay internal: bundle code gets the Workers globals, not
  // Deno.core (its timers and ops would bypass what settle() cancels). deno_core has read
  // what it needs from it when the isolate was created.
  delete globalThis.Deno;
  performance.setTimeOrigin();
  return typeof bundles.get(name)?.renderStream === "function";
}

/** What a thrown value that is not an Error says: its JSON, else its string form. */
function describe(value) {
  try {
    const json = JSONStringify(value);
    if (json !== undefined) return json;
  } catch {
    // cyclic or a BigInt: fall back to String()
  }
  try {
    return String(value);
  } catch {
    return "(a value that cannot be described)";
  }
}

/** The default export of the bundle this isolate renders, if `name` is it. */
function owned(name) {
  const entry = name === owner ? bundles.get(name) : undefined;
  if (entry === undefined) {
    throw new Error(`bundle "${name}" is not loaded in this isolate`);
  }
  return entry;
}

/** A thrown value as an Error: one that is not an Error says what it was. */
function asError(error) {
  if (error instanceof Error) return error;
  return new Error(`render threw a value that is not an Error: ${describe(error)}`);
}

/**
 * The determinism prelude of `mizan-render parity --deterministic`, if this snapshot has it
 * (runtime-js/parity/determinism.js): reset before every render, so each page sees the same
 * clock and random sequences from its start, in this node as in the other runtimes.
 */
const DETERMINISM = SymbolFor("mizan.parity.determinism");

/** Called from Rust per render: `input` is the JSON text of the bundle ABI's input. */
async function render(name, input) {
  const entry = owned(name);
  globalThis[DETERMINISM]?.reset();
  try {
    // The result is checked on the Rust side, which names what is wrong with it.
    return await entry.render(JSONParse(input));
  } catch (error) {
    throw asError(error);
  }
}

/**
 * Called from Rust per streaming render: the bundle's `renderStream(input)`, resolving to
 * `{ status, headers, body }`. Rust reads the head (checked there), then calls `pump` with
 * the same object.
 */
async function renderStream(name, input) {
  const entry = owned(name);
  if (typeof entry.renderStream !== "function") {
    throw new TypeError(`bundle "${name}" has no renderStream(input)`);
  }
  let result;
  globalThis[DETERMINISM]?.reset();
  try {
    result = await entry.renderStream(JSONParse(input));
  } catch (error) {
    throw asError(error);
  }
  if (
    result === null || typeof result !== "object" ||
    !ObjectPrototypeIsPrototypeOf(streams.ReadableStreamPrototype, result.body)
  ) {
    throw new TypeError(
      "invalid render result: renderStream() must resolve to { status, headers, body } with body a ReadableStream",
    );
  }
  return result;
}

/**
 * Called from Rust after `renderStream`: reads the body to its end and hands each chunk to
 * Rust as it comes (op_mizan_chunk), so the first bytes leave while the page still renders.
 * Rejects when the body errors: Rust then fails the render after the chunks already sent.
 */
async function pump(result) {
  const reader = result.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (TypedArrayPrototypeGetSymbolToStringTag(value) !== "Uint8Array") {
        const kind = typeof value === "object" && value !== null ? value.constructor?.name : typeof value;
        throw new TypeError(`renderStream() body chunks must be Uint8Array, got ${kind}`);
      }
      if (!op_mizan_chunk(value)) {
        await reader.cancel();
        throw new Error("nobody reads this render any more");
      }
    }
  } catch (error) {
    throw asError(error);
  }
}

/** Called from Rust when a render has settled: cancels the timers it left; returns how many. */
function settle() {
  const pending = scheduled;
  scheduled = [];
  for (let i = 0; i < pending.length; i++) {
    webClearTimeout(pending[i]);
  }
  return pending.length;
}

ObjectDefineProperty(globalThis, "__mizan", {
  value: ObjectFreeze({ register, init, render, renderStream, pump, settle, shape }),
  enumerable: false,
  writable: false,
  configurable: false,
});
