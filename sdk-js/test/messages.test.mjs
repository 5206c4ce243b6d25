// zh-CN texts: every error code and every reason the broker can send has one, read from the
// broker's own source so that a new code without a message fails here; the bidder-readable helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ERROR_MESSAGES, REASON_MESSAGES, ENDED_BY_MESSAGES, STATUS_MESSAGES, TERMINAL_STATUSES,
  errorMessage, reasonMessage, endedByMessage, parseSubject, formatBeijingTime, describeCertificate, domainLabel,
} from '../dist/bzt-sdk.mjs';

import { brokerErrorCodes, brokerReasons, brokerEndedBy } from './broker-source.mjs';

// Chinese, and no English word (a code or the broker's message) leaking through.
const zh = (text, what) => {
  assert.equal(typeof text, 'string', `${what}: no text`);
  assert.match(text, /[\u4e00-\u9fff]/, `${what}: not Chinese: ${text}`);
  assert.doesNotMatch(text, /[A-Za-z]{3,}/, `${what}: English in ${text}`);
};

test('every broker error code has a zh-CN message, whatever the broker wrote in English', () => {
  const codes = brokerErrorCodes();
  assert.ok(codes.length >= 14 && codes.includes('untrusted_certificate'));
  for (const code of codes) {
    zh(ERROR_MESSAGES[code], code);
    const body = { error: { code, message: 'the number picked on the phone does not match' } };
    assert.equal(errorMessage(body), ERROR_MESSAGES[code], `${code} from a protocol error body`);
    assert.equal(errorMessage({ code, message: 'English' }), ERROR_MESSAGES[code]);
    assert.equal(errorMessage(code), ERROR_MESSAGES[code]);
  }
  // The SDK's own codes too, and an unknown one gets a Chinese generic text, never the code.
  for (const code of ['network', 'timeout', 'create_failed', 'closed', 'destroyed', 'conversation_ended', 'bad_session', 'bad_message', 'bad_options']) zh(errorMessage(code), code);
  zh(errorMessage({ code: 'some_future_code', message: 'English' }), 'unknown code');
  zh(errorMessage(new Error('Failed to fetch')), 'no code');
  zh(errorMessage('http_502'), 'http_502');
  const failed = { code: 'create_failed', cause: { code: 'rate_limited' } };
  assert.equal(errorMessage(failed), ERROR_MESSAGES.rate_limited, 'create_failed says why when its cause knows');
  assert.equal(errorMessage({ code: 'create_failed', cause: new Error('x') }), ERROR_MESSAGES.create_failed);
});

test('integrators override a message per call', () => {
  assert.equal(errorMessage('forbidden', { forbidden: '数字不一致' }), '数字不一致');
  assert.equal(reasonMessage('match_failed', { match_failed: '选错了' }), '选错了');
});

test('every reason the broker writes, every conversation end and every status has a zh-CN text', () => {
  const reasons = brokerReasons();
  assert.deepEqual(reasons.sort(), Object.keys(REASON_MESSAGES).sort(), 'REASON_MESSAGES is exactly bzt_core::reason::ALL');
  for (const r of reasons) {
    zh(REASON_MESSAGES[r], r);
    assert.equal(reasonMessage(r), REASON_MESSAGES[r]);
  }
  const ended = brokerEndedBy();
  assert.deepEqual(ended.sort(), Object.keys(ENDED_BY_MESSAGES).sort());
  for (const by of ended) zh(endedByMessage(by), by);
  for (const s of ['pending', 'scanned', ...TERMINAL_STATUSES]) zh(STATUS_MESSAGES[s], s);
  // A phone's own decline: Chinese as it is; English never reaches the screen.
  assert.equal(reasonMessage('本证书不在该投标文件的解密证书列表中'), '本证书不在该投标文件的解密证书列表中');
  zh(reasonMessage('user_declined'), 'English phone reason');
  assert.equal(reasonMessage('user_declined', null, ''), '');
  assert.equal(reasonMessage(null), null);
});

test('parseSubject reads 姓名, 单位 and 统一社会信用代码 from the RFC 4514 subject', () => {
  const p = parseSubject('CN=张三,OU=投标部,O=示例建设有限公司,organizationIdentifier=91350100M000100Y43,C=CN');
  assert.equal(p.name, '张三');
  assert.equal(p.organization, '示例建设有限公司');
  assert.equal(p.unit, '投标部');
  assert.equal(p.uscc, '91350100M000100Y43');
  assert.equal(p.country, 'CN');
  // Escapes: \, \+ and \XX (UTF-8 bytes), multi-valued RDNs, a dotted OID, an NTRCN- prefix.
  const q = parseSubject('CN=李四\\, 王五+serialNumber=123,O=\\E7\\A4\\BA\\E4\\BE\\8B\\2B公司,2.5.4.97=NTRCN-91350100M000100Y43');
  assert.equal(q.name, '李四, 王五');
  assert.equal(q.get('serialNumber'), '123');
  assert.equal(q.organization, '示例+公司');
  assert.equal(q.uscc, '91350100M000100Y43');
  assert.deepEqual(parseSubject('').attributes, []);
  assert.equal(parseSubject(undefined).name, null);
});

test('times in Beijing time, trust domains by their Chinese names', () => {
  assert.equal(formatBeijingTime('2027-12-05T16:53:26.000Z'), '2027-12-06 00:53:26（北京时间）');
  assert.equal(formatBeijingTime('2027-12-31T23:59:59.999Z', { suffix: false }), '2028-01-01 07:59:59');
  assert.equal(formatBeijingTime('not a time'), '');
  assert.equal(domainLabel('platform'), '本平台证书');
  assert.equal(domainLabel('national'), '全国互认证书');
  assert.equal(domainLabel('provincial'), 'provincial', 'another configured domain shows its name');
  const d = describeCertificate({
    subject: 'CN=张三,O=示例建设有限公司,organizationIdentifier=91350100M000100Y43,C=CN',
    issuer: 'CN=bzt 开发 CA（全国互认）,O=bzt,C=CN', serial: '4abe', domain: 'national',
    not_before: '2026-01-01T00:00:00.000Z', not_after: '2027-01-01T00:00:00.000Z',
  });
  assert.deepEqual(
    [d.name, d.organization, d.uscc, d.domainLabel, d.issuerName, d.notAfter],
    ['张三', '示例建设有限公司', '91350100M000100Y43', '全国互认证书', 'bzt 开发 CA（全国互认）', '2027-01-01 08:00:00（北京时间）'],
  );
});
