// The Mizan wrapper layer for Svelte 5: `provideMizan`, `useMizan`, `DjangoError`, and
// `createServerRenderer`, which turns a map of page components into a bundle that follows
// the render ABI (`export default { render(input) }`, see docs/bundle-abi.md). The same
// bundle runs in mizan-render's isolates, in Node and in workerd.
import { render } from "svelte/server";
import { DjangoError, MizanStore, htmlDocument, hydrationPayload } from "../shared/mizan.js";
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
      const page = pages[input.page];
      if (page === undefined) {
        throw new Error(`unknown page "${input.page}" (this bundle has: ${Object.keys(pages).join(", ")})`);
      }
      const store = new MizanStore(input);
      // Read synchronously: the data is prefetched, so no component awaits, and Svelte's
      // asynchronous rendering (which needs node:async_hooks) is never started.
      const { head: pageHead, body } = render(page.component, { props: pageProps(input), context: mizanContext(store) });
      const title = page.title ? page.title(input, store) : input.page;
      const extra = page.headers ? page.headers(input, store) : [];
      return {
        status: store.status(),
        headers: [["content-type", "text/html; charset=utf-8"], ...extra],
        html: htmlDocument({ title, head: head + pageHead, body, payload: hydrationPayload(input, store), client: input.assets?.client }),
      };
    },
  };
}
