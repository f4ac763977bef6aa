// The Mizan wrapper layer for React: `MizanContext`, `useMizan`, `DjangoError`, and
// `createServerRenderer`, which turns a map of page components into a bundle that follows
// the render ABI (`export default { render(input) }`, see docs/bundle-abi.md). The same
// bundle runs in mizan-render's isolates, in Node and in workerd.
import { createElement } from "react";
import { renderToReadableStream } from "react-dom/server.edge";
import { DjangoError, MizanStore, htmlDocument, hydrationPayload } from "../shared/mizan.js";
import { MizanContext, useMizan } from "./context.js";

export { DjangoError };

export { MizanContext, useMizan };

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
 * `head` (optional) is HTML put into every page's `<head>` (the app's `<style>`, say).
 */
export function createServerRenderer({ pages, head = "" }) {
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
        createElement(page.component, { params: input.params, query: input.query, url: input.url, headers: input.headers ?? {} }),
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
        html: htmlDocument({ title, head, body, payload: hydrationPayload(input, store), client: input.assets?.client }),
      };
    },
  };
}
