"""The gallery's static page: HTML, CSS and JavaScript templates, with no server, network or framework.

`LAYER_PAGE` is one layer's `index.html`: a header with the run's settings and counts, then one card per map,
built by the inline script from the run's data (`__DATA__`, a JSON object embedded in the page: see
`gallery.layer_data`). The cards' images are relative links to the run's PNGs, loaded lazily
(`loading="lazy"`, and `content-visibility: auto` skips the layout of cards off screen), so a page of 2048
maps opens at once. Controls: sort by map, loss, ratio to the best dataset image or status; filter by status
(or has an OIP / beats the dataset) and by text (index or label). The script marks the page ready by setting
`document.body.dataset.ready` to the milliseconds it took (`performance.now()`), which the browser test reads.

`INDEX_PAGE` is a multi-layer run's top `index.html`: one row per layer, linking to `LAYER/index.html`.
Both pages are filled by `str.replace` of `__TITLE__`, `__DATA__` and (top page) `__ROWS__`.
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #16181c; color: #e4e6ea; }
header { padding: 16px 24px; background: #1f2228; border-bottom: 1px solid #333; }
h1 { font-size: 20px; margin: 0 0 8px; }
a { color: #8ab4f8; }
.settings { display: flex; flex-wrap: wrap; gap: 2px 20px; font-size: 13px; }
.settings .key, .flags { color: #9aa0a6; }
.flags { font-size: 13px; margin: 6px 0 0; }
code { font-size: 12px; word-break: break-all; color: #e4e6ea; }
.counts { margin: 10px 0 0; font-size: 15px; }
.controls { position: sticky; top: 0; z-index: 1; padding: 8px 24px; background: #16181cee; display: flex;
  gap: 16px; align-items: center; flex-wrap: wrap; border-bottom: 1px solid #2a2d33; }
.controls select, .controls input { background: #24272d; color: inherit; border: 1px solid #444; padding: 3px; }
#cards { display: flex; flex-wrap: wrap; gap: 12px; padding: 16px 24px; }
.card { width: 290px; background: #1f2228; border: 1px solid #33363c; border-radius: 6px; padding: 8px;
  box-sizing: border-box; content-visibility: auto; contain-intrinsic-size: 290px 330px; }
.card[hidden] { display: none; }
.card h2 { font-size: 15px; margin: 0 0 6px; display: flex; gap: 8px; align-items: baseline; }
.card h2 .name { color: #fdd663; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.top { display: flex; gap: 8px; }
.top img.oip { width: 128px; height: 128px; object-fit: contain; background: #000; }
img.pixelated { image-rendering: pixelated; }
.facts { font-size: 12px; line-height: 1.5; }
.facts b { font-weight: 600; }
.status { border-radius: 3px; padding: 0 5px; font-size: 12px; }
.status.completed { background: #1e4620; } .status.converged { background: #174ea6; }
.status.no_activation { background: #5c1f1f; }
.strip { margin-top: 6px; font-size: 11px; color: #9aa0a6; }
.strip img { display: block; width: 100%; height: auto; background: #000; }
.ratio { font-size: 13px; margin-top: 4px; }
.beats { color: #81c995; } .misses { color: #f28b82; }
"""

SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("oip-data").textContent);
const STATUS_ORDER = {no_activation: 0, completed: 1, converged: 2};
const cardsBox = document.getElementById("cards");
const sortSelect = document.getElementById("sort");
const filterSelect = document.getElementById("filter");
const searchInput = document.getElementById("search");
const shownCount = document.getElementById("shown");

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
    "'": "&#39;"})[c]);
}
function num(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(digits);
}
function image(src, cls, alt, width, height, pixelated, title) {
  const size = width ? ` width="${width}" height="${height}"` : "";
  const tip = title ? ` title="${esc(title)}"` : "";
  return `<img class="${cls}${pixelated ? " pixelated" : ""}" src="${esc(src)}" alt="${esc(alt)}"` +
    `${size}${tip} loading="lazy" decoding="async">`;
}
function makeCard(m) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.map = m.map;
  card.dataset.status = m.status;
  const name = m.label ? `<span class="name" title="${esc(m.label)}">${esc(m.label)}</span>` : "";
  let ratio = "";
  if (DATA.has_dataset) {
    const verdict = m.beats ? '<span class="beats">beats</span>' : '<span class="misses">below</span>';
    ratio = `<div class="ratio">ratio <b>${num(m.ratio, 3)}</b>: ${verdict} the best dataset image</div>`;
  }
  const examples = m.examples ? `<div class="strip">top ${DATA.top_k} dataset images, best first` +
    image(m.examples, "examples", `dataset examples of ${DATA.kind} ${m.map}`, 0, 0, DATA.strips_pixelated) +
    `</div>` : "";
  const steps = `<div class="strip">ascent at steps ${esc(m.frame_steps.join(", "))}` +
    image(m.steps_png, "steps", `ascent of ${DATA.kind} ${m.map}`, 0, 0, DATA.strips_pixelated,
      `steps ${m.frame_steps.join(", ")}`) + `</div>`;
  card.innerHTML = `<h2><a href="${esc(m.picture)}">${DATA.kind} ${m.map}</a>${name}</h2>` +
    `<div class="top"><a href="${esc(m.picture)}">` +
    image(m.oip, "oip", `OIP of ${DATA.kind} ${m.map}`, 128, 128, DATA.oip_pixelated) + `</a>` +
    `<div class="facts"><span class="status ${esc(m.status)}">${esc(m.status)}</span>` +
    `<div>loss <b>${num(m.loss, 4)}</b></div><div>${m.steps} steps</div><div>${esc(m.strategy)}</div>` +
    (m.fired ? "" : "<div>no OIP</div>") + `</div></div>${ratio}${examples}${steps}`;
  return {m: m, el: card};
}
const COMPARE = {
  map: (a, b) => a.m.map - b.m.map,
  loss: (a, b) => b.m.loss - a.m.loss || a.m.map - b.m.map,
  ratio: (a, b) => (b.m.ratio ?? -Infinity) - (a.m.ratio ?? -Infinity) || a.m.map - b.m.map,
  status: (a, b) => STATUS_ORDER[a.m.status] - STATUS_ORDER[b.m.status] || a.m.map - b.m.map,
};
function keep(m, filter, query) {
  const byStatus = filter === "all" || m.status === filter || (filter === "oip" && m.fired) ||
    (filter === "no_oip" && !m.fired) || (filter === "beats" && m.beats) || (filter === "not_beats" && !m.beats);
  return byStatus && (!query || String(m.map) === query || (m.label || "").toLowerCase().includes(query));
}
const cards = DATA.maps.map(makeCard);
function apply() {
  const query = searchInput.value.trim().toLowerCase();
  const order = cards.slice().sort(COMPARE[sortSelect.value]);
  const fragment = document.createDocumentFragment();
  let shown = 0;
  for (const card of order) {
    card.el.hidden = !keep(card.m, filterSelect.value, query);
    shown += card.el.hidden ? 0 : 1;
    fragment.appendChild(card.el);
  }
  cardsBox.appendChild(fragment);
  shownCount.textContent = `${shown} of ${cards.length} shown`;
}
if (!DATA.has_dataset) {
  for (const value of ["ratio", "beats", "not_beats"]) document.querySelector(`option[value="${value}"]`).remove();
}
sortSelect.addEventListener("change", apply);
filterSelect.addEventListener("change", apply);
searchInput.addEventListener("input", apply);
apply();
document.body.dataset.ready = performance.now().toFixed(1);
"""

LAYER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<header>
<h1>__TITLE__</h1>
__HEADER__
</header>
<div class="controls">
<label>Sort <select id="sort">
<option value="map">map</option><option value="loss">loss (highest first)</option>
<option value="ratio">ratio to dataset (highest first)</option><option value="status">status</option>
</select></label>
<label>Show <select id="filter">
<option value="all">all</option><option value="completed">completed</option>
<option value="converged">converged</option><option value="no_activation">no_activation</option>
<option value="oip">with an OIP</option><option value="no_oip">without an OIP</option>
<option value="beats">beats the dataset</option><option value="not_beats">does not beat the dataset</option>
</select></label>
<label>Find <input id="search" type="search" placeholder="index or label" size="16"></label>
<span id="shown"></span>
</div>
<main id="cards"></main>
<script type="application/json" id="oip-data">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

INDEX_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__STYLE__
.layers { border-collapse: collapse; margin: 16px 24px; }
.layers td, .layers th { padding: 6px 14px; border-bottom: 1px solid #33363c; text-align: left; vertical-align: top; }
.layers img { max-width: 240px; max-height: 160px; }
</style>
</head>
<body>
<header>
<h1>__TITLE__</h1>
__HEADER__
</header>
<table class="layers">
<tr><th>layer</th><th>OIPs</th><th>statuses</th><th>beat the dataset</th><th>grid</th></tr>
__ROWS__
</table>
</body>
</html>
"""
