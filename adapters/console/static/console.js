// StopHub console: live alerts (server-sent events), an audible alarm, and the SLA countdowns.
// Plain script, no build step. The page works without it; it only makes the page live.
"use strict";
(function () {
  const body = document.body;

  function pad(n) { return String(n).padStart(2, "0"); }
  function left(seconds) {
    const sign = seconds < 0 ? "-" : "";
    let s = Math.abs(Math.trunc(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return sign + d + "d " + pad(h) + "h";
    if (h) return sign + h + "h " + pad(m) + "m";
    return sign + m + ":" + pad(s);
  }
  // Red: breached or under 20% of its window left; yellow under 50%; else green
  // (adapters/console/web.py countdown() says the same for the first paint).
  // Count from the console's clock, not the workstation's: a desk whose clock is off must not
  // show a breach as minutes left. The page says the console's time when it was drawn.
  const drawn = Date.parse(body.dataset.now || "");
  const skew = isNaN(drawn) ? 0 : drawn - Date.now();
  function tick() {
    const now = Date.now() + skew;
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      const deadline = Date.parse(el.dataset.deadline);
      if (isNaN(deadline)) return;
      const start = Date.parse(el.dataset.start || "");
      const rest = (deadline - now) / 1000;
      const windowSeconds = isNaN(start) ? 0 : (deadline - start) / 1000;
      const share = windowSeconds > 0 ? rest / windowSeconds : (rest > 0 ? 1 : 0);
      const urgency = rest <= 0 || share < 0.2 ? "red" : share < 0.5 ? "yellow" : "green";
      // A breach's lateness reads as a positive time ("late by"), still red.
      el.textContent = el.dataset.late && rest < 0 ? left(-rest) : left(rest);
      el.classList.remove("red", "yellow", "green");
      el.classList.add(urgency);
    });
  }
  tick();
  setInterval(tick, 1000);

  let audio = null;
  function alarm() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.15;
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.35);
    } catch (e) { /* a browser without sound still shows the alert */ }
  }

  function show(data, sound) {
    const box = document.getElementById("alert");
    if (!box) return;
    box.hidden = false;
    box.className = "alert" + (sound ? " alarm" : "");
    box.textContent = "";
    const link = document.createElement("a");
    link.href = data.url || "/";
    link.textContent = data.title;  // text, never HTML: a summary may come from a bank
    box.appendChild(link);
    body.dataset.lastEvent = String(data.sequence || Date.now());
    if (sound) alarm();
    document.title = "● " + document.title.replace(/^● /, "");
  }

  function refresh() {
    if (body.dataset.live !== "refresh") return;
    if (document.activeElement && ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("main");
        if (fresh) { document.getElementById("main").replaceWith(fresh); tick(); }
        body.dataset.refreshed = String(Date.now());
      });
  }

  if (body.dataset.signedIn && window.EventSource) {
    const events = new EventSource("/events");
    events.addEventListener("delivery", function (e) { const d = JSON.parse(e.data); show(d, d.alarm); refresh(); });
    events.addEventListener("proposal", function (e) { show(JSON.parse(e.data), false); refresh(); });
    events.addEventListener("link", function () { location.reload(); });
    events.addEventListener("expired", function () { location.href = "/login?expired=1"; });
    body.dataset.listening = "1";
  }
})();
