/* Helpers shared by the player (player.js) and the moderation console (console.js).
 *
 * Both pages load this with <script defer> just before their own deferred script: deferred
 * scripts run in document order, so window.DanmakuCommon exists when the page script starts.
 * A separate file rather than inline code because the pages' CSP allows scripts from 'self'
 * only. Constants and pure functions only: nothing runs at load and nothing is kept here.
 */
"use strict";

(() => {
  // The same patterns as danmaku/protocol.py, so the pages refuse what the server would.
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const COLOR_RE = /^#[0-9a-fA-F]{6}$/;

  const $ = (id) => document.getElementById(id);

  /** A JSON value kept in localStorage, or ``fallback`` when it is absent or unreadable
   *  (storage blocked, or a value that is not JSON). */
  function load(key, fallback) {
    try {
      const raw = localStorage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  }

  /** Keep a JSON value in localStorage; null removes the key. */
  function save(key, value) {
    try {
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, JSON.stringify(value));
    } catch { /* private mode or storage full: the value is just not kept */ }
  }

  window.DanmakuCommon = Object.freeze({ ROOM_RE, COLOR_RE, $, load, save });
})();
