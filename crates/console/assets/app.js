// The console's shell: sign-in, sign-out and the hash router that picks a view.
import { session, get, whenUnauthorized, ApiError } from './api.js';
import { h, clear, field, formError, showErrors, heading, flash } from './ui.js';
import * as campaigns from './campaigns.js';
import * as audit from './audit.js';
import * as analytics from './analytics.js';
import * as content from './content.js';
import * as tasks from './tasks.js';
import * as leads from './leads.js';

const main = document.getElementById('main');
const nav = document.getElementById('main-nav');
const signOutButton = document.getElementById('sign-out');

// Views under one campaign: `#/campaigns/<id>/<tab>`.
const TABS = [
  ['', 'Overview', campaigns.detail],
  ['edit', null, campaigns.edit],
  ['content', 'Content calendar', content.view],
  ['tasks', 'Tasks', tasks.view],
  ['analytics', 'Analytics', analytics.view],
  ['leads', 'Leads', leads.view],
  ['audit', 'Audit', audit.view],
];

function signedIn(yes) {
  nav.hidden = !yes;
  signOutButton.hidden = !yes;
}

function signInView() {
  signedIn(false);
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { novalidate: true, class: 'card narrow' },
    formError(),
    field('API key', input, { name: 'key', hint: 'Kept in this tab only, until you sign out or close it.' }),
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    session.signIn(key);
    try {
      // Any authenticated read tells whether the key is valid.
      await get('/campaigns?limit=1');
      flash('Signed in.');
      if (!location.hash || location.hash === '#/signin') location.hash = '#/campaigns';
      else route();
    } catch (error) {
      session.signOut();
      showErrors(form, error.status === 401 ? new ApiError(401, { field: 'key', message: error.message }) : error);
    }
  });
  clear(main, heading('Sign in'), form);
  input.focus();
}

function signOut() {
  session.signOut();
  flash('Signed out. The key was forgotten.');
  location.hash = '#/signin';
  signInView();
}

function tabs(id, current) {
  return h('nav', { 'aria-label': 'Campaign', class: 'tabs' },
    TABS.filter(([, label]) => label).map(([tab, label]) => h('a', {
      href: `#/campaigns/${id}${tab ? `/${tab}` : ''}`,
      'aria-current': tab === current ? 'page' : null,
    }, label)));
}

// On the first load focus stays at the top of the page, so the first Tab
// reaches the skip link; after that each view change moves focus to the new
// view's heading.
async function route({ initial = false } = {}) {
  if (!session.key()) return signInView();
  signedIn(true);
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean);
  const container = h('div', {});
  clear(main, container);
  try {
    if (parts[0] !== 'campaigns' || parts.length === 1) {
      await campaigns.list(container, params);
    } else if (parts[1] === 'new') {
      await campaigns.create(container);
    } else {
      const [id, tab = ''] = parts.slice(1);
      const entry = TABS.find(([name]) => name === tab);
      if (!entry) throw new Error(`No such view: ${tab}`);
      const view = h('div', {});
      clear(container, tabs(id, tab), view);
      await entry[2](view, id, params);
    }
  } catch (error) {
    container.append(h('p', { class: 'form-error', role: 'alert' }, error.message || String(error)));
  }
  const title = main.querySelector('h1');
  if (title) {
    document.title = `${title.textContent} · Marketing console`;
    if (!initial) title.focus();
  }
}

whenUnauthorized(() => { session.signOut(); flash('The API key was refused; sign in again.'); });
signOutButton.addEventListener('click', signOut);
// The skip link moves focus into the view. Followed as a link, its `#main`
// would be read as a route by the hash router and leave the view.
document.getElementById('skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener('hashchange', () => route());
route({ initial: true });
