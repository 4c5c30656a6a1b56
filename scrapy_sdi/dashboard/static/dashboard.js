/* scrapy_sdi dashboard: refreshes the overview's numbers and wires the row checkboxes.
   Values are set with textContent only, so nothing from the buffer is ever parsed as HTML. */
(function () {
  "use strict";
  var REFRESH_MS = 3000;
  var body = document.body;

  var selectAll = document.getElementById("select-all");
  if (selectAll) {
    selectAll.addEventListener("change", function () {
      var boxes = document.querySelectorAll("#rows input[name=id]");
      for (var i = 0; i < boxes.length; i++) { boxes[i].checked = selectAll.checked; }
    });
  }

  if (!body.hasAttribute("data-refresh")) { return; }

  function setFields(fields) {
    var nodes = document.querySelectorAll("[data-field]");
    for (var i = 0; i < nodes.length; i++) {
      var key = nodes[i].getAttribute("data-field");
      if (Object.prototype.hasOwnProperty.call(fields, key)) { nodes[i].textContent = fields[key]; }
    }
  }

  function setCrawlers(rows) {
    var tbody = document.querySelector("#crawlers tbody");
    if (!tbody || !rows.length) { return; }
    var fresh = document.createDocumentFragment();
    rows.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (text, index) {
        var td = document.createElement("td");
        if (index === 0) {
          var link = document.createElement("a");
          link.href = "/rows?" + new URLSearchParams({crawler: text}).toString();
          link.textContent = text;
          td.appendChild(link);
        } else {
          td.className = "num";
          td.textContent = text;
        }
        tr.appendChild(td);
      });
      fresh.appendChild(tr);
    });
    tbody.replaceChildren(fresh);
  }

  function poll() {
    fetch("/api/overview" + window.location.search, {cache: "no-store", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        setFields(data.fields);
        setCrawlers(data.crawlers.rows);
        body.classList.remove("stale");
        body.setAttribute("data-refreshes", String(Number(body.getAttribute("data-refreshes") || 0) + 1));
      })
      .catch(function () { body.classList.add("stale"); })
      .finally(function () { window.setTimeout(poll, REFRESH_MS); });
  }

  window.setTimeout(poll, REFRESH_MS);
})();
