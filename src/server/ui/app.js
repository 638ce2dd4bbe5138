// hotstock's live sale page (#17): the change feed over SSE (fetch, so the
// operator token goes in a header and never in a URL), /metrics every two
// seconds, and a page of SKUs at a time. The token is kept in this closure
// only: nothing is stored, a reload signs out. Every value shown is set
// with textContent (no HTML is built from data).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const MINUTE = 60000;
  const SPARK_MS = 5 * MINUTE;
  const SPARK_BUCKET_MS = 10000;
  const POINT_MS = 250;
  const PAGE = 25;

  let token = null;
  let position = 0;
  let aborter = null;
  let timers = [];
  // name -> {available, held, sold, backordered, points: [[at_ms, sold]], soldOutAt}
  const skus = new Map();
  let expired = []; // at_ms of each expiry seen
  let pageRows = [];
  let nextAfter = null;
  let metrics = { now: null, before: null };

  // ---- formatting for people ---------------------------------------------
  function count(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '–';
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return String(Math.round(n));
  }
  function rate(r) {
    if (!(r > 0)) return '0/s';
    if (r >= 1000) return (r / 1000).toFixed(1) + 'k/s';
    if (r >= 10) return r.toFixed(0) + '/s';
    return r.toFixed(1) + '/s';
  }
  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }
  function clock(ms) { return new Date(ms).toLocaleTimeString(); }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // ---- signing in and out --------------------------------------------------
  function headers() { return { Authorization: 'Bearer ' + token }; }
  async function api(path) {
    const response = await fetch(path, { headers: headers() });
    if (response.status === 401 || response.status === 403) {
      signOut('The server refused the token (' + response.status + ').');
      throw new Error('refused');
    }
    return response;
  }
  $('login').addEventListener('submit', async (event) => {
    event.preventDefault();
    token = $('token').value;
    $('token').value = '';
    $('login-error').textContent = '';
    try {
      // An operator route: a wrong token is refused here, not later.
      const response = await api('/v1/cluster');
      if (!response.ok) throw new Error('status ' + response.status);
      start();
    } catch (error) {
      if (token) signOut('Could not reach the server: ' + error.message);
    }
  });
  function signOut(message) {
    token = null;
    if (aborter) aborter.abort();
    timers.forEach(clearInterval);
    timers = [];
    skus.clear();
    $('app').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    setLink(false, 'signed out');
  }
  function setLink(on, text) {
    const link = $('link');
    link.className = 'badge ' + (on ? 'on' : 'off');
    link.textContent = text;
  }

  async function start() {
    $('login').hidden = true;
    $('app').hidden = false;
    await scrape();
    position = metricValue(metrics.now, 'hotstock_feed_last_position') || 0;
    await loadPage(null);
    stream();
    timers.push(setInterval(scrape, 2000));
    timers.push(setInterval(render, 1000));
    render();
  }

  // ---- the change feed -----------------------------------------------------
  async function stream() {
    while (token) {
      aborter = new AbortController();
      try {
        // every_ms: the page renders once a second, so the server writes
        // the feed to it once a second too (fewer writes).
        // purchases=latest: of each page's purchases only the last per SKU
        // (it carries the counts after all of them); holds, their ends and
        // SKU events all come. Every purchase cost the browser's renderer
        // about 0.3 of a core at 57k purchases/s (docs/benchmarks.md).
        const response = await fetch('/v1/events/stream?every_ms=1000&purchases=latest&after=' + position,
          { headers: headers(), signal: aborter.signal });
        if (response.status === 401 || response.status === 403) {
          signOut('The server refused the token (' + response.status + ').');
          return;
        }
        if (response.status === 410) {
          // Older than the outbox keeps: start again from now.
          await scrape();
          position = metricValue(metrics.now, 'hotstock_feed_last_position') || 0;
          continue;
        }
        if (!response.ok) throw new Error('status ' + response.status);
        setLink(true, 'live');
        await read(response.body.getReader());
      } catch (error) {
        if (!token) return;
      }
      setLink(false, 'reconnecting…');
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  async function read(reader) {
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      // One split per chunk (a write holds up to a page of 1,000 events),
      // rather than cutting frames off the front of the buffer one by one.
      const frames = buffer.split('\n\n');
      buffer = frames.pop();
      for (const text of frames) frame(text);
    }
  }
  function frame(text) {
    // The server writes `id`, `event`, then `data` last, one line each.
    const at = text.indexOf('data: ');
    if (at < 0 || text.includes('event: error\n')) return;
    const event = JSON.parse(text.slice(at + 6));
    if (event.position <= position) return;
    position = event.position;
    apply(event);
  }
  function sku(name) {
    let s = skus.get(name);
    if (!s) {
      s = { available: 0, held: 0, sold: 0, backordered: 0, points: [], soldOutAt: null };
      skus.set(name, s);
    }
    return s;
  }
  function apply(event) {
    const s = sku(event.sku);
    s.available = event.available;
    s.held = event.held;
    s.sold = event.sold;
    s.backordered = event.backordered || 0;
    notePoint(s, event.at_ms, event.sold);
    switch (event.type) {
      case 'sku.sold_out': s.soldOutAt = event.at_ms; break;
      case 'sku.back_in_stock': s.soldOutAt = null; break;
      case 'reservation.expired': expired.push(event.at_ms); break;
      default:
    }
  }

  // The sold count over time, kept at POINT_MS resolution: one point per
  // slot, the last event's. A sale makes tens of thousands of events a
  // second; a point for each made every render walk all of them (up to
  // millions over the sparkline's 5 minutes). Rates and the sparkline are off by at most one slot's sales.
  function notePoint(s, at, sold) {
    const last = s.points[s.points.length - 1];
    if (s.points.length > 1 && Math.floor(last[0] / POINT_MS) === Math.floor(at / POINT_MS)) {
      last[0] = at;
      last[1] = sold;
    } else {
      s.points.push([at, sold]);
    }
    const oldest = at - SPARK_MS - SPARK_BUCKET_MS;
    while (s.points.length > 2 && s.points[1][0] < oldest) s.points.shift();
  }

  // Units sold per second over the last `window` ms, from the feed.
  function soldRate(s, now, window) {
    if (s.points.length === 0) return 0;
    const from = now - window;
    let base = s.points[0];
    for (const point of s.points) {
      if (point[0] <= from) base = point; else break;
    }
    const span = Math.min(window, now - base[0]);
    return span > 0 ? (s.sold - base[1]) / (span / 1000) : 0;
  }

  // ---- /metrics --------------------------------------------------------------
  async function scrape() {
    try {
      const response = await api('/metrics');
      if (!response.ok) return;
      const samples = new Map();
      for (const line of (await response.text()).split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        const space = line.lastIndexOf(' ');
        samples.set(line.slice(0, space), Number(line.slice(space + 1)));
      }
      metrics = { now: { at: Date.now(), samples }, before: metrics.now };
    } catch (error) {
      // Shown as stale by the health tiles; the next scrape retries.
    }
  }
  function metricValue(scraped, name) {
    if (!scraped) return null;
    return scraped.samples.has(name) ? scraped.samples.get(name) : null;
  }
  // The sum over the series of `name` whose labels contain `needle`.
  function metricSum(scraped, name, needle) {
    let sum = 0;
    if (!scraped) return sum;
    for (const [key, value] of scraped.samples) {
      if (key.startsWith(name + '{') && (!needle || key.includes(needle))) sum += value;
    }
    return sum;
  }
  function perSecond(name, needle) {
    const { now, before } = metrics;
    if (!now || !before) return 0;
    return (metricSum(now, name, needle) - metricSum(before, name, needle)) / ((now.at - before.at) / 1000);
  }
  // The fsync p99 of the last interval, from the histogram's buckets.
  function fsyncP99() {
    const { now, before } = metrics;
    if (!now || !before) return null;
    const buckets = [];
    for (const [key, value] of now.samples) {
      const match = key.match(/^hotstock_journal_fsync_seconds_bucket\{le="([^"]+)"\}$/);
      if (match) buckets.push([Number(match[1]), value - (before.samples.get(key) || 0)]);
    }
    buckets.sort((a, b) => a[0] - b[0]);
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (total <= 0) return null;
    const wanted = total * 0.99;
    for (const [le, cumulative] of buckets) if (cumulative >= wanted) return le;
    return null;
  }

  // ---- rendering -------------------------------------------------------------
  function tile(label, value, bad) {
    const t = el('div', undefined, 'tile' + (bad ? ' bad' : ''));
    t.append(el('b', value), el('span', label, 'dim'));
    return t;
  }
  function render() {
    if (!token) return;
    const now = Date.now();
    renderHealth();
    renderHolds(now);
    renderRooms();
    renderHot(now);
    renderAll();
  }
  function renderHealth() {
    const scraped = metrics.now;
    const failed = metricValue(scraped, 'hotstock_journal_failed') === 1;
    const p99 = fsyncP99();
    const stale = !scraped || Date.now() - scraped.at > 10000;
    $('health').replaceChildren(
      tile('storage', failed ? 'FAILED' : (stale ? 'no answer' : 'ok'), failed || stale),
      tile('journal durable lag (epochs)', count(metricValue(scraped, 'hotstock_journal_durable_lag_epochs'))),
      tile('fsync p99', p99 === null ? '–' : (p99 * 1000).toFixed(1) + ' ms'),
      tile('requests in flight', count(metricValue(scraped, 'hotstock_http_requests_in_flight'))),
      tile('429 answers', rate(perSecond('hotstock_http_responses_total', 'status="429"'))),
      tile('503 answers', rate(perSecond('hotstock_http_responses_total', 'status="503"')),
        perSecond('hotstock_http_responses_total', 'status="503"') > 0),
    );
  }
  // Open and expiring holds are the server's own counts (/metrics), every
  // hold and not only those made since the page opened; expiries per
  // second come from the feed.
  function renderHolds(now) {
    const scraped = metrics.now;
    expired = expired.filter((at) => at > now - MINUTE);
    const recent = expired.filter((at) => at > now - 10000).length / 10;
    let heldUnits = 0;
    for (const s of skus.values()) heldUnits += s.held;
    $('holds').replaceChildren(
      tile('holds open', count(metricValue(scraped, 'hotstock_holds_open'))),
      tile('expiring in the next minute', count(metricValue(scraped, 'hotstock_holds_expiring'))),
      tile('expired', rate(recent)),
      tile('units held (SKUs seen)', count(heldUnits)),
    );
  }
  function renderRooms() {
    const scraped = metrics.now;
    const rooms = [];
    if (scraped) {
      for (const [key, value] of scraped.samples) {
        const match = key.match(/^hotstock_queue_waiting\{sku="(.*)"\}$/);
        if (match) rooms.push([match[1], value]);
      }
    }
    $('rooms-section').hidden = rooms.length === 0;
    $('rooms').replaceChildren(...rooms.flatMap(([name, waiting]) => [
      tile(name + ': waiting', count(waiting)),
      tile(name + ': admitted', count(metricValue(scraped, 'hotstock_queue_admitted{sku="' + name + '"}'))),
      tile(name + ': lapsed', count(metricValue(scraped, 'hotstock_queue_lapsed_total{sku="' + name + '"}'))),
    ]));
  }
  function bar(s) {
    const total = s.available + s.held + s.sold + s.backordered || 1;
    const b = el('div', undefined, 'bar');
    b.setAttribute('role', 'img');
    b.setAttribute('aria-label', s.available + ' available, ' + s.held + ' held, ' + s.sold + ' sold');
    for (const [cls, n] of [['a', s.available], ['h', s.held], ['s', s.sold], ['o', s.backordered]]) {
      const part = el('span', undefined, cls);
      part.style.width = (100 * n / total) + '%';
      b.append(part);
    }
    return b;
  }
  function sparkline(s, now) {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', '0 0 30 10');
    svg.setAttribute('preserveAspectRatio', 'none');
    const rates = [];
    for (let end = now - SPARK_MS + SPARK_BUCKET_MS; end <= now; end += SPARK_BUCKET_MS) {
      rates.push(Math.max(0, soldAt(s, end) - soldAt(s, end - SPARK_BUCKET_MS)));
    }
    const top = Math.max(1, ...rates);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', rates.map((r, i) => i + ',' + (10 - 9 * r / top).toFixed(2)).join(' '));
    svg.append(line);
    return svg;
  }
  function soldAt(s, at) {
    let sold = s.points.length ? s.points[0][1] : s.sold;
    for (const point of s.points) {
      if (point[0] <= at) sold = point[1]; else break;
    }
    return sold;
  }
  function soldOutCell(s, r) {
    if (s.soldOutAt !== null || (s.available === 0 && s.held === 0 && s.sold > 0)) {
      return el('td', 'sold out' + (s.soldOutAt ? ' at ' + clock(s.soldOutAt) : ''), 'soldout');
    }
    if (r > 0 && s.available > 0) return el('td', 'in ' + duration(s.available / r * 1000));
    return el('td', '–', 'dim');
  }
  function renderHot(now) {
    const ranked = [...skus.entries()]
      .map(([name, s]) => [name, s, soldRate(s, now, MINUTE)])
      .filter(([, s, r]) => r > 0 || s.soldOutAt !== null)
      .sort((a, b) => b[2] - a[2] || b[1].sold - a[1].sold)
      .slice(0, 10);
    const rows = ranked.map(([name, s, r]) => {
      const tr = el('tr');
      tr.dataset.sku = name;
      const stock = el('td');
      stock.append(bar(s));
      const spark = el('td');
      spark.append(sparkline(s, now));
      tr.append(el('td', name), stock, el('td', rate(r), 'num rate'), spark, soldOutCell(s, r));
      return tr;
    });
    if (rows.length === 0) {
      const tr = el('tr');
      const td = el('td', 'Nothing sold since the page opened.', 'dim');
      td.colSpan = 5;
      tr.append(td);
      rows.push(tr);
    }
    $('hot').tBodies[0].replaceChildren(...rows);
  }
  function renderAll() {
    const rows = pageRows.map((row) => {
      const live = skus.get(row.sku) || row;
      const tr = el('tr');
      tr.dataset.sku = row.sku;
      const name = el('td', row.sku);
      tr.append(name, el('td', count(live.available), 'num available'), el('td', count(live.held), 'num held'),
        el('td', count(live.sold), 'num sold'), el('td', count(live.backordered), 'num backordered'));
      if (live.soldOutAt || (live.available === 0 && live.held === 0 && live.sold > 0)) {
        name.append(' ', el('span', 'sold out', 'soldout'));
      }
      return tr;
    });
    $('all').tBodies[0].replaceChildren(...rows);
    $('next').disabled = nextAfter === null;
  }

  // ---- paging and search -----------------------------------------------------
  async function loadPage(after) {
    const query = '/v1/skus?limit=' + PAGE + (after === null ? '' : '&after=' + encodeURIComponent(after));
    const response = await api(query);
    if (!response.ok) return;
    const body = await response.json();
    nextAfter = body.next_after;
    pageRows = body.skus;
    for (const row of pageRows) {
      const s = sku(row.sku);
      if (s.points.length === 0) {
        Object.assign(s, { available: row.available, held: row.held, sold: row.sold, backordered: row.backordered });
      }
    }
    renderAll();
  }
  $('first').addEventListener('click', () => loadPage(null));
  $('next').addEventListener('click', () => { if (nextAfter !== null) loadPage(nextAfter); });
  $('search').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = $('find').value.trim();
    if (name === '') { loadPage(null); return; }
    const response = await api('/v1/skus/' + encodeURIComponent(name));
    if (response.status === 404) {
      pageRows = [];
      nextAfter = null;
      renderAll();
      $('all').tBodies[0].replaceChildren(el('tr', 'No SKU is named ' + name + '.', 'dim'));
      return;
    }
    if (!response.ok) return;
    pageRows = [await response.json()];
    nextAfter = null;
    renderAll();
  });
})();
