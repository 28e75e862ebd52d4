// Keeps "12 s ago" current: every <time data-relative datetime="…"> is
// rewritten from its exact instant (also shown on hover) every few seconds,
// the same wording as the server's `ago` filter (dashboard/templatetags).
(function () {
  "use strict";
  var UNITS = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  function relative(ms) {
    var seconds = Math.abs(ms) / 1000;
    if (seconds < 1) return "now";
    for (var i = 0; i < UNITS.length; i++) {
      if (seconds >= UNITS[i][0]) {
        var text = Math.floor(seconds / UNITS[i][0]) + " " + UNITS[i][1];
        return ms < 0 ? "in " + text : text + " ago";
      }
    }
    return "now";
  }
  function refresh() {
    var now = Date.now();
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = relative(now - at);
    });
  }
  // UTC, to the second, 24-hour: the one format of every page and chart.
  function exact(date) {
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return date.getUTCFullYear() + "-" + two(date.getUTCMonth() + 1) + "-" + two(date.getUTCDate()) +
      " " + two(date.getUTCHours()) + ":" + two(date.getUTCMinutes()) + ":" + two(date.getUTCSeconds()) + " UTC";
  }
  window.EventscopeTimes = { relative: relative, exact: exact, refresh: refresh };
  setInterval(refresh, 5000);
  document.addEventListener("htmx:afterSettle", refresh);
})();
