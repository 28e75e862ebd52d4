// uPlot options every chart shares: time axes and the legend in UTC, 24-hour,
// to the second (the format of every page, dashboard/templatetags), and axis,
// grid and text colours from the theme's CSS variables, redrawn when the
// theme changes (static/js/theme.js).
(function () {
  "use strict";
  var drawn = [];

  function color(name, fallback) {
    return (window.EventscopeTheme && window.EventscopeTheme.color(name)) || fallback;
  }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function utc(seconds) { return new Date(seconds * 1000); }
  function hm(d) { return two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()); }

  // Ticks: HH:MM (HH:MM:SS below a minute apart), the date where the day changes.
  function timeTicks(u, splits, axisIdx, space, incr) {
    var previousDay = null;
    return splits.map(function (s) {
      var d = utc(s);
      var day = d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate());
      var text = incr < 60 ? hm(d) + ":" + two(d.getUTCSeconds()) : hm(d);
      if (incr >= 86400) text = day;
      else if (day !== previousDay && previousDay !== null) text = day + "\n" + text;
      previousDay = day;
      return text;
    });
  }

  function axis(extra) {
    return Object.assign({
      stroke: function () { return color("--chart-axis", "#5f687a"); },
      grid: { stroke: function () { return color("--chart-grid", "rgba(0,0,0,.08)"); }, width: 1 },
      ticks: { stroke: function () { return color("--chart-grid", "rgba(0,0,0,.08)"); }, width: 1 },
    }, extra || {});
  }

  // options({series, axes: [x, y, ...]}) with the shared time axis and colours.
  function options(opts) {
    var axes = opts.axes || [{}, {}];
    opts.axes = axes.map(function (a, i) {
      var merged = axis(a);
      if (a.grid && a.grid.show === false) merged.grid = { show: false };
      if (i === 0 && a.show !== false) merged.values = timeTicks;
      return merged;
    });
    opts.series = (opts.series || [{}]).slice();
    opts.series[0] = Object.assign({
      label: "Time (UTC)",
      value: function (u, v) { return v == null ? "–" : window.EventscopeTimes.exact(utc(v)); },
    }, opts.series[0]);
    opts.tzDate = function (ts) { return uPlot.tzDate(utc(ts), "Etc/UTC"); };
    return opts;
  }

  function create(opts, data, el) {
    var chart = new uPlot(options(opts), data, el);
    drawn.push(chart);
    return chart;
  }

  document.addEventListener("eventscope:theme", function () {
    drawn = drawn.filter(function (c) { return c.root && c.root.isConnected; });
    drawn.forEach(function (c) { c.redraw(false, true); });
  });

  window.EventscopeCharts = { create: create, options: options, color: color };
})();
