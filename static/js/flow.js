// The flow graph: services and channels laid out left to right (dagre), edge
// width by rate, colour by error share; lagging consumer groups and outlier
// edges stand out (see problemClasses). A click opens the detail panel: the
// edge's or node's figures over time from /api/flow/series. The graph arrives as JSON, first
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

  var COLORS = { ok: "#7d8aa3", warn: "#d98b00", err: "#d64545", lagging: "#c2410c" };
  // Outliers (the legend on the page says the same): an error share of 5 %
  // or more, or an end-to-end p95 above 1 s and above 3x the median of the
  // graph's edges that have one.
  var OUTLIER_ERROR_SHARE = 0.05, OUTLIER_E2E_FACTOR = 3, OUTLIER_E2E_FLOOR_MS = 1000;

  function edgeId(e) { return "e|" + e.source + "|" + e.target + "|" + e.kind + "|" + e.group; }
  function errorShare(e) { return e.count > 0 ? e.errors / e.count : 0; }
  function colorOf(e) {
    var share = errorShare(e);
    if (e.errors === 0) return COLORS.ok;
    return share < 0.05 ? COLORS.warn : COLORS.err;
  }
  function when(iso) { return iso ? EventscopeTimes.exact(new Date(iso)) : "–"; }
  function fmt(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
  // Rates span 0.0003/s to thousands/s: two significant digits below 1.
  function lagText(e) {
    var seconds = e.lag_seconds === null || e.lag_seconds === undefined ? "" :
      " · " + (e.lag_seconds >= 60 ? (e.lag_seconds / 60).toFixed(1) + " min" : e.lag_seconds.toFixed(1) + " s") + " behind";
    return (e.lag === null || e.lag === undefined ? "unknown" : e.lag + " msg") + seconds + " · " + e.lag_status;
  }
  function fmtRate(v) { return v >= 1 || v === 0 ? Number(v).toFixed(2) : Number(v).toPrecision(2); }
  function fmtSeconds(s) { return s >= 60 ? (s / 60).toFixed(1) + " min" : s.toFixed(0) + " s"; }
  function lagging(e) { return !!e.lag_status && e.lag_status !== "ok"; }
  function median(values) {
    if (!values.length) return null;
    var sorted = values.slice().sort(function (a, b) { return a - b; });
    var mid = sorted.length >> 1;
    return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  }
  function problemClasses(e, e2eMedian) {
    var classes = [];
    if (lagging(e)) classes.push("lagging");
    var slow = e.e2e_p95_ms !== null && e.e2e_p95_ms !== undefined && e2eMedian !== null &&
      e.e2e_p95_ms > OUTLIER_E2E_FLOOR_MS && e.e2e_p95_ms > OUTLIER_E2E_FACTOR * e2eMedian;
    if (errorShare(e) >= OUTLIER_ERROR_SHARE || slow) classes.push("outlier");
    return classes;
  }
  // Delivery findings of a consume edge: "2 duplicate · 1 missing", or "".
  function deliveryText(e) {
    var d = e.delivery || {};
    return Object.keys(d).filter(function (k) { return d[k] > 0; })
      .map(function (k) { return d[k] + " " + k.replace(/_/g, " "); }).join(" · ");
  }
  function edgeLabel(e) {
    var label = fmtRate(e.rate_per_s) + "/s";
    if (lagging(e)) {
      label += e.lag_seconds !== null && e.lag_seconds !== undefined ?
        " · " + fmtSeconds(e.lag_seconds) + " behind" : " · lag " + (e.lag === null ? "?" : e.lag);
    } else if (e.lag) label += " · lag " + e.lag;
    var found = Object.values(e.delivery || {}).reduce(function (a, b) { return a + b; }, 0);
    if (found) label += " · ⚑ " + found + " delivery";
    return label;
  }
  // What a person reads: the name (a channel's with its system), never the id.
  function nodeName(n) { var name = n.label || n.name; return n.kind === "channel" && n.system ? name + " (" + n.system + ")" : name; }
  function shortened(text, max) { return text.length > max ? text.slice(0, max - 1) + "…" : text; }
  // On the graph: a channel's system on a line of its own, long names cut (the tooltip has them whole).
  function nodeLabel(n) {
    var name = shortened(n.label || n.name, 24);
    return n.kind === "channel" && n.system ? name + "\n" + n.system : name;
  }
  function nameOf(id) { var n = nodesById[id]; return n ? nodeName(n) : id; }
  function edgeTitle(e) { return nameOf(e.source) + " → " + nameOf(e.target) + (e.group ? " (group " + e.group + ")" : ""); }

  // Every node and edge arrives with its links ({label, url}), built by the
  // server (dashboard/links.py flow_links) in the window and project the graph
  // shows, so the failures or lag page opens on the same slice of time.
  function links(item) {
    return (item.links || []).map(function (link) { return [link.label, link.url]; });
  }
  function searchLink() { return ["find a trace or event by id", container.dataset.searchUrl]; }

  // Labels are drawn at least LABEL_PX pixels high at the default zoom: when
  // the graph has to be shrunk to fit the canvas, its fonts grow by as much.
  var LABEL_PX = 11, NODE_LABEL_PX = 12, NODE_LABEL_WIDTH = 130, MAX_ZOOM = 1.25, PAD = 24;
  var MIN_HEIGHT = 240, MAX_HEIGHT = 1400;

  // Colours from the theme's CSS variables (static/css/app.css), re-applied
  // when the visitor switches between light and dark.
  function themed(name, fallback) { return (window.EventscopeTheme && EventscopeTheme.color(name)) || fallback; }
  function graphStyle() {
    var ink = themed("--ink", "#1d2330"), muted = themed("--muted", "#5f687a");
    var labelBg = themed("--graph-label-bg", "#fff");
    var lagging = themed("--warn", COLORS.lagging), err = themed("--err", COLORS.err);
    return [
      { selector: "node", style: {
        "label": "data(label)", "font-size": "data(font)", "color": ink, "text-valign": "bottom",
        "text-margin-y": 4, "text-wrap": "wrap", "text-max-width": NODE_LABEL_WIDTH, "line-height": 1.25,
        "text-background-color": labelBg, "text-background-opacity": 0.85, "text-background-padding": 1,
        "background-color": themed("--graph-node", "#2f6fed"), "width": 26, "height": 26,
      } },
      { selector: "node[kind = 'channel']", style: {
        "shape": "round-rectangle", "background-color": themed("--graph-channel", "#8a5cf6"), "width": 34, "height": 18,
      } },
      { selector: "edge", style: {
        "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
        "width": "data(width)", "line-color": "data(color)", "target-arrow-color": "data(color)",
        // Level labels with an opaque background read better than ones turned
        // along a steep edge, and their boxes stay small (see spreadLabels).
        "label": "data(label)", "font-size": "data(font)", "color": muted, "text-rotation": "none",
        "text-background-color": labelBg, "text-background-opacity": 0.92, "text-background-padding": 2,
        "text-background-shape": "round-rectangle",
      } },
      { selector: "edge[kind = 'call']", style: { "line-style": "dashed" } },
      { selector: "edge[kind = 'dead_letter']", style: { "line-style": "dotted" } },
      { selector: "edge.lagging", style: {
        // Dotted: call edges are already dashed.
        "line-color": COLORS.lagging, "target-arrow-color": COLORS.lagging, "line-style": "dotted",
        "color": lagging, "font-weight": "bold",
      } },
      { selector: "edge.outlier", style: {
        "underlay-color": COLORS.err, "underlay-opacity": 0.35, "underlay-padding": 6, "font-weight": "bold",
        "color": err,
      } },
      { selector: ":selected", style: { "overlay-opacity": 0.15, "overlay-color": themed("--accent", "#2f6fed") } },
    ];
  }

  var cy = cytoscape({
    container: container,
    wheelSensitivity: 0.3,
    minZoom: 0.2,
    maxZoom: 3,
    style: graphStyle(),
  });
  document.addEventListener("eventscope:theme", function () { cy.style(graphStyle()); });

  var nodesById = {};
  var edgesById = {};


  function boxes(collection, main) {
    return collection.map(function (el) {
      return el.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: main,
                              includeMainLabels: true, includeOverlays: false, includeUnderlays: false });
    }).filter(function (b) { return b.w > 0 && b.h > 0; });
  }
  function overlap(a, b) { return a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2; }
  // Does any edge label cover a node's label or another edge's label?
  function labelsCollide() {
    var edgeBoxes = boxes(cy.edges(), true), nodeBoxes = boxes(cy.nodes(), true);
    for (var i = 0; i < edgeBoxes.length; i++) {
      for (var j = 0; j < nodeBoxes.length; j++) if (overlap(edgeBoxes[i], nodeBoxes[j])) return true;
      for (var k = i + 1; k < edgeBoxes.length; k++) if (overlap(edgeBoxes[i], edgeBoxes[k])) return true;
    }
    return false;
  }

  function setFonts(scale) {
    cy.batch(function () {
      cy.nodes().data("font", NODE_LABEL_PX * scale);
      cy.edges().data("font", LABEL_PX * scale);
    });
  }

  // Lay out, then fit the canvas to the graph: as wide as the panel, as tall
  // as the graph at that zoom (no half-empty canvas), labels never below
  // LABEL_PX. Ranks move apart until no edge label covers another label.
  function layout() {
    var width = container.clientWidth || 800;
    var rankSep = 150, nodeSep = 40, scale = 1;
    for (var attempt = 0; attempt < 8; attempt++) {
      setFonts(scale);
      cy.layout({ name: "dagre", rankDir: "LR", nodeSep: nodeSep, rankSep: rankSep, edgeSep: 20,
                  padding: PAD, animate: false, fit: false }).run();
      var box = cy.elements().boundingBox({ includeLabels: true });
      var zoom = Math.min(MAX_ZOOM, (width - 2 * PAD) / Math.max(box.w, 1));
      var wanted = zoom < 1 ? 1 / zoom : 1;
      // Fonts only grow (a little beyond what is needed: growing widens the graph).
      if (wanted > scale + 0.001 && attempt < 7) { scale = wanted * 1.03; continue; }
      if (!labelsCollide()) break;
      rankSep += 40; nodeSep += 12;
    }
    box = cy.elements().boundingBox({ includeLabels: true });
    zoom = Math.min(MAX_ZOOM, (width - 2 * PAD) / Math.max(box.w, 1));
    var height = Math.min(MAX_HEIGHT, Math.max(MIN_HEIGHT, Math.ceil(box.h * zoom) + 2 * PAD));
    if (Math.abs(container.clientHeight - height) > 4) {
      container.style.height = height + "px";
      cy.resize();
    }
    cy.zoom(zoom);
    cy.center();
  }

  function render(graph) {
    var maxRate = 0;
    graph.edges.forEach(function (e) { maxRate = Math.max(maxRate, e.rate_per_s); });
    var e2eMedian = median(graph.edges.map(function (e) { return e.e2e_p95_ms; })
      .filter(function (v) { return v !== null && v !== undefined; }));
    var structural = false;
    var seen = {};
    nodesById = {};
    graph.nodes.forEach(function (n) {
      nodesById[n.id] = n;
      seen[n.id] = true;
      var label = nodeLabel(n);
      var el = cy.getElementById(n.id);
      if (el.empty()) { cy.add({ group: "nodes", data: { id: n.id, label: label, kind: n.kind, font: NODE_LABEL_PX } }); structural = true; }
      else el.data({ label: label, kind: n.kind });
    });
    edgesById = {};
    graph.edges.forEach(function (e) {
      var id = edgeId(e);
      edgesById[id] = e;
      seen[id] = true;
      var width = maxRate > 0 ? 1.5 + 8 * Math.sqrt(e.rate_per_s / maxRate) : 1.5;
      var classes = problemClasses(e, e2eMedian);
      var data = { width: width, color: colorOf(e), kind: e.kind, label: edgeLabel(e), lag_status: e.lag_status };
      var el = cy.getElementById(id);
      if (el.empty()) {
        el = cy.add({ group: "edges", data: Object.assign({ id: id, source: e.source, target: e.target, font: LABEL_PX }, data) });
        structural = true;
      } else el.data(data);
      el.classes(classes);
    });
    cy.elements().forEach(function (el) {
      if (!seen[el.id()]) { el.remove(); structural = true; }
    });
    // New rates change the labels' widths: lay out again if one now covers another.
    if (structural || labelsCollide()) layout();
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

  // A node's name with its system as a badge; the id on hover.
  function nameCell(row, id) {
    var n = nodesById[id];
    var td = cell(row, "");
    var name = document.createElement("span");
    name.textContent = n ? (n.label || n.name) : id;
    name.title = id;
    td.appendChild(name);
    if (n && n.system) {
      var badge = document.createElement("span");
      badge.className = "system";
      badge.dataset.system = n.system;
      badge.textContent = n.system;
      td.append(" ", badge);
    }
    return td;
  }

  function renderTable(graph) {
    if (!table) return;
    var rows = [];
    graph.edges.forEach(function (e) {
      var tr = document.createElement("tr");
      tr.dataset.edge = [e.source, e.target, e.kind, e.group].join("|");
      nameCell(tr, e.source); nameCell(tr, e.target); cell(tr, e.kind); cell(tr, e.group);
      cell(tr, fmtRate(e.rate_per_s), "num");
      cell(tr, fmtRate(e.rate_now_per_s || 0), "num");
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
      td.colSpan = 13;
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
      edgeTitle(e),
      e.kind + ": " + fmtRate(e.rate_per_s) + " msg/s on average (" + e.count + " in window)",
      "last 5 minutes: " + fmtRate(e.rate_now_per_s || 0) + " msg/s",
      "seen " + when(e.first_seen) + " … " + when(e.last_seen),
      "errors: " + e.errors + " (" + share + ")",
      "latency p50 " + fmt(e.p50_ms, 1) + " ms · p95 " + fmt(e.p95_ms, 1) + " ms",
      "produce→consume p95: " + fmt(e.e2e_p95_ms, 1) + " ms",
    ].concat(e.lag_status ? ["lag: " + lagText(e)] : [], deliveryText(e) ? ["delivery: " + deliveryText(e)] : []));
  });
  cy.on("mouseover", "node", function (evt) {
    var n = nodesById[evt.target.id()];
    if (!n) return;
    var inRate = 0, outRate = 0, errors = 0;
    Object.keys(edgesById).forEach(function (id) {
      var e = edgesById[id];
      if (e.target === n.id) { inRate += e.rate_now_per_s || 0; errors += e.errors; }
      if (e.source === n.id) outRate += e.rate_now_per_s || 0;
    });
    showTip(evt, [
      nodeName(n), n.kind + (n.system ? " · " + n.system : "") + (n.label && n.label !== n.name ? " · " + n.name : ""),
      "last 5 minutes: in " + fmtRate(inRate) + " msg/s · out " + fmtRate(outRate) + " msg/s",
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
    if (!n) return;
    showMenu(evt, nodeName(n), links(n));
    openDetail({ key: n.id, title: nodeName(n), params: { node: n.id }, consume: false });
  });
  cy.on("tap", "edge", function (evt) {
    var e = edgesById[evt.target.id()];
    if (!e) return;
    var title = edgeTitle(e);
    showMenu(evt, title, links(e));
    openDetail({
      key: evt.target.id(), title: title, consume: e.kind === "consume",
      params: { source: e.source, target: e.target, kind: e.kind, group: e.group },
    });
  });
  cy.on("tap", function (evt) { if (evt.target === cy) menu.hidden = true; });
  document.addEventListener("keydown", function (evt) { if (evt.key === "Escape") menu.hidden = true; });

  var initial = JSON.parse(document.getElementById("flow-data").textContent);
  render(initial);
  // ---- the detail panel: one edge's or node's figures over time ----------------
  var detail = document.getElementById("flow-detail");
  var detailTitle = document.getElementById("flow-detail-title");
  var detailSummary = document.getElementById("flow-detail-summary");
  var lagFigure = document.getElementById("figure-lag");
  var histogramEl = document.getElementById("chart-histogram");
  var openSubject = null;
  var charts = {};
  var lastFetch = 0;
  var refetchTimer = null;

  function openDetail(subject) {
    openSubject = subject;
    detail.hidden = false;
    detail.dataset.subject = subject.key;
    detailTitle.textContent = subject.title;
    detailSummary.textContent = "loading…";
    lagFigure.hidden = !subject.consume;
    fetchSeries();
  }

  function closeDetail() {
    openSubject = null;
    detail.hidden = true;
    Object.keys(charts).forEach(function (name) { charts[name].destroy(); });
    charts = {};
  }
  document.getElementById("flow-detail-close").addEventListener("click", closeDetail);

  // New data (the websocket's graph) refetches the open panel, at most once a second.
  function refreshDetailSoon() {
    if (!openSubject || refetchTimer) return;
    refetchTimer = setTimeout(function () {
      refetchTimer = null;
      if (openSubject) fetchSeries();
    }, Math.max(0, 1000 - (Date.now() - lastFetch)));
  }

  function fetchSeries() {
    var subject = openSubject;
    lastFetch = Date.now();
    var query = new URLSearchParams(detail.dataset.windowQuery);
    Object.keys(subject.params).forEach(function (k) { query.set(k, subject.params[k]); });
    fetch(detail.dataset.seriesUrl + "?" + query.toString(), {
      credentials: "same-origin", headers: { Accept: "application/json" },
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
        return body;
      });
    }).then(function (series) {
      if (subject === openSubject) drawDetail(series, subject);
    }).catch(function (err) {
      if (subject === openSubject) detailSummary.textContent = "Could not load the figures: " + err.message;
    });
  }

  function column(points, name, scale) {
    return points.map(function (p) {
      var v = p[name];
      return v === null || v === undefined ? null : (scale ? v / scale : v);
    });
  }

  function chart(name, el, series, data) {
    if (charts[name]) charts[name].destroy();
    el.replaceChildren();
    var width = Math.max(300, (el.clientWidth || el.parentNode.clientWidth || 600) - 4);
    charts[name] = EventscopeCharts.create({
      width: width, height: 200, series: [{}].concat(series),
      axes: [{}, { size: 60 }].concat(series.some(function (s) { return s.scale === "secs"; }) ?
        [{ scale: "secs", side: 1, grid: { show: false }, size: 60 }] : []),
    }, data, el);
  }

  function drawDetail(series, subject) {
    var points = series.points;
    var t = points.map(function (p) { return Date.parse(p.t) / 1000; });
    var total = 0, errors = 0;
    points.forEach(function (p) { total += p.count; errors += p.errors; });
    detail.dataset.total = String(total);
    detail.dataset.points = String(points.filter(function (p) { return p.count > 0; }).length);
    detailSummary.textContent = total + " messages, " + errors + " errors in the window · one point per " +
      fmtSeconds(series.step_s) + " · updated " + EventscopeTimes.exact(new Date());
    var step = series.step_s;
    chart("throughput", document.getElementById("chart-throughput"), [
      { label: "msg/s", stroke: "#2f6fed", width: 2 },
      { label: "errors/s", stroke: COLORS.err, width: 2 },
    ], [t, column(points, "count", step), column(points, "errors", step)]);
    chart("latency", document.getElementById("chart-latency"), [
      { label: "p50 ms", stroke: "#1f9d55", width: 2, spanGaps: false },
      { label: "p95 ms", stroke: COLORS.warn, width: 2 },
      { label: "e2e p95 ms", stroke: "#8a5cf6", width: 2, dash: [6, 4] },
    ], [t, column(points, "p50_ms"), column(points, "p95_ms"), column(points, "e2e_p95_ms")]);
    if (subject.consume) {
      chart("lag", document.getElementById("chart-lag"), [
        { label: "lag (messages)", stroke: COLORS.lagging, width: 2, spanGaps: true },
        { label: "lag (seconds)", scale: "secs", stroke: "#3b6fd8", width: 2, dash: [6, 4], spanGaps: true },
      ], [t, column(points, "lag"), column(points, "lag_seconds")]);
    }
    drawHistogram(series.histogram);
  }

  function drawHistogram(hist) {
    var rows = [];
    var most = Math.max.apply(null, hist.duration.concat(hist.e2e, [1]));
    [["duration", "processing"], ["e2e", "end-to-end"]].forEach(function (pair) {
      var counts = hist[pair[0]];
      if (!counts.some(function (c) { return c > 0; })) return;
      var head = document.createElement("div");
      head.className = "hist-title muted";
      head.textContent = pair[1];
      rows.push(head);
      counts.forEach(function (count, i) {
        if (!count) return;
        var row = document.createElement("div");
        row.className = "hist-row";
        var label = document.createElement("span");
        label.textContent = i < hist.bounds_ms.length ? "≤ " + hist.bounds_ms[i] + " ms" :
          "> " + hist.bounds_ms[hist.bounds_ms.length - 1] + " ms";
        var bar = document.createElement("div");
        bar.className = "hist-bar" + (pair[0] === "e2e" ? " e2e" : "");
        bar.style.width = (100 * count / most).toFixed(1) + "%";
        var number = document.createElement("span");
        number.className = "hist-count";
        number.textContent = String(count);
        row.append(label, bar, number);
        rows.push(row);
      });
    });
    if (!rows.length) {
      var none = document.createElement("p");
      none.className = "muted";
      none.textContent = "No durations recorded in this window.";
      rows.push(none);
    }
    histogramEl.replaceChildren.apply(histogramEl, rows);
  }

  window.eventscopeFlow = { cy: cy, render: render, openDetail: openDetail };

  EventscopeLive.connect(container.dataset.ws, function (text) {
    var message = JSON.parse(text);
    if (message.type === "flow" && !message.error) {
      render(message);
      refreshDetailSoon();
    }
  });
})();
