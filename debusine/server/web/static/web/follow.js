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
