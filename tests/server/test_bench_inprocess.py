"""The in-process benchmark drives the real connection code with a stand-in socket: it must keep doing so, and
the answers it times must be the right ones (a benchmark of a path that fails would measure the failure)."""

import os

import pytest

from bench.bench_inprocess import Driver, main, make_site


@pytest.mark.parametrize(
    ("scenario", "body"), [("hello", b"Hello, World!\n"), ("static", None)], ids=["hello", "static"]
)
def test_each_scenario_answers_every_request_with_a_200(tmp_path, scenario, body):
    site = make_site(tmp_path)
    driver = Driver(scenario, site)
    driver.sock.keep_last = True
    try:
        driver.run(50)
        answer = driver.sock.last
    finally:
        driver.close()
    assert driver.sock.sends == 50  # one send per request: each turn's response leaves at the turn's end
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    head, _, sent_body = answer.partition(b"\r\n\r\n")
    assert sent_body == (body if body is not None else (site / "1k.bin").read_bytes())
    assert b"Connection: close" not in head


def test_a_driver_leaves_no_descriptor_open(tmp_path):
    site = make_site(tmp_path)
    before = set(os.listdir("/proc/self/fd"))
    for scenario in ("hello", "static"):
        driver = Driver(scenario, site)
        driver.run(10)
        driver.close()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_request_not_answered_with_200_stops_the_benchmark(tmp_path):
    driver = Driver("static", tmp_path)  # an empty site: the file is missing, so 404
    try:
        with pytest.raises(SystemExit, match="not answered with 200"):
            driver.check()
    finally:
        driver.close()


def test_the_command_prints_its_table(capsys):
    assert main(["--batches", "1", "--batch", "20", "--no-write"]) == 0
    table = capsys.readouterr().out
    assert "| hello |" in table and "| static |" in table
