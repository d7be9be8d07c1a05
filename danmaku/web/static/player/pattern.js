/* The test pattern drawn on the stage's canvas when there is no video (and, in a replay
 * without media, the recording's clock).
 */

import { R, clockText, el, numberLocale, room, tr } from "./state.js";

export const pattern = { ctx: el.pattern.getContext("2d"), last: 0, w: 0, h: 0, dpr: 1, on: true };

export function resizePattern() {
  const dpr = Math.min(2, window.devicePixelRatio || 1);
  const w = Math.max(1, Math.round(el.stage.clientWidth * dpr));
  const h = Math.max(1, Math.round(el.stage.clientHeight * dpr));
  if (w !== pattern.w || h !== pattern.h) {
    el.pattern.width = w;
    el.pattern.height = h;
    Object.assign(pattern, { w, h, dpr });
  }
}

const BARS = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"];

export function drawPattern(now) {
  if (!pattern.on || now - pattern.last < 33) return;
  pattern.last = now;
  const { ctx, w, h } = pattern;
  const clock = R.on ? R.clock : null; // replay without media: the pattern is the recording
  const t = clock ? clock.currentTime : now / 1000;
  const g = ctx.createLinearGradient(0, 0, w, h);
  const hue = (t * 12) % 360;
  g.addColorStop(0, `hsl(${hue}, 45%, 16%)`);
  g.addColorStop(1, `hsl(${(hue + 70) % 360}, 45%, 9%)`);
  ctx.fillStyle = g;
  ctx.fillRect(0, 0, w, h);
  // a faint grid drifting left
  const cell = Math.max(24, Math.round(h / 9));
  const off = (t * cell * 0.25) % cell;
  ctx.strokeStyle = "rgba(255,255,255,0.06)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let x = -off; x < w; x += cell) { ctx.moveTo(x, 0); ctx.lineTo(x, h); }
  for (let y = 0; y < h; y += cell) { ctx.moveTo(0, y); ctx.lineTo(w, y); }
  ctx.stroke();
  // muted colour bars along the bottom
  const barH = Math.round(h * 0.14);
  const bw = w / BARS.length;
  ctx.globalAlpha = 0.55;
  BARS.forEach((c, i) => { ctx.fillStyle = c; ctx.fillRect(i * bw, h - barH, bw + 1, barH); });
  ctx.globalAlpha = 1;
  // a ball bouncing around, so motion is obvious
  const r = Math.round(h * 0.06);
  const bx = r + (Math.abs(((t * 0.23) % 2) - 1)) * (w - 2 * r);
  const by = r + (Math.abs(((t * 0.37) % 2) - 1)) * (h - barH - 2 * r);
  const rg = ctx.createRadialGradient(bx - r / 3, by - r / 3, r / 6, bx, by, r);
  rg.addColorStop(0, "#ffd27a");
  rg.addColorStop(1, "#e0652f");
  ctx.fillStyle = rg;
  ctx.beginPath();
  ctx.arc(bx, by, r, 0, Math.PI * 2);
  ctx.fill();
  // caption and a clock
  ctx.fillStyle = "rgba(255,255,255,0.55)";
  ctx.font = `600 ${Math.round(h * 0.045)}px system-ui, sans-serif`;
  ctx.textAlign = "center";
  ctx.fillText(clock ? tr("pattern.replay") : tr("pattern.test"),
    w / 2, h * 0.46);
  ctx.font = `${Math.round(h * 0.035)}px ui-monospace, monospace`;
  if (clock) {
    ctx.fillText(`${room} · ${clockText(t, true)} / ${clockText(clock.duration, true)}`,
      w / 2, h * 0.46 + h * 0.06);
    return;
  }
  const d = new Date();
  ctx.fillText(`${room} · ${d.toLocaleTimeString(numberLocale(), { hour12: false })}.${Math.floor(d.getMilliseconds() / 100)}`,
    w / 2, h * 0.46 + h * 0.06);
}
