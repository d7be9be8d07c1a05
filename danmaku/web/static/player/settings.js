/* The settings popover over the player: density, opacity, font size, speed, display area,
 * modes, blocked words and users, with a reset; each change applied at once and kept.
 */

import { DEFAULTS, DENSITIES, R, S, assignSettings, el, settings, tr } from "./state.js";
import { link, reconnectNow } from "./connection.js";
import { Density } from "./density.js";
import { clearScreen, refilter, updateGeometry } from "./stage.js";

export function renderSettings() {
  el.setOn.checked = settings.on;
  el.toggleOn.setAttribute("aria-pressed", String(settings.on));
  el.setOpacity.value = String(settings.opacity);
  el.outOpacity.textContent = `${Math.round(settings.opacity * 100)}%`;
  el.setSpeed.value = String(settings.speed);
  el.outSpeed.textContent = `${settings.speed.toFixed(1)}×`;
  el.setFont.value = String(settings.fontSize);
  el.outFont.textContent = `${settings.fontSize}px`;
  el.setArea.value = settings.area;
  Density.render(el.setDensity, S.densities, settings.density, tr);
  el.setTop.checked = settings.showTop;
  el.setBottom.checked = settings.showBottom;
  if (document.activeElement !== el.setWords) el.setWords.value = settings.blockWords.join(", ");
  if (document.activeElement !== el.setUsers) el.setUsers.value = settings.blockUsers.join(", ");
  el.overlay.style.setProperty("--dm-opacity", String(settings.opacity));
  el.overlay.classList.toggle("off", !settings.on);
}

/** welcome.densities: the menu offers the gateway's levels; a stored share it does not
 *  serve is snapped to the level the gateway serves for it. */
export function onDensities(list) {
  S.densities = Density.levels(list, DENSITIES);
  const level = Density.pick(S.densities, settings.density);
  if (level !== settings.density) {
    assignSettings({ ...settings, density: level }); // the level served for the old share
  }
  renderSettings();
}

const splitList = (s) => s.split(/[,\n]/).map((x) => x.trim()).filter(Boolean);

export function updateSettings(changes) {
  const before = settings;
  assignSettings({ ...settings, ...changes });
  renderSettings();
  updateGeometry(); // font size, speed and area go to the renderer
  if (before.fontSize !== settings.fontSize) clearScreen(); // lanes change height: start over
  if (!settings.on && before.on) clearScreen();
  if (!settings.showTop || !settings.showBottom || settings.blockWords.length
      || settings.blockUsers.length) {
    refilter();
  }
  if (before.density !== settings.density && link.socket) reconnectNow(); // density goes on connect
  if (R.on && (before.density !== settings.density || before.fontSize !== settings.fontSize
      || (settings.on && !before.on))) {
    R.resync = true; // replay: put up again what this position shows with the new settings
  }
}

export function bindSettings() {
  el.setOn.addEventListener("change", () => updateSettings({ on: el.setOn.checked }));
  el.toggleOn.addEventListener("click", () => updateSettings({ on: !settings.on }));
  el.setOpacity.addEventListener("input", () => updateSettings({ opacity: Number(el.setOpacity.value) }));
  el.setSpeed.addEventListener("input", () => updateSettings({ speed: Number(el.setSpeed.value) }));
  el.setFont.addEventListener("change", () => updateSettings({ fontSize: Number(el.setFont.value) }));
  el.setFont.addEventListener("input", () => { el.outFont.textContent = `${el.setFont.value}px`; });
  el.setArea.addEventListener("change", () => updateSettings({ area: el.setArea.value }));
  el.setDensity.addEventListener("change", () => updateSettings({ density: Number(el.setDensity.value) }));
  el.setTop.addEventListener("change", () => updateSettings({ showTop: el.setTop.checked }));
  el.setBottom.addEventListener("change", () => updateSettings({ showBottom: el.setBottom.checked }));
  el.setWords.addEventListener("change", () => updateSettings({ blockWords: splitList(el.setWords.value) }));
  el.setUsers.addEventListener("change", () => updateSettings({ blockUsers: splitList(el.setUsers.value) }));
  // back to the defaults of the display; the viewer's block lists stay
  el.setReset.addEventListener("click", () => updateSettings({ ...DEFAULTS,
    blockWords: settings.blockWords, blockUsers: settings.blockUsers }));
  el.setClose.addEventListener("click", () => { el.settings.open = false; });
}
