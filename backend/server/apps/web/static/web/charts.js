// The pages' charts (Chart.js, vendored) and, while an A/B test runs, its figures refreshed
// from the page's own JSON. Everything here is optional: the figures are in the HTML.
"use strict";

const COLOURS = ["#1f6feb", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0b7285"];
const REFRESH_MS = 5000;

function pct(x) {
  return x === null || x === undefined ? "\u2013" : (100 * x).toFixed(1) + "%";
}

function timeLabel(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

// One line per model (its cumulative accuracy) and, under it, its 95% band: two more
// datasets, the band's low and high edges, filled between and left out of the legend.
function accuracyDatasets(series) {
  const datasets = [];
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const at = (key) => s.points.map((p) => ({x: p.t, y: p[key]}));
    datasets.push({label: s.label, data: at("accuracy"), borderColor: colour,
                   backgroundColor: colour, pointRadius: 2, tension: 0, kind: "accuracy",
                   mlmodel: s.mlmodel});
    datasets.push({label: s.label + " (95% low)", data: at("low"), borderWidth: 0,
                   pointRadius: 0, fill: false, kind: "band"});
    datasets.push({label: s.label + " (95% band)", data: at("high"), borderWidth: 0,
                   pointRadius: 0, fill: "-1", backgroundColor: colour + "33", kind: "band"});
  });
  return datasets;
}

function abTestPage(dataUrl) {
  const figures = JSON.parse(document.getElementById("figures").textContent);
  const chart = new Chart(document.getElementById("accuracy-chart"), {
    type: "line",
    data: {datasets: accuracyDatasets(figures.series)},
    options: {
      animation: false, parsing: true,
      scales: {
        x: {type: "linear", title: {display: true, text: "feedback time"},
            ticks: {callback: timeLabel}},
        y: {min: 0, max: 1, title: {display: true, text: "accuracy"},
            ticks: {callback: (v) => pct(v)}},
      },
      plugins: {legend: {labels: {filter: (item, data) =>
        data.datasets[item.datasetIndex].kind === "accuracy"}}},
    },
  });
  if (figures.state !== "running") return;
  const timer = setInterval(async () => {
    const response = await fetch(dataUrl, {headers: {Accept: "application/json"}});
    if (!response.ok) return;
    const fresh = await response.json();
    for (const m of fresh.models) {
      const row = document.querySelector(`tr[data-model="${m.mlmodel}"]`);
      if (!row) continue;
      row.querySelector(".share").textContent = pct(m.share);
      row.querySelector(".requests").textContent = m.requests;
      row.querySelector(".feedback").textContent = m.feedback;
      row.querySelector(".accuracy").textContent = pct(m.accuracy);
      row.querySelector(".ci").textContent = m.ci95 ? `${pct(m.ci95[0])} to ${pct(m.ci95[1])}`
                                                    : "\u2013";
    }
    const list = document.getElementById("comparisons");
    list.replaceChildren(...(fresh.comparisons.length ? fresh.comparisons
      : ["No comparison until every model has feedback."]).map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }));
    const decision = document.getElementById("decision-now");
    if (decision && fresh.decision) decision.textContent = "If stopped now: " + fresh.decision;
    chart.data.datasets = accuracyDatasets(fresh.series);
    chart.update();
    if (fresh.state !== "running") {
      clearInterval(timer);
      window.location.reload();  // the decision and the status changes
    }
  }, REFRESH_MS);
}

function modelPage() {
  const figures = JSON.parse(document.getElementById("figures").textContent);
  new Chart(document.getElementById("days-chart"), {
    data: {
      labels: figures.days.map((d) => d.day),
      datasets: [
        {type: "bar", label: "requests", data: figures.days.map((d) => d.requests),
         backgroundColor: COLOURS[0] + "88", yAxisID: "requests"},
        {type: "line", label: "accuracy (feedback)", data: figures.days.map((d) => d.accuracy),
         borderColor: COLOURS[1], backgroundColor: COLOURS[1], yAxisID: "accuracy",
         spanGaps: true},
      ],
    },
    options: {
      animation: false,
      scales: {
        requests: {type: "linear", position: "left", beginAtZero: true,
                   title: {display: true, text: "requests"}},
        accuracy: {type: "linear", position: "right", min: 0, max: 1,
                   grid: {drawOnChartArea: false}, ticks: {callback: (v) => pct(v)},
                   title: {display: true, text: "accuracy"}},
      },
    },
  });
}
