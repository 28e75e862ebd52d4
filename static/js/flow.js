// The flow graph: services and channels laid out left to right (dagre), edge
// width by rate, colour by error share. The graph arrives as JSON, first
// embedded in the page, then from /ws/flow/ whenever the rollups change.
// Telemetry strings only ever go through textContent or cytoscape labels
// (drawn on a canvas), never innerHTML.
(function () {
  "use strict";

  var container = document.getElementById("flow-graph");
  var tip = document.getElementById("flow-tip");
  var table = document.querySelector("#flow-edges tbody");
  var status = document.getElementById("flow-status");
  var menu = document.getElementById("flow-menu");
  if (!container) return;

  var COLORS = { ok: "#7d8aa3", warn: "#d98b00", err: "#d64545" };

  function edgeId(e) { return "e|" + e.source + "|" + e.target + "|" + e.kind + "|" + e.group; }
  function errorShare(e) { return e.count > 0 ? e.errors / e.count : 0; }
  function colorOf(e) {
    var share = errorShare(e);
    if (e.errors === 0) return COLORS.ok;
    return share < 0.05 ? COLORS.warn : COLORS.err;
  }
  function fmt(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
  // Rates span 0.0003/s to thousands/s: two significant digits below 1.
  function lagText(e) {
    var seconds = e.lag_seconds === null || e.lag_seconds === undefined ? "" :
      " · " + (e.lag_seconds >= 60 ? (e.lag_seconds / 60).toFixed(1) + " min" : e.lag_seconds.toFixed(1) + " s") + " behind";
    return (e.lag === null || e.lag === undefined ? "unknown" : e.lag + " msg") + seconds + " · " + e.lag_status;
  }
  function fmtRate(v) { return v >= 1 || v === 0 ? Number(v).toFixed(2) : Number(v).toPrecision(2); }

  // Every node and edge arrives with its links ({label, url}), built by the
  // server (dashboard/links.py flow_links) in the window and project the graph
  // shows, so the failures or lag page opens on the same slice of time.
  function links(item) {
    return (item.links || []).map(function (link) { return [link.label, link.url]; });
  }
  function searchLink() { return ["find a trace or event by id", container.dataset.searchUrl]; }

  var cy = cytoscape({
    container: container,
    wheelSensitivity: 0.3,
    minZoom: 0.2,
    maxZoom: 3,
    style: [
      { selector: "node", style: {
        "label": "data(label)", "font-size": 11, "color": "#1d2330", "text-valign": "bottom",
        "text-margin-y": 4, "text-wrap": "ellipsis", "text-max-width": 140,
        "background-color": "#2f6fed", "width": 26, "height": 26,
      } },
      { selector: "node[kind = 'channel']", style: {
        "shape": "round-rectangle", "background-color": "#8a5cf6", "width": 34, "height": 18,
      } },
      { selector: "edge", style: {
        "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
        "width": "data(width)", "line-color": "data(color)", "target-arrow-color": "data(color)",
        "label": "data(label)", "font-size": 9, "color": "#6b7385", "text-rotation": "autorotate",
        "text-background-color": "#fff", "text-background-opacity": 0.8, "text-background-padding": 1,
      } },
      { selector: "edge[kind = 'call']", style: { "line-style": "dashed" } },
      { selector: ":selected", style: { "overlay-opacity": 0.15, "overlay-color": "#2f6fed" } },
    ],
  });

  var nodesById = {};
  var edgesById = {};

  function layout() {
    cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 110, edgeSep: 10, padding: 20, animate: false }).run();
    cy.fit(undefined, 30);
    // A handful of nodes would otherwise be blown up to fill the panel.
    if (cy.zoom() > 1.1) { cy.zoom(1.1); cy.center(); }
  }

  function render(graph) {
    var maxRate = 0;
    graph.edges.forEach(function (e) { maxRate = Math.max(maxRate, e.rate_per_s); });
    var structural = false;
    var seen = {};
    nodesById = {};
    graph.nodes.forEach(function (n) {
      nodesById[n.id] = n;
      seen[n.id] = true;
      var label = n.kind === "channel" && n.system ? n.name + " (" + n.system + ")" : n.name;
      var el = cy.getElementById(n.id);
      if (el.empty()) { cy.add({ group: "nodes", data: { id: n.id, label: label, kind: n.kind } }); structural = true; }
      else el.data({ label: label, kind: n.kind });
    });
    edgesById = {};
    graph.edges.forEach(function (e) {
      var id = edgeId(e);
      edgesById[id] = e;
      seen[id] = true;
      var width = maxRate > 0 ? 1.5 + 8 * Math.sqrt(e.rate_per_s / maxRate) : 1.5;
      var label = fmtRate(e.rate_per_s) + "/s" + (e.lag ? " · lag " + e.lag : "");
      var data = { width: width, color: colorOf(e), kind: e.kind, label: label };
      var el = cy.getElementById(id);
      if (el.empty()) {
        cy.add({ group: "edges", data: Object.assign({ id: id, source: e.source, target: e.target }, data) });
        structural = true;
      } else el.data(data);
    });
    cy.elements().forEach(function (el) {
      if (!seen[el.id()]) { el.remove(); structural = true; }
    });
    if (structural) layout();
    renderTable(graph);
    if (status) {
      status.firstChild.textContent = graph.edges.length + " edge" + (graph.edges.length === 1 ? "" : "s") +
        (graph.truncated ? " (the busiest; more are left out)" : "") + " · ";
    }
  }

  function anchor(link) {
    var a = document.createElement("a");
    a.textContent = link[0];
    a.href = link[1];
    return a;
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function renderTable(graph) {
    if (!table) return;
    var rows = [];
    graph.edges.forEach(function (e) {
      var tr = document.createElement("tr");
      tr.dataset.edge = [e.source, e.target, e.kind, e.group].join("|");
      cell(tr, e.source); cell(tr, e.target); cell(tr, e.kind); cell(tr, e.group);
      cell(tr, fmtRate(e.rate_per_s), "num");
      cell(tr, String(e.count), "num").dataset.count = "";
      cell(tr, String(e.errors), "num");
      cell(tr, fmt(e.p50_ms, 1), "num"); cell(tr, fmt(e.p95_ms, 1), "num"); cell(tr, fmt(e.e2e_p95_ms, 1), "num");
      cell(tr, e.lag_status ? lagText(e) : "–", "num");
      var cellOfLinks = cell(tr, "", "links");
      links(e).forEach(function (link, i) {
        if (i) cellOfLinks.appendChild(document.createTextNode(" · "));
        cellOfLinks.appendChild(anchor(link));
      });
      rows.push(tr);
    });
    if (!rows.length) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = cell(tr, "No traffic in this window yet.", "muted");
      td.colSpan = 12;
      rows.push(tr);
    }
    table.replaceChildren.apply(table, rows);
  }

  function showTip(evt, lines) {
    tip.replaceChildren();
    lines.forEach(function (line, i) {
      var div = document.createElement("div");
      div.textContent = line;
      if (i === 0) div.className = "tip-title";
      tip.appendChild(div);
    });
    var pos = evt.renderedPosition || { x: 0, y: 0 };
    tip.style.left = Math.min(pos.x + 12, container.clientWidth - 200) + "px";
    tip.style.top = pos.y + 12 + "px";
    tip.hidden = false;
  }

  cy.on("mouseover", "edge", function (evt) {
    var e = edgesById[evt.target.id()];
    if (!e) return;
    var share = e.count > 0 ? (100 * e.errors / e.count).toFixed(1) + " %" : "0 %";
    showTip(evt, [
      e.source + " → " + e.target + (e.group ? " [" + e.group + "]" : ""),
      e.kind + ": " + fmtRate(e.rate_per_s) + " msg/s (" + e.count + " in window)",
      "errors: " + e.errors + " (" + share + ")",
      "latency p50 " + fmt(e.p50_ms, 1) + " ms · p95 " + fmt(e.p95_ms, 1) + " ms",
      "produce→consume p95: " + fmt(e.e2e_p95_ms, 1) + " ms",
    ].concat(e.lag_status ? ["lag: " + lagText(e)] : []));
  });
  cy.on("mouseover", "node", function (evt) {
    var n = nodesById[evt.target.id()];
    if (!n) return;
    var inRate = 0, outRate = 0, errors = 0;
    Object.keys(edgesById).forEach(function (id) {
      var e = edgesById[id];
      if (e.target === n.id) { inRate += e.rate_per_s; errors += e.errors; }
      if (e.source === n.id) outRate += e.rate_per_s;
    });
    showTip(evt, [
      n.name, n.kind + (n.system ? " · " + n.system : ""),
      "in " + inRate.toFixed(2) + " msg/s · out " + outRate.toFixed(2) + " msg/s",
      "errors: " + errors,
    ]);
  });
  cy.on("mouseout", function () { tip.hidden = true; });

  // A click opens a small menu of where to go from here, next to the click.
  function showMenu(evt, title, items) {
    tip.hidden = true;
    menu.replaceChildren();
    var head = document.createElement("div");
    head.className = "menu-title";
    head.textContent = title;
    menu.appendChild(head);
    items.concat([searchLink()]).forEach(function (link) { menu.appendChild(anchor(link)); });
    var pos = evt.renderedPosition || { x: 0, y: 0 };
    menu.style.left = Math.max(0, Math.min(pos.x + 8, container.clientWidth - 240)) + "px";
    menu.style.top = pos.y + 8 + "px";
    menu.hidden = false;
    menu.querySelector("a").focus();
  }
  cy.on("tap", "node", function (evt) {
    var n = nodesById[evt.target.id()];
    if (n) showMenu(evt, n.kind === "channel" && n.system ? n.name + " (" + n.system + ")" : n.name, links(n));
  });
  cy.on("tap", "edge", function (evt) {
    var e = edgesById[evt.target.id()];
    if (e) showMenu(evt, e.source + " → " + e.target + (e.group ? " [" + e.group + "]" : ""), links(e));
  });
  cy.on("tap", function (evt) { if (evt.target === cy) menu.hidden = true; });
  document.addEventListener("keydown", function (evt) { if (evt.key === "Escape") menu.hidden = true; });

  var initial = JSON.parse(document.getElementById("flow-data").textContent);
  render(initial);
  window.eventscopeFlow = { cy: cy, render: render };

  EventscopeLive.connect(container.dataset.ws, function (text) {
    var message = JSON.parse(text);
    if (message.type === "flow" && !message.error) render(message);
  });
})();
