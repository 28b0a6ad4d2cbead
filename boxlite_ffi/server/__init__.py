"""``boxlite serve``: the contract's Box API (tests/contract/) over HTTP and
WebSocket, on a ``Runtime`` of one home.  Needs the ``server`` extra
(``pip install boxlite-ffi[server]``).  See docs/architecture.md."""
