"""Each toxiproxy fault in its marker form, in a real pytest run."""

from __future__ import annotations

from tests.handlers.helpers import run_inner


def test_every_toxic_through_the_marker(pytester, backend):
    run_inner(
        pytester,
        f"""
        D = "{backend.distant}"

        @pytest.mark.vaurien("latency", distant=D, latency__latency=0.2)
        def test_latency(vaurien_proxy):
            started = time.monotonic()
            assert roundtrip(vaurien_proxy.address) == b"ping"
            assert time.monotonic() - started >= 0.19

        @pytest.mark.vaurien("bandwidth", distant=D, bandwidth__rate=500,
                             bandwidth__direction="both")
        def test_bandwidth(vaurien_proxy):
            started = time.monotonic()
            assert roundtrip(vaurien_proxy.address, b"x" * 100_000) == b"x" * 100_000
            assert time.monotonic() - started >= 0.18  # 100 kB at 500 kB/s, both ways at once

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
            started = time.monotonic()
            assert roundtrip(vaurien_proxy.address) == b"ping"
            assert time.monotonic() - started >= 0.29

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


def test_bad_direction_is_named(pytester):
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest("--vaurien-handler", "latency.direction=sideways")
    result.stderr.fnmatch_lines(
        [
            "ERROR: --vaurien-handler: handler 'latency': option 'direction' = 'sideways' is not "
            "valid; expected one of both, downstream, upstream"
        ]
    )
