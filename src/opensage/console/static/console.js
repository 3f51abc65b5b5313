// OpenSage console: live logs and charts over server-sent events; small helpers. No build step.
(function () {
  "use strict";
  const ENDED = ["Completed", "Failed", "Stopped"];
  const COLORS = ["#2f6fed", "#e8590c", "#12805c", "#9c36b5", "#c92a2a", "#1098ad"];

  function chart(el, title, labels, data, opts) {
    const box = document.createElement("div");
    box.className = "chart";
    box.innerHTML = "<h3></h3>";
    box.querySelector("h3").textContent = title;
    el.appendChild(box);
    const width = Math.max(300, box.clientWidth || 420);
    const series = [{ label: opts.xLabel }].concat(labels.map((label, i) => Object.assign({
      label: label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: opts.spanGaps !== false,
      points: { show: data[0].length < 60 },
    }, (opts.series || [])[i] || {})));
    return new uPlot({
      width: width, height: 220, series: series,
      scales: { x: { time: !!opts.time }, y: opts.range ? { range: opts.range } : {} },
      axes: [{ label: opts.xLabel, stroke: "#667085" }, { stroke: "#667085", size: 60 }],
      legend: { live: true },
    }, data, box);
  }

  // --- training job: metric charts, one per metric, a line per channel ---------------------------
  function trainingCharts(el) {
    let timer = null;
    async function draw() {
      const response = await fetch(el.dataset.src, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      const groups = {};
      for (const [name, points] of Object.entries(body.series)) {
        const [channel, metric] = name.includes(":") ? name.split(":", 2) : [name, name];
        (groups[metric] = groups[metric] || {})[channel] = points;
      }
      if (!Object.keys(groups).length) return;
      el.innerHTML = "";
      for (const [metric, channels] of Object.entries(groups)) {
        const names = Object.keys(channels);
        const xs = Array.from(new Set(names.flatMap((c) => channels[c].x))).sort((a, b) => a - b);
        const data = [xs].concat(names.map((c) => {
          const at = new Map(channels[c].x.map((x, i) => [x, channels[c].y[i]]));
          return xs.map((x) => (at.has(x) ? at.get(x) : null));
        }));
        chart(el, metric + " per round", names, data, { xLabel: "round" });
      }
      el.dataset.points = String(Object.values(body.series).reduce((n, s) => n + s.x.length, 0));
    }
    draw();
    return function refresh() {
      if (timer) return;
      timer = setTimeout(() => { timer = null; draw(); }, 1500);
    };
  }

  // --- a job (training, processing, transform): live log and status -----------------------------
  function jobLog(pre, refreshCharts) {
    const startedAs = pre.dataset.status;
    const source = new EventSource(pre.dataset.src);
    source.addEventListener("reset", () => { pre.textContent = ""; });
    source.addEventListener("log", (e) => {
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      // CloudWatch keeps a container's tabs as "#011" (metric definitions match that); show them as tabs.
      pre.append(JSON.parse(e.data).map((ev) => ev.m.replaceAll("#011", "\t")).join("\n") + "\n");
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      if (refreshCharts) refreshCharts();
    });
    source.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      const badge = document.querySelector("#job-status .badge");
      if (badge) {
        badge.textContent = s.status;
        badge.className = "badge " + (s.status === "Completed" ? "ok" : s.status === "Failed" ? "bad" : s.status.startsWith("Stop") ? "muted" : "busy");
      }
      const secondary = document.getElementById("job-secondary");
      if (secondary) secondary.textContent = s.secondary;
      if (ENDED.includes(s.status) && !ENDED.includes(startedAs)) {
        source.close();
        setTimeout(() => window.location.reload(), 800);
      }
    });
    source.addEventListener("end", () => { source.close(); pre.dataset.ended = "true"; });
  }

  // --- endpoint: live invocation charts and health -------------------------------------------------
  const fromZero = (u, lo, hi) => [0, hi > 0 ? hi * 1.15 : 1];

  function endpointCharts(el) {
    let plots = null;
    const source = new EventSource(el.dataset.src);
    const text = (id, value) => { const n = document.getElementById(id); if (n) n.textContent = value; };
    source.addEventListener("metrics", (e) => {
      const m = JSON.parse(e.data);
      const s = m.series;
      const data = [
        [s.x, s.Invocations],
        [s.x, s.p50, s.p99],
        [s.x, s.Invocation4XXErrors, s.Invocation5XXErrors],
      ];
      if (!plots) {
        el.innerHTML = "";
        // A minute without invocations is null in every series: drawn as a gap, not a line across it.
        const opts = { time: true, xLabel: "", range: fromZero, spanGaps: false };
        plots = [
          chart(el, "Invocations per minute", ["invocations"], data[0], opts),
          chart(el, "Latency (ms)", ["p50", "p99"], data[1], opts),
          chart(el, "Errors per minute", ["4XX", "5XX"], data[2], opts),
        ];
        el.plots = plots;  // for a look from the browser's console
      } else {
        plots.forEach((p, i) => p.setData(data[i]));
      }
      text("total-invocations", s.total.Invocations);
      text("total-4xx", s.total.Invocation4XXErrors);
      text("total-5xx", s.total.Invocation5XXErrors);
      const last = s.p50.length - 1;
      text("latency-now", s.p50[last] == null ? "–" : s.p50[last].toFixed(1) + " / " + s.p99[last].toFixed(1) + " ms");
      const status = document.getElementById("endpoint-status");
      if (status && status.dataset.status !== m.status) window.location.reload();
    });
    source.addEventListener("gone", () => { source.close(); window.location.reload(); });
  }

  // --- endpoint: a scalable variant's instance count, a step line, with its scaling activities marked ---
  function instanceChart(el) {
    const s = JSON.parse(el.dataset.steps);
    const opts = {
      time: true, xLabel: "", range: fromZero, spanGaps: false,
      series: [
        { paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } },
        { paths: () => null, points: { show: true, size: 10, fill: COLORS[1] } },
      ],
    };
    el.plot = chart(el, el.dataset.title, ["instances", "scaling activity"], [s.x, s.instances, s.activities], opts);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".instance-steps[data-steps]").forEach(instanceChart);
    const charts = document.getElementById("metric-charts");
    const refresh = charts ? trainingCharts(charts) : null;
    const log = document.getElementById("log");
    if (log) jobLog(log, refresh);
    const ep = document.getElementById("endpoint-charts");
    if (ep) endpointCharts(ep);
  });

  // Confirm before destructive forms; pick an S3 URI from the browser.
  document.addEventListener("submit", (e) => {
    const message = e.target.dataset && e.target.dataset.confirm;
    if (message && !window.confirm(message)) e.preventDefault();
  }, true);
  document.addEventListener("click", (e) => {
    const pick = e.target.closest("[data-pick]");
    if (pick) {
      e.preventDefault();
      const input = document.getElementById(pick.dataset.target);
      if (input) { input.value = pick.dataset.pick; input.dispatchEvent(new Event("change", { bubbles: true })); }
      const slot = pick.closest(".picker-slot");
      if (slot) slot.innerHTML = "";
      return;
    }
    const close = e.target.closest("[data-close-picker]");
    if (close) { const slot = close.closest(".picker-slot"); if (slot) slot.innerHTML = ""; }
  });
})();
