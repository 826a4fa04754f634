// Passkey ceremonies. A form marked data-passkey="get" or "create" fetches its options from the JSON API
// (data-options), runs the browser's passkey dialog, puts the result in its hidden "credential" field and
// submits itself to the page route, which calls the same service as the API and redirects.
// A "get" form marked data-autofill also starts a conditional request on load (the passkeys offered in the
// username field's autofill); a form marked data-aborts-autofill (the password form) aborts it when submitted.
// Elements marked data-passkey-signal tell the password manager what the server knows (the Signal API).
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
  // The pending conditional (autofill) request, if any: a modal request or the password form aborts it.
  var conditional = null;

  function abortConditional() {
    if (conditional) {
      conditional.abort();
      conditional = null;
    }
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

  function fetchOptions(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body || {})
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
      abortConditional();
      if (alertBox) { alertBox.hidden = true; alertBox.textContent = ""; }
      if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); }
      say(t("Starting…"), true);
      form.querySelectorAll("input[data-copy-checkbox]").forEach(function (hidden) {
        var box = document.getElementById(hidden.getAttribute("data-copy-checkbox"));
        hidden.value = box && box.checked ? "1" : "";
      });
      var place = form.querySelector("input[name=place]:checked");
      var body = place && place.value ? { authenticator: place.value } : {};
      fetchOptions(form.getAttribute("data-options"), body).then(function (json) {
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

  // Autofill: where the browser offers passkeys in the username field's autofill, ask for one there. Choosing
  // one submits the assertion through ``form``, exactly as the "Sign in with a passkey" button does.
  function startAutofill(form) {
    var pkc = window.PublicKeyCredential;
    if (typeof pkc.isConditionalMediationAvailable !== "function") { return; }
    var controller = new AbortController();
    conditional = controller;
    Promise.resolve(pkc.isConditionalMediationAvailable()).then(function (available) {
      if (!available || controller.signal.aborted) { return null; }
      return fetchOptions(form.getAttribute("data-options")).then(function (json) {
        if (controller.signal.aborted) { return null; }
        return navigator.credentials.get({
          mediation: "conditional",
          publicKey: requestOptions(json),
          signal: controller.signal
        });
      });
    }).then(function (cred) {
      if (!cred || controller.signal.aborted) { return; }
      if (conditional === controller) { conditional = null; }
      form.querySelector("input[name=credential]").value = JSON.stringify(credentialJSON(cred));
      HTMLFormElement.prototype.submit.call(form);
    }).catch(function () {
      // Aborted (the password form or the button took over), refused or not offered: nothing to say; the
      // password form and the button work as before.
    });
  }

  // The Signal API: tell the password manager which passkeys the server knows, guarded by feature detection.
  function signal(el) {
    var pkc = window.PublicKeyCredential;
    var kind = el.getAttribute("data-passkey-signal");
    var rpId = el.getAttribute("data-rp-id");
    var done = null;
    try {
      if (kind === "unknown" && typeof pkc.signalUnknownCredential === "function") {
        done = pkc.signalUnknownCredential({ rpId: rpId, credentialId: el.getAttribute("data-credential-id") });
      } else if (kind === "accepted" && typeof pkc.signalAllAcceptedCredentials === "function") {
        var ids = el.getAttribute("data-credential-ids");
        done = pkc.signalAllAcceptedCredentials({
          rpId: rpId,
          userId: el.getAttribute("data-user-id"),
          allAcceptedCredentialIds: ids ? ids.split(",") : []
        });
      }
    } catch (e) { done = null; }
    if (done && typeof done.catch === "function") { done.catch(function () {}); }
  }

  // The automatic passkey upgrade, right after a password sign-in: where the browser can create a passkey
  // conditionally (its password manager decides, without a dialog), ask it to; the "Add a passkey" prompt is
  // for browsers that cannot.
  function startUpgrade(el) {
    var pkc = window.PublicKeyCredential;
    if (typeof pkc.getClientCapabilities !== "function") { return; }
    var prompt = document.querySelector("[data-passkey-prompt]");
    Promise.resolve(pkc.getClientCapabilities()).then(function (caps) {
      if (!caps || !caps.conditionalCreate) { return; }
      if (prompt) { prompt.hidden = true; }
      return fetchOptions(el.getAttribute("data-options")).then(function (json) {
        return navigator.credentials.create({ mediation: "conditional", publicKey: creationOptions(json) });
      }).then(function (cred) {
        if (!cred) { return; }
        return fetch(el.getAttribute("data-register"), {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "Accept": "application/json" },
          body: JSON.stringify({ credential: credentialJSON(cred) })
        }).then(function (response) {
          if (response.ok) { window.location.assign("/settings/two-step?done=passkey_added_automatically"); }
        });
      }).catch(function () {
        if (prompt) { prompt.hidden = false; }
      });
    }).catch(function () { /* no capabilities: the prompt stays */ });
  }

  // Registration hints: show only the choices this browser supports, where it says (getClientCapabilities).
  function limitHints() {
    var pkc = window.PublicKeyCredential;
    var choices = document.querySelectorAll("[data-capability]");
    if (!choices.length || typeof pkc.getClientCapabilities !== "function") { return; }
    Promise.resolve(pkc.getClientCapabilities()).then(function (caps) {
      if (!caps) { return; }
      choices.forEach(function (choice) {
        var names = choice.getAttribute("data-capability").split(" ");
        var known = names.filter(function (n) { return typeof caps[n] === "boolean"; });
        if (!known.length) { return; }
        var ok = known.some(function (n) { return caps[n]; });
        choice.hidden = !ok;
        var input = choice.querySelector("input");
        if (!ok && input && input.checked) {
          input.checked = false;
          var first = document.querySelector("input[name=place][value='']");
          if (first) { first.checked = true; }
        }
      });
    }).catch(function () { /* every choice stays */ });
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
    document.querySelectorAll("[data-passkey-signal]").forEach(signal);
    document.querySelectorAll("form[data-aborts-autofill]").forEach(function (form) {
      form.addEventListener("submit", abortConditional);
    });
    var autofill = document.querySelector("form[data-passkey=get][data-autofill]");
    if (autofill) { startAutofill(autofill); }
    var upgrade = document.querySelector("[data-passkey-upgrade]");
    if (upgrade) { startUpgrade(upgrade); }
    limitHints();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
