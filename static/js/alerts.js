// Alerts pages. The current alerts table is kept current by htmx's websocket
// extension (the server sends #alerts-live as an out-of-band swap); this
// shows whether that connection is up, and on the rule form shows only the
// parameters of the chosen kind.
(function () {
  "use strict";
  var stateEl = document.querySelector("[data-live-state]");
  function set(text, cls) {
    if (!stateEl) return;
    stateEl.textContent = text;
    stateEl.className = cls;
    document.body.dataset.live = cls;
  }
  document.body.addEventListener("htmx:wsOpen", function () { set("live", "live-on"); });
  document.body.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail && evt.detail.event && evt.detail.event.code;
    if (code === 4401 || code === 4403) set("no access — reload to sign in", "live-off");
    else set("reconnecting…", "live-off");
  });

  var kind = document.getElementById("rule-kind");
  if (!kind) return;
  function showParams() {
    document.querySelectorAll("[data-param]").forEach(function (field) {
      var used = field.dataset.kinds.split(" ").indexOf(kind.value) >= 0;
      field.hidden = !used;
      field.querySelectorAll("input, select").forEach(function (input) { input.disabled = !used; });
      field.querySelectorAll("[data-help-for]").forEach(function (help) {
        help.hidden = help.dataset.helpFor !== kind.value;
      });
    });
  }
  kind.addEventListener("change", showParams);
  showParams();
})();
