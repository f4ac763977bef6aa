// The client half of the Vue wrapper layer: hydrates a server-rendered page from the payload
// the server embedded, with the same page component and the same data, so the first client
// render matches the HTML and nothing is fetched again.
import { createSSRApp } from "vue";
import { MizanStore, readPayload } from "../shared/mizan.js";
import { pageProps, provideMizan } from "./context.js";

export { DjangoError } from "../shared/mizan.js";
export { provideMizan, useMizan } from "./context.js";

/**
 * Hydrates the page in `document` with `pages` (the same map the server renderer got) and
 * returns the Vue app. Vue reports hydration mismatches with `console.error`.
 */
export function hydrate({ pages }) {
  const payload = readPayload(document);
  const page = pages[payload.page];
  if (page === undefined) throw new Error(`hydrate: unknown page "${payload.page}"`);
  const app = createSSRApp(page.component, pageProps(page.component, payload));
  provideMizan(app, MizanStore.fromPayload(payload));
  app.mount(document.getElementById("root"));
  // Hydration is done when mount returns: mark the document (tests and tools wait on it).
  document.documentElement.dataset.mizanHydrated = "";
  return app;
}
