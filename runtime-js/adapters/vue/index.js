// The Mizan wrapper layer for Vue 3: `provideMizan`, `useMizan`, `DjangoError`, and
// `createServerRenderer`, which turns a map of page components into a bundle that follows
// the render ABI (`export default { render(input) }`, see docs/bundle-abi.md), plus
// `renderStream(input)`, the same page as a stream. The same bundle runs in mizan-render's
// isolates, in Node and in workerd.
import { createSSRApp } from "vue";
import { renderToString, renderToWebStream } from "vue/server-renderer";
import { DjangoError, documentStream, htmlDocument, htmlDocumentShell, preparePage } from "../shared/mizan.js";
import { pageProps, provideMizan, useMizan } from "./context.js";

// Vue's server build shares its current-instance setters with other copies of Vue through
// two globals it adds when it loads. In the node, every bundle's top-level code runs in one
// realm (docs/bundle-abi.md): each Vue bundle keeps the setters it has already taken, and
// the realm is left as it was.
delete globalThis.__VUE_INSTANCE_SETTERS__;
delete globalThis.__VUE_SSR_SETTERS__;

export { DjangoError };

export { provideMizan, useMizan };

/**
 * A bundle's default export. `pages` maps the manifest's page names to
 * `{ component, title(input, store), headers(input, store) }`; `headers` (optional) returns
 * extra `[name, value]` pairs. The node drops `Set-Cookie` from pages it shares or caches.
 * `head` (optional) is HTML put into every page's `<head>` (the app's `<style>`, say).
 */
export function createServerRenderer({ pages, head = "" }) {
  // The app, document options and response head of one render: all known before the body,
  // since the data was fetched before the render.
  function prepare(input) {
    const { page, store, status, headers, document } = preparePage(pages, input, head);
    const app = createSSRApp(page.component, pageProps(page.component, input));
    provideMizan(app, store);
    // A production build would log a component's error and render on without it.
    app.config.throwUnhandledErrorInProduction = true;
    return { app, document, status, headers };
  }

  return {
    async render(input) {
      const { app, document, status, headers } = prepare(input);
      const body = await renderToString(app);
      return { status, headers, html: htmlDocument({ ...document, body }) };
    },

    /**
     * The same page as `render`, streamed: `{ status, headers, body }`, `body` a
     * `ReadableStream` of the document's UTF-8 bytes. Not part of the render ABI. A component
     * that throws once the stream has started errors the stream.
     */
    async renderStream(input) {
      const { app, document, status, headers } = prepare(input);
      const { start, end } = htmlDocumentShell(document);
      // Vue renders when its stream is made: made once the document's head has been read.
      return { status, headers, body: documentStream(start, () => renderToWebStream(app), end) };
    },
  };
}
