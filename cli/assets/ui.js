// Tollgate approvals: live updates and countdowns. Served as a file (the page's
// Content-Security-Policy allows no inline script); it only ever inserts HTML this server
// rendered (escaped by its templates) and sets text with textContent.
"use strict";
(function () {
  function countdown(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
  }
  function tick() {
    for (const el of document.querySelectorAll("[data-expires]")) {
      const at = Date.parse(el.dataset.expires);
      if (Number.isNaN(at)) continue;
      const left = Math.floor((at - Date.now()) / 1000);
      el.textContent = left > 0 ? "in " + countdown(left) : "expired";
    }
  }
  const live = document.getElementById("live");
  const form = document.getElementById("decide");
  function closedForm() {
    if (form && live && live.querySelector("[data-closed]")) form.hidden = true;
  }
  // A change that arrives while a fetch is under way is fetched again after it, never lost.
  let running = false;
  let again = false;
  async function refresh() {
    if (!live) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const r = await fetch(live.dataset.fragment, { credentials: "same-origin", cache: "no-store" });
        if (!r.ok) return;
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        live.replaceChildren(...doc.body.childNodes);
        tick();
        closedForm();
      } while (again);
    } finally {
      running = false;
    }
  }
  if (live && window.EventSource) {
    const events = new EventSource("/events");
    events.addEventListener("changed", refresh);
  }
  closedForm();
  tick();
  setInterval(tick, 1000);
})();
