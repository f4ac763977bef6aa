// Framework-independent half of the Mizan wrapper layer: the prefetched data store that
// `useMizan` reads during SSR, `DjangoError`, and the hydration payload. Every framework
// adapter (React today; Vue and Svelte next) builds on this file, so that all of them agree
// on keys, errors and escaping.

/** An error the origin (Django) answered for a context: `{ type, status, message }`. */
export class DjangoError extends Error {
  constructor({ type, status, message }) {
    super(message);
    this.name = "DjangoError";
    this.type = type;
    this.status = status;
  }

  toJSON() {
    return { type: this.type, status: this.status, message: this.message };
  }
}

/**
 * Canonical JSON as RFC 8785 (JCS) defines it for the values params can hold: object keys
 * sorted by UTF-16 code units, ECMAScript number and string serialisation.
 */
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** The lookup key of one dependency: `context` and its canonical params. */
export function dependencyKey(context, params) {
  return `${context}:${canonicalJson(params ?? {})}`;
}

/**
 * The data a page may read: built from the ABI input's `data` and `errors` lists, each
 * `{ context, params, data }` or `{ context, params, error }`.
 */
export class MizanStore {
  constructor(input) {
    this.data = new Map();
    this.errors = new Map();
    for (const dep of input.data ?? []) {
      this.data.set(dependencyKey(dep.context, dep.params), dep.data);
    }
    for (const dep of input.errors ?? []) {
      this.errors.set(dependencyKey(dep.context, dep.params), new DjangoError(dep.error));
    }
  }

  /** The store a page was rendered with, from its hydration payload. */
  static fromPayload(payload) {
    const store = new MizanStore({});
    for (const { key, data } of payload.data ?? []) store.data.set(key, data);
    for (const { key, error } of payload.errors ?? []) store.errors.set(key, new DjangoError(error));
    return store;
  }

  /** `{ data, error }` for a dependency the route prefetched; throws for one it did not. */
  read(context, params) {
    const key = dependencyKey(context, params);
    if (this.errors.has(key)) return { data: undefined, error: this.errors.get(key) };
    if (this.data.has(key)) return { data: this.data.get(key), error: null };
    throw new Error(
      `useMizan("${context}", ${canonicalJson(params ?? {})}): no prefetched data; ` +
        `declare this context in the route's "data" in the manifest`,
    );
  }

  /** The HTTP status of the page: that of the first origin error, else 200. */
  status() {
    for (const error of this.errors.values()) return error.status;
    return 200;
  }

  /** The hydration payload: the same lists the page was rendered from. */
  toJSON() {
    const data = [...this.data].map(([key, value]) => ({ key, data: value }));
    const errors = [...this.errors].map(([key, error]) => ({ key, error }));
    return { data, errors };
  }
}

const SCRIPT_ESCAPES = {
  "<": "\\u003c",
  ">": "\\u003e",
  "&": "\\u0026",
  "\u2028": "\\u2028",
  "\u2029": "\\u2029",
};

/**
 * JSON for a `<script type="application/json">` element: `<`, `>`, `&`, U+2028 and U+2029
 * are written as JSON escapes, so no data value can close the element or start a comment,
 * and `JSON.parse` of the element's text gives the value back unchanged.
 */
export function scriptSafeJson(value) {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => SCRIPT_ESCAPES[c]);
}

const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Text for an HTML text node or quoted attribute. */
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

/** The element id of the hydration payload. */
export const DATA_ELEMENT_ID = "__mizan_data";

/**
 * The hydration payload: what the client needs to render the same tree again: the page, its
 * props, and the data it read.
 */
export function hydrationPayload(input, store) {
  const payload = { page: input.page, url: input.url, params: input.params, query: input.query };
  // The declared vary headers, when the request carried any: the page may read them.
  if (input.headers && Object.keys(input.headers).length > 0) payload.headers = input.headers;
  return { ...payload, ...store.toJSON() };
}

/** Reads the hydration payload out of the document. */
export function readPayload(document) {
  return JSON.parse(document.getElementById(DATA_ELEMENT_ID).textContent);
}

/**
 * What a render of every framework starts with, all known before the body since the data was
 * prefetched: the entry of `input.page` in `pages` (an error naming the pages the bundle has
 * when there is none), its store, the response's status and headers, and the document's
 * options but its body (`head` is the app's, put into every page's `<head>`).
 */
export function preparePage(pages, input, head) {
  const page = pages[input.page];
  if (page === undefined) {
    throw new Error(`unknown page "${input.page}" (this bundle has: ${Object.keys(pages).join(", ")})`);
  }
  const store = new MizanStore(input);
  const extra = page.headers ? page.headers(input, store) : [];
  return {
    page,
    store,
    status: store.status(),
    headers: [["content-type", "text/html; charset=utf-8"], ...extra],
    document: {
      title: page.title ? page.title(input, store) : input.page,
      head,
      payload: hydrationPayload(input, store),
      client: input.assets?.client,
    },
  };
}

/**
 * The whole HTML document around a rendered page body; `client` is the URL of the client
 * bundle that hydrates it (the node passes it as `input.assets.client`), if there is one;
 * `head` is HTML the framework rendered for `<head>` (Svelte's `<svelte:head>`), if any.
 */
export function htmlDocument({ title, body, payload, client, lang = "en", head = "" }) {
  const script = client ? `<script defer src="${escapeHtml(client)}"></script>` : "";
  return (
    `<!DOCTYPE html><html lang="${escapeHtml(lang)}"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)}</title>${script}${head}</head><body><div id="root">${body}</div>` +
    `<script type="application/json" id="${DATA_ELEMENT_ID}">${scriptSafeJson(payload)}</script>` +
    `</body></html>`
  );
}

/**
 * `htmlDocument` without its body, cut where the body goes: `{ start, end }`, for a renderer
 * that streams the body between them. The cut is found by a marker that cannot occur after
 * it: the payload, the only thing there, is written with `<` escaped.
 */
export function htmlDocumentShell(options) {
  const marker = "<!--mizan:body-->";
  const html = htmlDocument({ ...options, body: marker });
  const at = html.lastIndexOf(marker);
  return { start: html.slice(0, at), end: html.slice(at + marker.length) };
}

/**
 * The whole document as one stream of UTF-8 bytes, for a framework's streaming renderer:
 * `start` (from `htmlDocumentShell`), then the body stream `open(fail)` returns or resolves
 * to, then `end`. The stream is pulled (high-water mark 0): `start` is read before the body
 * is opened, so the document's head leaves before the framework renders anything. A body
 * stream that errors errors the document; so does `fail(error)`, for a renderer that reports
 * errors beside its stream (React's `onError`).
 */
export function documentStream(start, open, end) {
  const encoder = new TextEncoder();
  let reader = null;
  return new ReadableStream(
    {
      start(controller) {
        controller.enqueue(encoder.encode(start));
      },
      async pull(controller) {
        if (reader === null) {
          const body = await open((error) => controller.error(error));
          reader = body.getReader();
        }
        const { done, value } = await reader.read();
        if (!done) return controller.enqueue(value);
        controller.enqueue(encoder.encode(end));
        controller.close();
      },
      cancel(reason) {
        return reader?.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
