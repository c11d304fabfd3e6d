// The console's charts: each `[data-chart]` element is drawn from the JSON data block of the
// same id, with uPlot. Labels reach the page only as text (uPlot writes legends with
// textContent); nothing here builds HTML from strings.
import uPlot from "uplot";

interface ChartSeries {
  label: string;
  values: (number | null)[];
  threshold?: boolean;
  band?: boolean;
}

interface ChartData {
  x: number[];
  series: ChartSeries[];
  y_max?: number;
  versions?: boolean;
}

const COLOURS = ["#1f5fa8", "#b35900", "#2e7d32", "#6a1b9a", "#00838f", "#8d6e63", "#c2185b"];

function readData(id: string): ChartData | null {
  const block = document.getElementById(id);
  if (!block || !block.textContent) return null;
  try {
    return JSON.parse(block.textContent) as ChartData;
  } catch {
    return null;
  }
}

function draw(target: HTMLElement): void {
  const id = target.dataset.chart;
  if (!id) return;
  const data = readData(id);
  if (!data || data.x.length === 0) {
    const empty = document.createElement("p");
    empty.className = "muted";
    empty.textContent = "No data in this range yet.";
    target.appendChild(empty);
    return;
  }
  let colour = 0;
  const series: uPlot.Series[] = [{ label: data.versions ? "version" : "time" }];
  for (const item of data.series) {
    if (item.threshold) {
      series.push({ label: item.label, stroke: "#c62828", dash: [8, 6], width: 2, points: { show: false } });
    } else if (item.band) {
      series.push({ label: item.label, stroke: "#9e9e9e", dash: [2, 4], width: 1, points: { show: false } });
    } else {
      series.push({ label: item.label, stroke: COLOURS[colour++ % COLOURS.length], width: 2, spanGaps: true });
    }
  }
  const options: uPlot.Options = {
    width: Math.max(320, target.clientWidth || 800),
    height: 260,
    series,
    scales: {
      // One point alone would get a range of years: give it a day (or a version) either side.
      x: {
        time: !data.versions,
        range: (_u: uPlot, min: number, max: number): uPlot.Range.MinMax =>
          min === max ? [min - (data.versions ? 1 : 86400), max + (data.versions ? 1 : 86400)] : [min, max],
      },
      y: data.y_max !== undefined ? { range: [0, data.y_max] } : { auto: true },
    },
    axes: [{}, { size: 50 }],
  };
  const columns: uPlot.AlignedData = [data.x, ...data.series.map((item) => item.values)];
  target.setAttribute("role", "img");
  target.setAttribute("aria-label", data.series.filter((s) => !s.band).map((s) => s.label).join(", "));
  new uPlot(options, columns, target);
}

function start(): void {
  document.querySelectorAll<HTMLElement>("[data-chart]").forEach((element) => {
    try {
      draw(element);
    } catch (error) {
      console.warn("console: a chart could not be drawn", error);
    }
  });
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", start);
} else {
  start();
}
