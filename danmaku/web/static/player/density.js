/* The density menu, built from the levels the gateway serves (welcome.densities,
 * docs/protocol.md "welcome").
 *
 * Density (an ES module export) promises:
 * - ``levels(list, fallback)``: the valid levels of ``list`` (numbers in (0, 1], no
 *   repeats, largest first), or ``fallback`` when none is valid;
 * - ``pick(levels, want)``: the level a viewer who wants ``want`` is served: the largest
 *   level not above it, else the smallest;
 * - ``render(select, levels, current, t)``: one <option> per level (value: the number;
 *   label: "all", "half", "quarter" or a percentage in the viewer's words), ``current``
 *   selected; the options are rebuilt only when the levels changed.
 */
const NAMED = new Map([[1, "set.density_all"], [0.5, "set.density_half"],
  [0.25, "set.density_quarter"]]);

function levels(list, fallback) {
  if (!Array.isArray(list)) return fallback.slice();
  const ok = list.map(Number).filter((x) => Number.isFinite(x) && x > 0 && x <= 1);
  const out = Array.from(new Set(ok)).sort((a, b) => b - a);
  return out.length ? out : fallback.slice();
}

function pick(lv, want) {
  const below = lv.filter((x) => x <= want);
  return below.length ? Math.max(...below) : Math.min(...lv);
}

const label = (x, t) => (NAMED.has(x) ? t(NAMED.get(x))
  : t("set.density_share", { p: Math.round(x * 1000) / 10 }));

function render(select, lv, current, t) {
  const have = Array.from(select.options, (o) => Number(o.value));
  if (have.length !== lv.length || have.some((x, i) => x !== lv[i])) {
    select.replaceChildren(...lv.map((x) => {
      const o = document.createElement("option");
      o.value = String(x);
      return o;
    }));
  }
  for (const o of select.options) {
    const x = Number(o.value);
    o.textContent = label(x, t);
    o.removeAttribute("data-i18n"); // labelled here, in the viewer's language
  }
  select.value = String(current);
}

export const Density = Object.freeze({ levels, pick, render });
