// Injected by `candlelight serve` into the galleries index: pick two runs to
// compare; reload when the index changes. Data only ever goes through textContent.
(function () {
  "use strict";
  var KEY = "candlelight-serve-picked";
  var picked = [];
  try { picked = JSON.parse(sessionStorage.getItem(KEY) || "[]") || []; } catch (e) { picked = []; }
  var boxes = {};
  var cards = document.querySelectorAll("section.run[data-run]");
  var present = {};
  cards.forEach(function (c) { present[c.getAttribute("data-run")] = true; });
  picked = picked.filter(function (n) { return typeof n === "string" && present[n]; });

  var bar = document.createElement("div");
  bar.className = "cl-bar";
  var btn = document.createElement("button");
  btn.id = "cl-compare";
  btn.type = "button";
  btn.textContent = "compare 2 selected";
  var note = document.createElement("span");
  note.className = "cl-note";
  bar.appendChild(btn);
  bar.appendChild(document.createTextNode(" "));
  bar.appendChild(note);

  function save() {
    try { sessionStorage.setItem(KEY, JSON.stringify(picked)); } catch (e) { /* private mode */ }
    btn.disabled = picked.length !== 2;
    note.textContent = picked.length === 2
      ? picked[0] + " against " + picked[1]
      : picked.length + " of 2 selected";
  }

  cards.forEach(function (card) {
    var name = card.getAttribute("data-run");
    var label = document.createElement("label");
    label.className = "cl-pick-label";
    var box = document.createElement("input");
    box.type = "checkbox";
    box.className = "cl-pick";
    box.setAttribute("data-run", name);
    box.checked = picked.indexOf(name) >= 0;
    boxes[name] = box;
    box.addEventListener("change", function () {
      picked = picked.filter(function (n) { return n !== name; });
      if (box.checked) {
        picked.push(name);
        while (picked.length > 2) {
          var old = picked.shift();
          if (boxes[old]) { boxes[old].checked = false; }
        }
      }
      save();
    });
    label.appendChild(box);
    label.appendChild(document.createTextNode(" compare"));
    card.insertBefore(label, card.firstChild);
  });

  btn.addEventListener("click", function () {
    if (picked.length !== 2) { return; }
    location.href = "/_/compare?a=" + encodeURIComponent(picked[0]) +
      "&b=" + encodeURIComponent(picked[1]);
  });
  var main = document.querySelector("main") || document.body;
  main.insertBefore(bar, main.firstChild);
  save();

  // Live index: reload when /_/stamp changes (a run was added or re-rendered).
  var stamp = null;
  function poll() {
    fetch("/_/stamp", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (t) {
        if (t === null) { return; }
        if (stamp !== null && t !== stamp) { location.reload(); return; }
        stamp = t;
      })
      .catch(function () { /* server gone: keep the page */ })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
