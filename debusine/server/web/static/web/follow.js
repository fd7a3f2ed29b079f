// Follow an unfinished work request from its page: poll its status every few seconds; when it
// ends, turn the banner into "finished", offer a reload, and show a browser notification if the
// user asked for one.
(function () {
  "use strict";
  var banner = document.getElementById("banner");
  if (!banner || !banner.dataset.statusUrl) { return; }
  var unfinished = ["pending", "running", "blocked"];
  var notify = document.getElementById("notify");
  var wanted = false;
  if (notify && "Notification" in window) {
    notify.hidden = false;
    notify.addEventListener("click", function () {
      Notification.requestPermission().then(function (permission) {
        wanted = permission === "granted";
        notify.textContent = wanted ? "You will be notified" : "Notifications are blocked";
        notify.disabled = true;
      });
    });
  }

  function poll() {
    fetch(banner.dataset.statusUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) {
        if (state === null) { return; }
        if (unfinished.indexOf(state.status) >= 0) {
          if (state.status !== banner.dataset.status) {
            banner.dataset.status = state.status;
            banner.firstChild.textContent = "Now " + state.status + ". ";
          }
          window.setTimeout(poll, 3000);
          return;
        }
        var text = "Finished" + (state.result ? " (" + state.result + ")" : "") + ". ";
        banner.className = "banner finished";
        banner.dataset.status = state.status;
        banner.firstChild.textContent = text;
        var reload = document.createElement("a");
        reload.href = window.location.pathname;
        reload.id = "reload";
        reload.textContent = "Reload to see its results";
        banner.appendChild(reload);
        if (wanted) {
          new Notification(document.title, { body: text });
        }
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }
  window.setTimeout(poll, 3000);
})();

// The live log of a running work request: poll for the pieces after the last one seen and
// append them; keep the view at the end unless the reader scrolled up; stop once the worker
// said the log ended (or the work request finished and nothing more came).
(function () {
  "use strict";
  var log = document.getElementById("live-log");
  if (!log || !log.dataset.url) { return; }
  var state = document.getElementById("live-log-state");
  var next = 0;
  var quietAfterEnd = 0;

  function atEnd() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  }

  function poll() {
    fetch(log.dataset.url + "?from=" + next, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (page) {
        if (page === null) { window.setTimeout(poll, 5000); return; }
        var follow = atEnd();
        var text = page.pieces.map(function (piece) { return piece.data; }).join("");
        if (text) { log.appendChild(document.createTextNode(text)); }
        next = page.next;
        if (follow && text) { window.scrollTo(0, document.body.scrollHeight); }
        var finished = page.status !== "running";
        if (page.ended || (finished && !text && ++quietAfterEnd > 1)) {
          state.textContent = "The work request has finished: this was its live output.";
          return;
        }
        window.setTimeout(poll, page.pieces.length ? 500 : 2000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  poll();
})();
