// Line anchors of the file viewer: #L10 or #L10-20 highlights those lines (the hash survives
// reloads and can be shared); shift-click on a line number extends the selection.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log) { return; }
  var anchor = null;

  function parse(hash) {
    var match = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash);
    if (!match) { return null; }
    var first = parseInt(match[1], 10);
    var last = match[2] ? parseInt(match[2], 10) : first;
    return first <= last ? [first, last] : [last, first];
  }

  function highlight(scroll) {
    var selected = log.querySelectorAll(".line.selected");
    for (var i = 0; i < selected.length; i++) { selected[i].classList.remove("selected"); }
    var range = parse(window.location.hash);
    if (!range) { return; }
    for (var n = range[0]; n <= range[1]; n++) {
      var line = document.getElementById("L" + n);
      if (line) { line.classList.add("selected"); }
    }
    var first = document.getElementById("L" + range[0]);
    if (scroll && first) { first.scrollIntoView({ block: "center" }); }
  }

  log.addEventListener("click", function (event) {
    var target = event.target;
    if (!target.classList || !target.classList.contains("ln") || target.getAttribute("href").charAt(0) !== "#") { return; }
    event.preventDefault();
    var number = parseInt(target.getAttribute("data-line"), 10);
    var hash = "#L" + number;
    if (event.shiftKey && anchor !== null) {
      hash = "#L" + Math.min(anchor, number) + "-" + Math.max(anchor, number);
    } else {
      anchor = number;
    }
    history.replaceState(null, "", hash);
    highlight(false);
  });
  window.addEventListener("hashchange", function () { highlight(true); });
  highlight(true);
})();
