// The Mizan wrapper layer for React: `MizanContext`, `useMizan`, `DjangoError`, and
// `createServerRenderer`, which turns a map of page components into a bundle that follows
// the render ABI (`export default { render(input) }`, see docs/bundle-abi.md), plus
// `renderStream(input)`, the same page as a stream. The same bundle runs in mizan-render's
// isolates, in Node and in workerd.
import { createElement } from "react";
import { renderToReadableStream, renderToString } from "react-dom/server.edge";
import { DjangoError, documentStream, htmlDocument, htmlDocumentShell, preparePage } from "../shared/mizan.js";
import { MizanContext, useMizan } from "./context.js";

export { DjangoError };

export { MizanContext, useMizan };

/**
 * A bundle's default export. `pages` maps the manifest's page names to
 * `{ component, title(input, store), headers(input, store) }`; `headers` (optional) returns
 * extra `[name, value]` pairs. The node drops `Set-Cookie` from pages it shares or caches.
 * `head` (optional) is HTML put into every page's `<head>` (the app's `<style>`, say).
 */
export function createServerRenderer({ pages, head = "" }) {
  /** The page's element tree, inside the provider of its store. */
  const tree = (page, store, input) =>
    createElement(
      MizanContext,
      { store },
      createElement(page.component, { params: input.params, query: input.query, url: input.url, headers: input.headers ?? {} }),
    );

  return {
    async render(input) {
      const { page, store, status, headers, document } = preparePage(pages, input, head);
      // The string renderer: the same HTML as the stream, byte for byte, in a third of the
      // time in V8 (no stream to decode back to a string). Streaming is `renderStream`'s.
      const body = renderToString(tree(page, store, input));
      return { status, headers, html: htmlDocument({ ...document, body }) };
    },

    /**
     * The same page as `render`, streamed: `{ status, headers, body }`, `body` a
     * `ReadableStream` of the document's UTF-8 bytes: the document's head at once, then
     * React's stream as it renders. Not part of the render ABI. An error React reports
     * (`onError`), in the shell or after it, errors the stream.
     */
    async renderStream(input) {
      const { page, store, status, headers, document } = preparePage(pages, input, head);
      const { start, end } = htmlDocumentShell(document);
      const element = tree(page, store, input);
      return {
        status,
        headers,
        body: documentStream(start, (fail) => renderToReadableStream(element, { onError: fail }), end),
      };
    },
  };
}
