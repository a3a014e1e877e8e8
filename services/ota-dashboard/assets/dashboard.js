// Live refresh and confirmations for the ota dashboard. Pages that want
// live data set data-refresh="<seconds>" on <body>; every element with
// data-live and an id is replaced by its fresh copy from the same URL.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
  var every = Number(document.body.getAttribute("data-refresh") || 0);
  if (!every) return;
  var stamp = document.getElementById("updated");
  var busy = false;
  async function tick() {
    if (busy || document.hidden) return;
    var active = document.activeElement;
    if (active && active.closest && active.closest("[data-live] form")) return;
    busy = true;
    try {
      var r = await fetch(location.href, { credentials: "same-origin", headers: { "X-Ota-Refresh": "1" } });
      if (r.redirected) { location.reload(); return; }
      if (!r.ok) return;
      var doc = new DOMParser().parseFromString(await r.text(), "text/html");
      document.querySelectorAll("[data-live][id]").forEach(function (el) {
        var fresh = doc.getElementById(el.id);
        if (fresh) el.replaceWith(document.importNode(fresh, true));
      });
      if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
      if (!doc.body.getAttribute("data-refresh")) {
        clearInterval(timer);
        document.body.removeAttribute("data-refresh");
      }
    } catch (err) {
      if (stamp) stamp.textContent = "refresh failed, retrying";
    } finally {
      busy = false;
    }
  }
  var timer = setInterval(tick, every * 1000);
})();
