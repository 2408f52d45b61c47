// Leads: a table with search and status filter (the API's own), CSV import
// with upload progress and the line-numbered report, and the CSV export.
import { blob, get, upload, vocab } from './api.js';
import { h, clear, clearErrors, field, select, formError, showErrors, heading, flash, when, table } from './ui.js';

const PAGE = 50;

function report(r) {
  return h('section', { 'aria-label': 'Import report', class: 'card' },
    h('h2', {}, 'Import report'),
    h('dl', { class: 'kv' },
      h('dt', {}, 'Rows read'), h('dd', {}, String(r.rows)),
      h('dt', {}, 'Imported'), h('dd', {}, String(r.imported)),
      h('dt', {}, 'Duplicates skipped'), h('dd', {}, String(r.duplicates)),
      h('dt', {}, 'Failed'), h('dd', {}, String(r.failed))),
    table('Rows that failed', ['Line', 'Field', 'Reason'],
      r.errors.map((e) => [String(e.line), e.field || '—', e.message]), { empty: 'No row failed.' }),
    r.duplicate_rows && r.duplicate_rows.length
      ? table('Duplicate rows', ['Line', 'Field', 'Reason'], r.duplicate_rows.map((e) => [String(e.line), e.field || '—', e.message]))
      : null,
    r.truncated ? h('p', { role: 'alert' }, 'The report was cut at 1,000 entries.') : null);
}

function importForm(campaignId, onDone) {
  const file = h('input', { type: 'file', accept: '.csv,text/csv' });
  const progress = h('progress', { max: 1, value: 0, 'aria-label': 'Upload progress', hidden: true });
  const out = h('div', { 'aria-live': 'polite' });
  const el = h('form', { novalidate: true, class: 'card' }, h('h2', {}, 'Import leads from CSV'), formError(),
    field('CSV file', file, { name: 'file', hint: 'A header row names the columns: email, name, phone, company, source, status, notes; other columns become custom fields.' }),
    progress,
    h('button', { type: 'submit' }, 'Import'), out);
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!file.files[0]) { showErrors(el, { body: { field: 'file', message: 'Choose a CSV file first.' } }); return; }
    const form = new FormData();
    form.append('file', file.files[0]);
    progress.hidden = false;
    progress.value = 0;
    try {
      const { data } = await upload(`/campaigns/${campaignId}/leads/import`, form, (p) => { progress.value = p; });
      clearErrors(el);
      clear(out, report(data));
      flash(`Import finished: ${data.imported} imported, ${data.failed} failed, ${data.duplicates} duplicates.`);
      await onDone();
    } catch (error) { showErrors(el, error); }
  });
  return el;
}

async function exportCsv(campaignId) {
  const file = await blob(`/campaigns/${campaignId}/leads/export`);
  const url = URL.createObjectURL(file);
  const a = h('a', { href: url, download: `leads-${campaignId}.csv`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export async function view(root, campaignId) {
  const [{ data: campaign }, v] = await Promise.all([get(`/campaigns/${campaignId}`), vocab()]);
  const search = h('input', { type: 'search' });
  const status = select(v.lead_statuses, { all: 'All statuses' });
  const results = h('div', {});
  const cursors = [];
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (search.value.trim()) q.set('search', search.value.trim());
    if (status.value) q.set('status', status.value);
    if (cursor) q.set('cursor', cursor);
    const { data } = await get(`/campaigns/${campaignId}/leads?${q}`);
    const pager = h('div', { class: 'pager' },
      cursors.length ? h('button', { type: 'button', onclick: () => { cursor = cursors.pop(); load(); } }, 'Previous page') : null,
      data.next_cursor ? h('button', { type: 'button', onclick: () => { cursors.push(cursor); cursor = data.next_cursor; load(); } }, 'Next page') : null);
    clear(results,
      table('Leads', ['Name', 'Email', 'Phone', 'Company', 'Status', 'Source', 'Created'],
        data.data.map((l) => [l.name || '—', l.email, l.phone || '—', l.company || '—', l.status, l.source || '—', when(l.created_at)]),
        { empty: 'No leads match.' }),
      pager);
  };
  const filters = h('form', { class: 'filters', role: 'search', novalidate: true },
    field('Search leads', search, { name: 'search', hint: 'Name, email or phone' }),
    field('Lead status', status, { name: 'status' }),
    h('button', { type: 'submit' }, 'Filter'));
  const restart = (event) => { if (event) event.preventDefault(); cursors.length = 0; cursor = null; load(); };
  filters.addEventListener('submit', restart);
  status.addEventListener('change', () => restart());
  const exportError = formError();
  clear(root, heading(`Leads: ${campaign.name}`),
    filters, results,
    h('div', { class: 'actions' }, h('button', {
      type: 'button',
      onclick: () => exportCsv(campaignId).catch((e) => { exportError.textContent = e.message; exportError.hidden = false; }),
    }, 'Export CSV'), exportError),
    importForm(campaignId, () => restart()));
  await load();
}
