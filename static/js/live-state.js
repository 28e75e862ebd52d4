// Pages kept current by htmx's websocket extension (the server sends a
// fresh block as an out-of-band swap): the element with [data-live-state]
// shows whether the connection is up. Loaded by every page; pages without
// an htmx websocket never fire these events.
(function () {
  "use strict";
  function set(text, cls) {
    var stateEl = document.querySelector("[data-live-state]");
    if (!stateEl) return;
    stateEl.textContent = text;
    stateEl.className = cls;
    document.body.dataset.live = cls;
  }
  document.addEventListener("htmx:wsOpen", function () { set("live", "live-on"); });
  document.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail && evt.detail.event && evt.detail.event.code;
    if (code === 4401 || code === 4403) set("no access — reload to sign in", "live-off");
    else set("reconnecting…", "live-off");
  });
})();
