"""Pure parts of decision 0044: the answer tally under two threads, the fair share of an
accept queue (against a real listening socket) and the shared load board."""

from __future__ import annotations

import socket
import threading
import time

from ocsp import worker_board
from ocsp.tally import AnswerTally
from ocsp.worker import ACCEPT_BATCH, fair_share, queued_connections


def test_tally_counts_every_add_of_two_threads_and_takes_each_once() -> None:
    tally = AnswerTally()
    taken: list[dict[tuple[str, str], int]] = []
    stop = threading.Event()

    def taker() -> None:  # takes while both adders run, as the loop's flush does
        while not stop.is_set():
            taken.append(tally.take())

    def adder(cache: str) -> None:
        for _ in range(50_000):
            tally.add("good", cache)

    threads = [threading.Thread(target=adder, args=(c,)) for c in ("hit", "miss")]
    reader = threading.Thread(target=taker)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    taken.append(tally.take())
    total: dict[tuple[str, str], int] = {}
    for counts in taken:
        for key, n in counts.items():
            assert n > 0
            total[key] = total.get(key, 0) + n
    assert total == {("good", "hit"): 50_000, ("good", "miss"): 50_000}
    assert tally.take() == {}


def test_fair_share() -> None:
    assert fair_share(8, 2) == 4
    assert fair_share(1, 2) == 1
    assert fair_share(0, 2) == 0
    assert fair_share(7, 1) == ACCEPT_BATCH  # alone: everything, as before
    assert fair_share(None, 2) == ACCEPT_BATCH  # queue length unknown
    assert fair_share(10_000, 2) == ACCEPT_BATCH


def test_queued_connections_reads_the_accept_queue() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        try:
            deadline = time.monotonic() + 2
            while queued_connections(listener) != 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert queued_connections(listener) == 3
            listener.accept()[0].close()
            assert queued_connections(listener) == 2
        finally:
            for c in clients:
                c.close()
    with socket.socket(socket.AF_UNIX) as unix:
        assert queued_connections(unix) is None  # not TCP: the worker takes a full batch


def test_board_ignores_self_stale_and_unavailable_slots() -> None:
    class Booting:
        pid = "[booting]"

    a, b, c = (worker_board.claim(Booting()) for _ in range(3))
    now = time.monotonic()
    worker_board.publish(a, 5, now)
    worker_board.publish(b, 2, now)
    worker_board.publish(c, worker_board.UNAVAILABLE, now)
    assert worker_board.least_other(a, now) == 2
    assert worker_board.least_other(b, now) == 5
    worker_board.publish(b, 0, now - worker_board.STALE_SECONDS - 1)  # b stuck or dead
    assert worker_board.least_other(a, now) is None
