// The failures page is kept current by htmx's websocket extension (the
// server sends the #failures-live block as an out-of-band swap); this only
// shows whether the connection is up.
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
})();
