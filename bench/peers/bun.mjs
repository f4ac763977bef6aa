// Bun peer: Bun.serve with reusePort; run one process per core (bench/peers/run does).
// Usage: PEERS_BUNDLE=... PEERS_DATA=... PEERS_PORT=P bun bun.mjs
import { createHandler } from "./handler.mjs";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const bundle = (await import(pathToFileURL(resolve(process.env.PEERS_BUNDLE)).href)).default;
const data = await import(pathToFileURL(resolve(process.env.PEERS_DATA)).href);
const { fetch } = createHandler(bundle, data);
Bun.serve({ hostname: "127.0.0.1", port: Number(process.env.PEERS_PORT), reusePort: true, fetch });
