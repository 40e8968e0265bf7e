import io

import numpy as np
import pytest

import fastconv
from fastconv import __main__ as cli
from fastconv import training


def test_digits_training_beats_chance_by_far():
    x_train, y_train, x_test, y_test = training.load_digits(seed=1)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32 and 0 <= x_train.min() <= x_train.max() <= 1
    assert len(y_train) + len(y_test) == 1797 and abs(len(y_test) - 359) <= 1
    model = training.lenet(rng=1)
    stream = io.StringIO()
    stats = training.train(model, x_train[:640], y_train[:640], epochs=3, batch_size=32, seed=1, stream=stream)
    assert stats["images"] == 3 * 640 and len(stats["step_seconds"]) == 3 * 20
    assert training.accuracy(model, x_test, y_test) > 0.75          # chance: 0.10
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3  20/20 batches  loss ")


def test_training_is_reproducible():
    x, y, _, _ = training.load_digits(seed=0)
    results = []
    for _ in range(2):
        model = training.lenet(rng=3)
        training.train(model, x[:96], y[:96], epochs=1, batch_size=32, seed=3, stream=io.StringIO())
        results.append(model.params["7.weight"].copy())
    assert np.array_equal(*results)


def test_main_reports_accuracy_speed_and_speedup():
    lines = []
    result = training.main(epochs=1, batch_size=64, seed=0, reference_steps=1, out=lines.append,
                           stream=io.StringIO())
    text = "\n".join(lines)
    assert "test accuracy:" in text and "images/s" in text and "reference layers" in text and "speed-up" in text
    assert result["accuracy"] > 0.5
    assert result["images_per_second"] > 0 and result["reference_images_per_second"] > 0 and result["speedup"] > 0


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _train_a_little(stream, **kwargs):
    x, y, _, _ = training.load_digits(seed=0)
    training.train(training.lenet(rng=0), x[:64], y[:64], epochs=2, batch_size=16, stream=stream, **kwargs)
    return stream.getvalue()


def test_progress_bar_is_tqdm_on_a_terminal():
    pytest.importorskip("tqdm")
    text = _train_a_little(_Terminal())
    assert "\r" in text and "4/4" in text and "loss " in text
    assert text.count("\n") == 2                     # one finished bar per epoch


def test_no_bar_when_turned_off_or_without_tqdm(monkeypatch):
    for text in (_train_a_little(_Terminal(), progress=False), _train_a_little(io.StringIO())):
        assert "\r" not in text and text.splitlines()[1].startswith("epoch 2/2  4/4 batches  loss ")
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)   # import tqdm now fails
    text = _train_a_little(_Terminal())
    assert "\r" not in text and len(text.splitlines()) == 2


def test_cli_passes_options(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "main", lambda **kwargs: calls.append(kwargs))
    threads = fastconv.get_num_threads()
    try:
        assert cli.main(["--epochs", "2", "--batch-size", "16", "--seed", "5", "--threads", "1"]) == 0
        assert fastconv.get_num_threads() == 1
    finally:
        fastconv.set_num_threads(threads)
    assert calls == [dict(epochs=2, batch_size=16, seed=5)]
    with pytest.raises(SystemExit):
        cli.main(["--epochs", "0"])


def test_missing_scikit_learn_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)   # import now fails
    with pytest.raises(training.MissingScikitLearn, match=r'pip install "\.\[examples\]"'):
        training.load_digits()
    assert cli.main([]) == 1
    assert 'pip install ".[examples]"' in capsys.readouterr().err
