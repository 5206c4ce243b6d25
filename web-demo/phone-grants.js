// 企业证书授权 on the phone simulator page: the member (办事人员) asks for a grant with an
// invitation, accepts it under its own PIN and uses the company certificate; the administrator
// (管理员, the holder of a split company key) grants, changes the end time, takes grants back and
// sees the 证书收回记录. The mathematics and the service calls are splitkey.js (BztSplitKey.grant,
// acceptGrant, …); this file is the page's part. Loaded after phone-split.js; uses phone.html's
// helpers (phone, $, api, say, sayError, esc).
//
// What the page keeps (docs/key-splitting.md, "The phone simulator page and grants"): in
// localStorage under STORAGE_KEY `{invite, grants}`. `invite` is the open invitation — the member's
// name and device and its receiving key, whose secret is kept until the grant is accepted and then
// deleted. `grants` are the accepted company certificates: each a SplitKeyFile like the page's own
// (the member's share d1'' masked by the member's PIN) with the certificate and the grant's id and
// end time. Never d1'', the PIN, nor the administrator's d1·t after acceptance.
'use strict';
window.BztPhoneGrants = (() => {
  const STORAGE_KEY = 'bzt-phone-grants';
  const K = window.BztSplitKey;
  const CERTIFICATE_TYPE = 'SM2 企业证书（密钥拆分）'; // as crates/bzt-phone/src/grants.rs records it
  const ACTORS = { administrator: '管理员解除授权', operator: '平台运营方（系统管理员）收回', automatic: '授权到期自动收回' };
  const STATUS = { pending: '待被授权人接受', active: '授权中', reclaimed: '已收回' };

  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null');
      return s && Array.isArray(s.grants) ? s : { invite: null, grants: [] };
    } catch { return { invite: null, grants: [] }; }
  }
  function save(state) { localStorage.setItem(STORAGE_KEY, JSON.stringify(state)); }
  const when = (t) => BztSdk.formatBeijingTime(t);
  /**
   * The end time as entered (datetime-local, read as Beijing time like every time the page shows)
   * → RFC 3339 with +08:00, as `bzt phone grant --until` takes it.
   */
  function endFrom(input) {
    const v = $(input).value;
    const rfc = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(v) ? v + ':00+08:00' : null;
    const at = rfc ? Date.parse(rfc) : NaN;
    if (isNaN(at)) throw new Error('请填写授权结束时间');
    if (at <= Date.now()) throw new Error('授权结束时间须晚于现在');
    return rfc;
  }
  /** Seven days from now, in Beijing time, minutes precision. */
  const defaultEnd = () => new Date(Date.now() + (7 * 24 + 8) * 3600 * 1000).toISOString().slice(0, 16);
  const errText = (e) => errorText(e) || (e && e.message) || '未知错误';

  // ---------------------------------------------------------------- member (办事人员)

  /** 生成授权邀请: a receiving key for the administrator to seal the dealt share to. */
  function makeInvite() {
    const name = $('cn').value.trim();
    if (!name) { say('请先填写姓名', 'bad'); return; }
    const key = K.grantInviteKey();
    const state = load();
    const device = { id: phone.deviceId, name: name + '的手机（模拟器）' };
    state.invite = { name, device, receiving_key: key.receiving_key, secret: key.secret };
    save(state);
    showInvite(state.invite);
    say('已生成授权邀请，请把邀请发给管理员');
  }
  function showInvite(invite) {
    // What the administrator sees: the same JSON as `bzt phone grant-invite` (no secret).
    $('grant-invite-out').value = invite ? JSON.stringify({ name: invite.name, device: invite.device, receiving_key: invite.receiving_key }) : '';
    $('grant-invite-box').classList.toggle('hidden', !invite);
  }

  /** 接受授权: the offer from the administrator, made this page's own under its own PIN. */
  async function accept() {
    const state = load();
    if (!state.invite) { say('请先生成授权邀请', 'bad'); return; }
    let offer;
    try { offer = JSON.parse($('grant-offer-in').value); } catch { say('授权数据不是有效的 JSON，请完整粘贴管理员发来的授权', 'bad'); return; }
    if (!offer || !offer.package || typeof offer.certificate_pem !== 'string') { say('授权数据缺少授权包或企业证书', 'bad'); return; }
    const pin = $('grant-pin').value;
    if (!/^\d{6}$/.test(pin)) { say('PIN 码须为 6 位数字', 'bad'); return; }
    $('grant-accept').disabled = true;
    say('正在与协同签名服务接受授权…');
    try {
      const { file, end } = await K.acceptGrant(offer.package, state.invite.secret, pin);
      const leaf = (offer.certificate_pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/) || [''])[0] + '\n';
      const info = await api('POST', '/demo/cosigner/certificate-info', { certificate_pem: leaf });
      const subject = BztSdk.parseSubject(info.subject);
      const meta = {
        file, certificate_pem: offer.certificate_pem, serial: info.serial, issuer: info.issuer, subject: info.subject, domain: null,
        cn: subject.name || '', org: subject.organization || '', grant: { id: offer.package.grant_id, end, status: 'active', member: state.invite.name },
      };
      // The receiving key has done its one job.
      state.invite = null;
      state.grants = state.grants.filter((g) => g.grant.id !== meta.grant.id).concat([meta]);
      save(state);
      $('grant-offer-in').value = '';
      $('grant-pin').value = '';
      showInvite(null);
      renderMember();
      BztPhoneSplit.adopt(meta);
      say('已接受授权：本机可使用「' + (meta.org || meta.cn) + '」的企业证书至 ' + when(end) + '，每次操作输入本机 PIN 码', 'ok');
    } catch (e) {
      sayError('接受授权失败', e);
    } finally {
      $('grant-accept').disabled = false;
    }
  }

  /** 已授权给本机的企业证书, with their end times; 使用 makes one the phone's certificate. */
  function renderMember() {
    const { grants } = load();
    const list = $('granted-list');
    list.innerHTML = grants.length ? '' : '<li class="muted">暂无</li>';
    for (const meta of grants) {
      const li = document.createElement('li');
      li.dataset.grantId = meta.grant.id;
      const over = meta.grant.status === 'reclaimed' || Date.parse(meta.grant.end) <= Date.now();
      li.innerHTML = '<strong>' + esc(meta.org || meta.cn) + '</strong> <span class="tag">' + esc(meta.serial) + '</span><br>'
        + '授权结束时间：<span class="grant-end">' + esc(when(meta.grant.end)) + '</span> <span class="tag grant-status">' + (over ? '已收回或已到期' : '授权中') + '</span> ';
      const use = document.createElement('button');
      use.textContent = '使用此证书';
      use.addEventListener('click', () => { BztPhoneSplit.adopt(meta); say('当前证书：' + (meta.org || meta.cn) + '（被授权使用）'); });
      const drop = document.createElement('button');
      drop.textContent = '从本机删除';
      drop.addEventListener('click', () => forget(meta.grant.id));
      li.append(use, ' ', drop);
      list.appendChild(li);
    }
  }

  /** Removes a granted certificate from this page (its masked share goes with it). */
  function forget(grantId) {
    const state = load();
    state.grants = state.grants.filter((g) => g.grant.id !== grantId);
    save(state);
    renderMember();
    if (phone.splitMeta && phone.splitMeta.grant && phone.splitMeta.grant.id === grantId) {
      Object.assign(phone, { keys: null, split: null, splitMeta: null, certPem: null, serial: null, issuer: null, subject: null, domain: null, pin: null });
      $('cert-info').textContent = '尚无证书';
      $('claim').disabled = true;
      $('camera').disabled = true;
    }
    say('已从本机删除该企业证书');
  }

  /** The service said reclaimed for the granted certificate in use: mark it so in the list. */
  function noteRefusal(e) {
    const meta = phone.splitMeta;
    if (!(e instanceof K.SplitKeyError) || e.code !== 'reclaimed' || !meta || !meta.grant || meta.file !== phone.split) return;
    const state = load();
    for (const g of state.grants) if (g.grant.id === meta.grant.id) g.grant.status = 'reclaimed';
    save(state);
    renderMember();
  }

  // ---------------------------------------------------------------- administrator (管理员)

  /** The administrator's certificate: the page's own split key (a granted one cannot grant). */
  function adminMeta() {
    const meta = BztPhoneSplit.ownMeta();
    if (!meta || !meta.file) throw new Error('本机没有自己的拆分密钥企业证书：管理员须先以“密钥拆分”申请证书');
    return meta;
  }
  function adminPin() {
    const pin = $('admin-pin').value;
    if (!/^\d{6}$/.test(pin)) throw new Error('请输入管理员证书的 6 位 PIN 码');
    return pin;
  }
  function adminError(what, e) {
    if (e instanceof K.SplitKeyError && e.code === 'not_requested') {
      say(what + '：本机证书是被授权使用的企业证书，只有证书的管理员可以授权', 'bad');
      return;
    }
    say(what + '：' + errText(e), 'bad');
  }
  async function adminRun(button, what, fn) {
    let meta, pin;
    try { meta = adminMeta(); pin = adminPin(); } catch (e) { say(e.message, 'bad'); return null; }
    $(button).disabled = true;
    say('正在' + what + '（管理员证书分量与协同签名服务共同签署请求）…');
    try {
      const out = await fn(meta, pin);
      renderAdmin(out.list || out);
      return out;
    } catch (e) {
      adminError(what + '失败', e);
      return null;
    } finally {
      $(button).disabled = false;
    }
  }

  /** 添加被授权人: from the member's invitation, until the chosen end time. */
  async function grant() {
    let invite, end;
    try {
      invite = JSON.parse($('admin-invite-in').value);
      if (!invite || typeof invite.name !== 'string' || typeof invite.receiving_key !== 'string') throw new Error();
    } catch { say('授权邀请无效：请完整粘贴被授权人手机上的邀请', 'bad'); return; }
    try { end = endFrom('admin-end'); } catch (e) { say(e.message, 'bad'); return; }
    const out = await adminRun('admin-grant', '添加被授权人', (meta, pin) => K.grant(meta.file, pin, {
      invite, end, certificatePem: meta.certificate_pem,
      certificate: { serial: meta.serial, ca: meta.issuer, certificate_type: CERTIFICATE_TYPE },
    }));
    if (!out) return;
    $('admin-offer-out').value = JSON.stringify(out.offer);
    $('admin-offer-box').classList.remove('hidden');
    $('admin-invite-in').value = '';
    say('已添加被授权人 ' + invite.name + '，授权结束时间 ' + when(end) + '；请把下方授权数据发给被授权人', 'ok');
  }
  const refresh = () => adminRun('admin-refresh', '刷新授权列表', (meta, pin) => K.listGrants(meta.file, pin));
  async function extend(grantId) {
    let end;
    try { end = endFrom('admin-end'); } catch (e) { say(e.message, 'bad'); return; }
    if (await adminRun('admin-refresh', '更改证书授权结束时间', (meta, pin) => K.extendGrant(meta.file, pin, grantId, end))) say('授权结束时间已改为 ' + when(end), 'ok');
  }
  async function ungrant(grantId) {
    if (await adminRun('admin-refresh', '解除授权', (meta, pin) => K.ungrant(meta.file, pin, grantId))) say('已解除授权：被授权人不能再使用本证书', 'ok');
  }

  /** The grants of this certificate and its 证书收回记录, as the service answered. */
  function renderAdmin(list) {
    const grants = (list && list.grants) || [];
    const rows = $('admin-grants');
    rows.innerHTML = grants.length ? '' : '<li class="muted">暂无被授权人</li>';
    for (const g of grants) {
      const li = document.createElement('li');
      li.dataset.grantId = g.grant_id;
      li.innerHTML = '<strong>' + esc(g.member.name) + '</strong> <span class="tag">' + esc(STATUS[g.status] || g.status) + '</span><br>'
        + '设备 ' + esc(g.member.device) + '；授权开始 ' + esc(when(g.start)) + '；授权结束时间 <span class="grant-end">' + esc(when(g.end)) + '</span> ';
      if (g.status !== 'reclaimed') {
        const ext = document.createElement('button');
        ext.textContent = '更改授权结束时间';
        ext.className = 'grant-extend';
        ext.addEventListener('click', () => extend(g.grant_id));
        const un = document.createElement('button');
        un.textContent = '解除授权';
        un.className = 'grant-ungrant';
        un.addEventListener('click', () => ungrant(g.grant_id));
        li.append(ext, ' ', un);
      }
      rows.appendChild(li);
    }
    const reclaims = (list && list.reclaims) || [];
    $('admin-reclaims').innerHTML = reclaims.length
      ? reclaims.map((r) => '<li><strong>' + esc(r.member.name) + '</strong> <span class="tag">' + esc(ACTORS[r.actor] || r.actor) + '</span><br>收回时间 ' + esc(when(r.at))
        + '<br>证书类型 ' + esc(r.certificate.certificate_type) + '<br>CA ' + esc(r.certificate.ca) + '</li>').join('')
      : '<li class="muted">暂无收回记录</li>';
  }

  function init() {
    $('grant-invite').addEventListener('click', makeInvite);
    $('grant-accept').addEventListener('click', accept);
    $('admin-grant').addEventListener('click', grant);
    $('admin-refresh').addEventListener('click', refresh);
    $('admin-end').value = defaultEnd();
    const state = load();
    showInvite(state.invite);
    renderMember();
    // A member page without a key of its own starts with its latest granted certificate.
    if (!phone.split && state.grants.length) {
      BztPhoneSplit.adopt(state.grants[state.grants.length - 1]);
      say('已载入被授权使用的企业证书，可以扫码');
    }
  }

  return { init, noteRefusal, STORAGE_KEY };
})();
BztPhoneGrants.init();
