"""Each family of faults in its marker form, in a real pytest run.

The faults themselves are tested against the engine in their own modules;
here one inner run per family shows that the marker reaches them with their
options, that each test gets a fresh proxy (counters start from zero) and
that the fixture's teardown stays bounded while a fault holds a connection.
"""

from __future__ import annotations

import time


def test_delay_family_through_the_marker(run_inner, greeter, backend):
    started = time.monotonic()
    result = run_inner(
        f"""
        @pytest.mark.vaurien("delay", distant="{greeter.distant}", delay__sleep=0.4)
        def test_delay_before_holds_requests_not_the_greeting(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                started = time.monotonic()
                assert read_exactly(sock, 6) == b"hello\\n"
                greeting = time.monotonic() - started
                started = time.monotonic()
                sock.sendall(b"ping")
                assert read_exactly(sock, 4) == b"ping"
                echo = time.monotonic() - started
            assert greeting < 0.3, greeting
            assert 0.38 <= echo < 2.0, echo

        @pytest.mark.vaurien("delay", distant="{greeter.distant}", delay__sleep=0.4,
                             delay__before=False)
        def test_delay_after_holds_replies(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                started = time.monotonic()
                assert read_exactly(sock, 6) == b"hello\\n"
                greeting = time.monotonic() - started
            assert 0.38 <= greeting < 2.0, greeting

        @pytest.mark.vaurien("hang", distant="{backend.distant}")
        def test_hang(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=0.5) as sock:
                sock.sendall(b"ping")
                sock.shutdown(socket.SHUT_WR)  # even EOF is swallowed
                with pytest.raises(socket.timeout):
                    sock.recv(10)
                assert vaurien_proxy.connections[0].open
    """,
        "--durations=0",
        "--durations-min=0",
        passed=3,
    )
    assert time.monotonic() - started < 10
    teardown = [line for line in result.outlines if "teardown" in line and "test_hang" in line]
    assert teardown, result.outlines
    assert float(teardown[0].split("s", 1)[0]) < 1.0, teardown
    assert backend.total_received() == 0


def test_error_family_through_the_marker(run_inner, backend):
    run_inner(
        f"""
        D = "{backend.distant}"

        @pytest.mark.vaurien("error", distant=D)
        def test_error(vaurien_proxy):
            payload = b"GET / HTTP/1.0\\r\\n\\r\\n"
            reply = roundtrip(vaurien_proxy.address, payload)
            assert len(reply) == 1000
            assert payload not in reply

        @pytest.mark.vaurien("error", distant=D, error__inject=True, error__warmup=1)
        def test_error_inject_after_warmup(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b"ping"
            assert len(roundtrip(vaurien_proxy.address)) == 1004

        @pytest.mark.vaurien("transient", distant=D)
        def test_transient_first(vaurien_proxy):
            replies = [roundtrip(vaurien_proxy.address) for _ in range(3)]
            assert len(replies[0]) == 1000 and replies[0] != b"ping"
            assert replies[1:] == [b"ping", b"ping"]

        @pytest.mark.vaurien("transient", distant=D)
        def test_transient_a_new_test_starts_from_zero(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) != b"ping"
            assert roundtrip(vaurien_proxy.address) == b"ping"

        @pytest.mark.vaurien("transient", distant=D, transient__agitate=2,
                             transient__warmup=1)
        def test_transient_agitate_and_warmup(vaurien_proxy):
            replies = [roundtrip(vaurien_proxy.address) for _ in range(5)]
            assert [r == b"ping" for r in replies] == [True, False, False, True, True]

        @pytest.mark.vaurien("abort", distant=D)
        def test_abort(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=5) as sock:
                sock.sendall(b"ping")
                assert read_until_eof(sock) == b""
            [record] = settled(vaurien_proxy)
            assert record.bytes_to_backend == 4 and record.bytes_to_client == 0

        @pytest.mark.vaurien("blackout", distant=D)
        def test_blackout(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=5) as sock:
                sock.sendall(b"ping")
                assert sock.recv(10) == b""
            [record] = settled(vaurien_proxy)
            assert record.bytes_to_backend == 0 and record.bytes_to_client == 0
    """,
        passed=7,
    )


def test_toxics_through_the_marker(run_inner, backend):
    run_inner(
        f"""
        D = "{backend.distant}"

        @pytest.mark.vaurien("latency", distant=D, latency__latency=0.2)
        def test_latency(vaurien_proxy):
            reply, took = timed_roundtrip(vaurien_proxy.address)
            assert reply == b"ping" and took >= 0.19

        @pytest.mark.vaurien("bandwidth", distant=D, bandwidth__rate=500,
                             bandwidth__direction="both")
        def test_bandwidth(vaurien_proxy):
            reply, took = timed_roundtrip(vaurien_proxy.address, b"x" * 100_000)
            assert reply == b"x" * 100_000
            assert took >= 0.18  # 100 kB at 500 kB/s, both ways at once

        @pytest.mark.vaurien("slicer", distant=D, slicer__average_size=5, slicer__delay=0.002)
        def test_slicer(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                sock.sendall(b"y" * 100)
                reads = []
                while sum(reads) < 100:
                    reads.append(len(sock.recv(100)))
            assert len(reads) >= 5

        @pytest.mark.vaurien("limit_data", distant=D, limit_data__bytes=3)
        def test_limit_data(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address, b"abcdef") == b"abc"

        @pytest.mark.vaurien("slow_close", distant=D, slow_close__delay=0.3)
        def test_slow_close(vaurien_proxy):
            reply, took = timed_roundtrip(vaurien_proxy.address)
            assert reply == b"ping" and took >= 0.29

        @pytest.mark.vaurien("timeout", distant=D, timeout__timeout=0.2)
        def test_timeout(vaurien_proxy):
            assert roundtrip(vaurien_proxy.address) == b""

        @pytest.mark.vaurien("reset_peer", distant=D)
        def test_reset_peer(vaurien_proxy):
            with socket.create_connection(vaurien_proxy.address, timeout=10) as sock:
                sock.sendall(b"x")
                with pytest.raises(ConnectionResetError):
                    sock.recv(10)

        @pytest.mark.vaurien(distant=D)
        def test_down(vaurien_proxy):
            with vaurien_proxy.down():
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(vaurien_proxy.address, timeout=5)
            assert roundtrip(vaurien_proxy.address) == b"ping"

        @pytest.mark.vaurien("30:latency+bandwidth", distant=D, latency__latency=0.01,
                             bandwidth__rate=1000)
        def test_chain_option_spelling(vaurien_proxy):
            assert vaurien_proxy.handlers["bandwidth"].option("rate") == 1000.0
            assert roundtrip(vaurien_proxy.address) == b"ping"
    """,
        passed=9,
    )
