// The React half of the wrapper layer shared by the server renderer and the client:
// `MizanContext` and `useMizan`, over one React context.
import { createContext, createElement, useContext } from "react";

const StoreContext = createContext(null);

/** Provides the page's prefetched data to every `useMizan` below it. */
export function MizanContext({ store, children }) {
  return createElement(StoreContext.Provider, { value: store }, children);
}

/**
 * Reads a context's data for `params`: `{ data, error }`, where `error` is a `DjangoError`
 * when the origin answered one (404, 403, ...). The data was fetched before the render (and
 * embedded for hydration), so this never suspends.
 */
export function useMizan(context, params = {}) {
  const store = useContext(StoreContext);
  if (store === null) throw new Error("useMizan() must be called inside <MizanContext>");
  return store.read(context, params);
}
