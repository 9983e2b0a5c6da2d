// The dashboard's own script (served from its origin; the page has no inline script):
// refusals shown in words, the log search, the live tail's scrolling, duration charts.
(function () {
  "use strict";

  function problemText(xhr) {
    var text = xhr.responseText || "";
    try {
      var body = JSON.parse(text);
      return body.message || body.detail || text;
    } catch (e) {
      return text || ("HTTP " + xhr.status);
    }
  }

  // htmx leaves error responses unswapped: show the server's sentence instead.
  document.addEventListener("htmx:responseError", function (event) {
    var message = "Refused (" + event.detail.xhr.status + "): " + problemText(event.detail.xhr);
    var target = event.detail.target;
    if (target && target.getAttribute("aria-live")) {
      target.textContent = message;
      target.classList.add("refused");
    }
    var flash = document.getElementById("flash");
    flash.textContent = message;
    flash.hidden = false;
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var target = event.detail.target;
    if (target && target.classList) target.classList.remove("refused");
  });

  function applySearch() {
    var input = document.getElementById("log-search");
    if (!input) return;
    var needle = input.value.toLowerCase();
    document.querySelectorAll("#logs .line").forEach(function (line) {
      line.hidden = needle !== "" && line.textContent.toLowerCase().indexOf(needle) < 0;
    });
  }

  function drawCharts(root) {
    if (typeof uPlot === "undefined") return;
    root.querySelectorAll(".duration-chart:not(.drawn)").forEach(function (node) {
      var data = JSON.parse(node.dataset.points || "[[],[]]");
      node.classList.add("drawn");
      if (!data[0].length) {
        node.textContent = "no successes yet";
        return;
      }
      new uPlot({
        width: 240, height: 80, legend: { show: false }, cursor: { show: false },
        axes: [{ show: false }, { size: 40 }],
        series: [{}, { label: "seconds", stroke: "#2563eb", width: 1.5, points: { size: 3 } }]
      }, data, node);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var search = document.getElementById("log-search");
    if (search) search.addEventListener("input", applySearch);
    drawCharts(document);
  });
  // New log lines arrive over the event stream: keep the search applied, follow the tail.
  document.addEventListener("htmx:sseMessage", function () {
    applySearch();
    var logs = document.getElementById("logs");
    if (logs) logs.scrollTop = logs.scrollHeight;
  });
  document.addEventListener("htmx:afterSwap", function (event) { drawCharts(event.detail.target); });
})();
