// Audit: a campaign's history (its own events and its tasks', content's,
// leads' and analytics'), oldest first, as a timeline of who did what and
// what changed, each event shown as a diff against the stream's state before.
import { all, get } from './api.js';
import { h, clear, heading, when } from './ui.js';

/** `{a: {b: 1}, c: [2]}` → `{"a.b": 1, "c": [2]}`: objects flattened, lists kept whole. */
function flatten(value, prefix = '', out = {}) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (!keys.length && prefix) out[prefix] = {};
    for (const k of keys) flatten(value[k], prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out[prefix] = value;
  }
  return out;
}

const show = (v) => (v === undefined ? '(none)' : JSON.stringify(v));

// Creation events carry the fields under `details`, updates under `changes`:
// both are the resource's fields, so they are compared under one name.
const field = (path) => path.replace(/^(details|changes)\./, '');

/** A status change (`{from, to}`) is a change of `status`. */
function normalise(data) {
  const keys = Object.keys(data || {});
  if (keys.includes('from') && keys.includes('to')) {
    const rest = { ...data };
    delete rest.from; delete rest.to;
    return { before: { status: data.from }, data: { ...rest, status: data.to } };
  }
  return { before: null, data };
}

/** The rows of one event's diff, and the stream's state after it. */
function diff(stateBefore, raw) {
  const { before: stated, data } = normalise(raw);
  const state = stated ? { ...stateBefore, ...stated } : stateBefore;
  const after = Object.fromEntries(Object.entries(flatten(data)).map(([k, v]) => [field(k), v]));
  const rows = [];
  for (const [path, value] of Object.entries(after)) {
    const before = state[path];
    if (JSON.stringify(before) === JSON.stringify(value)) continue;
    rows.push([path, before, value]);
  }
  return { rows, state: { ...state, ...after } };
}

function actor(entry) {
  const a = entry.actor || {};
  const name = a.api_key_name || a.api_key_id || 'unknown key';
  return a.api_key_id && a.api_key_name ? `${a.api_key_name} (${a.api_key_id})` : name;
}

export async function view(root, id) {
  const [{ data: campaign }, history, { data: chain }] = await Promise.all([
    get(`/campaigns/${id}`).catch(() => ({ data: { name: 'Deleted campaign' } })),
    all(`/campaigns/${id}/history`),
    get(`/campaigns/${id}/history/verify`),
  ]);
  const states = new Map();
  const items = history.items.map((entry) => {
    const { rows, state } = diff(states.get(entry.stream_id) || {}, entry.data);
    states.set(entry.stream_id, state);
    return h('li', { class: 'event' },
      h('article', { 'aria-label': `${entry.type} at ${when(entry.recorded_at)}` },
        h('h2', {}, entry.type),
        h('p', { class: 'meta' },
          h('time', { datetime: entry.recorded_at }, when(entry.recorded_at)),
          ` · by ${actor(entry)} · ${entry.stream_id} v${entry.version} · position ${entry.position}`),
        rows.length
          ? h('table', { class: 'diff' },
            h('caption', {}, `What ${entry.type} changed`),
            h('thead', {}, h('tr', {}, ['Field', 'Before', 'After'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, rows.map(([path, before, after]) => h('tr', {},
              h('th', { scope: 'row' }, path),
              h('td', {}, h('del', {}, show(before))),
              h('td', {}, h('ins', {}, show(after)))))))
          : h('p', { class: 'meta' }, 'No field changed.')));
  });
  clear(root,
    heading(`Audit trail: ${campaign.name}`),
    chainStatus(chain),
    history.complete ? null : h('p', { role: 'alert' }, 'Only the first 10,000 events are shown.'),
    h('ol', { class: 'timeline', 'aria-label': 'Events, oldest first' }, items));
}

/** The result of re-checking the hash chains of the campaign's streams. */
function chainStatus(chain) {
  const counted = `${chain.events} events in ${chain.streams} streams`;
  return h('section', { 'aria-label': 'Hash-chain check', role: 'status', class: chain.intact ? 'note' : 'alert' },
    chain.intact
      ? h('p', {}, `Hash chains intact: ${counted} re-checked. Digest `, h('code', {}, chain.digest))
      : h('p', {}, `Hash chain broken at ${chain.first_break.stream_id} version ${chain.first_break.version}: `
        + `${chain.first_break.reason} (${counted} re-checked).`));
}
