// End-to-end test of the web console in headless Chromium, driven by
// Playwright (playwright-core with Debian's chromium). Run by
// deploy/local/console-test.sh, which starts `marketing serve` on a fresh
// database and passes:
//   CONSOLE_BASE   http://127.0.0.1:PORT
//   KEY_A, KEY_B   API keys of two projects
//   CHROMIUM       the browser binary
//   SHOTS          where screenshots go (docs/console to refresh the committed ones)
// Every wait is on a condition (a selector, a response, a download), never a
// sleep. Controls are found by role and accessible name, as a user finds them.
'use strict';
const { chromium } = require('playwright-core');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

const BASE = process.env.CONSOLE_BASE;
const API = `${BASE}/v1/dev/marketing`;
const { KEY_A, KEY_B } = process.env;
const SHOTS = process.env.SHOTS;
// Per wait: generous, for a machine shared with other builds; every wait is
// on a condition and ends as soon as it holds, so this costs nothing when quiet.
const TIMEOUT = 60_000;
fs.mkdirSync(SHOTS, { recursive: true });

// --- helpers -------------------------------------------------------------------
async function api(method, url, { key = KEY_A, json, headers = {} } = {}) {
  const h = { Authorization: `Bearer ${key}`, ...headers };
  if (json) h['Content-Type'] = 'application/json';
  const res = await fetch(API + url, { method, headers: h, body: json ? JSON.stringify(json) : undefined });
  const text = await res.text();
  return { status: res.status, etag: res.headers.get('etag'), body: text ? JSON.parse(text) : null };
}

/** A solid-colour PNG of w×h pixels (so two uploads differ by content). */
function png(w, h, [r, g, b]) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => { let c = 0xffffffff; for (const x of buf) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: w }, () => [r, g, b]).flat())]);
  const raw = Buffer.concat(Array.from({ length: h }, () => row));
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const steps = [];
let page;
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
  } catch (error) {
    if (page) await page.screenshot({ path: path.join(SHOTS, `FAILED-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
    console.error(`FAIL ${name}: ${error.stack || error}`);
    throw error;
  }
  steps.push(name);
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}
const shot = (name, { fullPage = true } = {}) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
const heading = (name) => page.getByRole('heading', { level: 1, name }).waitFor();
/** The message shown next to the field labelled `label`. */
const fieldError = (label) => page.locator('.field')
  .filter({ has: page.locator('label').getByText(label, { exact: true }) }).locator('.field-error');
/** The element holding the message the API gave for `control` (a field or a group): the one its aria-describedby names. */
async function errorOf(control) {
  const ids = (await control.getAttribute('aria-describedby') || '').split(' ');
  const id = ids.find((i) => i.endsWith('-error'));
  assert.ok(id, 'the control is described by an error message element');
  return page.locator(`[id="${id}"]`);
}
const isFocused = (locator) => locator.evaluate((el) => el === document.activeElement);
/** Whether the focused element shows a focus indicator (an outline). */
const focusShown = () => page.evaluate(() => {
  const style = getComputedStyle(document.activeElement);
  return style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
});
const focusStyle = () => page.evaluate(() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return `${style.outlineStyle} ${style.outlineWidth} :focus=${el.matches(':focus')} :focus-visible=${el.matches(':focus-visible')}`;
});
/**
 * Presses Tab until `target` has the focus, at most `max` times; every element
 * passed on the way must show its focus. Records them in `window.tabbed`.
 */
async function tabTo(target, max = 40) {
  await page.evaluate(() => { window.tabbed = window.tabbed || new Set(); });
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    const stop = await page.evaluate(() => {
      window.tabbed.add(document.activeElement);
      const el = document.activeElement;
      return `${el.tagName.toLowerCase()}#${el.id} ${el.getAttribute('aria-label') || el.labels?.[0]?.textContent || el.textContent}`;
    });
    assert.equal(await focusShown(), true, `no visible focus on ${stop}: ${await focusStyle()}`);
    if (await isFocused(target)) return;
  }
  throw new Error(`Tab did not reach the target in ${max} presses`);
}
const apiResponse = (method, pattern) => page.waitForResponse((r) => r.request().method() === method && pattern.test(r.url()));

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    // Playwright gives each launch a fresh temporary profile (--user-data-dir).
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  context.setDefaultTimeout(TIMEOUT);
  page = await context.newPage();
  // Any script error or CSP violation fails the run.
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 4\d\d/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  let campaignId;

  try {
    await step('the console is served with a strict policy, and asks for a key', async () => {
      const res = await page.goto(`${BASE}/console`);
      assert.equal(res.status(), 200);
      const csp = res.headers()['content-security-policy'];
      assert.match(csp, /script-src 'self'(;|$)/);
      assert.match(csp, /default-src 'none'/);
      await heading('Sign in');
      // Keyboard: the key field has the focus, ready to type.
      assert.equal(await page.evaluate(() => document.activeElement.id), await page.getByLabel('API key').getAttribute('id'));
      await shot('sign-in');
    });

    await step('a wrong key is refused next to the field', async () => {
      await page.getByLabel('API key').fill('mk_not_a_key');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await fieldError('API key').filter({ hasText: 'Invalid or missing API key' }).waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    });

    await step('sign in with the keyboard; the key is kept in sessionStorage only', async () => {
      await page.getByLabel('API key').fill(KEY_A);
      await page.getByLabel('API key').press('Enter');
      await heading('Campaigns');
      const stored = await page.evaluate(() => ({ session: Object.values(sessionStorage), local: localStorage.length, cookie: document.cookie }));
      assert.deepEqual(stored, { session: [KEY_A], local: 0, cookie: '' });
    });

    await step('keyboard: the skip link comes first, is shown, and leads into the view', async () => {
      // A fresh load leaves the focus at the top of the page.
      await page.goto(`${BASE}/console#/campaigns/new`);
      await page.reload();
      await heading('New campaign');
      const skip = page.getByRole('link', { name: 'Skip to main content' });
      await page.keyboard.press('Tab');
      assert.equal(await isFocused(skip), true, 'the first Tab reaches the skip link');
      const box = await skip.boundingBox();
      assert.ok(box && box.x >= 0 && box.y >= 0 && box.width > 0, `the focused skip link is on screen: ${JSON.stringify(box)}`);
      assert.equal(await focusShown(), true, 'the skip link shows its focus');
      await shot('keyboard-skip-link', { fullPage: false });
      await page.keyboard.press('Enter');
      assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
      assert.equal(await page.evaluate(() => location.hash), '#/campaigns/new', 'the skip link does not leave the view');
      await page.keyboard.press('Tab');
      assert.equal(await isFocused(page.getByLabel('Name', { exact: true })), true, 'the next Tab is the form\'s first field');
    });

    await step('create a campaign with channels and KPIs in the form, partly by keyboard: the API\'s messages next to their fields, then success', async () => {
      // By keyboard only, from the Name field the previous step focused.
      await page.keyboard.type('Summer Sale');
      await page.keyboard.press('Tab');
      await page.keyboard.type('Promotional campaign for summer products');
      await page.keyboard.press('Tab');
      assert.equal(await isFocused(page.getByLabel('Type', { exact: true })), true);
      await page.keyboard.press('s'); // a select's type-ahead: the first type with an s
      assert.equal(await page.getByLabel('Type', { exact: true }).inputValue(), 'sales');
      await tabTo(page.getByRole('button', { name: 'Add channel', exact: true }));
      await page.keyboard.press('Enter');
      // The new row's first field has the focus.
      assert.equal(await isFocused(page.getByLabel('Channel 1 Name', { exact: true })), true);
      await page.keyboard.type('Facebook Ads');
      await page.keyboard.press('Tab');
      assert.equal(await isFocused(page.getByLabel('Channel 1 Type', { exact: true })), true);
      await page.keyboard.type('social_media');
      await page.keyboard.press('Tab');
      await page.keyboard.type('facebook');
      await page.keyboard.press('Tab');
      assert.equal(await isFocused(page.getByLabel('Channel 1 Budget allocation', { exact: true })), true);
      await page.keyboard.type('5000.00');

      // The rest with the mouse and fill.
      await page.getByLabel('Start date (UTC)', { exact: true }).fill('2024-06-01T00:00');
      await page.getByLabel('End date (UTC)', { exact: true }).fill('2024-05-01T00:00');
      await page.getByLabel('Total budget').fill('1000.00');
      await page.getByLabel('Currency', { exact: true }).selectOption('EUR');
      await page.getByLabel('Channel 1 Start date (UTC)', { exact: true }).fill('2024-06-01T00:00');
      const addChannel = page.getByRole('button', { name: 'Add channel', exact: true });
      await addChannel.click();
      await page.getByLabel('Channel 2 Name', { exact: true }).fill('Newsletter');
      await page.getByLabel('Channel 2 Type', { exact: true }).fill('email');
      await addChannel.click();
      await page.getByLabel('Channel 3 Name', { exact: true }).fill('Google Search');
      await page.getByLabel('Channel 3 Type', { exact: true }).fill('search');
      await page.getByLabel('Channel 3 Platform', { exact: true }).fill('google');
      await page.getByLabel('Channel 3 Budget allocation', { exact: true }).fill('-50');
      // Removing a row renumbers the rows after it, with what was typed in them.
      await page.getByRole('button', { name: 'Remove channel 2', exact: true }).click();
      assert.equal(await page.getByLabel('Channel 2 Name', { exact: true }).inputValue(), 'Google Search');
      assert.equal(await page.getByLabel('Channel 3 Name', { exact: true }).count(), 0);
      assert.equal(await isFocused(page.getByLabel('Channel 2 Name', { exact: true })), true, 'focus moves to the row that took its place');
      await page.getByRole('button', { name: 'Add KPI', exact: true }).click();
      await page.getByLabel('KPI 1 Name', { exact: true }).fill('Conversions');
      await page.getByLabel('KPI 1 Target', { exact: true }).fill('1000');
      await page.getByLabel('KPI 1 Unit', { exact: true }).fill('count');
      await page.getByLabel('Minimum age').fill('45');
      await page.getByLabel('Maximum age').fill('25');
      await page.getByRole('button', { name: 'Add location', exact: true }).click();
      await page.getByLabel('Location 1', { exact: true }).fill('US');
      await page.getByRole('button', { name: 'Add location', exact: true }).click();
      await page.getByLabel('Location 2', { exact: true }).fill('CA');
      await page.getByRole('button', { name: 'Add interest', exact: true }).click();
      await page.getByLabel('Interest 1', { exact: true }).fill('shopping');
      await page.getByLabel('Primary goal').fill('Increase sales by 30%');
      await page.getByRole('button', { name: 'Add goal KPI', exact: true }).click();
      await page.getByLabel('Goal KPI 1 Metric', { exact: true }).fill('conversions');
      await page.getByLabel('Goal KPI 1 Target', { exact: true }).fill('1000');

      // Every control of the form is reachable by Tab and shows its focus.
      await page.locator('#main').focus();
      await tabTo(page.getByRole('button', { name: 'Create campaign' }), 200);
      const missed = await page.evaluate(() => [...document.querySelectorAll('main form :is(input, select, textarea, button)')]
        .filter((el) => !window.tabbed.has(el)).map((el) => el.id || el.textContent));
      assert.deepEqual(missed, [], 'controls Tab never reached');

      const refused = apiResponse('POST', /\/campaigns$/);
      await page.keyboard.press('Enter'); // on Create campaign
      assert.equal((await refused).status(), 400);
      // Each message next to what it names: a field, a row's field, a group.
      await (await errorOf(page.getByLabel('End date (UTC)', { exact: true }))).filter({ hasText: 'end_date must be after start_date' }).waitFor();
      const allocation = page.getByLabel('Channel 2 Budget allocation', { exact: true });
      await (await errorOf(allocation)).filter({ hasText: 'channels[1].budget_allocation must not be negative' }).waitFor();
      assert.equal(await allocation.getAttribute('aria-invalid'), 'true');
      const channels = page.getByRole('group', { name: 'Channels', exact: true });
      await (await errorOf(channels)).filter({ hasText: 'exceed total_budget' }).waitFor();
      await (await errorOf(page.getByRole('group', { name: 'Age range', exact: true }))).filter({ hasText: 'min <= max' }).waitFor();
      assert.equal(await (await errorOf(page.getByLabel('Channel 1 Budget allocation', { exact: true }))).isHidden(), true);
      assert.equal(await (await errorOf(page.getByLabel('Name', { exact: true }))).isHidden(), true);
      await shot('campaign-form-errors');

      await page.getByLabel('End date (UTC)', { exact: true }).fill('2024-08-31T23:59');
      await page.getByLabel('Total budget').fill('10000.00');
      await allocation.fill('3000.00');
      await page.getByLabel('Minimum age').fill('25');
      await page.getByLabel('Maximum age').fill('45');
      // A time zone the API does not know is refused by name, next to its field.
      const zone = page.getByLabel('Time zone', { exact: true });
      await zone.fill('Mars/Olympus_Mons');
      const zoneRefused = apiResponse('POST', /\/campaigns$/);
      await page.getByRole('button', { name: 'Create campaign' }).click();
      assert.equal((await zoneRefused).status(), 400);
      await (await errorOf(zone)).filter({ hasText: 'time_zone must be an IANA' }).waitFor();
      assert.equal(await zone.getAttribute('aria-invalid'), 'true');
      await zone.fill('');
      const created = apiResponse('POST', /\/campaigns$/);
      await page.getByRole('button', { name: 'Create campaign' }).click();
      const response = await created;
      assert.equal(response.status(), 201);
      // The body the form sent: amounts as the JSON numbers typed, blank optional fields left out.
      const sent = response.request().postData();
      assert.match(sent, /"budget_allocation":5000\.00/);
      const body = JSON.parse(sent);
      assert.deepEqual(body.channels, [
        { name: 'Facebook Ads', type: 'social_media', platform: 'facebook', budget_allocation: 5000, start_date: '2024-06-01T00:00:00Z' },
        { name: 'Google Search', type: 'search', platform: 'google', budget_allocation: 3000 },
      ]);
      assert.deepEqual(body.kpis, [{ name: 'Conversions', target: 1000, unit: 'count' }]);
      assert.deepEqual(body.target_audience, { age_range: [25, 45], gender: [], locations: ['US', 'CA'], interests: ['shopping'] });
      assert.deepEqual(body.goals, { primary: 'Increase sales by 30%', secondary: [], kpis: [{ metric: 'conversions', target: 1000 }] });
      assert.equal(body.currency, 'EUR');
      assert.equal('time_zone' in body, false, 'a blank time zone is left to the API (UTC)');
      campaignId = (await response.json()).id;
      await heading('Summer Sale');
      const channelRows = page.getByRole('table', { name: 'Channels' });
      await channelRows.getByRole('row').filter({ hasText: 'Facebook Ads' }).filter({ hasText: '5,000.00' }).waitFor();
      await channelRows.getByRole('row').filter({ hasText: 'Google Search' }).filter({ hasText: 'google' }).waitFor();
      await page.getByRole('table', { name: 'KPIs' }).getByRole('row').filter({ hasText: 'Conversions' }).filter({ hasText: 'count' }).waitFor();
      await page.getByRole('table', { name: 'Goal KPIs' }).getByRole('cell', { name: 'conversions' }).waitFor();
      await page.getByRole('definition').filter({ hasText: 'US, CA' }).waitFor();
      await page.getByRole('definition').filter({ hasText: '25–45' }).waitFor();
      await page.getByRole('definition').filter({ hasText: 'Increase sales by 30%' }).waitFor();
      // Money in the campaign's currency.
      await page.getByRole('definition').filter({ hasText: /^€10,000\.00$/ }).waitFor();
      await page.getByRole('definition').filter({ hasText: /^EUR$/ }).waitFor();
      await channelRows.getByRole('cell', { name: '€5,000.00', exact: true }).waitFor();
    });

    await step('status changes offer only the allowed transitions', async () => {
      const offered = async () => page.getByRole('group', { name: 'Change status' }).getByRole('button').allTextContents();
      assert.deepEqual(await offered(), ['Change status to active', 'Change status to cancelled']);
      // By keyboard: focus the button and press Enter.
      await page.getByRole('button', { name: 'Change status to active' }).focus();
      await page.keyboard.press('Enter');
      await page.getByRole('button', { name: 'Change status to paused' }).waitFor();
      assert.deepEqual(await offered(), ['Change status to paused', 'Change status to completed', 'Change status to cancelled']);
      await page.getByRole('button', { name: 'Change status to paused' }).click();
      await page.getByRole('button', { name: 'Change status to active' }).waitFor();
      assert.deepEqual(await offered(), ['Change status to active', 'Change status to completed', 'Change status to cancelled']);
      await page.getByRole('button', { name: 'Change status to active' }).click();
      await page.getByRole('button', { name: 'Change status to paused' }).waitFor();
      await shot('campaign-detail');
    });

    await step('a stale edit shows a conflict instead of overwriting (If-Match)', async () => {
      await page.getByRole('link', { name: 'Edit campaign' }).click();
      await heading('Edit Summer Sale');
      // The form shows the campaign's lists as rows.
      assert.equal(await page.getByLabel('Channel 2 Name', { exact: true }).inputValue(), 'Google Search');
      assert.equal(await page.getByLabel('KPI 1 Target', { exact: true }).inputValue(), '1000');
      assert.equal(await page.getByLabel('Location 2', { exact: true }).inputValue(), 'CA');
      // Someone else changes the campaign after the form was loaded.
      const other = await api('PUT', `/campaigns/${campaignId}`, { json: { description: 'Changed elsewhere' } });
      assert.equal(other.status, 200);
      await page.getByLabel('Total budget').fill('12000.00');
      const stale = apiResponse('PUT', /\/campaigns\/[^/]+$/);
      await page.getByRole('button', { name: 'Save changes' }).click();
      assert.equal((await stale).status(), 412);
      await page.getByRole('alert').filter({ hasText: 'Conflict' }).waitFor();
      await shot('campaign-edit-conflict');
      assert.equal((await api('GET', `/campaigns/${campaignId}`)).body.description, 'Changed elsewhere');
      await page.getByRole('button', { name: 'Reload the current version' }).click();
      await page.waitForFunction(() => document.querySelector('textarea[name=description]').value === 'Changed elsewhere');
      await page.getByLabel('Total budget').fill('12000.00');
      await page.getByRole('button', { name: 'Add secondary goal', exact: true }).click();
      await page.keyboard.type('Brand awareness'); // the new row's field has the focus
      const saved = apiResponse('PUT', /\/campaigns\/[^/]+$/);
      await page.getByRole('button', { name: 'Save changes' }).click();
      // Only what changed is sent: the budget and the goals, not the other lists.
      const sent = (await saved).request().postData();
      assert.match(sent, /"total_budget":12000\.00/);
      assert.deepEqual(Object.keys(JSON.parse(sent)).sort(), ['goals', 'total_budget']);
      assert.deepEqual(JSON.parse(sent).goals.secondary, ['Brand awareness']);
      await heading('Summer Sale');
      await page.getByRole('definition').filter({ hasText: 'Brand awareness' }).waitFor();
      await page.getByRole('definition').filter({ hasText: /^€12,000\.00$/ }).waitFor();
    });

    await step('the list filters by status, searches and pages', async () => {
      for (let i = 1; i <= 20; i++) {
        const r = await api('POST', '/campaigns', { json: { name: `Winter Launch ${i}`, type: 'awareness' } });
        assert.equal(r.status, 201);
      }
      await page.getByRole('link', { name: 'Campaigns', exact: true }).click();
      await heading('Campaigns');
      const rows = page.getByRole('table', { name: 'Campaigns, newest first' }).locator('tbody tr');
      await page.getByRole('button', { name: 'Next page' }).waitFor();
      assert.equal(await rows.count(), 20);
      await page.getByRole('button', { name: 'Next page' }).click();
      await page.getByRole('link', { name: 'Summer Sale' }).waitFor();
      assert.equal(await rows.count(), 1);
      await page.getByRole('button', { name: 'Previous page' }).click();
      await page.getByRole('link', { name: 'Winter Launch 20' }).waitFor();
      await page.getByLabel('Status').selectOption('active');
      await page.getByRole('link', { name: 'Summer Sale' }).waitFor();
      assert.equal(await rows.count(), 1);
      await page.getByLabel('Status').selectOption('');
      await page.getByRole('link', { name: 'Winter Launch 20' }).waitFor();
      // The API's search, over every page: Summer Sale is on the second.
      const search = page.getByLabel('Search by name');
      await search.fill('SUMMER');
      await page.getByRole('button', { name: 'Search', exact: true }).click();
      await page.getByRole('link', { name: 'Summer Sale' }).waitFor();
      assert.equal(await rows.count(), 1);
      assert.equal(await page.getByRole('button', { name: 'Next page' }).count(), 0);
      // By keyboard: Enter in the field searches.
      await search.fill('launch 1');
      await search.press('Enter');
      await page.getByRole('link', { name: 'Winter Launch 19' }).waitFor();
      // "Winter Launch 1" and 10 to 19 match; 2 to 9 and 20 do not.
      assert.equal(await rows.count(), 11);
      assert.equal(await page.getByRole('link', { name: 'Summer Sale' }).count(), 0);
      await search.fill('no such campaign');
      await search.press('Enter');
      await page.getByText('No campaigns match.').waitFor();
      await search.fill('');
      await page.getByRole('button', { name: 'Search', exact: true }).click();
      await page.getByRole('link', { name: 'Winter Launch 20' }).waitFor();
      await shot('campaigns');
    });

    await step('schedule content with an image and see it on the calendar; replace the image', async () => {
      await page.goto(`${BASE}/console#/campaigns/${campaignId}/content`);
      await heading('Content calendar: Summer Sale');
      await page.getByLabel('Title', { exact: true }).fill('Launch post');
      await page.getByLabel('Scheduled date (UTC)').fill('2024-06-15T10:00');
      await page.getByLabel('Platform', { exact: true }).fill('instagram');
      await page.getByLabel('Status', { exact: true }).selectOption('scheduled');
      await page.getByLabel('Media file').setInputFiles({ name: 'launch.png', mimeType: 'image/png', buffer: png(8, 8, [220, 40, 40]) });
      await page.getByRole('button', { name: 'Schedule content' }).click();
      await page.getByRole('table', { name: 'Content calendar, June 2024' }).waitFor();
      const cell = page.locator('td[data-date="2024-06-15"]');
      await cell.getByText('Launch post').waitFor();
      const thumb = cell.getByRole('img', { name: 'Image of Launch post' });
      await thumb.waitFor();
      await page.waitForFunction((el) => el.complete && el.naturalWidth === 8, await thumb.elementHandle());
      // A second item on another platform, for the filter.
      const form = new FormData();
      form.append('title', 'LinkedIn article'); form.append('content_type', 'blog');
      form.append('platform', 'linkedin'); form.append('scheduled_date', '2024-06-20T09:00:00Z');
      form.append('status', 'draft');
      const r = await fetch(`${API}/campaigns/${campaignId}/content`, { method: 'POST', headers: { Authorization: `Bearer ${KEY_A}` }, body: form });
      assert.equal(r.status, 201);
      await page.reload();
      await page.getByRole('button', { name: 'Next month' }).waitFor();
      await page.getByLabel('Month').fill('2024-06');
      await page.getByLabel('Month').dispatchEvent('change');
      await page.locator('td[data-date="2024-06-20"]').getByText('LinkedIn article').waitFor();
      await page.getByLabel('Show platform').selectOption('instagram');
      await page.locator('td[data-date="2024-06-20"]').getByText('LinkedIn article').waitFor({ state: 'detached' });
      await cell.getByText('Launch post').waitFor();
      await page.getByLabel('Show platform').selectOption('');
      await page.locator('td[data-date="2024-06-20"]').getByText('LinkedIn article').waitFor();
      await page.getByLabel('Show status').selectOption('draft');
      await cell.getByText('Launch post').waitFor({ state: 'detached' });
      await page.locator('td[data-date="2024-06-20"]').getByText('LinkedIn article').waitFor();
      await page.getByLabel('Show status').selectOption('');
      const oldThumb = cell.getByRole('img', { name: 'Image of Launch post' });
      await page.waitForFunction((el) => el.complete && el.naturalWidth === 8, await oldThumb.elementHandle());
      await shot('content-calendar-month');
      const before = await oldThumb.getAttribute('src');
      assert.match(before, /^blob:/);
      const replaced = apiResponse('PUT', /\/content\/[^/]+$/);
      await page.getByLabel('Replace media of Launch post').setInputFiles({ name: 'launch-v2.png', mimeType: 'image/png', buffer: png(16, 16, [40, 90, 220]) });
      assert.equal((await replaced).status(), 200);
      await page.getByRole('cell', { name: /launch-v2\.png/ }).waitFor();
      const newThumb = page.locator('td[data-date="2024-06-15"]').getByRole('img', { name: 'Image of Launch post' });
      await page.waitForFunction((el) => el.complete && el.naturalWidth === 16, await newThumb.elementHandle());
      assert.notEqual(await newThumb.getAttribute('src'), before);
      await page.getByRole('button', { name: 'Week' }).click();
      await page.getByRole('heading', { name: 'Week of 2024-05-27' }).waitFor();
      await page.getByRole('button', { name: 'Next week' }).click();
      await page.getByRole('button', { name: 'Next week' }).click();
      await page.getByRole('heading', { name: 'Week of 2024-06-10' }).waitFor();
      await page.getByRole('region', { name: 'Week of 2024-06-10' }).getByText('Launch post').waitFor();
      await shot('content-calendar-week');
    });

    await step('the task board marks overdue tasks', async () => {
      await page.getByRole('link', { name: 'Tasks' }).click();
      await heading('Tasks: Summer Sale');
      const add = async (title, due) => {
        await page.getByLabel('Task title').fill(title);
        await page.getByLabel('Due date (UTC)').fill(due);
        await page.getByRole('button', { name: 'Add task' }).click();
        await page.getByRole('listitem').filter({ hasText: title }).waitFor();
      };
      await add('Write ad copy', '2024-01-10T12:00');
      await add('Plan next quarter', '2099-01-01T12:00');
      const pending = page.getByRole('region', { name: 'pending (2)' });
      await pending.getByRole('listitem', { name: 'Write ad copy (overdue)' }).getByText('Overdue').waitFor();
      await pending.getByRole('listitem', { name: 'Plan next quarter', exact: true }).waitFor();
      assert.equal(await pending.getByRole('listitem', { name: 'Plan next quarter', exact: true }).getByText('Overdue').count(), 0);
      await shot('tasks');
      await page.getByLabel('Status of Write ad copy').selectOption('completed');
      // Done: no longer overdue.
      await page.getByRole('region', { name: 'completed (1)' }).getByRole('listitem', { name: 'Write ad copy', exact: true }).waitFor();
    });

    await step('track analytics and see the chart and tiles change', async () => {
      await page.getByRole('link', { name: 'Analytics' }).click();
      await heading('Analytics: Summer Sale');
      const tile = (name) => page.getByRole('group', { name, exact: true }).locator('.tile-value');
      await tile('CTR').filter({ hasText: '—' }).waitFor();
      await tile('Budget spent (all time)').filter({ hasText: '€0.00 of €12,000.00' }).waitFor();
      const today = new Date().toISOString().slice(0, 10);
      const track = async (source, values) => {
        await page.getByLabel('Date', { exact: true }).fill(today);
        await page.getByLabel('Source', { exact: true }).fill(source);
        for (const [name, value] of Object.entries(values)) await page.getByRole('textbox', { name, exact: true }).fill(value);
        const tracked = apiResponse('POST', /\/analytics$/);
        await page.getByRole('button', { name: 'Track metrics' }).click();
        return (await tracked).status();
      };
      // A bad number is refused next to its field.
      assert.equal(await track('facebook', { Impressions: '10000', Clicks: '500', Conversions: '50', Cost: 'lots', Revenue: '5000.00' }), 400);
      await fieldError('Cost').waitFor();
      assert.equal(await track('facebook', { Impressions: '10000', Clicks: '500', Conversions: '50', Cost: '250.00', Revenue: '5000.00' }), 201);
      await tile('CTR').filter({ hasText: '5.00%' }).waitFor();
      await tile('CPC').filter({ hasText: /^€0\.50$/ }).waitFor();
      await tile('CPA').filter({ hasText: /^€5\.00$/ }).waitFor();
      await tile('ROAS').filter({ hasText: '20.00×' }).waitFor();
      await tile('Budget spent (all time)').filter({ hasText: '€250.00 of €12,000.00' }).waitFor();
      // The chart (Chart.js's own record of what it draws): every day of the
      // default range, the last 30 days, zeros but today.
      const chartData = () => page.evaluate(() => {
        const chart = window.Chart.getChart(document.querySelector('canvas'));
        return { labels: chart.data.labels, ...Object.fromEntries(chart.data.datasets.map((d) => [d.label, d.data])) };
      });
      const zeros = (n) => Array(n).fill(0);
      let data = await chartData();
      assert.equal(data.labels.length, 30);
      assert.equal(data.labels.at(-1), today);
      assert.deepEqual(data.Impressions, [...zeros(29), 10000]);
      assert.equal(await track('google', { Impressions: '10000', Clicks: '100', Conversions: '10', Cost: '250.00', Revenue: '500.00' }), 201);
      await tile('CTR').filter({ hasText: '3.00%' }).waitFor();
      await tile('ROAS').filter({ hasText: '11.00×' }).waitFor();
      await tile('Budget spent (all time)').filter({ hasText: '€500.00 of €12,000.00' }).waitFor();
      data = await chartData();
      assert.deepEqual([data.Impressions, data.Clicks, data.Cost, data.Revenue].map((d) => d.at(-1)), [20000, 600, 500, 5500]);
      assert.deepEqual(data.Conversions, [...zeros(29), 60]);
      await page.getByRole('table', { name: 'Daily figures' }).getByRole('cell', { name: today }).waitFor();
      // One source only.
      await page.getByLabel('Source (blank: all)').fill('google');
      await page.getByRole('button', { name: 'Show' }).click();
      await tile('CTR').filter({ hasText: '1.00%' }).waitFor();
      assert.deepEqual((await chartData()).Clicks.at(-1), 100);
      await page.getByLabel('Source (blank: all)').fill('');
      await page.getByRole('button', { name: 'Show' }).click();
      await tile('CTR').filter({ hasText: '3.00%' }).waitFor();
      // Another range: a week without figures, charted as zeros; the
      // lifetime budget tile is the same.
      const from = page.getByLabel('From', { exact: true });
      const to = page.getByLabel('To', { exact: true });
      const [defaultFrom, defaultTo] = [await from.inputValue(), await to.inputValue()];
      await from.fill('2024-01-01');
      await to.fill('2024-01-07');
      await page.getByRole('button', { name: 'Show' }).click();
      await page.getByText('No analytics in this range.').waitFor();
      await tile('CTR').filter({ hasText: '—' }).waitFor();
      await tile('Impressions').filter({ hasText: /^0$/ }).waitFor();
      await tile('Budget spent (all time)').filter({ hasText: '€500.00 of €12,000.00' }).waitFor();
      data = await chartData();
      assert.deepEqual(data.labels, ['2024-01-01', '2024-01-02', '2024-01-03', '2024-01-04', '2024-01-05', '2024-01-06', '2024-01-07']);
      assert.deepEqual(data.Impressions, zeros(7));
      // A range the wrong way round: the API's message next to the field.
      await from.fill('2024-01-08');
      await page.getByRole('button', { name: 'Show' }).click();
      await fieldError('To').filter({ hasText: 'must not be before start_date' }).waitFor();
      await from.fill(defaultFrom);
      await to.fill(defaultTo);
      await page.getByRole('button', { name: 'Show' }).click();
      await tile('CTR').filter({ hasText: '3.00%' }).waitFor();
      await page.getByRole('table', { name: 'Daily figures' }).getByRole('cell', { name: today }).waitFor();
      await shot('analytics');
    });

    await step('import a CSV with a bad row and see the line-numbered report; search; export', async () => {
      await page.getByRole('link', { name: 'Leads' }).click();
      await heading('Leads: Summer Sale');
      const csv = ['email,name,phone,referral',
        'ann@example.com,Ann Archer,+1 555 0100,A1',
        'not-an-email,Bob Baker,,B2',
        'cy@example.com,Cy Cole,,C3',
        'ANN@example.com,Ann again,,'].join('\n');
      await page.getByLabel('CSV file').setInputFiles({ name: 'leads.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
      await page.getByRole('button', { name: 'Import' }).click();
      const report = page.getByRole('region', { name: 'Import report' });
      await report.waitFor();
      const failed = report.getByRole('table', { name: 'Rows that failed' });
      await failed.getByRole('row').filter({ hasText: 'email' }).filter({ has: page.getByRole('cell', { name: '3', exact: true }) }).waitFor();
      assert.equal(await failed.locator('tbody tr').count(), 1);
      await report.getByRole('table', { name: 'Duplicate rows' }).getByRole('cell', { name: '5', exact: true }).waitFor();
      assert.equal(await page.getByRole('progressbar', { name: 'Upload progress' }).getAttribute('value'), '1');
      const leads = page.getByRole('table', { name: 'Leads' });
      await leads.getByRole('cell', { name: 'cy@example.com' }).waitFor();
      assert.equal(await leads.locator('tbody tr').count(), 2);
      await shot('leads');
      await page.getByLabel('Search leads').fill('archer');
      await page.getByRole('button', { name: 'Filter' }).click();
      await leads.getByRole('cell', { name: 'cy@example.com' }).waitFor({ state: 'detached' });
      await leads.getByRole('cell', { name: 'ann@example.com' }).waitFor();
      await page.getByLabel('Lead status').selectOption('contacted');
      await page.getByText('No leads match.').waitFor();
      const downloading = page.waitForEvent('download');
      await page.getByRole('button', { name: 'Export CSV' }).click();
      const download = await downloading;
      const exported = fs.readFileSync(await download.path(), 'utf8');
      assert.match(exported, /ann@example\.com/);
      assert.match(exported, /cy@example\.com/);
      assert.doesNotMatch(exported, /not-an-email/);
    });

    await step('the audit timeline shows who changed what', async () => {
      await page.getByRole('link', { name: 'Audit' }).click();
      await heading('Audit trail: Summer Sale');
      const timeline = page.getByRole('list', { name: 'Events, oldest first' });
      await timeline.getByRole('heading', { name: 'CampaignCreated' }).waitFor();
      const update = timeline.getByRole('article').filter({ has: page.getByRole('heading', { name: 'CampaignUpdated' }) })
        .filter({ has: page.getByRole('rowheader', { name: 'total_budget' }) });
      await update.getByRole('cell', { name: /^10000(\.00)?$/ }).waitFor();
      await update.getByRole('cell', { name: /^12000(\.00)?$/ }).waitFor();
      await update.getByText('by marketer').waitFor();
      // A status change reads as one: status, before → after.
      const paused = timeline.getByRole('article').filter({ has: page.getByRole('heading', { name: 'CampaignStatusChanged' }) })
        .filter({ has: page.getByRole('cell', { name: '"paused"', exact: true }) }).first();
      await paused.getByRole('rowheader', { name: 'status' }).waitFor();
      const statusChanges = timeline.getByRole('heading', { name: 'CampaignStatusChanged' });
      assert.equal(await statusChanges.count(), 3);
      await timeline.getByRole('heading', { name: 'ContentCreated' }).first().waitFor();
      await timeline.getByRole('heading', { name: 'LeadCreated' }).first().waitFor();
      const chain = page.getByRole('status', { name: 'Hash-chain check' });
      await chain.getByText(/^Hash chains intact: \d+ events in \d+ streams re-checked/).waitFor();
      await shot('audit');
    });

    await step('sign out forgets the key; a second project\'s key sees none of the first\'s data', async () => {
      await page.getByRole('button', { name: 'Sign out' }).click();
      await heading('Sign in');
      assert.equal(await page.evaluate(() => sessionStorage.length), 0);
      await page.getByLabel('API key').fill(KEY_B);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await heading('Campaigns');
      await page.getByText('No campaigns match.').waitFor();
      const tabs = { '': 'Overview', '/content': 'Content calendar', '/tasks': 'Tasks', '/analytics': 'Analytics', '/leads': 'Leads', '/audit': 'Audit' };
      for (const [tab, label] of Object.entries(tabs)) {
        await page.goto(`${BASE}/console#/campaigns/${campaignId}${tab}`);
        // The tab asked for is the current one: this view, not the last one.
        await page.getByRole('navigation', { name: 'Campaign' }).locator('a[aria-current="page"]', { hasText: label }).waitFor();
        await page.getByRole('alert').filter({ hasText: 'Campaign not found' }).waitFor();
        assert.equal(await page.getByText('Summer Sale').count(), 0);
      }
      // Nor through the API's search.
      await page.goto(`${BASE}/console#/campaigns?search=summer`);
      await page.waitForFunction(() => document.querySelector('input[name="search"]')?.value === 'summer');
      await page.getByText('No campaigns match.').waitFor();
    });

    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
  console.log(`console: ${steps.length} steps passed`);
}

main().catch(() => { process.exitCode = 1; });
