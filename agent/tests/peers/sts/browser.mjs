#!/usr/bin/env node
// A scripted browser for the IdP peer (idp.mjs): follows redirects, keeps cookies, and submits each
// form the provider's own pages show (device user code, confirm, login, consent) until a page has
// no form. Usage: browser.mjs URL [USER_CODE]; the account is $BROWSER_LOGIN (default alice).
// Exit 0 when the last page is a success (HTTP 2xx and no error text), 1 otherwise.
const [, , start, userCode] = process.argv;
const account = process.env.BROWSER_LOGIN || 'alice';
const log = (...a) => console.error('browser:', ...a);
if (!start) {
  log('usage: browser.mjs URL [USER_CODE]');
  process.exit(2);
}

const jar = new Map();
const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
const keep = (res) => {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const value = pair.slice(i + 1).trim();
    if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') jar.delete(name); else jar.set(name, value);
  }
};
const unescape = (s) => s.replace(/&amp;/g, '&').replace(/&#x2F;/gi, '/').replace(/&#39;/g, "'").replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>');
const attr = (tag, name) => {
  const m = tag.match(new RegExp(`\\b${name}="([^"]*)"`));
  return m ? unescape(m[1]) : undefined;
};

function firstForm(html) {
  const m = html.match(/<form\b([^>]*)>([\s\S]*?)<\/form>/);
  if (!m) return undefined;
  const fields = new URLSearchParams();
  for (const [tag] of m[2].matchAll(/<input\b[^>]*>/g)) {
    const name = attr(tag, 'name');
    if (!name) continue;
    let value = attr(tag, 'value') ?? '';
    if (name === 'user_code' && userCode) value = userCode;
    if (name === 'login') value = account;
    if (name === 'password') value = 'any-password';
    fields.set(name, value);
  }
  return { action: attr(m[1], 'action'), method: (attr(m[1], 'method') || 'get').toUpperCase(), fields };
}

let url = new URL(start);
let method = 'GET';
let body;
for (let step = 0; step < 30; step += 1) {
  const headers = { cookie: cookieHeader(), 'user-agent': 'lanyard-test-browser' };
  if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
  const res = await fetch(url, { method, headers, body, redirect: 'manual' });
  keep(res);
  log(`${method} ${url.origin}${url.pathname} -> ${res.status}`);
  if (res.status >= 300 && res.status < 400) {
    url = new URL(res.headers.get('location'), url);
    method = 'GET';
    body = undefined;
    continue;
  }
  const html = await res.text();
  const form = res.ok ? firstForm(html) : undefined;
  if (!form) {
    const title = (html.match(/<title>([^<]*)<\/title>/) || [])[1] || '';
    const bad = !res.ok || /error|incorrect|interrupted/i.test(title + html.replace(/<style[\s\S]*?<\/style>/g, '').slice(0, 2000));
    log(`done: HTTP ${res.status} "${title}"`);
    process.exit(bad ? 1 : 0);
  }
  url = new URL(form.action || url.href, url);
  method = form.method;
  body = method === 'POST' ? form.fields.toString() : undefined;
  if (method === 'GET') {
    for (const [k, v] of form.fields) url.searchParams.set(k, v);
  }
}
log('too many steps');
process.exit(1);
