/* Paid messages, gifts and system announcements as cards (docs/protocol.md, "Paid, gift
 * and system items").
 *
 * Cards promises:
 * - ``kindOf(item)``: "paid", "gift" or "system" for the platform's items, "" for comments
 *   (and for anything else, so an unknown kind is shown as a plain comment);
 * - ``color(item)``: the card's colour: the tier's ``color`` (``#rrggbb`` only), else the
 *   item's, else a neutral one;
 * - ``amount(item, t, locale)``: what was given, in the viewer's words: a paid amount with
 *   ``Intl.NumberFormat`` in the UI's locale and the item's ISO 4217 currency ("$120.00",
 *   "US$120.00"); a gift as "rocket × 3"; "" for system items;
 * - ``build(item, t, locale, tag)``: the card element (``tag``: "span" or "div"): the
 *   nick (system items: "System" in the viewer's language), the amount, the text;
 *   border and background in ``color(item)``;
 * - ``summary(item, t, locale)``: the same as one line of plain text (screen readers,
 *   the pin's chat row).
 * Text from the network is only ever set with textContent.
 */
const KINDS = new Set(["paid", "gift", "system"]);
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
const CURRENCY_RE = /^[A-Z]{3}$/;
const NEUTRAL = "#5c6bc0";

const kindOf = (item) => (item && typeof item.kind === "string" && KINDS.has(item.kind)
  ? item.kind : "");

function color(item) {
  const tier = item && item.tier && typeof item.tier === "object" ? item.tier : null;
  if (tier && typeof tier.color === "string" && COLOR_RE.test(tier.color)) {
    return tier.color.toLowerCase();
  }
  if (item && typeof item.color === "string" && COLOR_RE.test(item.color)) {
    return item.color.toLowerCase();
  }
  return NEUTRAL;
}

/** A number of money: the currency's own format in ``locale``; a code the browser does
 *  not know is written after the number. */
function money(n, currency, locale) {
  if (!CURRENCY_RE.test(currency || "")) {
    return new Intl.NumberFormat(locale, { maximumFractionDigits: 2 }).format(n);
  }
  try {
    return new Intl.NumberFormat(locale, { style: "currency", currency }).format(n);
  } catch {
    return `${new Intl.NumberFormat(locale, { maximumFractionDigits: 2 }).format(n)} ${currency}`;
  }
}

function amount(item, t, locale) {
  const kind = kindOf(item);
  if (kind === "gift") {
    const g = item.gift && typeof item.gift === "object" ? item.gift : {};
    const name = typeof g.name === "string" && g.name ? g.name : t("card.gift");
    const count = Number.isInteger(Number(g.count)) && Number(g.count) > 0 ? Number(g.count) : 1;
    return `${name} × ${count.toLocaleString(locale)}`;
  }
  if (kind === "paid") {
    const n = Number(item.amount);
    return Number.isFinite(n) && n > 0 ? money(n, item.currency, locale) : "";
  }
  return "";
}

/** Who the card is from: system items speak as "System" in the viewer's language. */
function sender(item, t) {
  if (kindOf(item) === "system") return t("card.system");
  const nick = typeof item.nick === "string" && item.nick ? item.nick
    : typeof item.by === "string" && item.by ? item.by : "";
  return nick || "?";
}

const text = (item) => (typeof item.text === "string" ? item.text : "");

function build(item, t, locale, tag = "span") {
  const kind = kindOf(item);
  const card = document.createElement(tag);
  card.className = `card kind-${kind || "paid"}`;
  card.style.setProperty("--card", color(item));
  const nick = document.createElement("span");
  nick.className = "card-nick";
  nick.textContent = sender(item, t);
  card.appendChild(nick);
  const amt = amount(item, t, locale);
  if (amt) {
    const a = document.createElement("span");
    a.className = "card-amount";
    a.textContent = amt;
    card.appendChild(a);
  }
  if (text(item)) {
    const body = document.createElement("span");
    body.className = "card-text";
    body.textContent = text(item);
    card.appendChild(body);
  }
  return card;
}

function summary(item, t, locale) {
  const amt = amount(item, t, locale);
  return `${sender(item, t)}${amt ? ` · ${amt}` : ""}${text(item) ? `: ${text(item)}` : ""}`;
}

export const Cards = Object.freeze({ kindOf, color, amount, build, summary });
