// Small behaviours of plain forms, kept out of the templates so the
// Content-Security-Policy can forbid inline scripts and event handlers:
//   <form data-confirm="Question?">   asks before submitting
//   <select data-submit-on-change>    submits its form when changed
//   <input data-select-on-focus>      selects its text when clicked or focused
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.dataset && form.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.hasAttribute && select.hasAttribute("data-submit-on-change") && select.form) {
      select.form.requestSubmit ? select.form.requestSubmit() : select.form.submit();
    }
  });
  function selectAll(event) {
    var input = event.target;
    if (input.hasAttribute && input.hasAttribute("data-select-on-focus")) input.select();
  }
  document.addEventListener("click", selectAll);
  document.addEventListener("focusin", selectAll);
})();
