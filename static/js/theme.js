// Light or dark: the visitor's choice (kept in localStorage), else the
// system's prefers-color-scheme. Loaded in <head> without defer so the page
// is never drawn in the wrong colours first. The toggle button
// ([data-theme-toggle]) flips and remembers the choice; charts and the graph
// listen for "eventscope:theme" and redraw with the new CSS variables.
(function () {
  "use strict";
  var KEY = "eventscope-theme";
  var media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var root = document.documentElement;

  function stored() {
    try { return window.localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function current() {
    var choice = stored();
    if (choice === "light" || choice === "dark") return choice;
    return media && media.matches ? "dark" : "light";
  }
  function apply(theme) {
    if (root.dataset.theme === theme) return;
    root.dataset.theme = theme;
    document.dispatchEvent(new CustomEvent("eventscope:theme", { detail: theme }));
    label();
  }
  function label() {
    var button = document.querySelector("[data-theme-toggle]");
    if (!button) return;
    var dark = root.dataset.theme === "dark";
    button.textContent = dark ? "Light" : "Dark";
    button.setAttribute("aria-label", dark ? "Switch to the light theme" : "Switch to the dark theme");
    button.setAttribute("aria-pressed", dark ? "true" : "false");
  }

  apply(current());
  if (media && media.addEventListener) {
    media.addEventListener("change", function () { if (!stored()) apply(current()); });
  }
  document.addEventListener("DOMContentLoaded", label);
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-theme-toggle]");
    if (!button) return;
    var next = root.dataset.theme === "dark" ? "light" : "dark";
    try { window.localStorage.setItem(KEY, next); } catch (e) { /* private mode: this page only */ }
    apply(next);
  });

  // For scripts drawing on a canvas: a CSS variable of the current theme.
  window.EventscopeTheme = {
    color: function (name) { return getComputedStyle(root).getPropertyValue(name).trim(); },
  };
})();
