// Consumer lag pages. htmx's websocket extension swaps in the server's
// fresh fragment (#lag-live or #lag-group-live); this draws the uPlot
// charts inside it after every swap (the live state is static/js/live-state.js).
(function () {
  "use strict";

  function parse(el, attr) {
    try { return JSON.parse(el.getAttribute(attr)); } catch (e) { return null; }
  }

  function sparkline(el) {
    var data = parse(el, "data-spark");
    el.textContent = "";
    if (!data || data[0].length < 2) {
      el.textContent = data && data[1].length ? String(data[1][0]) : "—";
      el.classList.add("muted");
      return;
    }
    EventscopeCharts.create({
      width: 120, height: 28, pxAlign: false, cursor: { show: false }, select: { show: false },
      legend: { show: false }, scales: { x: { time: false } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: "#d9822b", fill: "rgba(217,130,43,.15)", width: 1.5, points: { show: false } }],
    }, data, el);
  }

  function chart(el) {
    var series = parse(el, "data-series");
    el.textContent = "";
    if (!series || series.t.length === 0) {
      el.textContent = "No samples in this window.";
      el.classList.add("muted");
      return;
    }
    var width = Math.max(280, el.clientWidth || el.parentNode.clientWidth || 600);
    EventscopeCharts.create({
      width: width, height: 260,
      scales: { msgs: { auto: true }, secs: { auto: true } },
      axes: [
        {},
        { scale: "msgs", label: "messages", size: 60 },
        { scale: "secs", label: "seconds", side: 1, grid: { show: false }, size: 60 },
      ],
      series: [
        {},
        { label: "lag (messages)", scale: "msgs", stroke: "#d9822b", width: 2 },
        { label: "lag (seconds)", scale: "secs", stroke: "#3b6fd8", width: 2, dash: [6, 4] },
      ],
    }, [series.t, series.lag, series.lag_seconds], el);
  }

  // After an out-of-band swap the event's target is the element that was
  // replaced, so every swap rescans the page for charts not drawn yet.
  function draw() {
    document.querySelectorAll("[data-spark]:not([data-drawn])").forEach(function (el) {
      el.setAttribute("data-drawn", "");
      sparkline(el);
    });
    document.querySelectorAll("[data-series]:not([data-drawn])").forEach(function (el) {
      el.setAttribute("data-drawn", "");
      chart(el);
    });
  }

  document.addEventListener("DOMContentLoaded", draw);
  ["htmx:oobAfterSwap", "htmx:afterSwap", "htmx:wsAfterMessage"].forEach(function (name) {
    document.body.addEventListener(name, draw);
  });
})();
