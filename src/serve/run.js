// Injected by `candlelight serve` into a run gallery: a sample number per layer
// picture, drawn on demand by the server. Data only ever goes through textContent.
(function () {
  "use strict";
  var me = document.getElementById("cl-serve");
  var gallery = me && me.getAttribute("data-gallery");
  if (!gallery) { return; }
  fetch("/_/layers/" + encodeURIComponent(gallery), { cache: "no-store" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (info) {
      if (!info || !info.layers) { return; }
      var byIndex = {};
      info.layers.forEach(function (l) { byIndex[String(l.index)] = l; });
      document.querySelectorAll("img.layer-pic[data-layer]").forEach(function (img) {
        var index = img.getAttribute("data-layer");
        var layer = byIndex[index];
        if (!layer) { return; }
        var n = layer.shape.length >= 2 ? layer.shape[0] : 1;
        var label = document.createElement("label");
        label.className = "cl-sample-label";
        label.appendChild(document.createTextNode("sample "));
        var input = document.createElement("input");
        input.type = "number";
        input.className = "cl-sample";
        input.setAttribute("data-layer", index);
        input.min = "0";
        input.max = String(Math.max(0, n - 1));
        input.value = img.getAttribute("data-sample") || "0";
        input.disabled = n <= 1;
        label.appendChild(input);
        var of = document.createElement("span");
        of.textContent = " of " + n;
        label.appendChild(of);
        input.addEventListener("change", function () {
          var k = parseInt(input.value, 10);
          if (!(k >= 0 && k < n)) { return; }
          // A sample the page has (with its values under the pointer): the page's own.
          if (window.candlelightSetSample && window.candlelightSetSample(index, k)) { return; }
          var card = img.closest("section.card");
          if (card) {
            card.setAttribute("data-sample", String(k));
            card.querySelectorAll(".samples a").forEach(function (a) {
              a.classList.remove("on");
              a.removeAttribute("aria-current");
            });
            var out = card.querySelector(".readout");
            if (out) { out.textContent = ""; }
          }
          img.setAttribute("data-sample", String(k));
          var url = "/_/render/" + encodeURIComponent(gallery) + "/" +
            encodeURIComponent(index) + ".png?sample=" + k;
          img.src = url;
          var link = img.closest("a");
          if (link) { link.href = url; }
        });
        var holder = img.closest("a") || img;
        holder.parentNode.insertBefore(label, holder.nextSibling);
      });
    })
    .catch(function () { /* not served: the static page as it is */ });
})();
