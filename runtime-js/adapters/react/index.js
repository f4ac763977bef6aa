// The Mizan wrapper layer for React: `MizanContext`, `useMizan`, `DjangoError`, and
// `createServerRenderer`, which turns a map of page components into a bundle that follows
// the render ABI (`export default { render(input) }`, see docs/bundle-abi.md). The same
// bundle runs in mizan-render's isolates, in Node and in workerd.
import { createContext, createElement, useContext } from "react";
import { renderToReadableStream } from "react-dom/server.edge";
import { DjangoError, MizanStore, htmlDocument } from "../shared/mizan.js";

export { DjangoError };

const StoreContext = createContext(null);

/** Provides the page's prefetched data to every `useMizan` below it. */
export function MizanContext({ store, children }) {
  return createElement(StoreContext.Provider, { value: store }, children);
}

/**
 * Reads a context's data for `params`: `{ data, error }`, where `error` is a `DjangoError`
 * when the origin answered one (404, 403, ...). During SSR the data was fetched before the
 * render, so this never suspends.
 */
export function useMizan(context, params = {}) {
  const store = useContext(StoreContext);
  if (store === null) throw new Error("useMizan() must be called inside <MizanContext>");
  return store.read(context, params);
}

async function streamToString(stream) {
  const decoder = new TextDecoder();
  let html = "";
  for await (const chunk of stream) html += decoder.decode(chunk, { stream: true });
  return html + decoder.decode();
}

/**
 * A bundle's default export. `pages` maps the manifest's page names to
 * `{ component, title(input, store), headers(input, store) }`; `headers` (optional) returns
 * extra `[name, value]` pairs. The node drops `Set-Cookie` from pages it shares or caches.
 */
export function createServerRenderer({ pages }) {
  return {
    async render(input) {
      const page = pages[input.page];
      if (page === undefined) {
        throw new Error(`unknown page "${input.page}" (this bundle has: ${Object.keys(pages).join(", ")})`);
      }
      const store = new MizanStore(input);
      const tree = createElement(
        MizanContext,
        { store },
        createElement(page.component, { params: input.params, query: input.query, url: input.url }),
      );
      let renderError = null;
      const stream = await renderToReadableStream(tree, {
        onError(error) {
          renderError ??= error;
        },
      });
      await stream.allReady;
      const body = await streamToString(stream);
      if (renderError !== null) throw renderError;
      const title = page.title ? page.title(input, store) : input.page;
      const extra = page.headers ? page.headers(input, store) : [];
      return {
        status: store.status(),
        headers: [["content-type", "text/html; charset=utf-8"], ...extra],
        html: htmlDocument({ title, body, store }),
      };
    },
  };
}
