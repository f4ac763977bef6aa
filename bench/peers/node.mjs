// Node peer: node:cluster, one worker per core (PEERS_WORKERS), each a node:http server
// calling the shared handler's `page` (the fetch-style handler's core, without building
// WHATWG Request/Response objects, as a node:http server would).
// Usage: PEERS_BUNDLE=<server.mjs> PEERS_DATA=<data.mjs> PEERS_PORT=<port> node node.mjs
import cluster from "node:cluster";
import http from "node:http";
import { availableParallelism } from "node:os";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { createHandler } from "./handler.mjs";

const workers = Number(process.env.PEERS_WORKERS || availableParallelism());
if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("exit", (w, code) => { console.error(`node peer: worker ${w.process.pid} exited ${code}`); process.exit(1); });
  process.on("SIGTERM", () => { for (const w of Object.values(cluster.workers)) w.process.kill("SIGTERM"); process.exit(0); });
} else {
  const bundle = (await import(pathToFileURL(resolve(process.env.PEERS_BUNDLE)).href)).default;
  const data = await import(pathToFileURL(resolve(process.env.PEERS_DATA)).href);
  const { page } = createHandler(bundle, data);
  http.createServer(async (req, res) => {
    try {
      const out = await page(req.url, req.headers["accept-language"]);
      const body = Buffer.from(out.html);
      const headers = {};
      for (const [n, v] of out.headers) headers[n] = v;
      headers["content-length"] = body.length;
      res.writeHead(out.status, headers);
      res.end(body);
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(e?.stack ?? e));
    }
  }).listen(Number(process.env.PEERS_PORT), "127.0.0.1");
}
