// A websocket to a live page's /ws/… endpoint that reconnects with backoff.
// Messages are handed to onMessage; the element with [data-live-state]
// shows whether the page is live. Close codes 4401/4403 (signed out, no
// access) stop reconnecting: retrying cannot fix them.
(function () {
  "use strict";

  function connect(path, onMessage) {
    var delay = 500;
    var socket = null;
    var stopped = false;
    var stateEl = document.querySelector("[data-live-state]");

    function setState(text, cls) {
      if (!stateEl) return;
      stateEl.textContent = text;
      stateEl.className = cls || "";
      document.body.dataset.live = cls || "";
    }

    function open() {
      var url = new URL(path, window.location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(url.toString());
      socket.onopen = function () { delay = 500; setState("live", "live-on"); };
      socket.onmessage = function (event) { onMessage(event.data); };
      socket.onclose = function (event) {
        if (event.code === 4401 || event.code === 4403) {
          stopped = true;
          setState(event.code === 4401 ? "signed out — reload to sign in" : "no access to this project", "live-off");
          return;
        }
        if (stopped) return;
        setState("reconnecting…", "live-off");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
    }

    open();
    return {
      send: function (data) {
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(data));
      },
      close: function () { stopped = true; if (socket) socket.close(); },
    };
  }

  window.EventscopeLive = { connect: connect };
})();
