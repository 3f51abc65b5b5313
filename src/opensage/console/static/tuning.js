// OpenSage console: a tuning job's charts (uPlot). The objective of each trial in the order they
// started with the best so far, and each tuned hyperparameter against the objective. No build step.
(function () {
  "use strict";
  const BLUE = "#2f6fed", ORANGE = "#e8590c";
  const dots = () => null; // a series drawn as points only

  function box(el, title) {
    const div = document.createElement("div");
    div.className = "chart";
    div.innerHTML = "<h3></h3>";
    div.querySelector("h3").textContent = title;
    el.appendChild(div);
    return div;
  }

  function plot(div, xLabel, series, data) {
    return new uPlot({
      width: Math.max(300, div.clientWidth || 420), height: 220,
      scales: { x: { time: false } },
      series: [{ label: xLabel }].concat(series),
      axes: [{ label: xLabel, stroke: "#667085" }, { stroke: "#667085", size: 60 }],
      legend: { live: true },
    }, data, div);
  }

  function draw(el, body) {
    const metric = el.dataset.metric;
    const scored = body.trials.filter((t) => t.value !== null);
    if (!scored.length) return;
    const point = { label: metric, stroke: BLUE, paths: dots, points: { show: true, size: 7, fill: BLUE } };
    const charts = [{
      title: metric + " per trial", x: "trial",
      series: [point, { label: "best so far", stroke: ORANGE, width: 2, spanGaps: true, points: { show: false } }],
      data: [body.trials.map((t) => t.n), body.trials.map((t) => t.value), body.trials.map((t) => t.best)],
    }];
    for (const name of body.hyperparameters) {
      const pairs = scored.filter((t) => name in t.hps).map((t) => [t.hps[name], t.value]);
      if (!pairs.length) continue;
      const numeric = pairs.every(([v]) => v !== "" && !isNaN(Number(v)));
      const categories = numeric ? [] : Array.from(new Set(pairs.map(([v]) => v))).sort();
      const points = pairs.map(([v, y]) => [numeric ? Number(v) : categories.indexOf(v), y]).sort((a, b) => a[0] - b[0]);
      charts.push({
        title: numeric ? name + " vs " + metric : name + " (" + categories.join(", ") + ") vs " + metric,
        x: numeric ? name : name + " (category number)", series: [point],
        data: [points.map((p) => p[0]), points.map((p) => p[1])],
      });
    }
    el.innerHTML = "";
    const boxes = charts.map((c) => box(el, c.title)); // every box first: the grid sizes them alike
    charts.forEach((c, i) => plot(boxes[i], c.x, c.series, c.data));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const el = document.getElementById("tuning-charts");
    const data = document.getElementById("tuning-data");
    if (!el || !data) return;
    draw(el, JSON.parse(data.textContent));
    if (["InProgress", "Stopping"].includes(el.dataset.status)) {
      setTimeout(() => window.location.reload(), 5000); // a running job's page follows it
    }
  });
})();
