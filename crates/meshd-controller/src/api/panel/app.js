// The meshd web panel: a single-page client of the admin API on the same origin.
//
// No framework and no build step. The page is served with `Content-Security-Policy:
// default-src 'self'`, so everything here builds DOM nodes (never HTML strings, never
// inline styles or handlers) and talks only to its own origin.
//
// The token lives in sessionStorage (this tab only). Every page re-fetches its data every
// 2 s while the tab is visible and updates its tables in place: rows are keyed, cells are
// rewritten only when their content changes, and a cell being edited is left alone, so
// polling never takes away what the user is typing.
'use strict';

(() => {
  const TOKEN_KEY = 'meshd.token';
  const POLL_MS = 2000;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  /** An element: `attrs` may hold `class`, `text`, `data-*` and any other attribute. */
  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  /** An SVG element, as `h`. */
  function s(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'class') el.setAttribute('class', v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  /** Rebuilds `el`'s children only when `sig` differs from the last one it was built with. */
  function fill(el, sig, make) {
    if (el.__sig === sig) return false;
    el.__sig = sig;
    el.replaceChildren(...[make()].flat().filter((c) => c !== null && c !== undefined));
    return true;
  }

  /**
   * Brings `tbody`'s rows in line with `items`: rows are keyed by `key(item)`, made once
   * by `make` and updated in place by `update`; rows of items that are gone are removed.
   */
  function syncRows(tbody, items, key, make, update) {
    const old = new Map();
    for (const tr of Array.from(tbody.children)) old.set(tr.dataset.key, tr);
    let prev = null;
    for (const item of items) {
      const k = key(item);
      let tr = old.get(k);
      if (tr) old.delete(k);
      else {
        tr = make(item);
        tr.dataset.key = k;
      }
      update(tr, item);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (tr !== want) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
  }

  function cells(tr, n) {
    for (let i = 0; i < n; i++) tr.append(h('td'));
    return Array.from(tr.children);
  }

  // ---------------------------------------------------------------- formatting

  function ago(ms) {
    if (ms === null || ms === undefined) return null;
    // Above 10^12 it is a Unix time in ms; below, a duration in ms.
    const elapsed = ms > 1e12 ? Date.now() - ms : ms;
    const sec = Math.max(0, Math.round(elapsed / 1000));
    if (sec < 60) return `${sec} s ago`;
    const min = Math.round(sec / 60);
    if (min < 60) return `${min} min ago`;
    const hours = Math.round(min / 60);
    if (hours < 48) return `${hours} h ago`;
    return `${Math.round(hours / 24)} d ago`;
  }

  function dateText(ms) {
    if (!ms) return '—';
    const d = new Date(ms);
    return Number.isNaN(d.getTime()) ? '—' : d.toLocaleString();
  }

  function memberState(m) {
    if (m.authorized) return 'authorized';
    return m.last_authorized_ms === null || m.last_authorized_ms === undefined
      ? 'waiting'
      : 'deauthorized';
  }

  function memberName(m) {
    return m.name || m.hostname || '—';
  }

  function pathSummary(p) {
    if (!p) return '—';
    const parts = [];
    if (p.direct) parts.push(`${p.direct} direct`);
    if (p.relay) parts.push(`${p.relay} relay`);
    if (p.none) parts.push(`${p.none} no path`);
    return parts.length ? parts.join(' · ') : '—';
  }

  function rttText(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return null;
    return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
  }

  /** IPv6 text that may wrap after its colons (and nowhere else) when space is short. */
  function breakable(text) {
    const out = [];
    text.split(':').forEach((part, i, all) => {
      out.push(i < all.length - 1 ? `${part}:` : part);
      if (i < all.length - 1 && part !== '') out.push(h('wbr'));
    });
    return out;
  }

  function shorten(text, max) {
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  // ---------------------------------------------------------------- state

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    route: { page: 'signin' },
    // Bumped on every navigation: answers for an older page are dropped.
    gen: 0,
    // Bumped on every change the user makes: a poll that started before it is dropped.
    mut: 0,
    inflight: null,
    again: false,
    networks: [],
    network: null,
    members: [],
    routes: [],
    mesh: null,
    meshError: null,
    cluster: null,
    // Edits in progress: key -> draft text.
    edits: new Map(),
    noticeTimer: null,
  };

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
      this.handled = false;
    }
  }

  /** One call with an explicit token; errors carry the API's own message. */
  async function request(method, path, body, token) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `cannot reach the controller (${e.message})`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const message =
        data && typeof data.error === 'string'
          ? data.error
          : `${res.status} ${res.statusText || 'error'}`.trim();
      throw new ApiError(res.status, message);
    }
    return data;
  }

  /** A call with the session's token; a 401 ends the session and shows the sign-in page. */
  async function api(method, path, body) {
    try {
      return await request(method, path, body, state.token);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && state.token) {
        signOut();
        showError(e.message);
        e.handled = true;
      }
      throw e;
    }
  }

  const nwidPath = (nwid) => `/v1/networks/${encodeURIComponent(nwid)}`;

  // ---------------------------------------------------------------- banners

  function showError(message) {
    setText($('error'), message);
    $('error-banner').hidden = false;
  }

  function clearError() {
    $('error-banner').hidden = true;
    setText($('error'), '');
  }

  function showNotice(message) {
    setText($('notice'), message);
    $('notice-banner').hidden = false;
    clearTimeout(state.noticeTimer);
    state.noticeTimer = setTimeout(() => {
      $('notice-banner').hidden = true;
    }, 4000);
  }

  function setLive(ok, detail) {
    const live = $('live');
    live.hidden = !state.token;
    live.classList.toggle('live-bad', ok === false);
    live.classList.toggle('live-paused', ok === null);
    if (ok === null) setText(live, 'paused');
    else if (ok) setText(live, 'live');
    else setText(live, 'not updating');
    live.title = detail || '';
  }

  /**
   * Runs a change the user asked for: `button` is disabled meanwhile, the API's error is
   * shown as is, and the page refreshes after it. `{ok, value}`.
   */
  async function act(button, fn) {
    if (button) button.disabled = true;
    state.mut++;
    try {
      const value = await fn();
      clearError();
      return { ok: true, value };
    } catch (e) {
      if (!e.handled) showError(e.message);
      return { ok: false };
    } finally {
      if (button) button.disabled = false;
      state.mut++;
      refresh();
    }
  }

  // ---------------------------------------------------------------- confirmation

  function confirmDialog(text, okLabel) {
    const dialog = $('confirm');
    setText($('confirm-text'), text);
    setText($('confirm-ok'), okLabel || 'Delete');
    dialog.returnValue = '';
    return new Promise((resolve) => {
      const closed = () => {
        dialog.removeEventListener('close', closed);
        resolve(dialog.returnValue === 'ok');
      };
      dialog.addEventListener('close', closed);
      dialog.showModal();
    });
  }

  // ---------------------------------------------------------------- routing

  function parseHash() {
    const parts = location.hash
      .replace(/^#\/?/, '')
      .split('/')
      .filter(Boolean)
      .map((p) => {
        try {
          return decodeURIComponent(p);
        } catch (_) {
          return p;
        }
      });
    if (parts[0] === 'networks' && parts[1]) return { page: 'network', nwid: parts[1] };
    if (parts[0] === 'replicas') return { page: 'replicas' };
    return { page: 'networks' };
  }

  function showPage(page) {
    for (const section of document.querySelectorAll('.page')) {
      section.hidden = section.id !== `page-${page}`;
    }
    const signedIn = page !== 'signin';
    $('nav').hidden = !signedIn;
    $('sign-out').hidden = !signedIn;
    $('live').hidden = !signedIn;
    const navPage = page === 'network' ? 'networks' : page;
    for (const a of document.querySelectorAll('[data-nav]')) {
      a.classList.toggle('active', a.dataset.nav === navPage);
    }
  }

  function render() {
    state.gen++;
    if (!state.token) {
      state.route = { page: 'signin' };
      showPage('signin');
      document.title = 'meshd · sign in';
      checkHealth();
      $('token').focus();
      return;
    }
    const route = parseHash();
    const sameNetwork =
      route.page === 'network' && state.route.page === 'network' && route.nwid === state.route.nwid;
    if (route.page === 'network' && !sameNetwork) resetNetworkPage(route.nwid);
    state.route = route;
    showPage(route.page);
    document.title = route.page === 'replicas' ? 'meshd · replicas' : 'meshd · networks';
    refresh(true);
  }

  function resetNetworkPage(nwid) {
    state.network = null;
    state.members = [];
    state.routes = [];
    state.mesh = null;
    state.meshError = null;
    for (const id of ['members-body', 'routes-body', 'net-facts', 'mesh', 'route-via-options']) {
      $(id).replaceChildren();
      $(id).__sig = undefined;
    }
    $('members-table').hidden = true;
    $('members-empty').hidden = true;
    $('routes-table').hidden = true;
    $('routes-empty').hidden = true;
    $('mesh-empty').hidden = true;
    $('route-form').reset();
    setText($('net-title'), '');
    setText($('net-title-crumb'), nwid);
    setText($('net-id'), nwid);
    $('net-id').dataset.nwid = nwid;
  }

  function signOut() {
    state.token = '';
    sessionStorage.clear();
    state.edits.clear();
    state.networks = [];
    state.cluster = null;
    resetNetworkPage('');
    $('networks-body').replaceChildren();
    $('replicas-body').replaceChildren();
    render();
  }

  async function checkHealth() {
    const line = $('health');
    try {
      const health = await request('GET', '/v1/health');
      setText(line, `Controller: ${health && health.status ? health.status : 'answering'}`);
    } catch (e) {
      setText(line, `Controller: ${e.message}`);
    }
  }

  // ---------------------------------------------------------------- polling

  const loaders = {
    networks: async () => {
      const list = await api('GET', '/v1/networks');
      return () => {
        state.networks = Array.isArray(list) ? list : [];
        renderNetworks();
      };
    },
    network: async (route) => {
      const base = nwidPath(route.nwid);
      const [network, members, routes, mesh] = await Promise.all([
        api('GET', base),
        api('GET', `${base}/members`),
        api('GET', `${base}/routes`),
        api('GET', `${base}/mesh`).then(
          (m) => ({ m, err: null }),
          (e) => {
            if (e.handled) throw e;
            return { m: null, err: e.message };
          },
        ),
      ]);
      return () => {
        state.network = network;
        state.members = members || [];
        state.routes = routes || [];
        state.mesh = mesh.m;
        state.meshError = mesh.err;
        renderNetwork();
      };
    },
    replicas: async () => {
      let cluster;
      try {
        cluster = await api('GET', '/v1/replicas');
      } catch (e) {
        if (e.status !== 404) throw e;
        cluster = null;
      }
      return () => {
        state.cluster = cluster;
        renderReplicas();
      };
    },
  };

  /** Fetches the current page's data and renders it; `first` shows a failure as an error. */
  async function refresh(first) {
    if (!state.token || !loaders[state.route.page]) return;
    const gen = state.gen;
    if (state.inflight === gen) {
      state.again = true;
      return;
    }
    state.inflight = gen;
    state.again = false;
    const mut = state.mut;
    const route = state.route;
    try {
      const apply = await loaders[route.page](route);
      if (gen === state.gen && mut === state.mut) {
        apply();
        setLive(true, `updated ${new Date().toLocaleTimeString()}`);
      } else if (gen === state.gen) {
        state.again = true;
      }
    } catch (e) {
      if (gen === state.gen && !e.handled) {
        if (first) showError(e.message);
        setLive(false, e.message);
      }
    } finally {
      if (state.inflight === gen) state.inflight = null;
    }
    if (state.again && gen === state.gen && state.token) {
      state.again = false;
      refresh(first);
    }
  }

  setInterval(() => {
    if (!state.token) return;
    if (document.hidden) {
      setLive(null, 'updates pause while the tab is hidden');
      return;
    }
    refresh(false);
  }, POLL_MS);

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.token) refresh(false);
  });

  // ---------------------------------------------------------------- inline edits

  /** An input with Save and Cancel in place of a cell's text; drafts survive polls. */
  function editor(key, inputClass, label, extra) {
    const input = h('input', {
      class: `edit-input ${inputClass}`,
      'data-edit': key,
      'aria-label': label,
      spellcheck: 'false',
      ...(extra || {}),
    });
    input.value = state.edits.get(key) || '';
    return h(
      'span',
      { class: 'editor' },
      input,
      h('button', { type: 'button', class: 'save primary small-btn', 'data-action': 'save', text: 'Save' }),
      h('button', { type: 'button', class: 'cancel quiet small-btn', 'data-action': 'cancel', text: 'Cancel' }),
    );
  }

  function startEdit(key, value, tr, cell) {
    state.edits.set(key, value);
    if (cell) cell.__sig = undefined;
    rerenderCurrent();
    const input = tr.querySelector(`input[data-edit="${CSS.escape(key)}"]`);
    if (input) {
      input.focus();
      input.select();
    }
  }

  function stopEdit(key) {
    state.edits.delete(key);
    rerenderCurrent();
  }

  function rerenderCurrent() {
    if (state.route.page === 'networks') renderNetworks();
    else if (state.route.page === 'network') renderNetwork();
  }

  /** Keeps drafts, and Enter saves / Escape cancels, in any table with inline edits. */
  function wireEdits(tbody) {
    tbody.addEventListener('input', (ev) => {
      const key = ev.target.dataset && ev.target.dataset.edit;
      if (key) state.edits.set(key, ev.target.value);
    });
    tbody.addEventListener('keydown', (ev) => {
      if (!ev.target.dataset || !ev.target.dataset.edit) return;
      const editorEl = ev.target.closest('.editor');
      if (ev.key === 'Enter') {
        ev.preventDefault();
        editorEl.querySelector('[data-action="save"]').click();
      } else if (ev.key === 'Escape') {
        ev.preventDefault();
        editorEl.querySelector('[data-action="cancel"]').click();
      }
    });
  }

  // ---------------------------------------------------------------- networks page

  function renderNetworks() {
    const list = state.networks.slice().sort((a, b) => a.created_ms - b.created_ms || (a.id < b.id ? -1 : 1));
    $('networks-table').hidden = list.length === 0;
    $('networks-empty').hidden = list.length > 0;
    syncRows(
      $('networks-body'),
      list,
      (n) => n.id,
      () => {
        const tr = h('tr');
        const [name, id, members, revision, mtu, actions] = cells(tr, 6);
        name.className = 'name';
        id.className = 'id';
        members.className = 'num';
        revision.className = 'num';
        mtu.className = 'num mtu';
        actions.className = 'actions';
        return tr;
      },
      (tr, n) => {
        tr.dataset.nwid = n.id;
        const [name, id, members, revision, mtu, actions] = tr.children;
        const nameKey = `net:${n.id}:name`;
        const mtuKey = `net:${n.id}:mtu`;
        if (state.edits.has(nameKey)) {
          fill(name, 'edit', () => editor(nameKey, 'rename-input', 'New name'));
        } else {
          fill(name, `v:${n.name}`, () =>
            h('a', { href: `#/networks/${n.id}`, text: n.name || '(unnamed)' }),
          );
        }
        fill(id, n.id, () => h('code', { 'data-nwid': n.id, text: n.id }));
        const counts = n.members || { authorized: 0, total: 0 };
        setText(members, `${counts.authorized}/${counts.total}`);
        members.title = `${counts.authorized} authorized of ${counts.total}`;
        setText(revision, String(n.revision));
        if (state.edits.has(mtuKey)) {
          fill(mtu, 'edit', () => editor(mtuKey, 'mtu-input', 'New MTU', { inputmode: 'numeric', size: '6' }));
        } else {
          fill(mtu, `v:${n.mtu}`, () => String(n.mtu));
        }
        fill(actions, 'actions', () => [
          h('a', { class: 'button open small-btn', href: `#/networks/${n.id}`, text: 'Open' }),
          h('button', { type: 'button', class: 'rename small-btn', 'data-action': 'rename', text: 'Rename' }),
          h('button', { type: 'button', class: 'edit-mtu small-btn', 'data-action': 'mtu', text: 'MTU' }),
          h('button', { type: 'button', class: 'delete danger small-btn', 'data-action': 'delete', text: 'Delete' }),
        ]);
      },
    );
  }

  function replaceNetwork(n) {
    if (!n || !n.id) return;
    const i = state.networks.findIndex((x) => x.id === n.id);
    if (i >= 0) state.networks[i] = n;
    else state.networks.push(n);
  }

  $('networks-body').addEventListener('click', async (ev) => {
    const button = ev.target.closest('button');
    if (!button) return;
    const tr = button.closest('tr');
    const nwid = tr.dataset.nwid;
    const n = state.networks.find((x) => x.id === nwid);
    if (!n) return;
    const cell = button.closest('td');
    const editKey = cell && cell.querySelector('[data-edit]') ? cell.querySelector('[data-edit]').dataset.edit : null;
    switch (button.dataset.action) {
      case 'rename':
        startEdit(`net:${nwid}:name`, n.name, tr, tr.children[0]);
        break;
      case 'mtu':
        startEdit(`net:${nwid}:mtu`, String(n.mtu), tr, tr.children[4]);
        break;
      case 'cancel':
        if (editKey) stopEdit(editKey);
        break;
      case 'save': {
        if (!editKey) return;
        const value = (state.edits.get(editKey) || '').trim();
        const body = editKey.endsWith(':name')
          ? { name: value }
          : { mtu: /^\d+$/.test(value) ? Number(value) : value };
        const r = await act(button, () => api('PATCH', nwidPath(nwid), body));
        if (r.ok) {
          state.edits.delete(editKey);
          replaceNetwork(r.value);
          renderNetworks();
        }
        break;
      }
      case 'delete': {
        const counts = n.members || { total: 0 };
        const yes = await confirmDialog(
          `Delete network "${n.name}" (${n.id})? Its ${counts.total} member(s) lose it and ` +
            'its addresses; this cannot be undone.',
          'Delete network',
        );
        if (!yes) return;
        const r = await act(button, () => api('DELETE', nwidPath(nwid)));
        if (r.ok) {
          state.networks = state.networks.filter((x) => x.id !== nwid);
          renderNetworks();
          showNotice(`Deleted network ${n.name || n.id}`);
        }
        break;
      }
      default:
    }
  });
  wireEdits($('networks-body'));

  $('net-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: $('net-name').value.trim() };
    const pools = $('net-pools').value.split(/[\s,]+/).filter(Boolean);
    if (pools.length) body.v4_pools = pools;
    const containerPool = $('net-container-pool').value.trim();
    if (containerPool) body.container_pool = containerPool;
    const mtu = $('net-mtu').value.trim();
    if (mtu) body.mtu = /^\d+$/.test(mtu) ? Number(mtu) : mtu;
    if ($('net-egress').value !== 'off') body.ipv6_egress = $('net-egress').value;
    const r = await act($('net-create'), () => api('POST', '/v1/networks', body));
    if (r.ok && r.value && r.value.id) {
      $('net-form').reset();
      replaceNetwork(r.value);
      showNotice(`Created network ${r.value.name} (${r.value.id})`);
      location.hash = `#/networks/${r.value.id}`;
    }
  });

  // ---------------------------------------------------------------- one network

  $('egress-toggle').addEventListener('click', async (ev) => {
    const n = state.network;
    if (!n) return;
    const body = { ipv6_egress: ev.currentTarget.dataset.next };
    const r = await act(ev.currentTarget, () => api('PATCH', nwidPath(n.id), body));
    if (r.ok && r.value) {
      state.network = r.value;
      replaceNetwork(r.value);
      renderNetwork();
    }
  });

  function renderNetwork() {
    const n = state.network;
    if (n) {
      setText($('net-title'), n.name || '(unnamed)');
      setText($('net-title-crumb'), n.name || n.id);
      setText($('net-id'), n.id);
      $('net-id').dataset.nwid = n.id;
      document.title = `meshd · ${n.name || n.id}`;
      setText($('join-hint'), `meshd join ${n.id}`);
      renderFacts(n);
      const nat66 = n.ipv6_egress === 'nat66';
      setText($('egress-toggle'), nat66 ? 'Turn IPv6 egress (NAT66) off' : 'Turn IPv6 egress (NAT66) on');
      $('egress-toggle').dataset.next = nat66 ? 'off' : 'nat66';
    }
    renderMembers();
    renderRoutes();
    renderMesh();
  }

  function renderFacts(n) {
    const facts = [
      ['Revision', String(n.revision)],
      ['Members', `${n.members ? n.members.authorized : 0} authorized of ${n.members ? n.members.total : 0}`],
      ['MTU', String(n.mtu)],
      ['IPv4 pools', (n.v4_pools || []).join(', ') || '—'],
      ['Container pool', n.container_pool ? `${n.container_pool} (a /${n.container_prefix} each)` : '—'],
      ['6PLANE', n.sixplane ? n.sixplane_range || 'on' : 'off'],
      ['RFC4193', n.rfc4193 ? n.rfc4193_range || 'on' : 'off'],
      ['IPv6 egress', n.ipv6_egress || 'off'],
      ['Created', dateText(n.created_ms)],
    ];
    fill($('net-facts'), JSON.stringify(facts), () =>
      facts.map(([k, v]) => h('div', { class: 'fact' }, h('dt', { text: k }), h('dd', { text: v }))),
    );
  }

  function sortedMembers() {
    const rank = { waiting: 0, authorized: 1, deauthorized: 2 };
    return state.members.slice().sort((a, b) => {
      const r = rank[memberState(a)] - rank[memberState(b)];
      if (r) return r;
      return (a.created_ms || 0) - (b.created_ms || 0) || (a.node_id < b.node_id ? -1 : 1);
    });
  }

  function renderMembers() {
    const list = sortedMembers();
    $('members-table').hidden = list.length === 0;
    $('members-empty').hidden = list.length > 0 || !state.network;
    syncRows(
      $('members-body'),
      list,
      (m) => m.node_id,
      () => {
        const tr = h('tr');
        const tds = cells(tr, 9);
        ['name', 'node', 'state', 'addresses', 'subnets', 'online', 'version', 'paths', 'actions'].forEach(
          (c, i) => {
            tds[i].className = c;
          },
        );
        return tr;
      },
      updateMemberRow,
    );
    // Route targets: members by node id.
    const options = list.filter((m) => m.authorized);
    fill(
      $('route-via-options'),
      JSON.stringify(options.map((m) => [m.node_id, memberName(m), m.ipv4])),
      () =>
        options.map((m) =>
          h('option', { value: m.node_id, label: `${memberName(m)} ${(m.ipv4 || []).join(' ')}`.trim() }),
        ),
    );
  }

  function updateMemberRow(tr, m) {
    const st = memberState(m);
    tr.dataset.node = m.node_id;
    tr.dataset.state = st;
    tr.dataset.online = String(Boolean(m.online));
    tr.classList.toggle('waiting', st === 'waiting');
    tr.classList.toggle('deauthorized', st === 'deauthorized');
    const [name, node, stateCell, addresses, subnets, online, version, paths, actions] = tr.children;

    const editKey = `member:${m.node_id}`;
    if (state.edits.has(editKey)) {
      fill(name, 'edit', () => editor(editKey, 'rename-input', 'New name', { placeholder: m.hostname || '' }));
    } else {
      const shown = memberName(m);
      const sub = m.name && m.hostname && m.hostname !== m.name ? m.hostname : null;
      fill(name, `v:${shown}:${sub}`, () => [
        h('span', { class: m.name ? 'member-name' : 'member-name unnamed', text: shown }),
        sub ? h('div', { class: 'sub', text: `host ${sub}` }) : null,
      ]);
    }

    fill(node, `${m.node_id}:${m.key_fingerprint}`, () => [
      h('code', { class: 'node-id', text: m.node_id }),
      m.key_fingerprint ? h('div', { class: 'sub fingerprint', title: 'key fingerprint', text: m.key_fingerprint }) : null,
    ]);

    const since =
      st === 'authorized' ? m.last_authorized_ms : st === 'deauthorized' ? m.last_deauthorized_ms : m.created_ms;
    fill(stateCell, st, () => h('span', { class: `badge badge-${st}`, text: st }));
    stateCell.title = since ? `since ${dateText(since)}` : '';

    const v4 = m.ipv4 || [];
    fill(addresses, JSON.stringify([v4, m.rfc4193_address]), () => [
      ...v4.map((a) => h('div', { class: 'ipv4', text: a })),
      m.rfc4193_address ? h('div', { class: 'sub v6', title: 'RFC4193 address' }, breakable(m.rfc4193_address)) : null,
      !v4.length && !m.rfc4193_address ? '—' : null,
    ]);

    fill(subnets, JSON.stringify([m.container_subnet, m.sixplane_subnet]), () => [
      m.container_subnet ? h('div', { title: 'container subnet', text: m.container_subnet }) : null,
      m.sixplane_subnet ? h('div', { class: 'sub v6', title: '6PLANE /80' }, breakable(m.sixplane_subnet)) : null,
      !m.container_subnet && !m.sixplane_subnet ? '—' : null,
    ]);

    const lastHeard = Math.max(m.last_seen_ms || 0, m.last_report_ms || 0) || null;
    const seen = ago(lastHeard);
    fill(online, m.online ? 'on' : 'off', () => [
      h('span', { class: m.online ? 'dot dot-on' : 'dot dot-off' }),
      h('span', { class: 'online-text', text: m.online ? 'online' : 'offline' }),
      h('div', { class: 'sub seen' }),
    ]);
    setText(online.querySelector('.seen'), seen ? `seen ${seen}` : 'never seen');
    const endpoint = [m.physical_endpoint, m.relay ? 'relay' : null, m.port_mapped ? 'port mapped' : null]
      .filter(Boolean)
      .join(' · ');
    online.title = endpoint;

    setText(version, m.version || '—');
    setText(paths, pathSummary(m.paths));

    const toggle =
      st === 'authorized'
        ? { class: 'deauthorize small-btn', action: 'deauthorize', text: 'Deauthorize' }
        : { class: 'authorize primary small-btn', action: 'authorize', text: 'Authorize' };
    fill(actions, toggle.action, () => [
      h('button', { type: 'button', class: toggle.class, 'data-action': toggle.action, text: toggle.text }),
      h('button', { type: 'button', class: 'rename small-btn', 'data-action': 'rename', text: 'Rename' }),
      h('button', { type: 'button', class: 'delete danger small-btn', 'data-action': 'delete', text: 'Delete' }),
    ]);
  }

  function replaceMember(m) {
    if (!m || !m.node_id) return;
    const i = state.members.findIndex((x) => x.node_id === m.node_id);
    if (i >= 0) state.members[i] = m;
  }

  $('members-body').addEventListener('click', async (ev) => {
    const button = ev.target.closest('button');
    if (!button || !state.network) return;
    const tr = button.closest('tr');
    const node = tr.dataset.node;
    const m = state.members.find((x) => x.node_id === node);
    if (!m) return;
    const nwid = state.network.id;
    const base = `${nwidPath(nwid)}/members/${encodeURIComponent(node)}`;
    const editKey = `member:${node}`;
    switch (button.dataset.action) {
      case 'authorize':
      case 'deauthorize': {
        const r = await act(button, () => api('POST', `${base}/${button.dataset.action}`));
        if (r.ok) {
          replaceMember(r.value);
          renderMembers();
        }
        break;
      }
      case 'rename':
        startEdit(editKey, m.name || '', tr, tr.children[0]);
        break;
      case 'cancel':
        stopEdit(editKey);
        break;
      case 'save': {
        const name = (state.edits.get(editKey) || '').trim();
        const r = await act(button, () => api('PATCH', base, { name }));
        if (r.ok) {
          state.edits.delete(editKey);
          replaceMember(r.value);
          renderMembers();
        }
        break;
      }
      case 'delete': {
        const yes = await confirmDialog(
          `Delete member ${memberName(m)} (${node}) from this network? It loses its addresses; ` +
            'if it joins again it waits for authorization.',
          'Delete member',
        );
        if (!yes) return;
        const r = await act(button, () => api('DELETE', base));
        if (r.ok) {
          state.members = state.members.filter((x) => x.node_id !== node);
          renderMembers();
          showNotice(`Deleted member ${node}`);
        }
        break;
      }
      default:
    }
  });
  wireEdits($('members-body'));

  // ---------------------------------------------------------------- routes

  function renderRoutes() {
    const routes = state.routes.slice().sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
    $('routes-table').hidden = routes.length === 0;
    $('routes-empty').hidden = routes.length > 0 || !state.network;
    const names = new Map(state.members.map((m) => [m.node_id, memberName(m)]));
    syncRows(
      $('routes-body'),
      routes,
      (r) => r.target,
      () => {
        const tr = h('tr');
        const [target, via, gateway, actions] = cells(tr, 4);
        target.className = 'target';
        via.className = 'via';
        gateway.className = 'gateway';
        actions.className = 'actions';
        fill(actions, 'x', () =>
          h('button', { type: 'button', class: 'remove danger small-btn', 'data-action': 'remove', text: 'Remove' }),
        );
        return tr;
      },
      (tr, r) => {
        tr.dataset.route = r.target;
        const [target, via, gateway] = tr.children;
        fill(target, r.target, () => h('code', { text: r.target }));
        // A route that fails over lists its gateways, most preferred first.
        const gateways = r.gateways && r.gateways.length ? r.gateways : [r.via];
        const key = gateways.map((g) => `${g}:${names.get(g)}`).join(',');
        fill(via, key, () =>
          gateways.flatMap((g, i) => {
            const name = names.get(g);
            return [
              i > 0 ? h('span', { class: 'muted', text: ', then ' }) : null,
              name && name !== '—' ? h('span', { text: `${name} ` }) : null,
              h('code', { text: g }),
            ];
          }),
        );
        setText(gateway, r.gateway || '—');
      },
    );
  }

  $('routes-body').addEventListener('click', async (ev) => {
    const button = ev.target.closest('button[data-action="remove"]');
    if (!button || !state.network) return;
    const target = button.closest('tr').dataset.route;
    const path = `${nwidPath(state.network.id)}/routes?target=${encodeURIComponent(target)}`;
    const r = await act(button, () => api('DELETE', path));
    if (r.ok) {
      state.routes = state.routes.filter((x) => x.target !== target);
      renderRoutes();
      showNotice(`Removed the route to ${target}`);
    }
  });

  $('route-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!state.network) return;
    const body = { target: $('route-target').value.trim(), via: $('route-via').value.trim() };
    const r = await act($('route-add'), () => api('POST', `${nwidPath(state.network.id)}/routes`, body));
    if (r.ok) {
      $('route-target').value = '';
      if (r.value && r.value.target && !state.routes.some((x) => x.target === r.value.target)) {
        state.routes.push(r.value);
      }
      renderRoutes();
      showNotice(`Added the route to ${body.target}`);
    }
  });

  // ---------------------------------------------------------------- the mesh picture

  function renderMesh() {
    const box = $('mesh');
    const empty = $('mesh-empty');
    const mesh = state.mesh;
    if (!mesh) {
      fill(box, 'none', () => []);
      empty.hidden = !state.network;
      setText(empty, state.meshError ? `The mesh picture is unavailable: ${state.meshError}` : 'No mesh data yet.');
      return;
    }
    const byId = new Map(state.members.map((m) => [m.node_id, m]));
    const members = (mesh.members || []).slice().sort((a, b) => (a.node_id < b.node_id ? -1 : 1));
    const plain = (mm) => {
      const m = byId.get(mm.node_id);
      return mm.name || (m && m.hostname) || mm.node_id;
    };
    // Hosts often share a host name: a label that is not unique gets the node id's start.
    const uses = new Map();
    for (const mm of members) uses.set(plain(mm), (uses.get(plain(mm)) || 0) + 1);
    const label = (mm) => {
      const p = plain(mm);
      return uses.get(p) > 1 && p !== mm.node_id ? `${p} · ${mm.node_id.slice(0, 6)}` : p;
    };
    empty.hidden = members.length > 0;
    setText(empty, 'Authorized members and the paths between them show here.');
    const sig = JSON.stringify([members.map((m) => [m.node_id, label(m), m.online]), mesh.links]);
    const width = Math.round(Math.min(640, Math.max(300, box.clientWidth || 640)) / 20) * 20;
    fill(box, `${width}:${sig}`, () => meshSvg(members, mesh.links || [], label, width));
  }

  function meshSvg(members, links, label, width) {
    const n = members.length;
    if (!n) return [];
    const W = width;
    const H = n <= 2 ? 200 : Math.min(420, W);
    const cx = W / 2;
    const cy = H / 2;
    const R = n <= 2 ? W / 2 - 80 : Math.min(W, H) / 2 - 70;
    const pos = new Map();
    members.forEach((m, i) => {
      let angle;
      if (n === 1) angle = null;
      else if (n === 2) angle = i === 0 ? Math.PI : 0;
      else angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
      const x = angle === null ? cx : cx + R * Math.cos(angle);
      const y = angle === null ? cy : cy + R * Math.sin(angle);
      pos.set(m.node_id, { x, y, angle });
    });

    const svg = s('svg', {
      class: 'mesh-svg',
      viewBox: `0 0 ${W} ${H}`,
      role: 'img',
      'aria-label': `Mesh of ${n} member(s) and ${links.length} link(s)`,
    });
    const gLinks = s('g', { class: 'links' });
    const gLabels = s('g', { class: 'rtt-labels' });
    for (const l of links) {
      const a = pos.get(l.a);
      const b = pos.get(l.b);
      if (!a || !b) continue;
      const path = ['direct', 'relay', 'none'].includes(l.path) ? l.path : 'none';
      const rtt = rttText(l.rtt_ms);
      const line = s('line', {
        class: `link link-${path}`,
        x1: a.x.toFixed(1),
        y1: a.y.toFixed(1),
        x2: b.x.toFixed(1),
        y2: b.y.toFixed(1),
        'data-a': l.a,
        'data-b': l.b,
        'data-path': path,
        'data-direct': l.direct || null,
        'data-rtt': l.rtt_ms === null || l.rtt_ms === undefined ? null : String(l.rtt_ms),
      });
      const what = path === 'direct' ? `direct${l.direct ? ` (${l.direct})` : ''}` : path === 'relay' ? 'relayed' : 'no path';
      line.append(s('title', { text: `${l.a} ↔ ${l.b}: ${what}${rtt ? `, ${rtt}` : ''}` }));
      gLinks.append(line);
      if (rtt) {
        gLabels.append(
          s('text', {
            class: `rtt-label rtt-${path}`,
            x: ((a.x + b.x) / 2).toFixed(1),
            y: ((a.y + b.y) / 2 - 6).toFixed(1),
            'text-anchor': 'middle',
            'data-a': l.a,
            'data-b': l.b,
            text: rtt,
          }),
        );
      }
    }
    const gNodes = s('g', { class: 'members' });
    for (const m of members) {
      const p = pos.get(m.node_id);
      const cls = m.online ? 'online' : 'offline';
      const g = s('g', { class: `member ${cls}`, 'data-node': m.node_id });
      const circle = s('circle', {
        class: `node ${cls}`,
        cx: p.x.toFixed(1),
        cy: p.y.toFixed(1),
        r: 16,
        'data-node': m.node_id,
        'data-online': String(Boolean(m.online)),
      });
      circle.append(s('title', { text: `${label(m)} (${m.node_id}): ${m.online ? 'online' : 'offline'}` }));
      // The label outward from the centre: beside the node left and right, above or below
      // it at the top and bottom.
      let lx = p.x;
      let ly = p.y + 36;
      let anchor = 'middle';
      if (p.angle !== null) {
        const c = Math.cos(p.angle);
        const sn = Math.sin(p.angle);
        if (Math.abs(c) > 0.35) {
          lx = p.x + (c > 0 ? 24 : -24);
          ly = p.y + 5;
          anchor = c > 0 ? 'start' : 'end';
        } else {
          ly = sn > 0 ? p.y + 36 : p.y - 26;
        }
        if (n === 2) {
          lx = p.x;
          ly = p.y + 40;
          anchor = 'middle';
        }
      }
      const text = s('text', {
        class: 'node-label',
        x: lx.toFixed(1),
        y: ly.toFixed(1),
        'text-anchor': anchor,
        'data-node': m.node_id,
        text: shorten(label(m), 22),
      });
      g.append(circle, text);
      gNodes.append(g);
    }
    svg.append(gLinks, gLabels, gNodes);
    return svg;
  }

  // ---------------------------------------------------------------- replicas

  function renderReplicas() {
    const c = state.cluster;
    $('replicas-none').hidden = c !== null;
    $('replicas-view').hidden = c === null;
    if (!c) return;
    const replicas = (c.replicas || []).slice().sort((a, b) => a.id - b.id);
    const leader = replicas.find((r) => r.id === c.leader);
    const facts = [
      ['Leader', c.leader === null || c.leader === undefined ? 'none' : `${c.leader}${leader ? ` (${leader.address})` : ''}`],
      ['Term', String(c.term ?? '—')],
      ['Reported by', String(c.reported_by ?? '—')],
      ['Last log index', c.last_log_index === null || c.last_log_index === undefined ? '—' : String(c.last_log_index)],
    ];
    fill($('cluster-facts'), JSON.stringify(facts), () =>
      facts.map(([k, v]) => h('div', { class: 'fact' }, h('dt', { text: k }), h('dd', { text: v }))),
    );
    $('cluster-note').hidden = !c.note;
    setText($('cluster-note'), c.note || '');
    syncRows(
      $('replicas-body'),
      replicas,
      (r) => String(r.id),
      () => {
        const tr = h('tr');
        const tds = cells(tr, 6);
        ['id', 'address', 'role', 'lag', 'healthy', 'contact'].forEach((k, i) => {
          tds[i].className = k;
        });
        return tr;
      },
      (tr, r) => {
        tr.dataset.replica = String(r.id);
        tr.dataset.role = r.role;
        tr.classList.toggle('leader', r.id === c.leader);
        const [id, address, role, lag, healthy, contact] = tr.children;
        setText(id, String(r.id));
        fill(address, `${r.address}:${r.key}`, () => [
          h('code', { text: r.address }),
          r.key ? h('div', { class: 'sub', title: 'replica key', text: shorten(r.key, 24) }) : null,
        ]);
        fill(role, r.role, () => h('span', { class: `badge badge-role-${r.role}`, text: r.role }));
        setText(lag, r.lag === null || r.lag === undefined ? '—' : String(r.lag));
        const hv = r.healthy === null || r.healthy === undefined ? '—' : r.healthy ? 'yes' : 'no';
        fill(healthy, hv, () =>
          r.healthy === null || r.healthy === undefined
            ? '—'
            : h('span', { class: r.healthy ? 'badge badge-authorized' : 'badge badge-bad', text: hv }),
        );
        setText(contact, ago(r.last_contact_ms) || '—');
      },
    );
  }

  // ---------------------------------------------------------------- sign-in and out

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    const button = $('sign-in');
    if (!token) {
      showError('Enter the admin token.');
      return;
    }
    button.disabled = true;
    try {
      await request('GET', '/v1/networks', undefined, token);
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      clearError();
      if (!location.hash || location.hash === '#' || location.hash === '#/') {
        history.replaceState(null, '', '#/networks');
      }
      render();
    } catch (e) {
      showError(e.message);
    } finally {
      button.disabled = false;
    }
  });

  $('sign-out').addEventListener('click', () => {
    signOut();
    clearError();
    showNotice('Signed out');
  });

  $('error-close').addEventListener('click', clearError);

  window.addEventListener('hashchange', () => {
    clearError();
    render();
  });

  render();
})();
