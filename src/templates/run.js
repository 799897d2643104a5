// candlelight run page: layer filter, sample selector, values under the pointer and
// a zoomed cell. The page works without it. Data: each card's JSON block
// (script element of class cl-data, see src/gallery/tile.rs);
// every string from it reaches the page through textContent only.
(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll("section.card"));
  var byLayer = {};
  cards.forEach(function (card) {
    var el = card.querySelector("script.cl-data");
    var d = null;
    if (el) {
      try { d = JSON.parse(el.textContent); } catch (e) { d = null; }
    }
    byLayer[card.dataset.layer] = { card: card, data: d, tiles: {} };
  });

  function fmt(v) {
    if (isNaN(v)) return "NaN/Inf";
    var a = Math.abs(v);
    if (v === 0 || (a >= 1e-3 && a < 1e5)) return v.toFixed(4);
    return v.toExponential(3);
  }

  // The sample entry of a card shown now.
  function current(entry) {
    var d = entry.data, s = Number(entry.card.dataset.sample);
    if (!d) return null;
    for (var i = 0; i < d.samples.length; i++) if (d.samples[i].s === s) return d.samples[i];
    // A sample drawn on demand (candlelight serve): its cells, no values.
    return isNaN(s) ? d.samples[0] || null : { s: s, pic: null, cap: null, tile: null };
  }

  // Decoded values of a sample entry (cached).
  function values(entry, smp) {
    if (!smp.tile) return null;
    var t = smp.tile, key = String(smp.s);
    if (entry.tiles[key]) return entry.tiles[key];
    var bin = atob(t.b64), n = t.bits === 16 ? bin.length / 2 : bin.length;
    var out = new Float64Array(n), top = t.bits === 16 ? 65535 : 255;
    var step = (t.hi - t.lo) / (top - 2);
    for (var i = 0; i < n; i++) {
      var c = t.bits === 16 ? bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8) : bin.charCodeAt(i);
      out[i] = c === top ? NaN : c === top - 1 ? -Infinity : t.lo + c * step;
    }
    entry.tiles[key] = out;
    return out;
  }

  // What picture pixel (px, py) of a card shows: an object for the readout, or null.
  function probe(entry, px, py) {
    var d = entry.data, smp = current(entry);
    if (!d || !smp) return null;
    var ci = -1, cell = null;
    for (var i = 0; i < d.cells.length; i++) {
      var c = d.cells[i];
      if (px >= c[1] && px < c[1] + c[3] && py >= c[2] && py < c[2] + c[4]) { ci = i; cell = c; break; }
    }
    if (!cell) return null;
    var ry = Math.floor((py - cell[2]) / d.zoom[0]), rx = Math.floor((px - cell[1]) / d.zoom[1]);
    var r = { cell: cell[0], row: ry * d.down[0], col: rx * d.down[1], k: 1, value: null, sample: smp.s };
    var t = smp.tile, vals = values(entry, smp);
    if (t && vals) {
      var ty = Math.floor(ry / t.k), tx = Math.floor(rx / t.k);
      r.k = t.k;
      r.row = ty * t.k * d.down[0];
      r.col = tx * t.k * d.down[1];
      r.value = vals[ci * t.h * t.w + ty * t.w + tx];
      if (r.value === -Infinity) return null;
    }
    if (d.kind === "folded") {
      r.element = r.row * d.tile[1] + r.col;
      if (r.element >= d.tile[0] * d.tile[1]) return null;
    }
    return r;
  }

  function token(smp, i) {
    return smp && smp.tokens && i < smp.tokens.length ? " \u201c" + smp.tokens[i] + "\u201d" : "";
  }

  // The readout line of a probe.
  function describe(entry, r) {
    var d = entry.data, smp = current(entry), parts = [];
    var by = d.down[0] * r.k, bx = d.down[1] * r.k;
    if (d.axes[0]) parts.push(d.axes[0] + " " + r.cell);
    if (d.kind === "folded") {
      parts.push("element " + r.element + (bx > 1 ? "\u2013" + (r.element + bx - 1) : ""));
    } else {
      var rowName = d.axes[1], colName = d.axes[2];
      var tokRows = smp && smp.tokens && (rowName === "token" || d.tile[0] === smp.tokens.length);
      var tokCols = smp && smp.tokens && d.tile[0] === d.tile[1] && d.tile[1] === smp.tokens.length;
      parts.push((tokRows && rowName === "row" ? "token" : rowName) + " " + r.row +
        (by > 1 ? "\u2013" + (Math.min(r.row + by, d.tile[0]) - 1) : "") + (tokRows && by === 1 ? token(smp, r.row) : ""));
      parts.push((tokCols ? "token" : colName) + " " + r.col +
        (bx > 1 ? "\u2013" + (Math.min(r.col + bx, d.tile[1]) - 1) : "") + (tokCols && bx === 1 ? token(smp, r.col) : ""));
    }
    var v = r.value === null ? "no value data" : "value " + fmt(r.value);
    if (by > 1 || bx > 1) v += " (mean of " + by + "\u00d7" + bx + ")";
    parts.push(v);
    return parts.join(" \u00b7 ");
  }

  function show(entry, out, r) {
    if (!out) return;
    if (!r) { out.textContent = ""; delete out.dataset.value; return; }
    out.textContent = describe(entry, r);
    out.dataset.cell = r.cell;
    out.dataset.row = r.row;
    out.dataset.col = r.col;
    out.dataset.value = r.value === null ? "" : String(r.value);
  }

  // The pixel of a w × h picture under a pointer event on element `el` showing it.
  function pixel(ev, el, w, h) {
    var b = el.getBoundingClientRect();
    return [Math.floor((ev.clientX - b.left) * w / b.width), Math.floor((ev.clientY - b.top) * h / b.height)];
  }

  // ---- zoom -------------------------------------------------------------------
  var zoom = null;
  function closeZoom() {
    if (zoom) { zoom.remove(); zoom = null; }
  }
  function openZoom(entry, cellIndex) {
    closeZoom();
    var d = entry.data, img = entry.card.querySelector("img.layer-pic"), cell = null;
    d.cells.forEach(function (c) { if (c[0] === cellIndex) cell = c; });
    if (!cell || !img) return;
    var maxW = Math.min(window.innerWidth - 32, 900), maxH = window.innerHeight - 120;
    var s = Math.max(1, Math.floor(Math.min(maxW / cell[3], maxH / cell[4])));
    zoom = document.createElement("div");
    zoom.className = "zoom";
    zoom.id = "cl-zoom";
    zoom.setAttribute("role", "dialog");
    zoom.dataset.layer = entry.card.dataset.layer;
    zoom.dataset.cell = String(cellIndex);
    var box = document.createElement("div");
    box.className = "zoom-box";
    var title = document.createElement("div");
    title.className = "zoom-title";
    var smp = current(entry);
    title.textContent = (d.axes[0] ? d.axes[0] + " " + cellIndex + " \u00b7 " : "") +
      entry.card.dataset.name + (smp ? " \u00b7 sample " + smp.s : "") + "  (Esc or click to close)";
    var canvas = document.createElement("canvas");
    canvas.width = cell[3] * s;
    canvas.height = cell[4] * s;
    var ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, cell[1], cell[2], cell[3], cell[4], 0, 0, canvas.width, canvas.height);
    var out = document.createElement("div");
    out.className = "readout";
    canvas.addEventListener("mousemove", function (ev) {
      var p = pixel(ev, canvas, cell[3], cell[4]);
      show(entry, out, probe(entry, cell[1] + p[0], cell[2] + p[1]));
    });
    box.appendChild(title);
    box.appendChild(canvas);
    box.appendChild(out);
    zoom.appendChild(box);
    zoom.addEventListener("click", closeZoom);
    document.body.appendChild(zoom);
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") closeZoom();
  });

  // ---- pictures: hover and click ---------------------------------------------
  Object.keys(byLayer).forEach(function (k) {
    var entry = byLayer[k], img = entry.card.querySelector("img.layer-pic");
    if (!img || !entry.data) return;
    var out = entry.card.querySelector(".readout"), d = entry.data;
    img.addEventListener("mousemove", function (ev) {
      var p = pixel(ev, img, d.size[0], d.size[1]);
      show(entry, out, probe(entry, p[0], p[1]));
    });
    img.addEventListener("mouseleave", function () { show(entry, out, null); });
    img.parentNode.addEventListener("click", function (ev) {
      ev.preventDefault();
      var p = pixel(ev, img, d.size[0], d.size[1]), r = probe(entry, p[0], p[1]);
      if (r) openZoom(entry, r.cell);
    });
    img.style.cursor = "zoom-in";
  });

  // ---- samples ----------------------------------------------------------------
  function setSample(entry, s) {
    var d = entry.data, card = entry.card;
    var have = [];
    card.querySelectorAll(".samples a").forEach(function (a) { have.push(Number(a.dataset.sample)); });
    if (!have.length) return;
    // A layer with fewer samples shows its last.
    var pick = have[0];
    have.forEach(function (h) { if (h <= s) pick = h; });
    card.dataset.sample = String(pick);
    card.querySelectorAll(".samples a").forEach(function (a) {
      var on = Number(a.dataset.sample) === pick;
      a.classList.toggle("on", on);
      if (on) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
    });
    card.querySelectorAll("table.bars").forEach(function (t) {
      t.hidden = Number(t.dataset.sample) !== pick;
    });
    var smp = current(entry), img = card.querySelector("img.layer-pic");
    if (smp && img) {
      img.src = smp.pic;
      img.dataset.sample = String(pick);
      var cap = card.querySelector(".caption .cap");
      if (cap) cap.textContent = smp.cap;
      img.parentNode.href = smp.pic;
    }
    if (d) show(entry, card.querySelector(".readout"), null);
    var served = card.querySelector("input.cl-sample");
    if (served) served.value = String(pick);
  }
  // For candlelight serve's on-demand samples (src/serve/run.js).
  window.candlelightSetSample = function (layer, s) {
    var entry = byLayer[layer];
    if (!entry || !entry.data) return false;
    var smp = null;
    entry.data.samples.forEach(function (x) { if (x.s === s) smp = x; });
    if (!smp) return false;
    if (entry.card.querySelector(".samples a")) { setSample(entry, s); return true; }
    var img = entry.card.querySelector("img.layer-pic");
    entry.card.dataset.sample = String(s);
    if (img) { img.src = smp.pic; img.dataset.sample = String(s); img.parentNode.href = smp.pic; }
    return true;
  };

  Object.keys(byLayer).forEach(function (k) {
    var entry = byLayer[k];
    entry.card.querySelectorAll(".samples a").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        setSample(entry, Number(a.dataset.sample));
      });
    });
  });
  var select = document.getElementById("cl-sample");
  if (select) {
    select.addEventListener("change", function () {
      Object.keys(byLayer).forEach(function (k) { setSample(byLayer[k], Number(select.value)); });
    });
  }

  // ---- filter -----------------------------------------------------------------
  var filter = document.getElementById("cl-filter"), count = document.getElementById("cl-count");
  var toc = document.querySelectorAll(".toc li");
  function applyFilter() {
    var q = filter.value.trim().toLowerCase(), shown = 0;
    cards.forEach(function (card) {
      var hay = ((card.dataset.name || "") + " " + (card.dataset.kind || "")).toLowerCase();
      var ok = !q || hay.indexOf(q) >= 0;
      card.hidden = !ok;
      if (ok) shown++;
    });
    toc.forEach(function (li) {
      var c = byLayer[li.dataset.layer];
      li.hidden = c ? c.card.hidden : false;
    });
    count.textContent = shown + " of " + cards.length + " layers";
    document.getElementById("cl-none").hidden = shown > 0 || cards.length === 0;
  }
  if (filter) {
    filter.addEventListener("input", applyFilter);
    document.getElementById("cl-tools").hidden = false;
    applyFilter();
  }
})();
