// The Mizan wrapper layer for Svelte 5: `provideMizan`, `useMizan`, `DjangoError`, and
// `createServerRenderer`, which turns a map of page components into a bundle that follows
// the render ABI (`export default { render(input) }`, see docs/bundle-abi.md). The same
// bundle runs in mizan-render's isolates, in Node and in workerd.
import { render } from "svelte/server";
import { DjangoError, htmlDocument, preparePage } from "../shared/mizan.js";
import { mizanContext, pageProps, provideMizan, useMizan } from "./context.js";

export { DjangoError };

export { provideMizan, useMizan };

/**
 * A bundle's default export. `pages` maps the manifest's page names to
 * `{ component, title(input, store), headers(input, store) }`; `headers` (optional) returns
 * extra `[name, value]` pairs. The node drops `Set-Cookie` from pages it shares or caches.
 * `head` (optional) is HTML put into every page's `<head>` (the app's `<style>`, say),
 * before what the page's `<svelte:head>` renders.
 */
export function createServerRenderer({ pages, head = "" }) {
  return {
    async render(input) {
      const { page, store, status, headers, document } = preparePage(pages, input, head);
      // Read synchronously: the data is prefetched, so no component awaits, and Svelte's
      // asynchronous rendering (which needs node:async_hooks) is never started.
      const { head: pageHead, body } = render(page.component, { props: pageProps(input), context: mizanContext(store) });
      return { status, headers, html: htmlDocument({ ...document, head: document.head + pageHead, body }) };
    },
  };
}
