// The campaign form, for a new campaign and for an edit: labelled fields for
// every part of the campaign body, with repeatable rows for its lists
// (channels, KPIs, the audience's labels, the goals). Every control is named
// by the API's path of what it edits, so each of the API's field messages
// (`channels[1].budget_allocation`, `target_audience.age_range`) shows next to
// the control or group it names.
import { amount } from './api.js';
import { h, field, group, select, formError, showErrors, toLocalInput, fromLocalInput } from './ui.js';
import { repeatable, kind } from './rows.js';

// Channel type, platform, KPI unit and the audience's labels are free labels
// in the API (any text up to 200 characters), so they are text inputs, not
// selects; the campaign's type and initial status are closed sets, offered
// from the server's vocabulary.
const CHANNEL_COLUMNS = [
  { key: 'name', label: 'Name' },
  { key: 'type', label: 'Type', hint: 'Any label, such as social_media.' },
  { key: 'platform', label: 'Platform', kind: 'optional' },
  { key: 'budget_allocation', label: 'Budget allocation', kind: 'amount' },
  { key: 'start_date', label: 'Start date (UTC)', kind: 'datetime' },
  { key: 'end_date', label: 'End date (UTC)', kind: 'datetime' },
];
const KPI_COLUMNS = [
  { key: 'name', label: 'Name' },
  { key: 'target', label: 'Target', kind: 'amount' },
  { key: 'current', label: 'Current', kind: 'amount', hint: 'Blank: 0.' },
  { key: 'unit', label: 'Unit', kind: 'optional' },
];
const GOAL_KPI_COLUMNS = [
  { key: 'metric', label: 'Metric' },
  { key: 'target', label: 'Target', kind: 'amount' },
  { key: 'current', label: 'Current', kind: 'amount', hint: 'Blank: 0.' },
];
const labels = (path, legend, noun, items) => repeatable({ path, legend, noun, items, columns: [{ key: null }] });

/** Suggestions for the time zone field: the zones this browser knows (the API checks the name). */
function timeZones() {
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return h('datalist', { id: 'time-zones' }, ['UTC', ...zones.filter((z) => z !== 'UTC')].map((z) => h('option', { value: z })));
}

function basics(v, c, isNew) {
  const ctl = {
    name: h('input', { type: 'text', value: c.name || '' }),
    description: h('textarea', { rows: 3 }),
    type: select(v.campaign_types, { value: c.type || 'other' }),
    start_date: h('input', { type: 'datetime-local', value: toLocalInput(c.start_date) }),
    end_date: h('input', { type: 'datetime-local', value: toLocalInput(c.end_date) }),
    total_budget: h('input', { type: 'text', inputmode: 'decimal', value: c.total_budget ?? '' }),
    // A new campaign may leave the currency to the service's default; a
    // campaign always has one, so an edit offers no blank.
    currency: select(v.currencies, { value: c.currency || '', all: isNew ? 'Service default' : undefined }),
    time_zone: h('input', { type: 'text', value: c.time_zone || '', list: 'time-zones', autocomplete: 'off' }),
  };
  ctl.description.value = c.description || '';
  if (isNew) ctl.status = select(v.initial_campaign_statuses, { value: 'draft' });
  const fields = [
    field('Name', ctl.name, { name: 'name' }),
    field('Description', ctl.description, { name: 'description' }),
    field('Type', ctl.type, { name: 'type' }),
    isNew ? field('Initial status', ctl.status, { name: 'status' }) : null,
    field('Start date (UTC)', ctl.start_date, { name: 'start_date' }),
    field('End date (UTC)', ctl.end_date, { name: 'end_date' }),
    field('Total budget', ctl.total_budget, { name: 'total_budget' }),
    field('Currency', ctl.currency, { name: 'currency', hint: 'Of every amount of the campaign.' }),
    field('Time zone', ctl.time_zone, { name: 'time_zone', hint: 'Of its analytics days, such as Europe/Paris. Blank: UTC.' }),
    timeZones(),
  ];
  const value = () => {
    const body = {
      name: ctl.name.value,
      description: ctl.description.value || null,
      type: ctl.type.value,
      start_date: fromLocalInput(ctl.start_date.value),
      end_date: fromLocalInput(ctl.end_date.value),
      total_budget: amount(ctl.total_budget.value) ?? null,
    };
    if (ctl.status) body.status = ctl.status.value;
    // Blank: left out, the API's default (a new campaign) or unchanged (an edit).
    if (ctl.currency.value) body.currency = ctl.currency.value;
    if (ctl.time_zone.value.trim()) body.time_zone = ctl.time_zone.value.trim();
    return body;
  };
  return { element: h('div', { class: 'grid' }, fields), value };
}

function audience(a) {
  const integer = kind('integer');
  const [min, max] = [0, 1].map((i) => {
    const input = integer.make();
    input.value = integer.toText(a.age_range ? a.age_range[i] : null);
    return input;
  });
  const lists = {
    gender: labels('target_audience.gender', 'Gender', 'gender', a.gender),
    locations: labels('target_audience.locations', 'Locations', 'location', a.locations),
    interests: labels('target_audience.interests', 'Interests', 'interest', a.interests),
  };
  const element = group('Target audience', 'target_audience',
    group('Age range', 'target_audience.age_range', h('div', { class: 'grid' },
      field('Minimum age', min, { name: 'target_audience.age_range[0]' }),
      field('Maximum age', max, { name: 'target_audience.age_range[1]' }))),
    h('div', { class: 'grid' }, Object.values(lists).map((l) => l.element)));
  // No age and no labels: no audience (null), as a campaign without one reads.
  const value = () => {
    const body = {};
    if (min.value.trim() || max.value.trim()) body.age_range = [integer.toJson(min.value) ?? null, integer.toJson(max.value) ?? null];
    for (const [key, list] of Object.entries(lists)) body[key] = list.value();
    return body.age_range || Object.keys(lists).some((key) => body[key].length) ? body : null;
  };
  return { element, value };
}

function goals(g) {
  const primary = h('input', { type: 'text', value: g.primary || '' });
  const secondary = labels('goals.secondary', 'Secondary goals', 'secondary goal', g.secondary);
  const kpis = repeatable({ path: 'goals.kpis', legend: 'Goal KPIs', noun: 'goal KPI', columns: GOAL_KPI_COLUMNS, items: g.kpis });
  const element = group('Goals', 'goals',
    field('Primary goal', primary, { name: 'goals.primary' }), secondary.element, kpis.element);
  const value = () => {
    const body = { primary: primary.value.trim() ? primary.value : null, secondary: secondary.value(), kpis: kpis.value() };
    return body.primary !== null || body.secondary.length || body.kpis.length ? body : null;
  };
  return { element, value };
}

/**
 * The form for campaign `c` ({} for a new one). `value()` is the body its
 * controls describe, as the API takes it; `onSubmit(body, form)` sends it,
 * and any API error it throws is shown on the form.
 */
export function campaignForm(v, c, isNew, onSubmit) {
  const parts = {
    basics: basics(v, c, isNew),
    channels: repeatable({ path: 'channels', legend: 'Channels', noun: 'channel', columns: CHANNEL_COLUMNS, items: c.channels }),
    kpis: repeatable({ path: 'kpis', legend: 'KPIs', noun: 'KPI', columns: KPI_COLUMNS, items: c.kpis }),
    audience: audience(c.target_audience || {}),
    goals: goals(c.goals || {}),
  };
  const value = () => ({
    ...parts.basics.value(),
    target_audience: parts.audience.value(),
    goals: parts.goals.value(),
    channels: parts.channels.value(),
    kpis: parts.kpis.value(),
  });
  const element = h('form', { novalidate: true, class: 'card' }, formError(),
    Object.values(parts).map((part) => part.element),
    h('button', { type: 'submit' }, isNew ? 'Create campaign' : 'Save changes'));
  element.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      await onSubmit(value(), element);
    } catch (error) {
      showErrors(element, error);
    }
  });
  return { element, value };
}
