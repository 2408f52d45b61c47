// Campaigns: the list (status filter, search, paging), the detail view with
// its status changes, and the create and edit forms.
import { call, get, vocab, literal, ApiError } from './api.js';
import {
  h, clear, field, select, formError, showErrors, heading, flash, money, when, table,
  toLocalInput, fromLocalInput,
} from './ui.js';

const PAGE = 20;
const label = (s) => s.replace(/_/g, ' ');

/** The campaign's currency where the API gives one (else plain numbers). */
export const currencyOf = (campaign) => campaign.currency || null;

export async function list(root, params) {
  const v = await vocab();
  const status = params.get('status') || '';
  const search = params.get('search') || '';
  // Keyset paging: the cursors of the pages before this one, to go back.
  const cursors = (params.get('trail') || '').split(',').filter(Boolean);
  const cursor = params.get('cursor') || '';
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (status) query.set('status', status);
  if (cursor) query.set('cursor', cursor);
  const { data } = await get(`/campaigns?${query}`);

  const statusSelect = select(v.campaign_statuses, { value: status, all: 'All statuses' });
  const searchInput = h('input', { type: 'search', value: search });
  const go = (extra = {}) => {
    const next = new URLSearchParams();
    if (statusSelect.value) next.set('status', statusSelect.value);
    if (searchInput.value) next.set('search', searchInput.value);
    for (const [k, val] of Object.entries(extra)) if (val) next.set(k, val);
    location.hash = `#/campaigns?${next}`;
  };
  statusSelect.addEventListener('change', () => go());
  // The API has no campaign search: the search filters the page shown, by
  // name and description, as the user types.
  const rows = h('tbody', {});
  const render = () => {
    const needle = searchInput.value.trim().toLowerCase();
    const shown = data.data.filter((c) => !needle
      || c.name.toLowerCase().includes(needle)
      || (c.description || '').toLowerCase().includes(needle));
    clear(rows, shown.map((c) => h('tr', {},
      h('td', {}, h('a', { href: `#/campaigns/${c.id}` }, c.name)),
      h('td', {}, label(c.type)),
      h('td', {}, h('span', { class: `badge status-${c.status}` }, c.status)),
      h('td', { class: 'num' }, money(c.total_budget, currencyOf(c))),
      h('td', {}, when(c.start_date)),
      h('td', {}, when(c.end_date)))));
    if (!shown.length) rows.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No campaigns match.')));
  };
  searchInput.addEventListener('input', render);
  render();

  const previous = cursors.length || cursor
    ? h('button', { type: 'button', onclick: () => go({ cursor: cursors.at(-1) === '-' ? '' : cursors.at(-1), trail: cursors.slice(0, -1).join(',') }) }, 'Previous page')
    : null;
  const next = data.next_cursor
    ? h('button', { type: 'button', onclick: () => go({ cursor: data.next_cursor, trail: [...cursors, cursor || '-'].join(',') }) }, 'Next page')
    : null;

  clear(root,
    h('div', { class: 'title-row' }, heading('Campaigns'), h('a', { class: 'button', href: '#/campaigns/new' }, 'New campaign')),
    h('div', { class: 'filters', role: 'search' },
      field('Status', statusSelect, { name: 'status' }),
      field('Search this page', searchInput, { name: 'search' })),
    h('table', {},
      h('caption', {}, 'Campaigns, newest first'),
      h('thead', {}, h('tr', {}, ['Name', 'Type', 'Status', 'Budget', 'Start', 'End'].map((c) => h('th', { scope: 'col' }, c)))),
      rows),
    h('div', { class: 'pager' }, previous, next));
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, val]) => [h('dt', {}, k), h('dd', {}, val)]));
}

export async function detail(root, id) {
  const [{ data: c, etag }, v] = await Promise.all([get(`/campaigns/${id}`), vocab()]);
  const currency = currencyOf(c);
  const allowed = v.campaign_transitions[c.status] || [];
  const statusError = formError();
  const changeTo = async (to) => {
    try {
      await call('PATCH', `/campaigns/${id}/status`, { json: { status: to }, ifMatch: etag });
      flash(`Status changed to ${to}.`);
      await detail(root, id);
      root.querySelector('h1').focus();
    } catch (error) {
      statusError.textContent = error.status === 412
        ? 'Conflict: the campaign changed since this page was loaded. Reload to see its current status.'
        : error.message;
      statusError.hidden = false;
      statusError.focus();
    }
  };
  const remove = async () => {
    // eslint-disable-next-line no-alert
    if (!window.confirm(`Delete the campaign “${c.name}”? Its history stays in the audit log.`)) return;
    await call('DELETE', `/campaigns/${id}`, { ifMatch: etag });
    flash('Campaign deleted.');
    location.hash = '#/campaigns';
  };
  const goals = c.goals || {};
  clear(root,
    h('div', { class: 'title-row' }, heading(c.name), h('span', { class: `badge status-${c.status}` }, c.status)),
    h('p', {}, c.description || ''),
    kv([
      ['Type', label(c.type)],
      ['Schedule', `${when(c.start_date)} – ${when(c.end_date)}`],
      ['Total budget', money(c.total_budget, currency)],
      ['Version', String(c.version)],
      ['Created', when(c.created_at)],
      ['Updated', when(c.updated_at)],
    ]),
    h('section', { 'aria-labelledby': 'status-h' },
      h('h2', { id: 'status-h' }, 'Status'),
      statusError,
      allowed.length
        ? h('div', { class: 'actions', role: 'group', 'aria-label': 'Change status' },
          allowed.map((to) => h('button', { type: 'button', onclick: () => changeTo(to) }, `Change status to ${to}`)))
        : h('p', {}, `${c.status} is final: no further status changes.`)),
    h('section', { 'aria-labelledby': 'channels-h' },
      h('h2', { id: 'channels-h' }, 'Channels'),
      table('Channels', ['Name', 'Type', 'Platform', 'Budget allocation', 'Start', 'End'],
        c.channels.map((ch) => [ch.name, ch.type, ch.platform || '—', money(ch.budget_allocation, currency), when(ch.start_date), when(ch.end_date)]),
        { empty: 'No channels.' })),
    h('section', { 'aria-labelledby': 'kpis-h' },
      h('h2', { id: 'kpis-h' }, 'KPIs'),
      table('KPIs', ['Name', 'Target', 'Current', 'Unit'],
        c.kpis.map((k) => [k.name, String(k.target), String(k.current), k.unit || '—']), { empty: 'No KPIs.' }),
      goals.primary ? h('p', {}, `Primary goal: ${goals.primary}`) : null),
    h('div', { class: 'actions' },
      h('a', { class: 'button', href: `#/campaigns/${id}/edit` }, 'Edit campaign'),
      h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete campaign')));
}

const JSON_FIELDS = [
  ['channels', 'Channels (JSON list)', '[{"name": "Facebook Ads", "type": "social_media", "platform": "facebook", "budget_allocation": 5000}]', []],
  ['kpis', 'KPIs (JSON list)', '[{"name": "Conversions", "target": 1000, "current": 0, "unit": "count"}]', []],
  ['target_audience', 'Target audience (JSON)', '{"age_range": [25, 45], "locations": ["US"]}', null],
  ['goals', 'Goals (JSON)', '{"primary": "Increase sales by 30%"}', null],
];

/** The form's controls, filled from `c` (a campaign, or {} for a new one). */
function controls(v, c, isNew) {
  const ctl = {
    name: h('input', { type: 'text', value: c.name || '' }),
    description: h('textarea', { rows: 3 }),
    type: select(v.campaign_types, { value: c.type || 'other' }),
    start_date: h('input', { type: 'datetime-local', value: toLocalInput(c.start_date) }),
    end_date: h('input', { type: 'datetime-local', value: toLocalInput(c.end_date) }),
    total_budget: h('input', { type: 'text', inputmode: 'decimal', value: c.total_budget ?? '' }),
  };
  ctl.description.value = c.description || '';
  if (isNew) ctl.status = select(v.initial_campaign_statuses, { value: 'draft' });
  for (const [name, , placeholder, empty] of JSON_FIELDS) {
    ctl[name] = h('textarea', { rows: 3, placeholder, class: 'code' });
    const current = c[name];
    const isEmpty = current === undefined || current === null || (Array.isArray(current) && !current.length);
    ctl[name].value = isEmpty ? '' : JSON.stringify(current, null, 1);
    ctl[name].dataset.empty = JSON.stringify(empty);
  }
  return ctl;
}

/** The body the controls describe; a JSON textarea that does not parse is reported on its field. */
function bodyOf(ctl) {
  const body = {
    name: ctl.name.value,
    description: ctl.description.value || null,
    type: ctl.type.value,
    start_date: fromLocalInput(ctl.start_date.value),
    end_date: fromLocalInput(ctl.end_date.value),
  };
  const budget = ctl.total_budget.value.trim();
  // A number goes out as typed; anything else as text, for the API to name.
  body.total_budget = budget === '' ? null : (/^-?\d+(\.\d+)?$/.test(budget) ? literal(budget) : budget);
  if (ctl.status) body.status = ctl.status.value;
  const errors = [];
  for (const [name] of JSON_FIELDS) {
    const text = ctl[name].value.trim();
    if (!text) { body[name] = JSON.parse(ctl[name].dataset.empty); continue; }
    try { body[name] = JSON.parse(text); } catch { errors.push({ field: name, message: `${name} is not valid JSON.` }); }
  }
  if (errors.length) throw new ApiError(400, { message: errors[0].message, errors });
  return body;
}

function form(v, c, isNew, onSubmit) {
  const ctl = controls(v, c, isNew);
  const fields = [
    field('Name', ctl.name, { name: 'name' }),
    field('Description', ctl.description, { name: 'description' }),
    field('Type', ctl.type, { name: 'type' }),
    isNew ? field('Initial status', ctl.status, { name: 'status' }) : null,
    field('Start date (UTC)', ctl.start_date, { name: 'start_date' }),
    field('End date (UTC)', ctl.end_date, { name: 'end_date' }),
    field('Total budget', ctl.total_budget, { name: 'total_budget' }),
    JSON_FIELDS.map(([name, text]) => field(text, ctl[name], { name })),
  ];
  const el = h('form', { novalidate: true, class: 'card' }, formError(), fields,
    h('button', { type: 'submit' }, isNew ? 'Create campaign' : 'Save changes'));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await onSubmit(bodyOf(ctl), el);
    } catch (error) {
      showErrors(el, error);
    }
  });
  return el;
}

export async function create(root) {
  const v = await vocab();
  clear(root, heading('New campaign'), form(v, {}, true, async (body) => {
    const { data } = await call('POST', '/campaigns', { json: body });
    flash(`Campaign “${data.name}” created.`);
    location.hash = `#/campaigns/${data.id}`;
  }));
}

export async function edit(root, id) {
  const [{ data: c, etag }, v] = await Promise.all([get(`/campaigns/${id}`), vocab()]);
  const original = bodyOf(controls(v, c, false));
  const el = form(v, c, false, async (body, formEl) => {
    // Only what the user changed is sent, with the version the form was
    // loaded at: a stale form is a conflict (412), never an overwrite.
    const changes = Object.fromEntries(Object.entries(body)
      .filter(([k, val]) => JSON.stringify(val) !== JSON.stringify(original[k])));
    try {
      await call('PUT', `/campaigns/${id}`, { json: changes, ifMatch: etag });
    } catch (error) {
      if (error.status !== 412) throw error;
      const reload = h('button', { type: 'button', onclick: () => edit(root, id) }, 'Reload the current version');
      const summary = formEl.querySelector('.form-error');
      clear(summary, 'Conflict: this campaign was changed by someone else since you opened it. Your changes were not saved. ', reload);
      summary.hidden = false;
      summary.focus();
      return;
    }
    flash('Changes saved.');
    location.hash = `#/campaigns/${id}`;
  });
  clear(root, heading(`Edit ${c.name}`), el);
}
