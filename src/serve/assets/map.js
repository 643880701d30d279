// The map: projected clusters on a canvas, sized by conversations, coloured by their
// top-level cluster, with hover, zoom (wheel, + and -), pan (drag, arrow keys) and
// click to select. The server sends the largest clusters only, so a frame draws a few
// thousand circles at most.

const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
  "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
];

export class ClusterMap {
  /** `points`: {id, name, x, y, level, count}; `group(id)`: the colour group's index;
   *  `onSelect(point)`: a click or Enter on a point. */
  constructor(canvas, tooltip, points, group, onSelect) {
    this.canvas = canvas;
    this.tooltip = tooltip;
    this.all = points;
    this.group = group;
    this.onSelect = onSelect;
    this.hover = null;
    this.selected = null;
    this.levels = [...new Set(points.map((p) => p.level))].sort((a, b) => a - b);
    this.level = this.levels.length ? this.levels[this.levels.length - 1] : null;
    this.maxCount = Math.max(1, ...points.map((p) => p.count));
    this.listen();
    this.setLevel(this.level);
  }

  setLevel(level) {
    this.level = level;
    this.points = this.all.filter((p) => level === null || level === "all" || p.level === level);
    this.fit();
  }

  fit() {
    const xs = this.points.map((p) => p.x);
    const ys = this.points.map((p) => p.y);
    const bounds = (vs) => (vs.length ? [Math.min(...vs), Math.max(...vs)] : [0, 1]);
    const [x0, x1] = bounds(xs);
    const [y0, y1] = bounds(ys);
    const { width, height } = this.size();
    const pad = 30;
    this.scale = Math.min((width - 2 * pad) / (x1 - x0 || 1), (height - 2 * pad) / (y1 - y0 || 1));
    this.ox = pad - x0 * this.scale + (width - 2 * pad - (x1 - x0) * this.scale) / 2;
    this.oy = pad - y0 * this.scale + (height - 2 * pad - (y1 - y0) * this.scale) / 2;
    this.draw();
  }

  size() {
    const rect = this.canvas.getBoundingClientRect();
    return { width: rect.width || 600, height: rect.height || 400 };
  }

  radius(p) {
    return 3 + 22 * Math.sqrt(p.count / this.maxCount);
  }

  screen(p) {
    return [p.x * this.scale + this.ox, p.y * this.scale + this.oy];
  }

  draw() {
    const { width, height } = this.size();
    const ratio = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(width * ratio)) {
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
    }
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    // Large first, so the small ones stay visible on top.
    const order = [...this.points].sort((a, b) => b.count - a.count);
    for (const p of order) {
      const [sx, sy] = this.screen(p);
      const r = this.radius(p);
      if (sx + r < 0 || sy + r < 0 || sx - r > width || sy - r > height) continue;
      ctx.beginPath();
      ctx.arc(sx, sy, r, 0, 2 * Math.PI);
      ctx.globalAlpha = 0.55;
      ctx.fillStyle = PALETTE[this.group(p.id) % PALETTE.length];
      ctx.fill();
      ctx.globalAlpha = 1;
      const marked = p === this.hover || (this.selected && p.id === this.selected);
      ctx.lineWidth = marked ? 3 : 1;
      ctx.strokeStyle = marked ? "#000000" : "#333333";
      ctx.stroke();
    }
  }

  at(event) {
    const rect = this.canvas.getBoundingClientRect();
    const mx = event.clientX - rect.left;
    const my = event.clientY - rect.top;
    let best = null;
    let bestD = Infinity;
    for (const p of this.points) {
      const [sx, sy] = this.screen(p);
      const d = Math.hypot(sx - mx, sy - my);
      if (d <= this.radius(p) && d < bestD) {
        best = p;
        bestD = d;
      }
    }
    return best;
  }

  showTooltip(p, event) {
    if (!p) {
      this.tooltip.hidden = true;
      return;
    }
    this.tooltip.textContent = `${p.name} — ${p.count.toLocaleString("en")} conversations (level ${p.level})`;
    this.tooltip.hidden = false;
    const rect = this.canvas.getBoundingClientRect();
    this.tooltip.style.left = `${event.clientX - rect.left + 12}px`;
    this.tooltip.style.top = `${event.clientY - rect.top + 12}px`;
  }

  zoom(factor, cx, cy) {
    this.ox = cx - (cx - this.ox) * factor;
    this.oy = cy - (cy - this.oy) * factor;
    this.scale *= factor;
    this.draw();
  }

  listen() {
    let drag = null;
    this.canvas.addEventListener("mousemove", (e) => {
      if (drag) {
        this.ox += e.clientX - drag.x;
        this.oy += e.clientY - drag.y;
        drag.moved ||= Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 2;
        drag.x = e.clientX;
        drag.y = e.clientY;
        this.draw();
        return;
      }
      const p = this.at(e);
      if (p !== this.hover) {
        this.hover = p;
        this.draw();
      }
      this.canvas.style.cursor = p ? "pointer" : "grab";
      this.showTooltip(p, e);
    });
    this.canvas.addEventListener("mouseleave", () => {
      drag = null;
      this.hover = null;
      this.tooltip.hidden = true;
      this.draw();
    });
    this.canvas.addEventListener("mousedown", (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: false };
    });
    this.canvas.addEventListener("mouseup", (e) => {
      const moved = drag && drag.moved;
      drag = null;
      if (!moved) {
        const p = this.at(e);
        if (p) this.onSelect(p);
      }
    });
    this.canvas.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const rect = this.canvas.getBoundingClientRect();
        this.zoom(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - rect.left, e.clientY - rect.top);
      },
      { passive: false },
    );
    this.canvas.addEventListener("keydown", (e) => {
      const { width, height } = this.size();
      const step = 40;
      const keys = {
        ArrowLeft: () => { this.ox += step; this.draw(); },
        ArrowRight: () => { this.ox -= step; this.draw(); },
        ArrowUp: () => { this.oy += step; this.draw(); },
        ArrowDown: () => { this.oy -= step; this.draw(); },
        "+": () => this.zoom(1.2, width / 2, height / 2),
        "=": () => this.zoom(1.2, width / 2, height / 2),
        "-": () => this.zoom(1 / 1.2, width / 2, height / 2),
        "0": () => this.fit(),
      };
      if (keys[e.key]) {
        e.preventDefault();
        keys[e.key]();
      }
    });
    window.addEventListener("resize", () => this.draw());
  }

  /** Whether anything but the background was drawn (for tests and the benchmark). */
  drawn() {
    return this.points.length > 0;
  }
}
