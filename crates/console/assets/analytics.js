// Analytics: a daily chart (Chart.js) of impressions, clicks, conversions,
// cost and revenue over a chosen range and source, the summary tiles, the
// same figures as a table, and a form to track a day's metrics.
import { all, call, get, amount } from './api.js';
import {
  h, clear, clearErrors, field, formError, showErrors, heading, flash, money, count, percent, ratio, table,
} from './ui.js';
import { currencyOf } from './campaigns.js';

// Analytics days are local days in the campaign's time zone (UTC if it has
// none): "today" and the default range are counted there.
const dayIn = (zone, at) => {
  try {
    // en-CA writes dates as YYYY-MM-DD.
    return new Intl.DateTimeFormat('en-CA', { timeZone: zone || 'UTC', year: 'numeric', month: '2-digit', day: '2-digit' }).format(at);
  } catch { return at.toISOString().slice(0, 10); }
};
const today = (zone) => dayIn(zone, new Date());
const daysAgo = (zone, n) => dayIn(zone, new Date(Date.now() - n * 86400000));

function tile(name, value, extra) {
  return h('div', { class: 'tile', role: 'group', 'aria-label': name },
    h('p', { class: 'tile-name' }, name), h('p', { class: 'tile-value' }, value), extra || null);
}

// A range of at most this many days is charted day by day, a day without
// figures as zeros; a longer one only on the days that have figures.
const MAX_FILLED_DAYS = 366;
const zero = () => ({ impressions: 0, clicks: 0, conversions: 0, cost: 0, revenue: 0 });

/** Per-day sums across the rows' sources (the API gives one row per day and source), every day of `start`..`end` if it is short enough. */
function byDay(rows, start, end) {
  const days = new Map();
  const from = Date.parse(`${start}T00:00:00Z`);
  const to = Date.parse(`${end}T00:00:00Z`);
  if (to >= from && (to - from) / 86400000 < MAX_FILLED_DAYS) {
    for (let t = from; t <= to; t += 86400000) days.set(new Date(t).toISOString().slice(0, 10), zero());
  }
  for (const r of rows) {
    const d = days.get(r.date) || zero();
    for (const k of Object.keys(d)) d[k] += Number(r.metrics[k] || 0);
    days.set(r.date, d);
  }
  return [...days.entries()].sort(([a], [b]) => a.localeCompare(b));
}

let chart;

function drawChart(canvas, days) {
  if (chart) { chart.destroy(); chart = null; }
  if (!window.Chart) return;
  const series = (key, label, axis) => ({ label, data: days.map(([, d]) => d[key]), yAxisID: axis, tension: 0.2 });
  chart = new window.Chart(canvas, {
    type: 'line',
    data: {
      labels: days.map(([date]) => date),
      datasets: [
        series('impressions', 'Impressions', 'counts'),
        series('clicks', 'Clicks', 'counts'),
        series('conversions', 'Conversions', 'counts'),
        series('cost', 'Cost', 'money'),
        series('revenue', 'Revenue', 'money'),
      ],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      scales: {
        counts: { type: 'linear', position: 'left', title: { display: true, text: 'count' } },
        money: { type: 'linear', position: 'right', title: { display: true, text: 'money' }, grid: { drawOnChartArea: false } },
      },
    },
  });
}

function trackForm(id, zone, onTracked) {
  const ctl = {
    date: h('input', { type: 'date', value: today(zone) }),
    source: h('input', { type: 'text', value: '' }),
  };
  const metrics = ['impressions', 'clicks', 'conversions', 'cost', 'revenue'];
  for (const m of metrics) ctl[m] = h('input', { type: 'text', inputmode: 'decimal', value: '0' });
  const el = h('form', { novalidate: true, class: 'card' }, h('h2', {}, 'Track a day'), formError(),
    h('div', { class: 'grid' },
      field('Date', ctl.date, { name: 'date' }),
      field('Source', ctl.source, { name: 'source' }),
      metrics.map((m) => field(m[0].toUpperCase() + m.slice(1), ctl[m], { name: `metrics.${m}` }))),
    h('button', { type: 'submit' }, 'Track metrics'));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { date: ctl.date.value, source: ctl.source.value, metrics: {} };
    for (const m of metrics) body.metrics[m] = amount(ctl[m].value) ?? '';
    try {
      await call('POST', `/campaigns/${id}/analytics`, { json: body });
    } catch (error) {
      showErrors(el, error);
      return;
    }
    clearErrors(el);
    flash(`Tracked ${body.source} for ${body.date}.`);
    await onTracked(body.date);
  });
  return el;
}

export async function view(root, id, params) {
  const { data: campaign } = await get(`/campaigns/${id}`);
  const currency = currencyOf(campaign);
  const zone = campaign.time_zone;
  const start = h('input', { type: 'date', value: params.get('start') || daysAgo(zone, 29) });
  const end = h('input', { type: 'date', value: params.get('end') || today(zone) });
  const source = h('input', { type: 'text', value: params.get('source') || '' });
  const rangeForm = h('form', { class: 'filters', novalidate: true, 'aria-label': 'Range' }, formError(),
    field('From', start, { name: 'start_date', hint: `Days in ${zone || 'UTC'}, the campaign's time zone.` }), field('To', end, { name: 'end_date' }),
    field('Source (blank: all)', source, { name: 'source' }),
    h('button', { type: 'submit' }, 'Show'));
  const tiles = h('div', { class: 'tiles', 'aria-live': 'polite' });
  const canvas = h('canvas', { role: 'img', 'aria-label': 'Daily impressions, clicks, conversions, cost and revenue' });
  const figures = h('div', {});

  const refresh = async () => {
    const q = new URLSearchParams({ start_date: start.value, end_date: end.value });
    if (source.value.trim()) q.set('source', source.value.trim());
    let rows; let summary; let lifetime;
    try {
      [rows, { data: summary }, { data: lifetime }] = await Promise.all([
        all(`/campaigns/${id}/analytics?${q}`),
        get(`/campaigns/${id}/analytics/summary?${q}`),
        get(`/campaigns/${id}/analytics/summary`),
      ]);
    } catch (error) { showErrors(rangeForm, error); return; }
    clearErrors(rangeForm);
    const m = summary.metrics; const d = summary.derived; const b = lifetime.budget;
    const spent = b.total_budget === null ? `${money(b.spent, currency)} (no budget set)`
      : `${money(b.spent, currency)} of ${money(b.total_budget, currency)}`;
    const meter = b.spent_ratio === null ? null
      : h('meter', { min: 0, max: 1, value: Math.min(Number(b.spent_ratio), 1), 'aria-label': 'Budget spent' });
    clear(tiles,
      tile('Impressions', count(m.impressions)), tile('Clicks', count(m.clicks)),
      tile('Conversions', count(m.conversions)), tile('Cost', money(m.cost, currency)),
      tile('Revenue', money(m.revenue, currency)),
      tile('CTR', percent(d.ctr)), tile('CPC', money(d.cpc, currency)), tile('CPA', money(d.cpa, currency)),
      tile('ROAS', ratio(d.roas)),
      tile('Budget spent (all time)', spent, meter));
    const days = byDay(rows.items, start.value, end.value);
    drawChart(canvas, days);
    // The table lists the days that have figures; the chart shows the range.
    clear(figures, table('Daily figures', ['Date', 'Impressions', 'Clicks', 'Conversions', 'Cost', 'Revenue'],
      byDay(rows.items, '', '').map(([date, v]) => [date, count(v.impressions), count(v.clicks), count(v.conversions), money(v.cost, currency), money(v.revenue, currency)]),
      { empty: 'No analytics in this range.' }));
  };
  rangeForm.addEventListener('submit', (event) => { event.preventDefault(); refresh(); });

  clear(root, heading(`Analytics: ${campaign.name}`), rangeForm, tiles,
    h('div', { class: 'chart' }, canvas), figures,
    trackForm(id, zone, async (date) => {
      if (date < start.value) start.value = date;
      if (date > end.value) end.value = date;
      await refresh();
    }));
  await refresh();
}
