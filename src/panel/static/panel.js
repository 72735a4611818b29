// iysgate panel: progressive enhancement only; every page works without this file.
// An element with data-poll="<url>" is refreshed from that JSON every second until it says done.
(function () {
  "use strict";
  function poll(el) {
    var url = el.getAttribute("data-poll");
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        var bar = el.querySelector("progress");
        if (bar && s.total_bytes) { bar.max = s.total_bytes; bar.value = s.bytes; }
        var text = el.querySelector("[data-rows]");
        if (text) { text.textContent = s.rows; }
        if (s.done) { window.location.reload(); } else { setTimeout(function () { poll(el); }, 1000); }
      })
      .catch(function () { setTimeout(function () { poll(el); }, 2000); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
