"""The connection to one server: an asyncio loop on a thread of its own
(``boxlite-remote``) that carries every HTTP request (httpx) and attach
socket (websockets) of one ``RemoteRuntime``.

Everything is a future of that loop: the sync API waits on it, the asyncio
API awaits it (``asyncio.wrap_future``), as both wait on the native core's
futures locally.  Output callbacks run on this thread, as they run on the
drain thread locally: a callback must not block on the connection's own
futures (``call`` refuses, instead of deadlocking).

Requests that are safe to repeat (GET and HEAD, and those carrying an
``Idempotency-Key``, which the server answers once per key) are retried
while the server cannot be reached, for ``retry_for`` seconds: a server
restarting is a pause, not an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import ssl
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from ..boxapi import DEAD_AFTER_S, IDEMPOTENCY_HEADER, PING_INTERVAL_S
from ..errors import (
    BoxliteTimeoutError,
    ConnectionLostError,
    InvalidArgumentError,
    InvalidStateError,
    RuntimeClosedError,
)
from .faults import error_of

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
RETRY_PAUSE_S = (0.05, 1.0)  # the first pause between retries, and the longest
MAX_FRAME = 16 << 20  # the largest frame taken from the server
CHUNK = 1 << 16  # a file transfer's pieces
PAGE = 1000  # items asked for per page of a list


class Transport:
    """One server's base URL, token and loop thread; closed once."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float,
        retry_for: float,
        verify: bool | str,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgumentError(f"server URL {url!r}: http:// or https:// and a host")
        self.url = url.rstrip("/")
        self._ws_url = "ws" + self.url[len("http") :]
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self.retry_for = retry_for
        self._ssl = _ssl_context(verify) if parts.scheme == "https" else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="boxlite-remote", daemon=True)
        self._closed = False
        self._thread.start()
        self._http = self.call(self._open_http())

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _open_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=httpx.Timeout(self._timeout, connect=CONNECT_TIMEOUT_S),
            verify=self._ssl if self._ssl is not None else True,
        )

    # ---- the loop -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def on_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``work`` on the connection's loop; its future."""
        if self._closed:
            work.close()
            raise RuntimeClosedError("the connection to the server was closed")
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` and wait for it (not from the loop's own thread)."""
        if self.on_loop():
            work.close()
            raise InvalidStateError(
                "a blocking call from an output callback (the connection's own thread)"
            )
        return self.submit(work).result()

    def soon(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the loop (from any thread)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    def close(self) -> None:
        """Close the HTTP client and end the loop thread (joined)."""
        if self._closed:
            return
        if self.on_loop():
            raise InvalidStateError("closing the connection from an output callback")
        with contextlib.suppress(Exception):  # the loop's last work: nothing may keep it up
            self.call(self._shutdown())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _shutdown(self) -> None:
        await self._http.aclose()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- HTTP -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        content: AsyncIterator[bytes] | None = None,
        idempotent: bool = False,
    ) -> httpx.Response:
        """One request, its answer read whole; a typed error for any but 2xx.
        ``idempotent`` sends a fresh ``Idempotency-Key`` (kept over retries)."""
        headers = {IDEMPOTENCY_HEADER: secrets.token_hex(16)} if idempotent else {}
        retry = (idempotent or method in ("GET", "HEAD")) and content is None
        response = await self._retrying(
            retry,
            lambda: self._http.request(
                method, path, json=json, params=params, content=content, headers=headers
            ),
        )
        if response.is_success:
            return response
        raise error_of(response.status_code, response.content)

    async def every(self, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paged list (``key`` of each page), in order."""
        items: list[dict[str, Any]] = []
        params = {"pageSize": str(PAGE)}
        while True:
            page = (await self.request("GET", path, params=params)).json()
            items += page[key]
            if not page.get("next_page_token"):
                return items
            params["pageToken"] = page["next_page_token"]

    @contextlib.asynccontextmanager
    async def download(
        self, path: str, params: Mapping[str, str]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A GET whose body is streamed: its chunks."""
        request = self._http.build_request("GET", path, params=params)
        response = await self._retrying(True, lambda: self._http.send(request, stream=True))
        try:
            if not response.is_success:
                raise error_of(response.status_code, await response.aread())
            yield _lost_on_break(response.aiter_bytes(CHUNK))
        finally:
            await response.aclose()

    @contextlib.contextmanager
    def downloading(self, path: str, params: Mapping[str, str]) -> Iterator[Iterator[bytes]]:
        """``download`` for a reader on another thread: each chunk is
        fetched on the loop when the reader asks for it."""
        manager = self.download(path, params)
        chunks = self.call(manager.__aenter__())
        try:
            yield self._pulled(chunks)
        finally:
            self.call(manager.__aexit__(None, None, None))

    def _pulled(self, chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
        while (chunk := self.call(_next(chunks))) is not None:
            yield chunk

    async def _retrying(self, retry: bool, send: Any) -> httpx.Response:
        deadline = time.monotonic() + (self.retry_for if retry else 0)
        pause = RETRY_PAUSE_S[0]
        while True:
            try:
                response: httpx.Response = await send()
                return response
            except httpx.TimeoutException as exc:
                raise BoxliteTimeoutError(
                    f"the server did not answer in {self._timeout} s: {exc!r}"
                ) from None
            except httpx.TransportError as exc:
                if time.monotonic() + pause > deadline:
                    raise ConnectionLostError(f"server {self.url}: {exc!r}") from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE_S[1])

    # ---- WebSocket --------------------------------------------------------------

    async def open_socket(self, path: str, query: str) -> ClientConnection:
        """An attach socket; the server's refusal as its typed error."""
        try:
            return await connect(
                f"{self._ws_url}{path}?{query}",
                additional_headers=self._headers,
                ssl=self._ssl,
                max_size=MAX_FRAME,
                ping_interval=PING_INTERVAL_S,
                ping_timeout=DEAD_AFTER_S - PING_INTERVAL_S,
                open_timeout=CONNECT_TIMEOUT_S,
                compression=None,  # output is copied as is: no CPU spent squeezing it
            )
        except InvalidStatus as exc:
            raise error_of(exc.response.status_code, bytes(exc.response.body or b"")) from None
        except (OSError, InvalidHandshake, asyncio.TimeoutError) as exc:
            raise ConnectionLostError(f"server {self.url}: {exc!r}") from None


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    return await anext(chunks, None)


async def _lost_on_break(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except httpx.TransportError as exc:
        raise ConnectionLostError(f"the transfer broke: {exc!r}") from None


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """``verify``: True (the system's CAs), a CA file, or False (no check)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
