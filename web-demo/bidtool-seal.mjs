// 扫码签章 with an electronic seal in the bid tool: the page is drawn on a canvas, the tool asks
// the phone for a GB/T 38540 seal signature over the SM3 of the page's text, then stamps the
// seal's picture (result.seal.picture, at its size in millimetres) onto the page and offers the
// SES_Signature for download. The RP backend (here the demo's) should verify the SES_Signature
// itself before it trusts the stamp (`bzt seal verify`, docs/seals.md).
//
// With a conversation open (the phone's 开启会话), the tool also seals a one-page OFD: its backend
// lays out the OFD and Signature.xml, the tool asks in the conversation for a seal over the SM3 of
// Signature.xml, and the backend fetches the answer from the broker, verifies it and writes it into
// the OFD (/demo/api/ofd, src/demo/ofd.rs).
import { createLoginWidget, openConversation, errorMessage } from '/sdk/bzt-sdk.mjs';

const $ = (id) => document.getElementById(id);
const PAGE_TEXT = [
  '投标函',
  '致：示例市政道路工程招标人',
  '我方已仔细研究招标文件，愿以人民币 壹仟贰佰叁拾肆万元整',
  '承包本工程，工期 180 日历天，质量达到合格标准。',
  '我方承诺在投标有效期内不修改、撤销投标文件。',
  '',
  '投标人（盖章）：示例建设有限公司',
  '日期：2026 年 12 月 5 日',
];
const PX_PER_MM = 595 / 210; // an A4 page 595 px wide
const bytesOf = (text) => new TextEncoder().encode(text);
const hexToB64 = (hex) => btoa(hex.match(/../g).map((h) => String.fromCharCode(parseInt(h, 16))).join(''));
const pageText = () => PAGE_TEXT.join('\n');
window.__sealPageText = pageText();

function drawPage() {
  const c = $('seal-page');
  const g = c.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = '#111';
  g.font = 'bold 26px "Noto Serif CJK SC", serif';
  g.textAlign = 'center';
  g.fillText(PAGE_TEXT[0], c.width / 2, 80);
  g.textAlign = 'left';
  g.font = '16px "Noto Serif CJK SC", serif';
  PAGE_TEXT.slice(1).forEach((line, i) => g.fillText(line, 60, 140 + i * 34));
}

/** Stamps `picture` centred on the 投标人（盖章） line, at its size in mm. */
function stamp(picture) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const g = $('seal-page').getContext('2d');
      const w = picture.width_mm * PX_PER_MM, h = picture.height_mm * PX_PER_MM;
      g.globalAlpha = 0.85;
      g.drawImage(img, 300 - w / 2, 140 + 5 * 34 - h / 2, w, h);
      g.globalAlpha = 1;
      resolve();
    };
    img.onerror = () => reject(new Error('印章图片无法显示'));
    img.src = 'data:image/' + picture.type.toLowerCase() + ';base64,' + picture.data_b64;
  });
}

async function postJson(url, body) {
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const j = await r.json().catch(() => null);
  if (!r.ok) throw new Error((j && j.error && j.error.message) || 'HTTP ' + r.status);
  return j;
}

let widget = null;
let conv = null;
const esc = (v) => String(v == null ? '' : v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
drawPage();
$('seal-start').addEventListener('click', () => {
  if (widget) widget.destroy();
  if (conv && conv.state !== 'ended') conv.end().catch(() => {});
  conv = null;
  $('ofd-start').disabled = true;
  $('ofd-download').classList.add('hidden');
  $('ofd-outcome').textContent = '';
  drawPage();
  $('seal-download').classList.add('hidden');
  $('seal-outcome').textContent = '';
  $('seal-widget').innerHTML = '';
  const dataHash = hexToB64(sm3(Array.from(bytesOf(pageText()))));
  widget = createLoginWidget({
    container: '#seal-widget',
    createSession: async () => {
      const s = await postJson('/demo/api/sessions', {
        kind: 'sign',
        title: '扫码签章：投标函',
        detail: '示例市政道路工程施工投标文件 · 加盖电子印章',
        seal: { data_hash_b64: dataHash, property_info: 'bid/page-1.txt' },
        conversation: { max_requests: 10, idle_s: 300, max_s: 1800 },
      });
      $('seal-qr-text').textContent = s.qr_text;
      return s;
    },
    onQr: (ev) => { if (ev && ev.qr_text) $('seal-qr-text').textContent = ev.qr_text; },
    onStatus: (ev) => { if (ev.status === 'scanned') $('seal-outcome').textContent = '已扫码，请在手机上选择印章并确认'; },
    onResult: async ({ status, result, baseUrl }) => {
      if (status !== 'approved' || !result.seal) {
        $('seal-outcome').innerHTML = '<span class="bad">签章未完成：' + status + '</span>';
        return;
      }
      await stamp(result.seal.picture);
      const seal = result.seal;
      $('seal-page').dataset.stamped = 'true';
      $('seal-outcome').innerHTML = '<span class="ok">已加盖电子印章</span>：' + seal.name + '（印章编码 ' + seal.es_id + '，签章人 '
        + result.certificate.subject + '，时间 ' + new Date(seal.time_info).toLocaleString('zh-CN') + '）';
      const a = $('seal-download');
      a.href = 'data:application/octet-stream;base64,' + result.seal_signature_b64;
      a.download = '投标函.ses';
      a.classList.remove('hidden');
      window.__sealResult = result;
      if (result.conversation) startConversation(result.conversation, baseUrl);
    },
  });
});

function startConversation(info, baseUrl) {
  const cid = info.id;
  conv = openConversation({ ...info, baseUrl: baseUrl || location.origin }, {
    container: '#seal-conv-status',
    sendRequest: ({ seal, display }) => postJson(`/demo/api/conversations/${encodeURIComponent(cid)}/requests`, { seal, title: display.title, detail: display.detail }),
    pollRequest: async ({ request_id, wait }) => {
      const r = await fetch(`/demo/api/conversations/${encodeURIComponent(cid)}/requests/${encodeURIComponent(request_id)}?wait=${wait}`);
      return r.json();
    },
    end: () => fetch(`/demo/api/conversations/${encodeURIComponent(cid)}`, { method: 'DELETE' }),
    onEnded: () => { $('ofd-start').disabled = true; },
  });
  $('ofd-start').disabled = false;
}

$('ofd-start').addEventListener('click', async () => {
  if (!conv) return;
  $('ofd-start').disabled = true;
  $('ofd-download').classList.add('hidden');
  $('ofd-outcome').textContent = '等待手机在会话中加盖印章…';
  try {
    const doc = await postJson('/demo/api/ofd', { title: PAGE_TEXT[0], lines: PAGE_TEXT.slice(1) });
    const r = await conv.request({
      seal: { data_hash_b64: doc.data_hash_b64, property_info: doc.property_info },
      display: { title: 'OFD 投标函加盖电子印章', detail: '示例市政道路工程施工投标文件（OFD）' },
    });
    if (r.status !== 'approved') throw new Error('手机未盖章：' + r.status);
    const v = await postJson(`/demo/api/ofd/${encodeURIComponent(doc.id)}/seal`, { conversation_id: conv.id, request_id: r.request_id });
    const pic = window.__sealResult && window.__sealResult.seal.picture;
    $('ofd-outcome').innerHTML = (pic ? '<img alt="印章" style="height:64px;vertical-align:middle" src="data:image/' + esc(pic.type.toLowerCase()) + ';base64,' + esc(pic.data_b64) + '"> ' : '')
      + '<span class="ok">电子签章验证通过</span>：印章 ' + esc(v.seal.name) + '（编码 ' + esc(v.seal.es_id) + '），签章人 ' + esc(v.signer)
      + '，制章者 ' + esc(v.maker) + '，时间 ' + esc(new Date(v.time_info).toLocaleString('zh-CN'));
    const a = $('ofd-download');
    a.href = v.file_url;
    a.download = '投标函.ofd';
    a.classList.remove('hidden');
    window.__ofdResult = v;
  } catch (e) {
    $('ofd-outcome').innerHTML = '<span class="bad">OFD 签章失败：' + esc(e.code ? errorMessage(e) : e.message) + '</span>';
  }
  if (conv && conv.state !== 'ended') $('ofd-start').disabled = false;
});
