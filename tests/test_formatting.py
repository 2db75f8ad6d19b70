"""The one home of counts, sizes, durations and table cells: each style keeps the text it shows."""

import math

from lmforge.formatting import format_bytes, format_count, format_number, format_seconds


def test_format_count_styles():
    assert [format_count(n) for n in (None, 7, 7.6, 1234, 409_600, 2.1e12)] == ["-", "7", "8", "1.23K", "410K", "2.1T"]
    assert format_count(1_234_567, spec=".2f") == "1.23M"  # lmforge model info
    assert format_count(1_500_000.0, spec=".2f", units="kMG") == "1.50M" and format_count(2500, spec=".2f", units="kMG") == "2.50k"
    assert format_count(3e12, units="KMB") == "3e+03B"  # no unit past the last one given


def test_format_bytes_styles():
    assert [format_bytes(n) for n in (None, 512, 4096, 2_500_000, 1.2e9)] == ["-", "512 B", "4.1 KB", "2.5 MB", "1.2 GB"]
    assert [format_bytes(n, megabytes=True) for n in (50_000, 200_000, 5e9)] == ["50.0 KB", "0.2 MB", "5000.0 MB"]


def test_format_seconds_styles():
    assert [format_seconds(s) for s in (5.04, 125, 7300)] == ["5.0s", "2m05s", "121m40s"]
    assert [format_seconds(s, style="clock") for s in (65.9, 3725, math.inf)] == ["1:05", "1:02:05", "?"]
    assert [format_seconds(s, style="words") for s in (4.25, 42, 185, 3900)] == ["4.2 s", "42 s", "3 min 05 s", "1 h 05 min"]


def test_format_number():
    assert [format_number(x) for x in (None, 0.123456, 3, "n/a")] == ["-", "0.1235", "3.0000", "n/a"]
    assert format_number(12345, ",") == "12,345" and format_number(0.5, "+.4f") == "+0.5000"
