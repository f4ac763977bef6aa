// Hydrates a server-rendered page in jsdom with its client bundle and reports the outcome:
// node tests/hydrate/check.mjs <page.html> <client.js>  ->  {"hydrated": bool, "errors": [...]}
// Errors are everything React or the page reported: hydration mismatches, exceptions.
import { readFileSync } from "node:fs";
import { JSDOM, VirtualConsole } from "jsdom";

const [htmlPath, clientPath] = process.argv.slice(2);
const errors = [];
const virtualConsole = new VirtualConsole();
virtualConsole.on("error", (...args) => errors.push(args.map(String).join(" ")));
virtualConsole.on("jsdomError", (e) => errors.push(String(e?.stack ?? e)));
const dom = new JSDOM(readFileSync(htmlPath, "utf8"), { runScripts: "outside-only", virtualConsole, pretendToBeVisual: true });
const { window } = dom;
window.addEventListener("error", (e) => errors.push(String(e.error?.stack ?? e.message)));
const before = window.document.getElementById("root").innerHTML;
window.eval(readFileSync(clientPath, "utf8"));

// React commits the hydrated tree on a later task; the page marks the document then.
let hydrated = false;
for (let tick = 0; tick < 500 && !hydrated; tick++) {
  await new Promise((resolve) => window.setTimeout(resolve, 0));
  hydrated = window.document.documentElement.hasAttribute("data-mizan-hydrated");
}
const unchanged = window.document.getElementById("root").innerHTML === before;
process.stdout.write(JSON.stringify({ hydrated, unchanged, errors }));
window.close();
