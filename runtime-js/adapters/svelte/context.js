// The Svelte half of the wrapper layer shared by the server renderer and the client:
// `mizanContext`, `provideMizan` and `useMizan`, over one Svelte context key.
import { getContext, setContext } from "svelte";

const StoreKey = Symbol("mizan store");

/** The `context` option of `render`/`hydrate` that provides the page's prefetched data. */
export function mizanContext(store) {
  return new Map([[StoreKey, store]]);
}

/** Provides `store` to the components below the one whose initialisation calls this. */
export function provideMizan(store) {
  setContext(StoreKey, store);
}

/**
 * Reads a context's data for `params`: `{ data, error }`, where `error` is a `DjangoError`
 * when the origin answered one (404, 403, ...). The data was fetched before the render (and
 * embedded for hydration), so this never waits. Call it while a component initialises (in
 * its `<script>`).
 */
export function useMizan(context, params = {}) {
  const store = getContext(StoreKey);
  if (store === undefined) throw new Error("useMizan() must be called while a component of a Mizan page initialises");
  return store.read(context, params);
}

/** The props of a page: `params`, `query`, `url` and `headers`, from the ABI input or the hydration payload. */
export function pageProps({ params, query, url, headers = {} }) {
  return { params, query, url, headers };
}
