// The one request handler every JavaScript peer of bench/peers runs (Node, Deno, Bun, workerd):
// it maps the request URL to the page and the render input exactly as the node does for the
// fixture manifests (src/node/render.rs `prepare`, src/abi.rs `PageInput`), calls
// `bundle.render(input)` and answers the HTML with the bundle's status and headers.
//
//   createHandler(bundle, data) -> { fetch(request), page(pathAndQuery, acceptLanguage) }
//
// `data` is the generated data.mjs (bench/peers/run writes it per framework): the client
// asset URL the node would give the page, and the origin's answers as JSON text (as a data
// cache holds them: bytes, parsed once per render, like the node's isolate parses its input).
// Routes served (the fixture manifests' own):
//   /search?q=...   page Search, the product_list answer, query {q} (the miss-path page)
//   /products       page ProductList, the product_list answer
//   /products/:id   page ProductDetail, the product_detail answer (the fixture holds id 7)
// Anything else answers 404 without rendering.

const HTML = "text/html; charset=utf-8";

export function createHandler(bundle, data) {
  const render = bundle.render.bind(bundle);
  const assets = data.client ? { client: data.client } : {};

  function dep(context, params, text) {
    return { context, params, data: JSON.parse(text) };
  }

  /** The render input for `url` (a URL object), or null when no route matches. */
  function input(url, acceptLanguage) {
    const path = url.pathname;
    if (path === "/search") {
      // Declared query: q only; the first value in canonical order (sorted), as the page key.
      const values = url.searchParams.getAll("q").sort();
      const query = values.length ? { q: values[0] } : {};
      // Percent-encoded as crates/mizan-cache/src/key.rs does: all but ASCII alphanumerics and -._~
      const enc = (v) => encodeURIComponent(v).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
      const canonical = values.length ? `/search?q=${enc(values[0])}` : "/search";
      const out = {
        page: "Search", url: canonical, route: "/search", params: {}, query,
        data: [dep("product_list", {}, data.answers.product_list)], errors: [], assets,
      };
      // The route varies on accept-language: the node passes it (normalised) when sent.
      if (acceptLanguage) out.headers = { "accept-language": acceptLanguage.trim().replace(/\s+/g, " ") };
      return out;
    }
    if (path === "/products") {
      return {
        page: "ProductList", url: "/products", route: "/products", params: {}, query: {},
        data: [dep("product_list", {}, data.answers.product_list)], errors: [], assets,
      };
    }
    const m = /^\/products\/([1-9][0-9]{0,8})$/.exec(path);
    if (m) {
      const id = Number(m[1]);
      const text = data.answers[`product_detail:${id}`];
      if (text === undefined) return null;
      return {
        page: "ProductDetail", url: path, route: "/products/:id", params: { id }, query: {},
        data: [dep("product_detail", { id }, text)], errors: [], assets,
      };
    }
    return null;
  }

  /** Renders `pathAndQuery`: { status, headers: [[name, value]...], html }. */
  async function page(pathAndQuery, acceptLanguage) {
    const inp = input(new URL(pathAndQuery, "http://peer"), acceptLanguage);
    if (inp === null) return { status: 404, headers: [["content-type", "text/plain"]], html: "not found\n" };
    const out = await render(inp);
    let headers = out.headers ?? [];
    if (!Array.isArray(headers)) headers = Object.entries(headers);
    if (!headers.some(([n]) => n.toLowerCase() === "content-type")) headers = [["content-type", HTML], ...headers];
    return { status: out.status ?? 200, headers, html: out.html };
  }

  async function fetch(request) {
    const url = new URL(request.url);
    const out = await page(url.pathname + url.search, request.headers.get("accept-language"));
    return new Response(out.html, { status: out.status, headers: out.headers });
  }

  return { fetch, page };
}
