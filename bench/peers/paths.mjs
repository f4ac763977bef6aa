// Absolute file: URLs for the peers that have no node:url at hand (Deno without node compat).
export function resolve(p) {
  return p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;
}
export function toFileUrl(p) {
  return "file://" + p.split("/").map(encodeURIComponent).join("/");
}
