// The explorer of `ckpt serve`: overview, cluster tree, map, cluster pages and a SQL
// box, over the server's JSON API. The URL's hash names what is shown:
//   #/                      the overview
//   #/cluster/ID?chat=C&page=N   a cluster (and one of its summaries, a page of them)
//   #/sql?q=SQL             the SQL box with a query (run on load)

import { el, append, replace, show, api, size, table } from "./dom.js";
import { ClusterMap } from "./map.js";

const main = document.getElementById("main");
const treeRoot = document.getElementById("tree");
const search = document.getElementById("search");
const status = document.getElementById("status");

const state = {
  clusters: new Map(), // id → {id, name, parent_id, count, children: []}
  roots: [],
  total: 0,
  treeReady: null,
  points: null,
  sqlRun: null,
};

// Timings of the page's requests, for the benchmark (scripts/bench) and the tests.
window.ckptTimings = { start: performance.now() };
function mark(name) {
  window.ckptTimings[name] = performance.now() - window.ckptTimings.start;
}

function say(text) {
  status.textContent = text;
}

function clusterLink(id, name) {
  return el("a", { href: `#/cluster/${encodeURIComponent(id)}`, text: name });
}

// --- The tree -----------------------------------------------------------------

async function loadTree() {
  try {
    const { clusters } = await api("/api/tree");
    for (const c of clusters) state.clusters.set(c.id, { ...c, children: [] });
    for (const c of state.clusters.values()) {
      const parent = c.parent_id !== null ? state.clusters.get(c.parent_id) : undefined;
      if (parent) parent.children.push(c);
      else state.roots.push(c);
    }
    state.total = state.roots.reduce((n, c) => n + c.count, 0) || 1;
    renderTree();
    mark("tree");
  } catch (e) {
    replace(treeRoot, el("li", { class: "error", text: `No cluster tree: ${e.message}` }));
  }
}

function share(c) {
  return `${((100 * c.count) / state.total).toFixed(1)}%`;
}

function treeItem(c, open) {
  const item = el("li", { role: "treeitem", "data-id": c.id, "aria-expanded": c.children.length ? String(open) : null });
  const group = el("ul", { role: "group" });
  const toggle = el("button", {
    class: "toggle",
    type: "button",
    "aria-label": c.children.length ? `Expand ${c.name}` : null,
    disabled: !c.children.length,
    text: c.children.length ? (open ? "▾" : "▸") : "·",
  });
  const expand = (to) => {
    item.setAttribute("aria-expanded", String(to));
    toggle.textContent = to ? "▾" : "▸";
    if (to && !group.childElementCount) append(group, c.children.map((k) => treeItem(k, false)));
    group.hidden = !to;
  };
  toggle.addEventListener("click", () => expand(item.getAttribute("aria-expanded") !== "true"));
  append(
    item,
    el("div", { class: "node" }, toggle, clusterLink(c.id, c.name), el("span", { class: "size", text: `${show(c.count)} · ${share(c)}` })),
    group,
  );
  if (c.children.length) expand(open);
  return item;
}

function renderTree() {
  const open = state.roots.length <= 3;
  replace(treeRoot, state.roots.map((c) => treeItem(c, open)));
}

function filterTree() {
  const q = search.value.trim().toLowerCase();
  if (!q) return renderTree();
  const hits = [...state.clusters.values()].filter((c) => c.name.toLowerCase().includes(q)).slice(0, 200);
  replace(
    treeRoot,
    hits.length
      ? hits.map((c) => el("li", { role: "treeitem", "data-id": c.id }, el("div", { class: "node" }, clusterLink(c.id, c.name), el("span", { class: "size", text: `${show(c.count)} · ${share(c)}` }))))
      : el("li", { class: "muted", text: "No cluster of that name" }),
  );
}

function path(id) {
  const out = [];
  let c = state.clusters.get(id);
  while (c && out.length < 64) {
    out.unshift(c);
    c = c.parent_id !== null ? state.clusters.get(c.parent_id) : undefined;
  }
  return out;
}

// Colour groups: the first level of the hierarchy with more than one cluster.
function colourGroup() {
  let depth = 0;
  let level = state.roots;
  while (level.length === 1 && level[0].children.length) {
    level = level[0].children;
    depth += 1;
  }
  const index = new Map(level.map((c, i) => [c.id, i]));
  return (id) => {
    const p = path(id);
    const at = p[Math.min(depth, p.length - 1)];
    return at ? index.get(at.id) ?? 0 : 0;
  };
}

// --- Overview -----------------------------------------------------------------

async function overview() {
  const mapBox = el("section", { class: "card", "aria-labelledby": "map-title" });
  const numbers = el("section", { class: "card" }, el("p", { class: "muted", text: "Loading…" }));
  const checkpoints = el("section", { class: "card" });
  const check = el("section", { class: "card" }, el("h2", { text: "Consistency (ckpt check)" }), el("p", { class: "muted", text: "Checking…" }));
  replace(main, el("h1", { text: "Overview" }), numbers, mapBox, checkpoints, check);
  renderMap(mapBox);
  api("/api/overview")
    .then((o) => {
      mark("overview");
      const n = o.numbers;
      replace(
        numbers,
        el("h2", { text: "This run" }),
        el(
          "dl",
          { class: "numbers" },
          Object.entries(n).map(([k, v]) => el("div", {}, el("dt", { text: k.replace("_", " ") }), el("dd", { text: show(v) }))),
        ),
      );
      replace(
        checkpoints,
        el("h2", { text: "Checkpoints" }),
        o.roots.map((r) =>
          table(
            ["checkpoint", "kind", "format", "rows", "size", "parts"],
            r.checkpoints.map((c) => [c.file, c.kind ?? "-", c.format, c.rows ?? (c.error ? "unreadable" : "?"), size(c.bytes), c.parts]),
            `${r.name}: ${r.location}`,
          ),
        ),
      );
    })
    .catch((e) => replace(numbers, el("p", { class: "error", role: "alert", text: e.message })));
  api("/api/check")
    .then((c) => {
      if (c.error) return replace(check, el("h2", { text: "Consistency (ckpt check)" }), el("p", { class: "error", text: c.error }));
      const problems = c.report.roots.flatMap((r) => r.problems.map((p) => [r.root, p.checkpoint, p.problem, show(p.count), p.message]));
      replace(
        check,
        el("h2", { text: "Consistency (ckpt check)" }),
        problems.length ? table(["root", "checkpoint", "problem", "ids", "message"], problems) : el("p", { class: "ok", text: "Consistent: no problem found." }),
      );
    })
    .catch((e) => replace(check, el("h2", { text: "Consistency (ckpt check)" }), el("p", { class: "error", text: e.message })));
}

async function renderMap(box) {
  const canvas = el("canvas", { id: "map", tabindex: "0", role: "img", "aria-label": "Map of the projected clusters: drag or arrow keys to pan, wheel or + and - to zoom, 0 to fit" });
  const tooltip = el("div", { class: "tooltip", role: "status", hidden: true });
  const levels = el("select", { id: "map-level", "aria-label": "Level shown on the map" });
  const note = el("span", { class: "muted" });
  replace(box, el("h2", { id: "map-title", text: "Map" }), el("div", { class: "toolbar" }, el("label", {}, "Level ", levels), note), el("div", { class: "mapwrap" }, canvas, tooltip));
  try {
    if (!state.points) state.points = await api("/api/map");
    await state.treeReady;
    const { points, total } = state.points;
    if (!points.length) {
      replace(box, el("h2", { text: "Map" }), el("p", { class: "muted", text: "No dimensionality checkpoint: nothing to draw." }));
      return;
    }
    note.textContent = points.length < total ? ` the ${show(points.length)} largest of ${show(total)} clusters` : ` ${show(total)} clusters`;
    const map = new ClusterMap(canvas, tooltip, points, colourGroup(), (p) => {
      location.hash = `#/cluster/${encodeURIComponent(p.id)}`;
    });
    append(levels, map.levels.map((l) => el("option", { value: String(l), selected: l === map.level, text: String(l) })), el("option", { value: "all", text: "all" }));
    levels.addEventListener("change", () => map.setLevel(levels.value === "all" ? "all" : Number(levels.value)));
    window.ckptMap = map;
    mark("map");
  } catch (e) {
    append(box, el("p", { class: "error", role: "alert", text: e.message }));
  }
}

// --- Cluster page -------------------------------------------------------------

async function clusterPage(id, params) {
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const chat = params.get("chat");
  replace(main, el("p", { class: "muted", text: "Loading cluster…" }));
  let detail;
  try {
    detail = await api(`/api/cluster?id=${encodeURIComponent(id)}`);
  } catch (e) {
    replace(main, el("p", { class: "error", role: "alert", text: e.message }));
    return;
  }
  const c = detail.cluster;
  await state.treeReady;
  const crumbs = path(id).slice(0, -1);
  const summariesBox = el("section", { class: "card", id: "summaries", "aria-labelledby": "summaries-title" }, el("h2", { id: "summaries-title", text: "Summaries" }), el("p", { class: "muted", text: "Loading…" }));
  const facetsBox = el("section", { class: "card", id: "facets" }, el("h2", { text: "Facets" }), el("p", { class: "muted", text: "Loading…" }));
  const summaryBox = el("section", { class: "card", id: "summary", hidden: !chat });
  replace(
    main,
    el("nav", { class: "crumbs", "aria-label": "Parents" }, el("a", { href: "#/", text: "Overview" }), crumbs.map((p) => [" › ", clusterLink(p.id, p.name)])),
    el("h1", { id: "cluster-name", text: c.name }),
    el("p", { class: "description", text: c.description }),
    el("p", { class: "muted", text: `${show(c.count)} conversations · slug ${c.slug} · id ${c.id}` }),
    detail.children.length
      ? el("section", { class: "card" }, el("h2", { text: "Child clusters" }), el("ul", { class: "children" }, detail.children.map((k) => el("li", {}, clusterLink(k.id, k.name), el("span", { class: "size", text: ` ${show(k.count)}` })))))
      : null,
    summaryBox,
    el("div", { class: "columns" }, summariesBox, facetsBox),
  );
  document.title = `${c.name} — ckpt serve`;
  const pageSize = 50;
  const summaries = api(`/api/summaries?cluster=${encodeURIComponent(id)}&offset=${offset}&limit=${pageSize}`);
  summaries
    .then((s) => {
      mark("summaries");
      const go = (o) => `#/cluster/${encodeURIComponent(id)}?offset=${o}`;
      const pager = el(
        "div",
        { class: "pager" },
        offset > 0 ? el("a", { href: go(Math.max(0, offset - pageSize)), text: "‹ previous" }) : null,
        el("span", { text: ` ${s.total ? offset + 1 : 0}–${Math.min(offset + pageSize, s.total)} of ${show(s.total)} ` }),
        offset + pageSize < s.total ? el("a", { href: go(offset + pageSize), text: "next ›" }) : null,
      );
      replace(
        summariesBox,
        el("h2", { id: "summaries-title", text: "Summaries" }),
        pager,
        el(
          "ol",
          { class: "summaries", start: String(offset + 1) },
          s.rows.map((r) =>
            el(
              "li",
              { class: "summary-item", "data-chat-id": r.chat_id },
              el("a", { href: `#/cluster/${encodeURIComponent(id)}?offset=${offset}&chat=${encodeURIComponent(r.chat_id)}`, class: "chat", text: r.chat_id }),
              el("p", { class: "summary-text", text: r.summary }),
              el("p", { class: "muted", text: [r.topic, r.task, r.languages, r.user_frustration !== null ? `frustration ${r.user_frustration}` : null, r.concerning_score !== null ? `concern ${r.concerning_score}` : null].filter((x) => x !== null && x !== "").join(" · ") }),
            ),
          ),
        ),
      );
    })
    .catch((e) => append(summariesBox, el("p", { class: "error", role: "alert", text: e.message })));
  // Facets after the summaries: on two cores they would slow the summaries' query down.
  summaries
    .catch(() => {})
    .then(() => api(`/api/facets?id=${encodeURIComponent(id)}`))
    .then((f) => {
      replace(
        facetsBox,
        el("h2", { text: "Facets" }),
        f.facets.filter((x) => x.values.length).map((x) => table(["value", "summaries"], x.values.map((v) => [v.value, v.n]), x.name)),
      );
    })
    .catch((e) => append(facetsBox, el("p", { class: "error", text: e.message })));
  if (chat) showSummary(summaryBox, chat);
}

async function showSummary(box, chat) {
  replace(box, el("h2", { text: `Conversation ${chat}` }), el("p", { class: "muted", text: "Loading…" }));
  try {
    const { summary, conversation } = await api(`/api/summary?chat_id=${encodeURIComponent(chat)}`);
    const parts = [el("h2", { text: `Conversation ${chat}` })];
    if (summary) {
      parts.push(
        el(
          "dl",
          { class: "fields" },
          ["summary", "request", "topic", "task", "languages", "concerning_score", "user_frustration", "assistant_errors"].map((k) => el("div", {}, el("dt", { text: k }), el("dd", { text: show(summary[k]) }))),
        ),
      );
    }
    if (conversation) {
      parts.push(
        el("h3", { text: `Messages (started ${conversation.conversation.created_at})` }),
        el("ol", { class: "messages" }, conversation.messages.map((m) => el("li", { class: `message ${m.role === "user" ? "user" : "assistant"}` }, el("div", { class: "role", text: `${m.role} · ${m.created_at}` }), el("div", { class: "content", text: m.content })))),
      );
    }
    const metadata = (conversation && conversation.conversation.metadata) || (summary && summary.metadata);
    if (metadata) {
      let pretty = metadata;
      try {
        pretty = JSON.stringify(JSON.parse(metadata), null, 2);
      } catch (_) {
        // Shown as stored.
      }
      parts.push(el("h3", { text: "Metadata" }), el("pre", { class: "metadata", text: pretty }));
    }
    replace(box, ...parts);
    box.scrollIntoView({ block: "start" });
  } catch (e) {
    append(box, el("p", { class: "error", role: "alert", text: e.message }));
  }
}

// --- SQL ------------------------------------------------------------------------

let examples = null;

function sqlPage(params) {
  const sql = params.get("q") || "SELECT topic, count(*) AS summaries\nFROM summaries\nGROUP BY topic\nORDER BY summaries DESC";
  const box = el("textarea", { id: "sql", rows: "8", spellcheck: "false", "aria-label": "SQL (read-only)" });
  box.value = sql;
  const run = el("button", { id: "run", type: "button", text: "Run (Ctrl+Enter)" });
  const cancel = el("button", { id: "cancel", type: "button", disabled: true, text: "Cancel" });
  const pick = el("select", { id: "examples", "aria-label": "Example queries" }, el("option", { value: "", text: "Examples from queries/…" }));
  const downloads = ["csv", "json", "parquet"].map((f) => el("button", { type: "button", class: "download", "data-format": f, text: `Download ${f.toUpperCase()}` }));
  const result = el("div", { id: "result", "aria-live": "polite" });
  replace(main, el("h1", { text: "SQL" }), el("p", { class: "muted", text: "Read-only SQL over the roots (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)." }), box, el("div", { class: "toolbar" }, run, cancel, pick, ...downloads), result);

  const execute = async () => {
    const text = box.value;
    history.replaceState(null, "", `#/sql?q=${encodeURIComponent(text)}`);
    const id = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    const controller = new AbortController();
    state.sqlRun = { id, controller };
    run.disabled = true;
    cancel.disabled = false;
    replace(result, el("p", { class: "muted", text: "Running…" }));
    const started = performance.now();
    try {
      const r = await api("/api/query", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: text, id }), signal: controller.signal });
      const ms = Math.round(performance.now() - started);
      replace(
        result,
        el("p", { class: "muted", id: "result-status", text: `${show(r.rows.length)} row(s)${r.truncated ? " (truncated: download for all)" : ""} in ${ms} ms` }),
        el("div", { class: "scroll" }, table(r.columns.map((c) => `${c.name} (${c.type})`), r.rows)),
      );
    } catch (e) {
      replace(result, el("p", { class: "error", role: "alert", text: e.name === "AbortError" ? "Cancelled." : e.message }));
    } finally {
      state.sqlRun = null;
      run.disabled = false;
      cancel.disabled = true;
    }
  };
  run.addEventListener("click", execute);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      execute();
    }
  });
  cancel.addEventListener("click", () => {
    const r = state.sqlRun;
    if (!r) return;
    // The server stops the query (its future is dropped); the fetch is aborted here.
    fetch("/api/cancel", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: r.id }) }).catch(() => {});
    r.controller.abort();
  });
  for (const button of downloads) {
    button.addEventListener("click", async () => {
      const format = button.dataset.format;
      try {
        const response = await fetch(`/api/query?format=${format}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: box.value }) });
        if (!response.ok) throw new Error((await response.json()).error);
        const blob = await response.blob();
        const a = el("a", { href: URL.createObjectURL(blob), download: `result.${format === "json" ? "jsonl" : format}` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      } catch (e) {
        replace(result, el("p", { class: "error", role: "alert", text: e.message }));
      }
    });
  }
  (examples ? Promise.resolve(examples) : api("/api/examples").then((x) => (examples = x.examples))).then((list) => {
    append(pick, list.filter((x) => x.read_only).map((x) => el("option", { value: x.name, text: x.name })));
  });
  pick.addEventListener("change", () => {
    const x = examples && examples.find((e) => e.name === pick.value);
    if (x) box.value = x.sql;
  });
  if (params.get("q")) execute();
}

// --- Routing --------------------------------------------------------------------

function route() {
  const hash = location.hash.slice(1) || "/";
  const [where, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("header nav a")) {
    a.setAttribute("aria-current", String(a.getAttribute("href") === `#${where}` || (where.startsWith("/cluster") && a.getAttribute("href") === "#/")));
  }
  document.title = "ckpt serve";
  if (where.startsWith("/cluster/")) {
    const id = decodeURIComponent(where.slice("/cluster/".length));
    for (const n of treeRoot.querySelectorAll(".node.selected")) n.classList.remove("selected");
    const node = treeRoot.querySelector(`li[data-id="${CSS.escape(id)}"] > .node`);
    if (node) node.classList.add("selected");
    return clusterPage(id, params);
  }
  if (where === "/sql") return sqlPage(params);
  return overview();
}

search.addEventListener("input", filterTree);
window.addEventListener("hashchange", route);
state.treeReady = loadTree();
route();
say("");
