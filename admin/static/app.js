// facteur admin: the little script the pages use when it is there. Every
// page works without it. No inline handlers (the Content-Security-Policy
// forbids them): behaviour hangs on data- attributes.
"use strict";

// Ask before a destructive form is sent (a form or a submit button with
// data-confirm).
document.addEventListener("submit", function (e) {
  var btn = e.submitter;
  var msg = (btn && btn.getAttribute("data-confirm")) || e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) {
    e.preventDefault();
  }
});

document.addEventListener("click", function (e) {
  var t = e.target;
  if (!(t instanceof Element)) {
    return;
  }
  // Copy a secret shown once (data-copy names the element holding it).
  var id = t.getAttribute("data-copy");
  if (id && navigator.clipboard) {
    var el = document.getElementById(id);
    if (el) {
      navigator.clipboard.writeText(el.textContent.trim()).then(function () {
        t.textContent = "Copied";
      });
    }
  }
  // A "select all" checkbox (data-check-all names the boxes' field).
  var name = t.getAttribute("data-check-all");
  if (name && t instanceof HTMLInputElement) {
    var form = t.closest("form") || document;
    form.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (box) {
      box.checked = t.checked;
    });
  }
});
