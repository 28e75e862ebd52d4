// The journey waterfall. Only the rows in view are in the DOM, so a trace
// of 10,000 spans scrolls as lightly as one of ten. Every telemetry string
// goes through textContent.
(function () {
  "use strict";

  var box = document.getElementById("waterfall");
  var dataEl = document.getElementById("waterfall-data");
  var detail = document.getElementById("span-detail");
  if (!box || !dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var rows = data.rows;
  var total = Math.max(data.duration_ms, 0.001);
  var ROW = 24;
  var OVERSCAN = 20;
  var sizer = box.querySelector(".waterfall-sizer");
  sizer.style.height = rows.length * ROW + "px";
  box.style.height = Math.max(Math.min(rows.length * ROW + 4, window.innerHeight * 0.6), 3 * ROW) + "px";
  box.dataset.rows = String(rows.length);

  function fmtMs(ms) {
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    return ms.toFixed(ms < 10 ? 2 : 1) + " ms";
  }

  function rowEl(row, index) {
    var el = document.createElement("div");
    el.className = "wf-row wf-" + row.kind + (row.status === "error" ? " wf-error" : "");
    el.style.top = index * ROW + "px";
    el.dataset.index = String(index);
    var label = document.createElement("div");
    label.className = "wf-label";
    label.style.paddingLeft = Math.min(row.depth, 30) * 12 + 6 + "px";
    var service = document.createElement("span");
    service.className = "wf-service";
    service.textContent = row.service;
    var name = document.createElement("span");
    name.className = "wf-name";
    name.textContent = " " + row.name;
    label.appendChild(service);
    label.appendChild(name);
    label.title = row.service + " " + row.name;
    var track = document.createElement("div");
    track.className = "wf-track";
    var bar = document.createElement("div");
    bar.className = "wf-bar";
    bar.style.left = (100 * row.offset_ms / total) + "%";
    bar.style.width = Math.max(100 * row.duration_ms / total, 0.3) + "%";
    var time = document.createElement("span");
    time.className = "wf-time";
    time.textContent = fmtMs(row.duration_ms);
    track.appendChild(bar);
    track.appendChild(time);
    el.appendChild(label);
    el.appendChild(track);
    return el;
  }

  var shown = { from: -1, to: -1 };
  function draw() {
    var from = Math.max(0, Math.floor(box.scrollTop / ROW) - OVERSCAN);
    var to = Math.min(rows.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW) + OVERSCAN);
    if (from === shown.from && to === shown.to) return;
    shown = { from: from, to: to };
    var fragment = document.createDocumentFragment();
    fragment.appendChild(sizer);
    for (var i = from; i < to; i++) fragment.appendChild(rowEl(rows[i], i));
    box.replaceChildren(fragment);
  }

  function showDetail(row) {
    detail.replaceChildren();
    var title = document.createElement("h3");
    title.textContent = row.service + " · " + row.name;
    detail.appendChild(title);
    var list = document.createElement("dl");
    function item(key, value) {
      var dt = document.createElement("dt");
      dt.textContent = key;
      var dd = document.createElement("dd");
      dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
      list.appendChild(dt);
      list.appendChild(dd);
    }
    item("kind", row.kind);
    item("status", row.status);
    item("start", "+" + fmtMs(row.offset_ms));
    item("duration", fmtMs(row.duration_ms));
    if (row.id) item(row.kind === "stage" ? "event id" : "span id", row.id);
    if (row.error) item("error", row.error);
    if (row.dropped_attributes_count) item("attributes dropped", String(row.dropped_attributes_count));
    var cut = row.truncated_attributes || [];
    Object.keys(row.attributes || {}).sort().forEach(function (k) {
      item(cut.indexOf(k) >= 0 ? k + " (truncated)" : k, row.attributes[k]);
    });
    detail.appendChild(list);
    detail.hidden = false;
  }

  box.addEventListener("scroll", function () { window.requestAnimationFrame(draw); });
  box.addEventListener("click", function (evt) {
    var el = evt.target.closest(".wf-row");
    if (el) showDetail(rows[Number(el.dataset.index)]);
  });
  draw();
})();
