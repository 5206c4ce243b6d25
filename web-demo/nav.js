// The one navigation bar of every demo page: <header id="site-nav"></header><script src="nav.js"></script>.
(function () {
  'use strict';
  var PAGES = [
    ['index.html', '首页'],
    ['login.html', '交易平台登录'],
    ['bidtool.html', '投标工具'],
    ['hall.html', '开标大厅'],
    ['phone.html', '手机模拟器'],
  ];
  var header = document.getElementById('site-nav');
  if (!header) return;
  var here = location.pathname.split('/').pop() || 'index.html';
  var title = document.createElement('h1');
  title.textContent = header.getAttribute('data-title') || 'bzt 扫码服务 · 开发演示';
  var nav = document.createElement('nav');
  nav.setAttribute('aria-label', '演示页面');
  PAGES.forEach(function (p) {
    var a = document.createElement('a');
    a.href = p[0];
    a.textContent = p[1];
    if (p[0] === here) {
      a.className = 'active';
      a.setAttribute('aria-current', 'page');
    }
    nav.appendChild(a);
  });
  header.appendChild(title);
  header.appendChild(nav);
})();
