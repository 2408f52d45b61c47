// Small DOM helpers shared by the views. Text always goes in as text nodes,
// never as HTML, so nothing the API returns can inject markup.

/** h('button', { type: 'button', onclick }, 'Save') */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'value') el.value = value;
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

let ids = 0;
export const uid = (prefix) => `${prefix}-${++ids}`;

/**
 * A labelled control in a wrapper that can show the API's message for `name`,
 * the API's path of what the control edits (`channels[1].budget_allocation`).
 * `context` is read out before the label but not shown (`Channel 2` + `Name`),
 * for controls whose visible label is only unique within their row.
 */
export function field(label, control, { name, hint, context } = {}) {
  const id = control.id || uid('f');
  control.id = id;
  if (name) control.name = name;
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  const describedBy = [hint ? `${id}-hint` : null, error.id].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', describedBy);
  return h('div', { class: 'field', 'data-field': name || '' },
    h('label', { for: id }, context ? h('span', { class: 'visually-hidden' }, `${context} `) : null, label),
    hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null,
    control, error);
}

/**
 * A group of fields (a fieldset) that can itself show the API's message for
 * `name` (`channels`: the allocations exceed the budget), next to its legend.
 */
export function group(legend, name, ...children) {
  const error = h('p', { class: 'field-error', id: `${uid('g')}-error`, hidden: true });
  return h('fieldset', { class: 'field group', 'data-field': name, 'aria-describedby': error.id },
    h('legend', {}, legend), error, children);
}

export function select(options, { value, all } = {}) {
  const el = h('select', {});
  if (all) el.append(h('option', { value: '' }, all));
  for (const option of options) {
    const [v, text] = Array.isArray(option) ? option : [option, option.replace(/_/g, ' ')];
    el.append(h('option', { value: v, selected: v === value }, text));
  }
  if (value !== undefined) el.value = value;
  return el;
}

/** Clears the field messages of a form. */
export function clearErrors(form) {
  for (const p of form.querySelectorAll('.field-error')) { p.hidden = true; p.textContent = ''; }
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
  const summary = form.querySelector('.form-error');
  if (summary) { summary.hidden = true; summary.textContent = ''; }
}

/** `channels[1].budget_allocation` → `channels[1]` → `channels` → `''`. */
const parentPath = (path) => path.replace(/(\[\d+\]|\.[^.[\]]+|^[^.[\]]+)$/, '');

/**
 * The wrapper of the control that edits `path`, or of the nearest enclosing
 * part that has one: a message about `channels[1].budget_allocation` goes on
 * that input, one about `channels` on the Channels group.
 */
function wrapperOf(form, path) {
  for (let p = String(path || ''); p; p = parentPath(p)) {
    const wrapper = form.querySelector(`.field[data-field="${CSS.escape(p)}"]`);
    if (wrapper) return wrapper;
  }
  return null;
}

/**
 * Shows an API error on a form: each field's message next to its control
 * (`errors[]` of a 400, or its single `field`), the rest in the form's alert.
 */
export function showErrors(form, error) {
  clearErrors(form);
  const list = (error.body && error.body.errors) || (error.body && error.body.field
    ? [{ field: error.body.field, message: error.body.message }] : []);
  const unplaced = [];
  let first;
  for (const e of list) {
    const wrapper = wrapperOf(form, e.field);
    if (!wrapper) { unplaced.push(e.message); continue; }
    const p = wrapper.querySelector(':scope > .field-error');
    p.textContent = p.textContent ? `${p.textContent} ${e.message}` : e.message;
    p.hidden = false;
    // A group is marked as a whole; its message is tied to it by aria-describedby.
    const control = wrapper.matches('fieldset') ? wrapper : wrapper.querySelector(':scope > input, :scope > select, :scope > textarea');
    control.setAttribute('aria-invalid', 'true');
    first = first || (control.matches('fieldset') ? control.querySelector('input, select, textarea, button') : control);
  }
  const summary = form.querySelector('.form-error');
  const text = list.length ? (unplaced.length ? unplaced.join(' ') : 'Please correct the fields marked below.') : error.message;
  summary.textContent = text;
  summary.hidden = false;
  (first || summary).focus();
}

export const formError = () => h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true });

export function flash(message) {
  const el = document.getElementById('flash');
  el.textContent = message;
}

/** An error as an alert in the page. */
export function alertBox(error) {
  return h('p', { class: 'form-error', role: 'alert' }, error.message || String(error));
}

export function money(value, currency) {
  if (value === null || value === undefined) return '—';
  const n = Number(value);
  if (currency) {
    try { return new Intl.NumberFormat('en', { style: 'currency', currency }).format(n); } catch { /* unknown code */ }
  }
  return new Intl.NumberFormat('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(n);
}

export const count = (v) => (v === null || v === undefined ? '—' : new Intl.NumberFormat('en').format(Number(v)));
export const percent = (v) => (v === null || v === undefined ? '—' : `${(Number(v) * 100).toFixed(2)}%`);
export const ratio = (v) => (v === null || v === undefined ? '—' : `${Number(v).toFixed(2)}×`);

/** RFC 3339 in UTC, shown as `2024-06-15 10:00 UTC`. */
export function when(value) {
  if (!value) return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** `<input type=datetime-local>` value (read as UTC) ↔ RFC 3339. */
export const toLocalInput = (value) => (value ? new Date(value).toISOString().slice(0, 16) : '');
export const fromLocalInput = (value) => (value ? `${value}:00Z` : null);

/** Renders a view's heading and focuses it, so keyboard and screen-reader users start there. */
export function heading(text) {
  return h('h1', { tabindex: '-1', id: 'page-title' }, text);
}

export function table(caption, columns, rows, { empty = 'Nothing here yet.' } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))));
}
