// The alert rule form shows only the parameters of the chosen kind (the
// alerts table's live state is static/js/live-state.js).
(function () {
  "use strict";
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
