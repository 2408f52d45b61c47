// Repeatable rows for the lists a form edits (a campaign's channels, KPIs,
// locations): a group with one row per item and Add and Remove buttons. Each
// control is named by the API's path of what it edits
// (`channels[1].budget_allocation`), so `showErrors` puts the API's message
// next to it; each row's labels and its Remove button name the row
// ("Channel 2 Budget allocation", "Remove channel 2"), so a screen reader and
// the browser test tell the rows apart.
import { amount } from './api.js';
import { h, clear, field, group, flash, toLocalInput, fromLocalInput } from './ui.js';

/**
 * How a column's control is made and how its text goes to JSON and back.
 * `undefined` leaves the key out (the API's default, or its "is required").
 */
const KINDS = {
  // Required text goes as typed, even empty: the API's "must not be empty" names it.
  text: { make: () => h('input', { type: 'text' }), toText: (v) => v ?? '', toJson: (t) => t },
  optional: { make: () => h('input', { type: 'text' }), toText: (v) => v ?? '', toJson: (t) => (t.trim() === '' ? undefined : t) },
  amount: { make: () => h('input', { type: 'text', inputmode: 'decimal' }), toText: (v) => (v === null || v === undefined ? '' : String(v)), toJson: amount },
  integer: { make: () => h('input', { type: 'text', inputmode: 'numeric' }), toText: (v) => (v === null || v === undefined ? '' : String(v)), toJson: (t) => (t.trim() === '' ? undefined : (/^\d+$/.test(t.trim()) ? Number(t.trim()) : t)) },
  datetime: { make: () => h('input', { type: 'datetime-local' }), toText: toLocalInput, toJson: (t) => fromLocalInput(t) ?? undefined },
};

export const kind = (name) => KINDS[name];

const capital = (s) => s[0].toUpperCase() + s.slice(1);

/**
 * `columns`: `[{ key, label, kind = 'text', hint }]`, or one column with
 * `key: null` for a list of plain values (locations). `items`: the current
 * list from the API. Returns the group's element and `value()`, the list as
 * the API takes it.
 */
export function repeatable({ path, legend, noun, columns, items = [], hint }) {
  const plain = columns.length === 1 && columns[0].key === null;
  const kindOf = (c) => KINDS[c.kind || 'text'];
  const rowsEl = h('div', { class: 'rows' });
  const add = h('button', { type: 'button', class: 'secondary' }, `Add ${noun}`);
  const element = group(legend, path, hint ? h('p', { class: 'hint' }, hint) : null, rowsEl, add);
  // The rows' text, kept across re-renders: adding or removing a row renumbers
  // every row after it, so all are drawn again from this.
  let texts = (items || []).map((item) => columns.map((c) => kindOf(c).toText(plain ? item : item[c.key])));

  const controlsOf = (row) => [...row.querySelectorAll('[data-column]')];
  const read = () => [...rowsEl.children].map((row) => controlsOf(row).map((c) => c.value));

  const row = (values, i) => {
    const name = `${capital(noun)} ${i + 1}`;
    const remove = h('button', { type: 'button', class: 'secondary', onclick: () => removeAt(i) },
      'Remove', h('span', { class: 'visually-hidden' }, ` ${noun} ${i + 1}`));
    const controls = columns.map((c, j) => {
      const control = kindOf(c).make();
      control.value = values[j];
      control.dataset.column = String(j);
      return control;
    });
    if (plain) {
      return h('div', { class: 'row-inline' }, field(name, controls[0], { name: `${path}[${i}]` }), remove);
    }
    return group(name, `${path}[${i}]`,
      h('div', { class: 'grid' }, columns.map((c, j) => field(c.label, controls[j], {
        name: `${path}[${i}].${c.key}`, context: name, hint: c.hint,
      }))),
      remove);
  };

  const render = (focusRow) => {
    clear(rowsEl, texts.map(row));
    const target = rowsEl.children[focusRow];
    (target ? controlsOf(target)[0] : add).focus();
  };
  const removeAt = (i) => {
    texts = read();
    texts.splice(i, 1);
    render(Math.min(i, texts.length - 1));
    flash(`${capital(noun)} ${i + 1} removed.`);
  };
  add.addEventListener('click', () => {
    texts = read();
    texts.push(columns.map(() => ''));
    render(texts.length - 1);
    flash(`${capital(noun)} ${texts.length} added.`);
  });
  clear(rowsEl, texts.map(row));

  const value = () => read().map((values) => {
    if (plain) return kindOf(columns[0]).toJson(values[0]);
    const item = {};
    columns.forEach((c, j) => {
      const v = kindOf(c).toJson(values[j]);
      if (v !== undefined) item[c.key] = v;
    });
    return item;
  });
  return { element, value };
}
