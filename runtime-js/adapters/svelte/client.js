// The client half of the Svelte wrapper layer: hydrates a server-rendered page from the
// payload the server embedded, with the same page component and the same data, so the first
// client render matches the HTML and nothing is fetched again.
import { hydrate as hydrateSvelte, mount } from "svelte";
import { MizanStore, readPayload } from "../shared/mizan.js";
import { mizanContext, pageProps } from "./context.js";

export { DjangoError } from "../shared/mizan.js";
export { provideMizan, useMizan } from "./context.js";

/**
 * Hydrates the page in `document` with `pages` (the same map the server renderer got) and
 * returns the component's exports. When the HTML does not match the page's elements, it
 * calls `onRecoverableError` (the default logs) and renders the page again, as React does.
 * Svelte does not compare text: a differing text is replaced without a report.
 */
export function hydrate({ pages, onRecoverableError = (error) => console.error(error) }) {
  const payload = readPayload(document);
  const page = pages[payload.page];
  if (page === undefined) throw new Error(`hydrate: unknown page "${payload.page}"`);
  const target = document.getElementById("root");
  const options = { target, props: pageProps(payload), context: mizanContext(MizanStore.fromPayload(payload)) };
  let exports;
  try {
    // Svelte would recover by itself, with a warning only development builds give.
    exports = hydrateSvelte(page.component, { ...options, recover: false });
  } catch (error) {
    onRecoverableError(error);
    target.textContent = "";
    exports = mount(page.component, options);
  }
  // Hydration is done when hydrate returns: mark the document (tests and tools wait on it).
  document.documentElement.dataset.mizanHydrated = "";
  return exports;
}
