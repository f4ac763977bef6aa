// workerd peer's main module: the bundle, the generated data and the shared handler are
// modules of the worker (workerd.capnp.tmpl embeds them); every process of the peer runs it.
import bundle from "./bundle.mjs";
import * as data from "./data.mjs";
import { createHandler } from "./handler.mjs";

const { fetch } = createHandler(bundle, data);
export default { fetch: (request) => fetch(request) };
