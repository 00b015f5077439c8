"""The hand-over between a producer thread and its consumer (exchange/handover.py), which the
feed's COPY stream and a federation pull's read-ahead share."""

import threading

import pytest

from exchange.handover import Handover


def test_items_arrive_in_order_then_the_producers_error_is_raised_to_the_consumer():
    handover: Handover[int] = Handover(2)

    def produce() -> None:
        for n in range(5):
            handover.put(n)
        handover.finish(ValueError("the peer went away"))

    threading.Thread(target=produce).start()
    got = []
    with pytest.raises(ValueError, match="the peer went away"):
        for item in handover:
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_frees_a_producer_blocked_on_a_full_queue():
    handover: Handover[int] = Handover(1)
    puts: list[bool] = []
    producer = threading.Thread(target=lambda: puts.extend(handover.put(n) for n in range(3)))
    producer.start()
    assert next(iter(handover)) == 0
    handover.stop()
    producer.join(timeout=5)
    assert not producer.is_alive()
    assert len(puts) == 3 and puts[0] is True and puts[-1] is False
