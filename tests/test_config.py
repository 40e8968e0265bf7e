"""show_config() / config(): the build as it was compiled, and the runtime it found."""
import fastconv
from fastconv import _config


def test_build_info_was_recorded_by_setup_py():
    from fastconv import _build_info

    info = _config.build_info()
    assert info["compiler"] != "unknown" and info["cython"] != "unknown"
    # The generated module and the compiled extension agree on OpenMP.
    assert _build_info.openmp == info["openmp"] == fastconv._config.config()["openmp"]
    assert bool(info["openmp_compile_args"]) == info["openmp"]


def test_config_reports_blas_and_openmp():
    c = _config.config()
    assert c["blas_build"]["name"]
    assert c["num_threads"] >= 1
    if c["openmp"]:
        assert c["openmp_runtime"], "OpenMP kernels but no OpenMP runtime loaded"


def test_show_config_prints_the_build(capsys):
    fastconv.show_config()
    out = capsys.readouterr().out
    assert "built with:" in out and "BLAS built:" in out
    assert ("OpenMP:      enabled" in out) == _config.config()["openmp"]
