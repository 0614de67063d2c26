// greenqueue dashboard: refresh the sections marked data-refresh every 5 s, in place.
// The pages work without it; this only saves pressing reload.
(function () {
  function refresh() {
    fetch(window.location.href, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-refresh]").forEach(function (old) {
          var update = fresh.getElementById(old.id);
          if (update) { old.replaceWith(update); }
        });
      })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
})();
