"""Real traffic, recorded by ``python -m tests.protocols.record_http``: do not edit."""

from __future__ import annotations

#: (what the client sent, what the backend answered, who talked), one per connection.
CONNECTIONS: list[tuple[bytes, bytes, str]] = [
    (
        b'GET /json?id=1 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\n\r\nHEAD /json HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\n\r\nPOST /uploads HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n2\r\nij\r\n0\r\n\r\nGET /stream HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\n\r\nDELETE /uploads/1 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\n\r\nGET /cached HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\nIf-None-Match: "v1"\r\n\r\nPUT /uploads/2 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nAccept-Encoding: identity\r\nContent-Length: 300\r\nContent-Type: application/octet-stream\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',
        b'HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\n{"ok": true}HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\nHTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nLocation: /uploads/1\r\nContent-Length: 12\r\n\r\ngot 10 bytesHTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n7\r\nsecond \r\n5\r\nthird\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\n\r\nHTTP/1.1 304 Not Modified\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nETag: "v1"\r\n\r\nHTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nLocation: /uploads/1\r\nContent-Length: 13\r\n\r\ngot 300 bytes',
        "http.client",
    ),
    (
        b"GET /json HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: 127.0.0.1:37177\r\nUser-Agent: Python-urllib/3.11\r\nConnection: close\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\n{"ok": true}',
        "urllib",
    ),
    (
        b"GET /missing HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: 127.0.0.1:37177\r\nUser-Agent: Python-urllib/3.11\r\nConnection: close\r\n\r\n",
        b'HTTP/1.1 404 Not Found\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nConnection: close\r\nContent-Type: text/html;charset=utf-8\r\nContent-Length: 330\r\n\r\n<!DOCTYPE HTML>\n<html lang="en">\n    <head>\n        <meta charset="utf-8">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 404</p>\n        <p>Message: Not Found.</p>\n        <p>Error code explanation: 404 - Nothing matches the given URI.</p>\n    </body>\n</html>\n',
        "urllib",
    ),
    (
        b"GET /json?id=1 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\nPOST /uploads HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 7\r\n\r\npayloadHEAD /json HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\nGET /stream HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\nDELETE /uploads/1 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\nGET /json?id=1 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\nPOST /uploads HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 7\r\n\r\npayloadHEAD /json HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\nGET /stream HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\nDELETE /uploads/1 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: python-requests/2.34.2\r\nAccept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\n{"ok": true}HTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:49 GMT\r\nLocation: /uploads/1\r\nContent-Length: 11\r\n\r\ngot 7 bytesHTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\nHTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n7\r\nsecond \r\n5\r\nthird\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\n\r\nHTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\n{"ok": true}HTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nLocation: /uploads/1\r\nContent-Length: 11\r\n\r\ngot 7 bytesHTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\nHTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n7\r\nsecond \r\n5\r\nthird\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\n\r\n',
        "requests",
    ),
    (
        b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nExpect: 100-continue\r\nContent-Length: 7\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\npayloadPOST /json HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nExpect: 100-continue\r\nContent-Length: 7\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\npayload",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nLocation: /uploads/1\r\nContent-Length: 11\r\n\r\ngot 7 bytesHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nLocation: /uploads/1\r\nContent-Length: 11\r\n\r\ngot 7 bytes",
        "curl -H Expect: 100-continue --data-binary payload /uploads /json",
    ),
    (
        b"PUT /uploads/3 HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\nd\r\nstreamed body\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nLocation: /uploads/1\r\nContent-Length: 12\r\n\r\ngot 13 bytes",
        "curl -T - /uploads/3",
    ),
    (
        b"GET /json HTTP/1.1\r\nHost: 127.0.0.1:37177\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        b'HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.7\r\nDate: Thu, 26 Nov 2026 08:02:50 GMT\r\nContent-Type: application/json\r\nETag: "v1"\r\nContent-Length: 12\r\n\r\n{"ok": true}',
        "curl --http2 /json",
    ),
]

#: The connections that stay HTTP to the end, to splice into longer streams.
RECORDED = [(sent, answered) for sent, answered, _ in CONNECTIONS if b"Upgrade" not in sent]
