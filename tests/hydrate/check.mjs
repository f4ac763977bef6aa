// Opens pages the node serves in a real browser (Debian's headless Chromium, driven by
// playwright-core) and checks that each hydrates:
//
//   node tests/hydrate/check.mjs <base-url> <path>... [options]
//     --cookie NAME=VALUE        a cookie sent with every request to the base URL (repeatable)
//     --tamper-find TEXT         change each page's HTML on its way from the node to the
//     --tamper-replace TEXT        browser: its first TEXT becomes the replacement (negative
//                                  controls: the page must then fail the check)
//     --screenshot PATH=FILE     a PNG of page PATH once it has hydrated (repeatable)
//     --timeout MS               how long to wait for hydration and for each interaction (10000)
//     --chromium FILE            the browser (/usr/bin/chromium)
//
// For each path, over HTTP: loads the page, waits for the marker the adapters set when the
// client has taken over (`<html data-mizan-hydrated>`), collects console messages, page
// errors and failed requests, sorts out the hydration warnings and errors of React, Vue and
// Svelte, then interacts with the page in ways that work only once it has hydrated: the
// header's cart button opens the mini cart; on a product page, "Add to cart" twice makes the
// cart's count 2. Prints one JSON report on stdout:
//   {browser, ms, ok, pages: [{path, status, hydrated, ms, hydration: [...], errors: [...],
//    console: [...], interactions: [{name, ok, detail}], tampered, screenshot, ok}]}
// A page is ok when it hydrated, with no hydration message, no error, and every interaction
// worked. Exits 0 when the report was printed (whatever it says), 2 on bad arguments.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// What each framework's production build logs when hydration goes wrong (and the words of
// their development builds, should one be served). Found in the builds the fixture apps use:
//  - React 19 (react-dom-client.production.js): errors passed to `onRecoverableError`, which
//    the adapter logs with console.error: "Minified React error #418" (the server's HTML did
//    not match the client: "Hydration failed because the server rendered HTML didn't match
//    the client"), #419 (a Suspense boundary the server could not finish), #422 and #423 (an
//    error while hydrating: the root was rendered again on the client). #425 ("Text content
//    does not match server-rendered HTML") is React 18's, kept for an older build.
//  - Vue 3.5 (runtime-core.esm-bundler.js, logMismatchError): console.error "Hydration
//    completed but contains mismatches."; with __VUE_PROD_HYDRATION_MISMATCH_DETAILS__ or in
//    development, warnings "Hydration text mismatch in", "Hydration node mismatch:",
//    "Hydration children mismatch on", "Hydration text content mismatch on", "Hydration
//    class|style|attribute mismatch on".
//  - Svelte 5 (internal/client/warnings.js, errors.js, render.js): console.warn
//    "https://svelte.dev/e/hydration_mismatch", "…/hydration_attribute_changed",
//    "…/hydration_html_changed"; the error "https://svelte.dev/e/hydration_failed" that
//    `hydrate` throws with `recover: false` (the adapter logs it with console.error before it
//    mounts afresh); console.warn "Failed to hydrate: " for another error while hydrating.
//    Svelte does not compare text: a differing text is replaced without a word.
const HYDRATION_MESSAGES = [
  /Minified React error #(418|419|422|423|425)\b/,
  /Hydration failed|didn't match the client|did not match|error while hydrating/i,
  /Hydration (completed but contains mismatches|(text|children|text content|node|class|style|attribute) mismatch)/,
  /hydration_(mismatch|failed|attribute_changed|html_changed)\b|Failed to hydrate/,
];

const MARKER = "html[data-mizan-hydrated]";
/** How long a page may take to load, whatever `--timeout` says. */
const NAVIGATION_TIMEOUT = 30_000;

function usage(message) {
  process.stderr.write(
    `check.mjs: ${message}\nusage: node check.mjs <base-url> <path>... [--cookie NAME=VALUE] ` +
      `[--tamper-find TEXT --tamper-replace TEXT] [--screenshot PATH=FILE] [--timeout MS] [--chromium FILE]\n`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const options = { paths: [], cookies: [], screenshots: new Map(), timeout: 10_000, chromium: "/usr/bin/chromium" };
  const value = (i) => (i + 1 < argv.length ? argv[i + 1] : usage(`${argv[i]} needs a value`));
  const pair = (text, flag) => {
    const at = text.indexOf("=");
    if (at <= 0) usage(`${flag} takes NAME=VALUE, not ${JSON.stringify(text)}`);
    return [text.slice(0, at), text.slice(at + 1)];
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) {
      if (options.base === undefined) options.base = arg.replace(/\/$/, "");
      else options.paths.push(arg);
      continue;
    }
    const v = value(i++);
    if (arg === "--cookie") options.cookies.push(pair(v, arg));
    else if (arg === "--tamper-find") options.tamperFind = v;
    else if (arg === "--tamper-replace") options.tamperReplace = v;
    else if (arg === "--screenshot") options.screenshots.set(...pair(v, arg));
    else if (arg === "--timeout") options.timeout = Number(v);
    else if (arg === "--chromium") options.chromium = v;
    else usage(`unknown option ${arg}`);
  }
  if (options.base === undefined || options.paths.length === 0) usage("a base URL and at least one path are required");
  if ((options.tamperFind === undefined) !== (options.tamperReplace === undefined)) {
    usage("--tamper-find and --tamper-replace go together");
  }
  if (!(options.timeout > 0)) usage("--timeout takes a positive number of milliseconds");
  for (const path of options.screenshots.keys()) {
    if (!options.paths.includes(path)) usage(`--screenshot names ${path}, which is not a path to check`);
  }
  return options;
}

const isHydrationMessage = (text) => HYDRATION_MESSAGES.some((pattern) => pattern.test(text));

/** Waits until `predicate` (run in the page) holds; false when `timeout` passes first. */
async function waitFor(page, predicate, arg, timeout) {
  try {
    await page.waitForFunction(predicate, arg, { timeout, polling: 20 });
    return true;
  } catch {
    return false;
  }
}

/** The text of the first element `selector` finds in the page, or null. */
const textOf = (page, selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? null, selector);

/**
 * Runs `steps(page)`, which returns `{ok, detail}`, as the interaction `name`: `{name, ok,
 * detail}`, not ok when it throws.
 */
async function attempt(name, steps) {
  try {
    return { name, ...(await steps()) };
  } catch (error) {
    return { name, ok: false, detail: String(error.message ?? error).split("\n")[0] };
  }
}

/** The interactions that work only on a hydrated page; each `{name, ok, detail}`. */
async function interact(page, timeout) {
  const done = [];
  // Every page: the header's cart button opens the mini cart.
  done.push(
    await attempt("open the mini cart", async () => {
      const toggle = page.locator("header.site button.cart-toggle");
      const before = await toggle.getAttribute("aria-expanded", { timeout });
      await toggle.click({ timeout });
      const opened = await waitFor(
        page,
        () =>
          document.querySelector("button.cart-toggle").getAttribute("aria-expanded") === "true" &&
          document.querySelector(".mini-cart") !== null,
        undefined,
        timeout,
      );
      const after = await toggle.getAttribute("aria-expanded");
      const summary = JSON.stringify(await textOf(page, ".mini-cart p"));
      return { ok: before === "false" && opened, detail: `aria-expanded ${before} -> ${after}, mini cart: ${summary}` };
    }),
  );

  // A product page: "Add to cart" twice, and the header counts 2.
  const add = page.locator("main button.add");
  if ((await add.count()) > 0) {
    done.push(
      await attempt("add to cart twice", async () => {
        const before = await textOf(page, ".in-cart");
        await add.click({ timeout });
        await add.click({ timeout });
        const counted = await waitFor(
          page,
          () =>
            document.querySelector(".in-cart")?.textContent === "2" &&
            document.querySelector(".mini-cart p")?.textContent === "2 items added",
          undefined,
          timeout,
        );
        const after = JSON.stringify(await textOf(page, ".in-cart"));
        const summary = JSON.stringify(await textOf(page, ".mini-cart p"));
        return { ok: before === "0" && counted, detail: `in cart ${JSON.stringify(before)} -> ${after}, mini cart: ${summary}` };
      }),
    );
  }
  return done;
}

async function checkPage(context, options, path) {
  const url = new URL(path, options.base).href;
  const page = await context.newPage();
  const report = { path, status: null, hydrated: false, ms: null, hydration: [], errors: [], console: [] };
  report.interactions = [];
  report.tampered = null;
  // What went wrong, before it is sorted into hydration messages and other errors.
  const problems = [];
  page.on("console", (message) => {
    const location = message.location();
    report.console.push({ type: message.type(), text: message.text(), url: location?.url ?? "" });
  });
  page.on("pageerror", (error) => problems.push(`uncaught: ${error.stack ?? error}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}: ${r.failure()?.errorText}`));
  page.on("response", (response) => {
    if (response.url() !== url && response.status() >= 400) problems.push(`${response.status()} for ${response.url()}`);
  });

  if (options.tamperFind !== undefined) {
    report.tampered = false;
    await page.route((address) => address.href === url, async (route) => {
      const response = await route.fetch();
      const body = await response.text();
      report.tampered = body.includes(options.tamperFind);
      await route.fulfill({ response, body: body.replace(options.tamperFind, options.tamperReplace) });
    });
  }

  const started = performance.now();
  try {
    // Loading is not what `--timeout` bounds (a loaded machine may take seconds to start a
    // page): only hydration and the interactions are.
    const response = await page.goto(url, { waitUntil: "load", timeout: Math.max(options.timeout, NAVIGATION_TIMEOUT) });
    report.status = response?.status() ?? null;
    await page.waitForSelector(MARKER, { state: "attached", timeout: options.timeout });
    report.hydrated = true;
    report.ms = Math.round(performance.now() - started);
  } catch (error) {
    problems.push(`${report.status === null ? "load" : "hydration"}: ${String(error.message ?? error).split("\n")[0]}`);
  }
  report.clients = await page.$$eval("script[src]", (all) => all.map((s) => s.getAttribute("src"))).catch(() => []);

  const screenshot = options.screenshots.get(path);
  if (screenshot !== undefined) {
    await page.screenshot({ path: screenshot, animations: "disabled" });
    report.screenshot = screenshot;
  }
  // Tried on a page that did not hydrate too: there they must fail.
  if (report.status !== null) report.interactions = await interact(page, options.timeout);
  // Messages logged by the interactions count too.
  await page.waitForTimeout(50);

  for (const { type, text, url: source } of report.console) {
    if (isHydrationMessage(text)) problems.push(`console.${type}: ${text}`);
    // The browser logs the document's own error status ("Failed to load resource: the
    // server responded with a status of 404"): the page has that status on purpose.
    else if (type === "error" && source === url && report.status >= 400 && text.startsWith("Failed to load resource")) {
      continue;
    }
    // Nor is the browser's own request for /favicon.ico the page's.
    else if (type === "error" && source !== "" && new URL(source).pathname === "/favicon.ico") continue;
    else if (type === "error" || type === "warning") problems.push(`console.${type}: ${text} (${source})`);
  }
  for (const problem of problems) (isHydrationMessage(problem) ? report.hydration : report.errors).push(problem);
  if (report.tampered === false) report.errors.push(`tamper: ${JSON.stringify(options.tamperFind)} is not in the page`);
  report.ok =
    report.hydrated &&
    report.hydration.length === 0 &&
    report.errors.length === 0 &&
    report.interactions.length > 0 &&
    report.interactions.every((i) => i.ok);
  await page.close();
  return report;
}

const options = parseArgs(process.argv.slice(2));
const started = performance.now();
// A fresh profile for every run, removed afterwards.
const profile = mkdtempSync(join(tmpdir(), "mizan-hydrate-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: options.chromium,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
    viewport: { width: 1280, height: 800 },
    locale: "en-US",
    timeout: 30_000,
  });
  if (options.cookies.length > 0) {
    await context.addCookies(options.cookies.map(([name, value]) => ({ name, value, url: options.base })));
  }
  // A persistent context has no Browser object to ask: the DevTools protocol tells.
  const blank = context.pages()[0] ?? (await context.newPage());
  const { product: browser } = await (await context.newCDPSession(blank)).send("Browser.getVersion");
  const pages = [];
  for (const path of options.paths) pages.push(await checkPage(context, options, path));
  const ms = Math.round(performance.now() - started);
  process.stdout.write(`${JSON.stringify({ browser, ms, ok: pages.every((p) => p.ok), pages }, null, 2)}\n`);
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
