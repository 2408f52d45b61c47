// Tasks: a board with one column per status; a task past its due date that
// is not completed or cancelled is marked overdue.
import { all, call, get, vocab } from './api.js';
import {
  h, clear, clearErrors, field, select, formError, showErrors, heading, flash, when, fromLocalInput,
} from './ui.js';

const DONE = new Set(['completed', 'cancelled']);
export const isOverdue = (task, now = Date.now()) => Boolean(task.due_date)
  && !DONE.has(task.status) && new Date(task.due_date).getTime() < now;

function card(campaignId, task, statuses, onChanged) {
  const overdue = isOverdue(task);
  const move = select(statuses, { value: task.status });
  move.setAttribute('aria-label', `Status of ${task.title}`);
  const error = h('span', { class: 'field-error', role: 'alert' });
  move.addEventListener('change', async () => {
    try {
      await call('PUT', `/campaigns/${campaignId}/tasks/${task.id}`, { json: { status: move.value }, ifMatch: `"${task.version}"` });
      flash(`“${task.title}” moved to ${move.value.replace(/_/g, ' ')}.`);
      await onChanged();
    } catch (e) {
      error.textContent = e.status === 412 ? 'Conflict: this task changed meanwhile; the board was reloaded.' : e.message;
      if (e.status === 412) await onChanged();
    }
  });
  return h('li', { class: overdue ? 'task overdue' : 'task', 'aria-label': `${task.title}${overdue ? ' (overdue)' : ''}` },
    h('strong', {}, task.title),
    overdue ? h('span', { class: 'badge overdue-badge' }, 'Overdue') : null,
    task.description ? h('p', {}, task.description) : null,
    h('p', { class: 'meta' }, `Due ${when(task.due_date)}`),
    move, error);
}

function createForm(campaignId, onCreated) {
  const ctl = {
    title: h('input', { type: 'text' }),
    description: h('textarea', { rows: 2 }),
    due_date: h('input', { type: 'datetime-local' }),
  };
  const el = h('form', { novalidate: true, class: 'card' }, h('h2', {}, 'New task'), formError(),
    h('div', { class: 'grid' },
      field('Task title', ctl.title, { name: 'title' }),
      field('Due date (UTC)', ctl.due_date, { name: 'due_date' })),
    field('Task description', ctl.description, { name: 'description' }),
    h('button', { type: 'submit' }, 'Add task'));
  el.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { title: ctl.title.value };
    if (ctl.description.value) body.description = ctl.description.value;
    if (ctl.due_date.value) body.due_date = fromLocalInput(ctl.due_date.value);
    try {
      const { data } = await call('POST', `/campaigns/${campaignId}/tasks`, { json: body });
      clearErrors(el);
      flash(`Task “${data.title}” added.`);
      await onCreated();
    } catch (error) { showErrors(el, error); }
  });
  return el;
}

export async function view(root, campaignId) {
  const [{ data: campaign }, v] = await Promise.all([get(`/campaigns/${campaignId}`), vocab()]);
  const board = h('div', { class: 'board' });
  const load = async () => {
    const { items } = await all(`/campaigns/${campaignId}/tasks`);
    items.sort((a, b) => (a.due_date || '9999').localeCompare(b.due_date || '9999'));
    clear(board, v.task_statuses.map((status) => {
      const list = items.filter((t) => t.status === status);
      const title = status.replace(/_/g, ' ');
      return h('section', { class: 'column', 'aria-label': `${title} (${list.length})` },
        h('h2', {}, `${title} (${list.length})`),
        list.length ? h('ul', {}, list.map((t) => card(campaignId, t, v.task_statuses, load))) : h('p', { class: 'empty' }, 'None.'));
    }));
  };
  clear(root, heading(`Tasks: ${campaign.name}`), board, createForm(campaignId, load));
  await load();
}
