// Building the page. Every text that comes from a checkpoint (names, summaries,
// messages, metadata) goes in through textContent: this module never parses markup.

/** An element: `attrs` become attributes (`on*` keys become listeners), children are
 *  nodes or strings (as text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, ...children);
  return node;
}

/** Appends nodes or strings (as text) to a node. */
export function append(node, ...children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Empties a node and fills it again. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, ...children);
}

/** A cell's value as text, with NULL shown as such. */
export function show(value) {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "number") return value.toLocaleString("en");
  return String(value);
}

/** A JSON answer of the API, or an Error holding its message. */
export async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  const body = type.startsWith("application/json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/** A bytes count for people. */
export function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/** A table of columns and rows (arrays of cells). */
export function table(columns, rows, caption) {
  return el(
    "table",
    {},
    caption ? el("caption", { text: caption }) : null,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v) => el("td", {}, v instanceof Node ? v : show(v)))))),
  );
}
