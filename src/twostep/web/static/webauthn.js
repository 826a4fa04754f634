// Passkey ceremonies. A form marked data-passkey="get" or "create" fetches its options from the JSON API
// (data-options), runs the browser's passkey dialog, puts the result in its hidden "credential" field and
// submits itself to the page route, which calls the same service as the API and redirects.
"use strict";
(function () {
  var supported = typeof window.PublicKeyCredential === "function" && !!navigator.credentials;
  // The page's translations of these sentences (base.html, <body data-text>); English when there are none.
  var TEXT = null;
  function t(message) {
    if (TEXT === null) {
      try { TEXT = JSON.parse(document.body.getAttribute("data-text") || "{}"); } catch (e) { TEXT = {}; }
    }
    return TEXT[message] || message;
  }

  function b64urlToBuffer(value) {
    var s = value.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    return bytes.buffer;
  }

  function bufferToB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (c) {
      var copy = Object.assign({}, c);
      copy.id = b64urlToBuffer(c.id);
      return copy;
    });
  }

  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    var o = Object.assign({}, json);
    o.challenge = b64urlToBuffer(json.challenge);
    o.user = Object.assign({}, json.user, { id: b64urlToBuffer(json.user.id) });
    o.excludeCredentials = withIds(json.excludeCredentials);
    return o;
  }

  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    var o = Object.assign({}, json);
    o.challenge = b64urlToBuffer(json.challenge);
    o.allowCredentials = withIds(json.allowCredentials);
    return o;
  }

  function credentialJSON(cred) {
    if (typeof cred.toJSON === "function") {
      try { return cred.toJSON(); } catch (e) { /* fall through to the manual encoding */ }
    }
    var r = cred.response;
    var response = { clientDataJSON: bufferToB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = bufferToB64url(r.attestationObject);
      if (r.getTransports) { response.transports = r.getTransports(); }
    } else {
      response.authenticatorData = bufferToB64url(r.authenticatorData);
      response.signature = bufferToB64url(r.signature);
      if (r.userHandle) { response.userHandle = bufferToB64url(r.userHandle); }
    }
    return {
      id: cred.id,
      rawId: bufferToB64url(cred.rawId),
      type: cred.type,
      response: response,
      authenticatorAttachment: cred.authenticatorAttachment || null,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {}
    };
  }

  function explain(error) {
    var name = error && error.name;
    if (name === "NotAllowedError") {
      return t("The passkey dialog was closed or timed out, so nothing happened. You can try again.");
    }
    if (name === "InvalidStateError") {
      return t("This passkey is already registered to your account. Choose another one.");
    }
    if (name === "SecurityError") {
      return t("The browser refused the passkey on this address.");
    }
    if (name === "AbortError") {
      return t("The passkey request was cancelled. You can try again.");
    }
    return (error && error.message) || t("Something went wrong with the passkey. Try again.");
  }

  function fetchOptions(url) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: "{}"
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          var err = new Error(body.message || t("The server refused to start the passkey request."));
          err.name = "ServerError";
          err.code = body.error;
          throw err;
        }
        return body.publicKey;
      });
    });
  }

  function setup(form) {
    var mode = form.getAttribute("data-passkey");
    var status = form.querySelector(".passkey-status");
    var alertBox = form.querySelector(".passkey-error");
    var button = form.querySelector("button[type=submit]");
    var field = form.querySelector("input[name=credential]");
    var busy = false;

    function say(text, working) {
      if (status) {
        status.textContent = text;
        status.classList.toggle("working", !!working);
      }
    }
    function fail(text) {
      say("", false);
      if (alertBox) { alertBox.textContent = text; alertBox.hidden = false; }
      if (button) { button.disabled = false; button.removeAttribute("aria-busy"); }
      busy = false;
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (busy) { return; }
      busy = true;
      if (alertBox) { alertBox.hidden = true; alertBox.textContent = ""; }
      if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); }
      say(t("Starting…"), true);
      fetchOptions(form.getAttribute("data-options")).then(function (json) {
        say(t("Waiting for your passkey… Follow the instructions in your browser's dialog."), true);
        if (mode === "create") {
          return navigator.credentials.create({ publicKey: creationOptions(json) });
        }
        return navigator.credentials.get({ publicKey: requestOptions(json) });
      }).then(function (cred) {
        if (!cred) { throw Object.assign(new Error(t("No passkey was chosen.")), { name: "NotAllowedError" }); }
        say(t("Checking your passkey…"), true);
        field.value = JSON.stringify(credentialJSON(cred));
        HTMLFormElement.prototype.submit.call(form);
      }).catch(function (error) {
        if (error && error.code === "verify_access_required") {
          window.location.assign("/verify-access?next=" + encodeURIComponent(window.location.pathname));
          return;
        }
        fail(explain(error));
      });
    });
  }

  function init() {
    document.querySelectorAll("[data-needs-webauthn]").forEach(function (el) {
      el.hidden = !supported;
    });
    document.querySelectorAll("[data-no-webauthn]").forEach(function (el) {
      el.hidden = supported;
    });
    if (!supported) { return; }
    document.querySelectorAll("form[data-passkey]").forEach(setup);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
