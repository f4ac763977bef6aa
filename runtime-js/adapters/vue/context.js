// The Vue half of the wrapper layer shared by the server renderer and the client:
// `provideMizan`, `useMizan` (over one provide/inject key) and the props a page receives.
import { inject } from "vue";

const StoreKey = Symbol("mizan store");

/** Provides the page's prefetched data to every `useMizan` of `app`. */
export function provideMizan(app, store) {
  app.provide(StoreKey, store);
}

/**
 * Reads a context's data for `params`: `{ data, error }`, where `error` is a `DjangoError`
 * when the origin answered one (404, 403, ...). The data was fetched before the render (and
 * embedded for hydration), so this never waits. Call it from `setup()` / `<script setup>`.
 */
export function useMizan(context, params = {}) {
  const store = inject(StoreKey, null); // undefined outside setup()
  if (store == null) throw new Error("useMizan() must be called in setup() of a component of a Mizan page");
  return store.read(context, params);
}

/**
 * The props of a page: of `params`, `query`, `url` and `headers` (from the ABI input or the
 * hydration payload), those the component declares. Vue would render an undeclared one as an
 * attribute of the page's root element.
 */
export function pageProps(component, { params, query, url, headers = {} }) {
  const all = { params, query, url, headers };
  const declared = Array.isArray(component.props) ? component.props : Object.keys(component.props ?? {});
  return Object.fromEntries(declared.filter((name) => name in all).map((name) => [name, all[name]]));
}
