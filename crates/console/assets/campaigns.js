// Campaigns: the list (status filter, the API's search, keyset paging), the detail view with
// its status changes, and the create and edit forms.
import { call, get, vocab } from './api.js';
import { h, clear, field, select, formError, heading, flash, money, when, table } from './ui.js';
import { campaignForm } from './campaign-form.js';

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
  if (search) query.set('search', search);
  if (cursor) query.set('cursor', cursor);
  const { data } = await get(`/campaigns?${query}`);

  const statusSelect = select(v.campaign_statuses, { value: status, all: 'All statuses' });
  const searchInput = h('input', { type: 'search', value: search, maxlength: 200 });
  // The pager keeps the search the page was loaded with, not text typed
  // since and not yet searched for.
  const go = (extra = {}, { paging = false } = {}) => {
    const next = new URLSearchParams();
    const term = paging ? search : searchInput.value.trim();
    if (statusSelect.value) next.set('status', statusSelect.value);
    if (term) next.set('search', term);
    for (const [k, val] of Object.entries(extra)) if (val) next.set(k, val);
    location.hash = `#/campaigns?${next}`;
  };
  statusSelect.addEventListener('change', () => go());
  // The API's search (the name contains the text, any case), over every
  // page: a new search starts again from the first page.
  const filters = h('form', { class: 'filters', role: 'search', novalidate: true },
    field('Status', statusSelect, { name: 'status' }),
    field('Search by name', searchInput, { name: 'search' }),
    h('button', { type: 'submit' }, 'Search'));
  filters.addEventListener('submit', (event) => { event.preventDefault(); go(); });
  const rows = h('tbody', {}, data.data.map((c) => h('tr', {},
    h('td', {}, h('a', { href: `#/campaigns/${c.id}` }, c.name)),
    h('td', {}, label(c.type)),
    h('td', {}, h('span', { class: `badge status-${c.status}` }, c.status)),
    h('td', { class: 'num' }, money(c.total_budget, currencyOf(c))),
    h('td', {}, when(c.start_date)),
    h('td', {}, when(c.end_date)))));
  if (!data.data.length) rows.append(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No campaigns match.')));

  const previous = cursors.length || cursor
    ? h('button', { type: 'button', onclick: () => go({ cursor: cursors.at(-1) === '-' ? '' : cursors.at(-1), trail: cursors.slice(0, -1).join(',') }, { paging: true }) }, 'Previous page')
    : null;
  const next = data.next_cursor
    ? h('button', { type: 'button', onclick: () => go({ cursor: data.next_cursor, trail: [...cursors, cursor || '-'].join(',') }, { paging: true }) }, 'Next page')
    : null;

  clear(root,
    h('div', { class: 'title-row' }, heading('Campaigns'), h('a', { class: 'button', href: '#/campaigns/new' }, 'New campaign')),
    filters,
    h('table', {},
      h('caption', {}, 'Campaigns, newest first'),
      h('thead', {}, h('tr', {}, ['Name', 'Type', 'Status', 'Budget', 'Start', 'End'].map((c) => h('th', { scope: 'col' }, c)))),
      rows),
    h('div', { class: 'pager' }, previous, next));
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, val]) => [h('dt', {}, k), h('dd', {}, val)]));
}

const labels = (items) => (items && items.length ? items.join(', ') : '—');

function audienceSection(audience) {
  return h('section', { 'aria-labelledby': 'audience-h' },
    h('h2', { id: 'audience-h' }, 'Target audience'),
    audience ? kv([
      ['Age range', audience.age_range ? `${audience.age_range[0]}–${audience.age_range[1]}` : '—'],
      ['Gender', labels(audience.gender)],
      ['Locations', labels(audience.locations)],
      ['Interests', labels(audience.interests)],
    ]) : h('p', { class: 'empty' }, 'No target audience.'));
}

function goalsSection(goals) {
  return h('section', { 'aria-labelledby': 'goals-h' },
    h('h2', { id: 'goals-h' }, 'Goals'),
    goals ? [
      kv([['Primary goal', goals.primary || '—'], ['Secondary goals', labels(goals.secondary)]]),
      table('Goal KPIs', ['Metric', 'Target', 'Current'],
        (goals.kpis || []).map((k) => [k.metric, String(k.target), String(k.current)]), { empty: 'No goal KPIs.' }),
    ] : h('p', { class: 'empty' }, 'No goals.'));
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
  clear(root,
    h('div', { class: 'title-row' }, heading(c.name), h('span', { class: `badge status-${c.status}` }, c.status)),
    h('p', {}, c.description || ''),
    kv([
      ['Type', label(c.type)],
      ['Schedule', `${when(c.start_date)} – ${when(c.end_date)}`],
      ['Total budget', money(c.total_budget, currency)],
      ['Currency', c.currency || '—'],
      ['Time zone', c.time_zone || 'UTC'],
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
        c.kpis.map((k) => [k.name, String(k.target), String(k.current), k.unit || '—']), { empty: 'No KPIs.' })),
    audienceSection(c.target_audience),
    goalsSection(c.goals),
    h('div', { class: 'actions' },
      h('a', { class: 'button', href: `#/campaigns/${id}/edit` }, 'Edit campaign'),
      h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete campaign')));
}

export async function create(root) {
  const v = await vocab();
  const { element } = campaignForm(v, {}, true, async (body) => {
    const { data } = await call('POST', '/campaigns', { json: body });
    flash(`Campaign “${data.name}” created.`);
    location.hash = `#/campaigns/${data.id}`;
  });
  clear(root, heading('New campaign'), element);
}

export async function edit(root, id) {
  const [{ data: c, etag }, v] = await Promise.all([get(`/campaigns/${id}`), vocab()]);
  const form = campaignForm(v, c, false, async (body, formEl) => {
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
  // The body of the campaign as loaded, to tell what the user changed.
  const original = form.value();
  clear(root, heading(`Edit ${c.name}`), form.element);
}
