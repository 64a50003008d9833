// Stacked bars in SVG, drawn from data (no library, no network): one bar per hour, one
// colour per station. Labels are text nodes, never markup.
"use strict";

window.phonewipePlot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f",
                   "#4a5568"];

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function niceMax(value) {
    if (value <= 5) return 5;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function stackedBars(container, data) {
    const width = 960, height = 320, left = 48, right = 16, top = 16, bottom = 44;
    const hours = data.hours, n = hours.length;
    const totals = hours.map((_, i) => data.stations.reduce((sum, s) => sum + s.counts[i], 0));
    const max = niceMax(Math.max(0, ...totals));
    const plotW = width - left - right, plotH = height - top - bottom;
    const barW = plotW / n;
    const y = (v) => top + plotH - (v / max) * plotH;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
                              "aria-label": "final records per hour and station", class: "bars" });
    for (let i = 0; i <= 5; i++) {
      const v = (max / 5) * i;
      root.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
      root.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" },
                      Number.isInteger(v) ? v : v.toFixed(1)));
    }
    hours.forEach((label, i) => {
      let base = 0;
      data.stations.forEach((s, k) => {
        const count = s.counts[i];
        if (!count) return;
        const rect = svg("rect", { x: left + i * barW + 2, width: Math.max(1, barW - 4),
                                   y: y(base + count), height: y(base) - y(base + count),
                                   fill: COLOURS[k % COLOURS.length], "data-station": s.name });
        rect.append(svg("title", {}, `${s.name}: ${count} at ${label}`));
        root.append(rect);
        base += count;
      });
      if (totals[i]) {
        root.append(svg("text", { x: left + (i + 0.5) * barW, y: y(totals[i]) - 4,
                                  "text-anchor": "middle", class: "tick total" }, totals[i]));
      }
      if (i % 3 === 0) {
        root.append(svg("text", { x: left + (i + 0.5) * barW, y: height - bottom + 16,
                                  "text-anchor": "middle", class: "tick" }, label.slice(11, 16)));
      }
    });
    root.append(svg("text", { x: left, y: height - 6, class: "tick" },
                    `${hours[0].slice(0, 16).replace("T", " ")} to ${hours[n - 1].slice(0, 16).replace("T", " ")} UTC` +
                    ` — ${data.total} final record(s)`));
    const legend = document.createElement("ul");
    legend.className = "legend";
    data.stations.forEach((s, k) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLOURS[k % COLOURS.length];
      item.append(swatch, document.createTextNode(`${s.name} (${s.counts.reduce((a, b) => a + b, 0)})`));
      legend.append(item);
    });
    container.replaceChildren(root, legend);
  }

  return { stackedBars };
})();
