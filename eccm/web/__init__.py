"""The web page (SPEC §7): a dashboard and a JSON API served by the daemon.

``server`` (the loop in its thread), ``api`` (routes, headers, static files), ``auth``
(login, sessions, CSRF, bearer), ``live`` (the WebSocket), ``workers`` (bounded threads
for calls that may wait on the car), ``loginlink`` (one-time links), ``sessions``,
``errors``. The page's own files (index.html, scripts, styles) are in ``static/``,
served at ``/`` (index.html) and ``/static/<file>``.

Importing this package imports nothing else: ``eccm login-link`` uses ``loginlink``
without aiohttp.
"""
