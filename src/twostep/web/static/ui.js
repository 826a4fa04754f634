// Small, optional helpers: show password, copy and print recovery codes. Pages work without them.
"use strict";
(function () {
  // The page's translations of these sentences (base.html, <body data-text>); English when there are none.
  var TEXT = null;
  function t(message) {
    if (TEXT === null) {
      try { TEXT = JSON.parse(document.body.getAttribute("data-text") || "{}"); } catch (e) { TEXT = {}; }
    }
    return TEXT[message] || message;
  }

  function init() {
    document.querySelectorAll("button[data-reveal]").forEach(function (button) {
      var input = document.getElementById(button.getAttribute("data-reveal"));
      if (!input) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        var show = input.type === "password";
        input.type = show ? "text" : "password";
        button.textContent = show ? t("Hide") : t("Show");
        button.setAttribute("aria-pressed", show ? "true" : "false");
        button.setAttribute("aria-label", show ? t("Hide password") : t("Show password"));
      });
      button.setAttribute("aria-label", t("Show password"));
    });

    var status = document.querySelector(".copy-status");
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
          if (status) { status.textContent = t("Copied. Paste them somewhere safe."); }
        }, function () {
          if (status) { status.textContent = t("Copying did not work here: select the codes and copy them."); }
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
