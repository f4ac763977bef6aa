// Misses over several nodes (bench/nodes): requests /products/FIRST .. FIRST+PAGES-1, each page
// three times at once, once through each node URL given (all three through the one URL when
// only one is given), at most CONCURRENCY pages in flight. Prints one JSON line: wall time,
// requests, statuses and X-Mizan-Cache states.
//   node bench/nodes-miss.mjs FIRST PAGES CONCURRENCY URL [URL URL]
const [first, pages, concurrency] = process.argv.slice(2, 5).map(Number);
const urls = process.argv.slice(5);
if (!urls.length) {
  console.error("usage: node bench/nodes-miss.mjs FIRST PAGES CONCURRENCY URL [URL URL]");
  process.exit(2);
}
const targets = urls.length === 1 ? [urls[0], urls[0], urls[0]] : urls;
const statuses = {};
const cache = {};
const count = (table, key) => (table[key] = (table[key] || 0) + 1);

async function one(url) {
  const response = await fetch(url);
  await response.arrayBuffer();
  count(statuses, response.status);
  count(cache, response.headers.get("x-mizan-cache") || "none");
}

let next = first;
const end = first + pages;
async function lane() {
  while (next < end) {
    const id = next++;
    await Promise.all(targets.map((base) => one(`${base}/products/${id}`)));
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: concurrency }, lane));
const ms = performance.now() - started;
console.log(JSON.stringify({ ms: Math.round(ms), requests: pages * targets.length, statuses, cache }));
