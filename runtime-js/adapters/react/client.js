// The client half of the React wrapper layer: hydrates a server-rendered page from the
// payload the server embedded, with the same page component and the same data, so the first
// client render matches the HTML and nothing is fetched again.
import { createElement, useEffect } from "react";
import { hydrateRoot } from "react-dom/client";
import { MizanStore, readPayload } from "../shared/mizan.js";
import { MizanContext } from "./context.js";

export { DjangoError } from "../shared/mizan.js";
export { MizanContext, useMizan } from "./context.js";

function Hydrated({ children }) {
  // Marks the document once React has committed the hydrated tree (tests and tools wait on it).
  useEffect(() => {
    document.documentElement.dataset.mizanHydrated = "";
  }, []);
  return children;
}

/**
 * Hydrates the page in `document` with `pages` (the same map the server renderer got).
 * `onRecoverableError` receives hydration mismatches; the default logs them.
 */
export function hydrate({ pages, onRecoverableError = (error) => console.error(error) }) {
  const payload = readPayload(document);
  const page = pages[payload.page];
  if (page === undefined) throw new Error(`hydrate: unknown page "${payload.page}"`);
  const store = MizanStore.fromPayload(payload);
  const tree = createElement(
    Hydrated,
    null,
    createElement(MizanContext, { store }, createElement(page.component, { params: payload.params, query: payload.query, url: payload.url, headers: payload.headers ?? {} })),
  );
  return hydrateRoot(document.getElementById("root"), tree, { onRecoverableError });
}
