// The report's explorer: filter, sort and page through the sampled pairs, open an image with all its masks,
// and mark pairs right or wrong; the marks stay in this browser (localStorage) and are saved as an audit file
// that `ovmine stats RUN --audit FILE` and `ovmine curate --audit FILE` read. Plain DOM, no library.
(function () {
  'use strict';
  const DATA = JSON.parse(document.getElementById('explore-data').textContent);
  const META = DATA.meta;
  const STORE = 'ovmine-audit:' + META.config_hash + ':' + META.output;
  const $ = (id) => document.getElementById(id);
  const pairKey = (p) => [p.shard, p.key, p.mask, p.noun].join('\u001f');
  let marks = {};   // pairKey -> {shard, key, mask, noun, verdict}
  let page = 0;

  try { marks = JSON.parse(localStorage.getItem(STORE) || '{}'); } catch (e) { marks = {}; }
  function saveLocal() {
    try { localStorage.setItem(STORE, JSON.stringify(marks)); } catch (e) { /* a file:// page may not store */ }
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === 'text') node.textContent = v; else if (k === 'cls') node.className = v; else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c));
    return node;
  }

  function number(id) {
    const v = $(id).value.trim();
    return v === '' ? null : Number(v);
  }

  function status(p) {
    const m = marks[pairKey(p)];
    return m ? m.verdict : 'unmarked';
  }

  function truthClass(t) {
    return t === 'right' ? 'right' : (t === 'wrong' || t === 'duplicate') ? 'wrong' : 'other';
  }

  function matches() {
    const noun = $('x-noun').value, text = $('x-text').value.trim().toLowerCase();
    const simMin = number('x-sim-min'), simMax = number('x-sim-max'), marginMin = number('x-margin-min');
    const areaMin = number('x-area-min'), areaMax = number('x-area-max'), show = $('x-status').value;
    return DATA.pairs.filter((p) => {
      if (noun && p.noun !== noun) return false;
      if (text && !(p.noun + ' ' + p.phrase + ' ' + p.key).toLowerCase().includes(text)) return false;
      if (simMin !== null && p.similarity < simMin) return false;
      if (simMax !== null && p.similarity > simMax) return false;
      if (marginMin !== null && p.margin !== null && p.margin < marginMin) return false;
      if (areaMin !== null && p.area < areaMin) return false;
      if (areaMax !== null && p.area > areaMax) return false;
      if (show === 'all') return true;
      if (show.startsWith('truth:')) return truthClass(p.truth) === show.slice(6);
      return status(p) === show;
    });
  }

  const SORTS = {
    order: (a, b) => a.order - b.order,
    'similarity-asc': (a, b) => a.similarity - b.similarity,
    'similarity-desc': (a, b) => b.similarity - a.similarity,
    'margin-asc': (a, b) => (a.margin === null ? 9 : a.margin) - (b.margin === null ? 9 : b.margin),
    'margin-desc': (a, b) => (b.margin === null ? -1 : b.margin) - (a.margin === null ? -1 : a.margin),
    'area-asc': (a, b) => a.area - b.area,
    'area-desc': (a, b) => b.area - a.area,
    noun: (a, b) => a.noun.localeCompare(b.noun) || a.order - b.order,
  };

  function mark(p, verdict) {
    const k = pairKey(p);
    if (marks[k] && marks[k].verdict === verdict) delete marks[k];
    else marks[k] = {shard: p.shard, key: p.key, mask: p.mask, noun: p.noun, verdict: verdict};
    saveLocal();
    render();
  }

  function picture(image, layer, alt) {
    if (!image || !image.image) return el('div', {cls: 'noimg', text: 'image unavailable'});
    const box = el('div', {cls: 'thumb'}, [el('img', {cls: 'raw', alt: alt, src: 'data:image/jpeg;base64,' + image.image})]);
    if (layer) box.appendChild(el('img', {cls: 'mask', alt: 'mask of ' + alt, src: 'data:image/png;base64,' + layer}));
    return box;
  }

  function card(p) {
    const image = DATA.images[p.image];
    const pic = picture(image, p.layer, p.noun);
    pic.title = 'open the image with all its masks';
    pic.addEventListener('click', () => openImage(p.image));
    const margin = p.margin === null ? 'no rival' : p.margin.toFixed(3);
    const info = el('figcaption', {}, [
      el('b', {text: p.noun}), ' ', el('span', {cls: 'phrase', text: p.phrase}), el('br'),
      'sim ' + p.similarity.toFixed(3) + ' · margin ' + margin + ' · ' + p.area + ' px', el('br'),
      el('small', {text: p.shard + '/' + p.key + ' mask ' + p.mask})]);
    if (p.truth !== undefined) {
      info.appendChild(el('br'));
      info.appendChild(el('span', {cls: 'truth ' + truthClass(p.truth), text: 'ground truth: ' + p.truth}));
    }
    const current = status(p);
    const buttons = el('div', {cls: 'verdict'});
    ['right', 'wrong'].forEach((v) => {
      const b = el('button', {type: 'button', cls: 'mark-' + v, 'aria-pressed': String(current === v), text: v});
      b.addEventListener('click', () => mark(p, v));
      buttons.appendChild(b);
    });
    info.appendChild(buttons);
    return el('figure', {cls: 'card xpair ' + current, 'data-order': String(p.order), 'data-noun': p.noun,
                              'data-similarity': String(p.similarity)}, [pic, info]);
  }

  function tally() {
    const all = Object.values(marks);
    const right = all.filter((m) => m.verdict === 'right').length;
    $('x-marked').textContent = all.length + ' marked: ' + right + ' right, ' + (all.length - right) + ' wrong';
  }

  function render() {
    const found = matches().sort(SORTS[$('x-sort').value]);
    const size = Number($('x-page-size').value);
    const pages = Math.max(1, Math.ceil(found.length / size));
    page = Math.min(page, pages - 1);
    const cards = $('x-cards');
    cards.replaceChildren(...found.slice(page * size, (page + 1) * size).map(card));
    $('x-page').textContent = 'page ' + (page + 1) + ' of ' + pages + ' · ' + found.length + ' pairs';
    $('x-prev').disabled = page === 0;
    $('x-next').disabled = page >= pages - 1;
    const noun = $('x-noun').value;
    const entry = DATA.nouns.find((n) => n[0] === noun);
    // entry: [noun, pairs in the page, pairs in the shards sampled from, pairs in the output]
    const pool = !entry || entry[2] === entry[3] ? '' : ' in the ' + DATA.shards[0] + ' shards sampled (' +
      entry[3] + ' in the output)';
    $('x-noun-note').textContent = !entry ? '' : entry[1] === entry[3]
      ? 'all ' + entry[3] + ' pairs of "' + noun + '"'
      : 'a uniform sample of ' + entry[1] + ' of the ' + entry[2] + ' pairs of "' + noun + '"' + pool +
        ' (--explore sets the budget)';
    tally();
  }

  function openImage(index) {
    const image = DATA.images[index];
    const view = $('image-view');
    const masks = el('ol', {cls: 'masklist'}, image.masks.map((m) => el('li', {}, [
      el('span', {cls: 'swatch', style: 'background:' + m.colour}),
      'mask ' + m.index + ' · ' + m.area + ' px · ',
      m.pairs.length ? el('b', {text: m.pairs.join(', ')}) : el('span', {cls: 'detail', text: 'no pair (dropped)'})])));
    const entities = el('ul', {cls: 'entities'}, image.entities.map((e) => el('li', {}, [
      el('b', {text: e.noun}), ' ', el('span', {cls: 'phrase', text: e.phrase}), ' ',
      el('span', {cls: e.paired ? 'truth right' : 'truth other', text: e.paired ? 'paired' : 'no pair'})])));
    const captions = el('ol', {cls: 'captions'}, image.captions.map((c) => el('li', {text: c})));
    view.querySelector('.view-body').replaceChildren(
      el('div', {cls: 'view-picture'}, [picture(image, image.layer, image.key)]),
      el('div', {cls: 'view-text'}, [
        el('h3', {text: image.shard + '/' + image.key}),
        el('p', {text: image.masks.length + ' masks, ' + image.masks.filter((m) => m.pairs.length).length + ' paired'}),
        masks, el('h4', {text: 'entities'}), entities, el('h4', {text: 'captions'}), captions]));
    view.hidden = false;
  }

  function auditDoc() {
    return {kind: 'ovmine.audit/1', output: META.output, config_hash: META.config_hash, seed: META.seed,
            saved: new Date().toISOString(), marks: Object.values(marks)};
  }

  function download() {
    const blob = new Blob([JSON.stringify(auditDoc(), null, 1)], {type: 'application/json'});
    const a = el('a', {href: URL.createObjectURL(blob), download: META.audit_file});
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  function load(file) {
    const reader = new FileReader();
    reader.onload = () => {
      let doc;
      try { doc = JSON.parse(reader.result); } catch (e) { alert(file.name + ': not JSON'); return; }
      if (doc.kind !== 'ovmine.audit/1') { alert(file.name + ': not an ovmine audit file'); return; }
      if (doc.config_hash !== META.config_hash) {
        alert(file.name + ' marks the pairs of another output (config ' + doc.config_hash + ')');
        return;
      }
      doc.marks.forEach((m) => { marks[pairKey(m)] = m; });
      saveLocal();
      render();
    };
    reader.readAsText(file);
  }

  ['x-noun', 'x-text', 'x-sim-min', 'x-sim-max', 'x-margin-min', 'x-area-min', 'x-area-max', 'x-status', 'x-sort',
   'x-page-size'].forEach((id) => ['input', 'change'].forEach((event) =>   // a select may send only 'change'
    $(id).addEventListener(event, () => { page = 0; render(); })));
  $('x-prev').addEventListener('click', () => { page -= 1; render(); });
  $('x-next').addEventListener('click', () => { page += 1; render(); });
  $('x-save').addEventListener('click', download);
  $('x-load').addEventListener('change', (e) => { if (e.target.files[0]) load(e.target.files[0]); });
  $('x-clear').addEventListener('click', () => {
    if (confirm('Forget all ' + Object.keys(marks).length + ' marks of this output in this browser?')) {
      marks = {};
      saveLocal();
      render();
    }
  });
  $('image-view').querySelector('.close').addEventListener('click', () => { $('image-view').hidden = true; });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('image-view').hidden = true; });
  document.querySelectorAll('[data-explore-noun]').forEach((a) => a.addEventListener('click', () => {
    $('x-noun').value = a.dataset.exploreNoun;
    page = 0;
    render();
  }));
  render();
})();
