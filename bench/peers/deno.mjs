// Deno peer: `deno serve --parallel` (one isolate per core, DENO_JOBS) with the shared handler.
// Usage: PEERS_BUNDLE=... PEERS_DATA=... deno serve -A --parallel --host 127.0.0.1 --port P deno.mjs
import { createHandler } from "./handler.mjs";
import { toFileUrl, resolve } from "./paths.mjs";

const bundle = (await import(toFileUrl(resolve(Deno.env.get("PEERS_BUNDLE"))))).default;
const data = await import(toFileUrl(resolve(Deno.env.get("PEERS_DATA"))));
export default createHandler(bundle, data);
