from collector import histogram


def test_percentiles_interpolate_inside_the_bucket():
    hist = histogram.empty()
    for ms in [3] * 50 + [40] * 45 + [700] * 5:
        hist[histogram.bucket(ms)] += 1
    assert 2 <= histogram.percentile(hist, 0.5) <= 5
    assert 20 <= histogram.percentile(hist, 0.9) <= 50
    assert 500 <= histogram.percentile(hist, 0.99) <= 1000


def test_empty_histogram_has_no_percentile():
    assert histogram.percentile(histogram.empty(), 0.95) is None


def test_histograms_add_elementwise():
    a, b = histogram.empty(), histogram.empty()
    a[0], b[0], b[3] = 2, 3, 1
    assert histogram.add(a, b)[:4] == [5, 0, 0, 1]


def test_bucket_bounds_are_inclusive_upper():
    assert histogram.bucket(0) == 0
    assert histogram.bucket(1) == 0
    assert histogram.bucket(1.01) == 1
    assert histogram.bucket(10**9) == histogram.SIZE - 1
