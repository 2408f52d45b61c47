// The content calendar: a month grid or a week list of a campaign's content
// by `scheduled_date` (UTC), filtered by platform and status, with image
// thumbnails; a form to schedule content with media, and media replacement.
import { all, blob, call, get, vocab } from './api.js';
import {
  h, clear, clearErrors, field, select, formError, showErrors, heading, flash, when, fromLocalInput,
} from './ui.js';

const DAY = 86400000;
const isoDay = (d) => d.toISOString().slice(0, 10);
const monthStart = (ym) => new Date(`${ym}-01T00:00:00Z`);
/** Monday of the ISO week holding `d` (UTC). */
const mondayOf = (d) => new Date(d.getTime() - ((d.getUTCDay() + 6) % 7) * DAY);
const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];

// Thumbnails: the media endpoint needs the Authorization header, which an
// <img src> cannot send, so each image is fetched and shown as a blob: URL
// (revoked when the view is left).
const thumbs = new Map();
function thumbnail(campaignId, item) {
  if (!item.media || !item.media.media_type.startsWith('image/')) return null;
  const img = h('img', { class: 'thumb', alt: `Image of ${item.title}`, width: 48, height: 48 });
  const key = item.media.sha256;
  const show = (url) => { img.src = url; };
  if (thumbs.has(key)) show(thumbs.get(key));
  else {
    blob(`/campaigns/${campaignId}/content/${item.id}/media?sha256=${key}`)
      .then((b) => { const url = URL.createObjectURL(b); thumbs.set(key, url); show(url); })
      .catch(() => { img.alt = `Image of ${item.title} (could not be loaded)`; });
  }
  return img;
}
window.addEventListener('hashchange', () => {
  for (const url of thumbs.values()) URL.revokeObjectURL(url);
  thumbs.clear();
});

function entry(campaignId, item) {
  return h('li', { class: `entry status-${item.status}` },
    thumbnail(campaignId, item),
    h('span', {}, h('strong', {}, item.title),
      h('span', { class: 'meta' }, ` ${item.platform || 'no platform'} · ${item.status} · ${when(item.scheduled_date).slice(11)}`)));
}

function monthGrid(campaignId, ym, items) {
  const first = monthStart(ym);
  const gridStart = mondayOf(first);
  const byDay = Map.groupBy(items, (i) => i.scheduled_date.slice(0, 10));
  const weeks = [];
  for (let w = 0; w < 6; w++) {
    const days = [];
    for (let d = 0; d < 7; d++) {
      const day = new Date(gridStart.getTime() + (w * 7 + d) * DAY);
      const inMonth = day.getUTCMonth() === first.getUTCMonth();
      const list = byDay.get(isoDay(day)) || [];
      days.push(h('td', { class: inMonth ? 'day' : 'day other-month', 'data-date': isoDay(day) },
        h('span', { class: 'date' }, String(day.getUTCDate())),
        list.length ? h('ul', { 'aria-label': `Content on ${isoDay(day)}` }, list.map((i) => entry(campaignId, i))) : null));
    }
    weeks.push(h('tr', {}, days));
    const next = new Date(gridStart.getTime() + (w + 1) * 7 * DAY);
    if (next.getUTCMonth() !== first.getUTCMonth() && next > first) break;
  }
  const title = first.toLocaleString('en', { month: 'long', year: 'numeric', timeZone: 'UTC' });
  return h('table', { class: 'calendar' },
    h('caption', {}, `Content calendar, ${title}`),
    h('thead', {}, h('tr', {}, WEEKDAYS.map((d) => h('th', { scope: 'col' }, d)))),
    h('tbody', {}, weeks));
}

function weekList(campaignId, monday, items) {
  const byDay = Map.groupBy(items, (i) => i.scheduled_date.slice(0, 10));
  return h('section', { 'aria-label': `Week of ${isoDay(monday)}` },
    h('h2', {}, `Week of ${isoDay(monday)}`),
    h('ol', { class: 'week' }, WEEKDAYS.map((name, n) => {
      const day = isoDay(new Date(monday.getTime() + n * DAY));
      const list = byDay.get(day) || [];
      return h('li', {}, h('h3', {}, `${name} ${day}`),
        list.length ? h('ul', {}, list.map((i) => entry(campaignId, i))) : h('p', { class: 'empty' }, 'Nothing scheduled.'));
    })));
}

function createForm(campaignId, v, onCreated) {
  const ctl = {
    title: h('input', { type: 'text' }),
    content_type: h('input', { type: 'text', value: 'social_post' }),
    scheduled_date: h('input', { type: 'datetime-local' }),
    platform: h('input', { type: 'text' }),
    status: select(v.content_statuses, { value: 'scheduled' }),
    content: h('textarea', { rows: 3 }),
    media: h('input', { type: 'file' }),
  };
  const el = h('form', { novalidate: true, class: 'card' }, h('h2', {}, 'Schedule content'), formError(),
    h('div', { class: 'grid' },
      field('Title', ctl.title, { name: 'title' }),
      field('Content type', ctl.content_type, { name: 'content_type' }),
      field('Scheduled date (UTC)', ctl.scheduled_date, { name: 'scheduled_date' }),
      field('Platform', ctl.platform, { name: 'platform' }),
      field('Status', ctl.status, { name: 'status' }),
      field('Media file', ctl.media, { name: 'media' })),
    field('Text', ctl.content, { name: 'content' }),
    h('button', { type: 'submit' }, 'Schedule content'));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData();
    for (const name of ['title', 'content_type', 'platform', 'status', 'content']) {
      if (ctl[name].value !== '') form.append(name, ctl[name].value);
    }
    const date = fromLocalInput(ctl.scheduled_date.value);
    if (date) form.append('scheduled_date', date);
    if (ctl.media.files[0]) form.append('media', ctl.media.files[0]);
    try {
      const { data } = await call('POST', `/campaigns/${campaignId}/content`, { form });
      clearErrors(el);
      flash(`Content “${data.title}” scheduled.`);
      await onCreated(data);
    } catch (error) { showErrors(el, error); }
  });
  return el;
}

function itemsTable(campaignId, items, onChanged) {
  if (!items.length) return h('p', { class: 'empty' }, 'No content yet.');
  return h('table', {},
    h('caption', {}, 'All content of the campaign'),
    h('thead', {}, h('tr', {}, ['Title', 'Scheduled', 'Platform', 'Status', 'Media', 'Replace media'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, items.map((item) => {
      const input = h('input', { type: 'file', 'aria-label': `Replace media of ${item.title}` });
      const error = h('span', { class: 'field-error', role: 'alert' });
      input.addEventListener('change', async () => {
        if (!input.files[0]) return;
        const form = new FormData();
        form.append('media', input.files[0]);
        try {
          const { etag } = await get(`/campaigns/${campaignId}/content/${item.id}`);
          await call('PUT', `/campaigns/${campaignId}/content/${item.id}`, { form, ifMatch: etag });
          flash(`Media of “${item.title}” replaced.`);
          await onChanged();
        } catch (e) { error.textContent = e.message; }
      });
      return h('tr', {},
        h('td', {}, item.title), h('td', {}, when(item.scheduled_date)), h('td', {}, item.platform || '—'),
        h('td', {}, item.status),
        h('td', {}, item.media ? [thumbnail(campaignId, item), ` ${item.media.file_name || ''} (${item.media.media_type})`] : '—'),
        h('td', {}, input, error));
    })));
}

export async function view(root, campaignId, params) {
  const [{ data: campaign }, v] = await Promise.all([get(`/campaigns/${campaignId}`), vocab()]);
  const state = {
    month: params.get('month') || new Date().toISOString().slice(0, 7),
    mode: params.get('mode') || 'month',
    week: null,
    platform: '',
    status: '',
  };
  let items = [];
  const monthInput = h('input', { type: 'month', value: state.month });
  const platform = select([], { all: 'All platforms' });
  const status = select(v.content_statuses, { all: 'All statuses' });
  const modeMonth = h('button', { type: 'button' }, 'Month');
  const modeWeek = h('button', { type: 'button' }, 'Week');
  const prev = h('button', { type: 'button' });
  const next = h('button', { type: 'button' });
  const body = h('div', {});
  const table = h('div', {});

  const draw = () => {
    const shown = items.filter((i) => i.scheduled_date
      && (!state.platform || (i.platform || '').toLowerCase() === state.platform.toLowerCase())
      && (!state.status || i.status === state.status));
    modeMonth.setAttribute('aria-pressed', String(state.mode === 'month'));
    modeWeek.setAttribute('aria-pressed', String(state.mode === 'week'));
    prev.textContent = state.mode === 'month' ? 'Previous month' : 'Previous week';
    next.textContent = state.mode === 'month' ? 'Next month' : 'Next week';
    if (!state.week) state.week = mondayOf(monthStart(state.month));
    clear(body, state.mode === 'month' ? monthGrid(campaignId, state.month, shown) : weekList(campaignId, state.week, shown));
    const unscheduled = items.filter((i) => !i.scheduled_date);
    if (unscheduled.length) body.append(h('p', { class: 'note' }, `${unscheduled.length} item(s) without a scheduled date are listed below.`));
    clear(table, itemsTable(campaignId, items, load));
  };
  const load = async () => {
    ({ items } = await all(`/campaigns/${campaignId}/content`));
    const platforms = [...new Set(items.map((i) => i.platform).filter(Boolean))].sort();
    clear(platform, h('option', { value: '' }, 'All platforms'), platforms.map((p) => h('option', { value: p }, p)));
    platform.value = platforms.includes(state.platform) ? state.platform : '';
    state.platform = platform.value;
    draw();
  };
  const setMonth = (ym) => { state.month = ym; monthInput.value = ym; state.week = null; };
  const step = (n) => {
    if (state.mode === 'month') {
      const d = monthStart(state.month);
      d.setUTCMonth(d.getUTCMonth() + n);
      setMonth(d.toISOString().slice(0, 7));
    } else {
      state.week = new Date(state.week.getTime() + n * 7 * DAY);
      const ym = isoDay(state.week).slice(0, 7);
      state.month = ym; monthInput.value = ym;
    }
    draw();
  };
  monthInput.addEventListener('change', () => { if (monthInput.value) { setMonth(monthInput.value); draw(); } });
  platform.addEventListener('change', () => { state.platform = platform.value; draw(); });
  status.addEventListener('change', () => { state.status = status.value; draw(); });
  modeMonth.addEventListener('click', () => { state.mode = 'month'; draw(); });
  modeWeek.addEventListener('click', () => { state.mode = 'week'; draw(); });
  prev.addEventListener('click', () => step(-1));
  next.addEventListener('click', () => step(1));

  clear(root, heading(`Content calendar: ${campaign.name}`),
    h('div', { class: 'filters' },
      field('Month', monthInput, { name: 'month' }), field('Show platform', platform, { name: 'platform' }),
      field('Show status', status, { name: 'status' }),
      h('div', { class: 'actions', role: 'group', 'aria-label': 'View' }, modeMonth, modeWeek),
      h('div', { class: 'actions' }, prev, next)),
    body, createForm(campaignId, v, async (created) => {
      if (created.scheduled_date) {
        setMonth(created.scheduled_date.slice(0, 7));
        state.week = mondayOf(new Date(created.scheduled_date));
      }
      await load();
    }),
    h('h2', {}, 'All content'), table);
  await load();
}
