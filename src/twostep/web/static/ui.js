// Small, optional helpers: show password, copy and print recovery codes. Pages work without them.
"use strict";
(function () {
  function init() {
    document.querySelectorAll("button[data-reveal]").forEach(function (button) {
      var input = document.getElementById(button.getAttribute("data-reveal"));
      if (!input) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        var show = input.type === "password";
        input.type = show ? "text" : "password";
        button.textContent = show ? "Hide" : "Show";
        button.setAttribute("aria-pressed", show ? "true" : "false");
        button.setAttribute("aria-label", show ? "Hide password" : "Show password");
      });
      button.setAttribute("aria-label", "Show password");
    });

    var status = document.querySelector(".copy-status");
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
          if (status) { status.textContent = "Copied. Paste them somewhere safe."; }
        }, function () {
          if (status) { status.textContent = "Copying did not work here: select the codes and copy them."; }
        });
      });
    });

    document.querySelectorAll("button[data-print]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { window.print(); });
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
