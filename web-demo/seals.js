'use strict';
// 印章管理 and 扫码签章 with an electronic seal (GB/T 38540) on the phone simulator page.
// Loaded after phone.html's own script and uses its helpers (phone, $, api, say, esc, sm2, bytes).
// The development CA makes each seal (POST /demo/api/seals) for this page's certificate; the page
// keeps the seal's DER and, when a bid tool asks for a seal signature, builds the SES_Signature
// itself: DER(TBS_Sign) around the seal, signed with this page's SM2 key (SM3, ID 1234567812345678),
// or with a split key co-signed by the service, which checks the TBS_Sign against the broker's ask.

const BztSeals = (() => {
  const STORE = 'bzt-demo-seals';
  /** { es_id, name, type, seal_b64, picture_b64, cert_serial } — kept across reloads (the seal
   * is public data), but only seals made for the current certificate are offered. */
  let seals = [];
  try { seals = JSON.parse(localStorage.getItem(STORE) || '[]'); } catch { seals = []; }
  let chosen = null; // es_id picked for the session being confirmed (and its conversation)

  const save = () => { try { localStorage.setItem(STORE, JSON.stringify(seals)); } catch { /* private mode */ } };
  const mine = () => seals.filter((s) => phone.serial && s.cert_serial === phone.serial);
  const TYPE = { company: '单位公章', personal: '个人私章' };

  // ---- DER, just what TBS_Sign and SES_Signature need ----
  function len(n) {
    if (n < 0x80) return [n];
    const out = [];
    while (n > 0) { out.unshift(n & 0xff); n >>= 8; }
    return [0x80 | out.length, ...out];
  }
  const tlv = (tag, bytes) => Uint8Array.from([tag, ...len(bytes.length), ...bytes]);
  const cat = (...parts) => { const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0)); let i = 0; for (const p of parts) { out.set(p, i); i += p.length; } return out; };
  const ascii = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));
  const OID_SM2_SM3 = Uint8Array.from([0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75]); // 1.2.156.10197.1.501
  function generalizedTime(d) {
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return tlv(0x18, ascii(`${p(d.getUTCFullYear(), 4)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`));
  }
  const certDer = (pem) => b64ToBytes(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''));

  /** DER(TBS_Sign) around `seal` for `ask` ({data_hash_b64, property_info}), dated now. */
  function tbsSign(ask, seal) {
    return tlv(0x30, cat(
      Uint8Array.from([0x02, 0x01, 0x04]),                 // version 4
      b64ToBytes(seal.seal_b64),                           // eseal, as the maker made it
      generalizedTime(new Date()),                         // timeInfo
      tlv(0x03, cat(Uint8Array.from([0]), b64ToBytes(ask.data_hash_b64))), // dataHash
      tlv(0x16, ascii(ask.property_info)),                 // propertyInfo
    ));
  }
  /** SES_Signature (DER, base64) around `tbs` and its signature (DER bytes). */
  const sesSignature = (tbs, sig) => bytesToB64(tlv(0x30, cat(tbs, tlv(0x04, certDer(phone.certPem)), OID_SM2_SM3, tlv(0x03, cat(Uint8Array.from([0]), sig)))));

  /** SES_Signature (DER, base64) stamping `ask` with `seal`: signed with this page's whole key,
   * or co-signed by the split key's service (`context` names the session or request; `pin`). */
  async function stamp(ask, seal, context, pin) {
    const tbs = tbsSign(ask, seal);
    if (phone.split) return sesSignature(tbs, await BztPhoneSplit.sealSignFor(context, tbs, pin));
    const sigHex = sm2.doSignature(Array.from(tbs), phone.keys.privateKey, { hash: true, der: true, publicKey: phone.keys.publicKey });
    return sesSignature(tbs, hexToBytes(sigHex));
  }

  // ---- 印章管理 ----
  function render() {
    const ul = $('seal-list');
    ul.innerHTML = '';
    if (!seals.length) ul.innerHTML = '<li class="muted">尚无印章</li>';
    for (const s of seals) {
      const li = document.createElement('li');
      li.dataset.esId = s.es_id;
      const usable = s.cert_serial === phone.serial;
      li.innerHTML = '<img alt="" src="data:image/png;base64,' + s.picture_b64 + '"> <span class="seal-name">' + esc(s.name) + '</span> <span class="tag">'
        + esc(TYPE[s.type] || s.type) + '</span>' + (usable ? '' : ' <span class="muted">（不适用于当前证书）</span>') + ' ';
      const rename = document.createElement('button');
      rename.textContent = '改名';
      rename.className = 'seal-rename';
      rename.addEventListener('click', () => {
        // The name inside the seal is signed by the maker; this renames the phone's label only.
        const name = prompt('印章显示名称', s.label || s.name);
        if (name && name.trim()) { s.label = name.trim(); s.name = name.trim(); save(); render(); }
      });
      const del = document.createElement('button');
      del.textContent = '删除';
      del.className = 'seal-delete';
      del.addEventListener('click', () => { seals = seals.filter((x) => x !== s); save(); render(); });
      li.append(rename, ' ', del);
      ul.appendChild(li);
    }
  }

  async function add(pictureBytes) {
    if (!phone.certPem) { say('请先申请证书', 'bad'); return; }
    const name = $('seal-name').value.trim();
    const type = $('seal-type').value;
    try {
      const picture_b64 = bytesToB64(pictureBytes);
      const r = await api('POST', '/demo/api/seals', { certificate_pem: phone.certPem, name, type, picture_b64 });
      seals.push({ es_id: r.es_id, name: r.name, type: r.type, seal_b64: r.seal_b64, picture_b64, cert_serial: phone.serial });
      save();
      render();
      say('已添加印章：' + r.name, 'ok');
    } catch (e) { say('添加印章失败：' + e.message, 'bad'); }
  }

  const canvasPng = (canvas) => b64ToBytes(canvas.toDataURL('image/png').split(',')[1]);

  /** A red round company seal with `name` around a star, drawn on a canvas. */
  function companySealPng(name) {
    const c = document.createElement('canvas');
    c.width = c.height = 200;
    const g = c.getContext('2d');
    g.strokeStyle = g.fillStyle = '#d21f1f';
    g.lineWidth = 7;
    g.beginPath(); g.arc(100, 100, 92, 0, 2 * Math.PI); g.stroke();
    g.beginPath();
    for (let i = 0; i < 10; i++) {
      const r = i % 2 ? 12 : 30, a = -Math.PI / 2 + (i * Math.PI) / 5;
      g.lineTo(100 + r * Math.cos(a), 100 + r * Math.sin(a));
    }
    g.closePath(); g.fill();
    g.font = 'bold 24px "Noto Sans CJK SC", sans-serif';
    g.textAlign = 'center';
    const chars = Array.from(name);
    const span = Math.min(Math.PI * 1.3, chars.length * 0.32);
    chars.forEach((ch, i) => {
      const a = -Math.PI / 2 - span / 2 + (chars.length > 1 ? (i * span) / (chars.length - 1) : span / 2);
      g.save();
      g.translate(100 + 68 * Math.cos(a), 100 + 68 * Math.sin(a));
      g.rotate(a + Math.PI / 2);
      g.fillText(ch, 0, 8);
      g.restore();
    });
    return canvasPng(c);
  }

  // Handwriting on the canvas (pointer events: mouse, pen, finger).
  function setupPad() {
    const pad = $('seal-canvas');
    const g = pad.getContext('2d');
    g.lineWidth = 4; g.lineCap = 'round'; g.strokeStyle = '#111';
    let down = false;
    const at = (e) => { const r = pad.getBoundingClientRect(); return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height]; };
    pad.addEventListener('pointerdown', (e) => { down = true; g.beginPath(); g.moveTo(...at(e)); pad.dataset.drawn = 'true'; });
    pad.addEventListener('pointermove', (e) => { if (down) { g.lineTo(...at(e)); g.stroke(); } });
    for (const ev of ['pointerup', 'pointerleave']) pad.addEventListener(ev, () => { down = false; });
    $('seal-clear').addEventListener('click', () => { g.clearRect(0, 0, pad.width, pad.height); delete pad.dataset.drawn; });
    $('seal-add-drawn').addEventListener('click', () => {
      if (pad.dataset.drawn !== 'true') { say('请先在画板上手写签名', 'bad'); return; }
      $('seal-type').value = 'personal';
      add(canvasPng(pad));
    });
  }

  $('seal-add-generated').addEventListener('click', () => add(companySealPng($('seal-name').value.trim() || '示例建设有限公司')));
  $('seal-add-file').addEventListener('click', async () => {
    const f = $('seal-file').files[0];
    if (!f) { say('请选择 PNG 图片', 'bad'); return; }
    add(new Uint8Array(await f.arrayBuffer()));
  });
  setupPad();
  render();

  return {
    render,
    /** On the confirm screen: the seals this certificate may use, one to pick. */
    showChoices(claim) {
      chosen = null;
      const box = $('seal-box');
      box.classList.toggle('hidden', !claim.seal);
      if (!claim.seal) return;
      $('tbs-box').classList.add('hidden');
      const list = $('seal-choices');
      list.innerHTML = '';
      const usable = mine();
      if (!usable.length) list.innerHTML = '<p class="warn">没有适用于本证书的印章，请先在“印章管理”中添加</p>';
      for (const s of usable) {
        const b = document.createElement('button');
        b.className = 'seal-choice';
        b.dataset.esId = s.es_id;
        b.innerHTML = '<img alt="" src="data:image/png;base64,' + s.picture_b64 + '"><br>' + esc(s.name);
        b.addEventListener('click', () => {
          chosen = s.es_id;
          for (const o of list.children) o.classList.toggle('picked', o === b);
        });
        list.appendChild(b);
      }
      if (usable.length === 1) list.firstChild.click();
    },
    /** The completion body of a seal session (`pin`: a split key's), or an Error saying what is missing. */
    async completion(claim, pin) {
      const seal = mine().find((s) => s.es_id === chosen);
      if (!seal) throw new Error('请先选择印章');
      const context = phone.split ? BztPhoneSplit.sessionContext(claim) : null;
      return { certificate_pem: phone.certPem, seal_signature_b64: await stamp(claim.seal, seal, context, pin) };
    },
    /** A conversation's answer to a seal request, stamped with the seal chosen at the opening
     * (`c`: the conversation, whose PIN a split key keeps while it lasts). */
    async conversationFrame(m, auto, c) {
      const seal = mine().find((s) => s.es_id === chosen) || mine()[0];
      if (!seal) return { type: 'sign_reject', request_id: m.request_id, reason: '手机未选择印章' };
      const context = phone.split ? BztPhoneSplit.conversationContext(c, m) : null;
      return { type: 'sign_response', request_id: m.request_id, seal_signature_b64: await stamp(m.seal, seal, context, c && c.splitPin), auto_confirmed: auto };
    },
  };
})();
