"""install_requirements.py: pip's index settings, as pip itself reports them, become the equivalent uv options."""
import os
import subprocess
import sys

import install_requirements as inst


def test_pip_settings_from_real_pip_config_with_variables_overriding_files(tmp_path, monkeypatch):
    """``pip config list`` of this environment's pip, on a pip.conf of the test's and one PIP_* variable."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    (tmp_path / "pip.conf").write_text("[global]\nindex-url = https://mirror.example/simple\nno-index = true\n"
                                       f"extra-index-url = file://{tmp_path}/local file:///nonexistent/simple\n"
                                       f"find-links = {tmp_path}/wheels\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "pip.conf"))
    monkeypatch.setenv("PIP_INDEX_URL", "https://override.example/simple")
    s = inst.pip_settings(sys.executable)
    assert s["index-url"] == ["https://override.example/simple"]  # PIP_* beats pip.conf, as in pip
    assert s["extra-index-url"] == [f"file://{tmp_path}/local", "file:///nonexistent/simple"]
    assert s["find-links"] == [f"{tmp_path}/wheels"] and s["no-index"] == ["true"]


def test_uv_args_keep_what_pip_would_use_and_skip_missing_local_locations(tmp_path):
    os.makedirs(tmp_path / "wheels")
    os.makedirs(tmp_path / "simple")
    (tmp_path / "c.txt").write_text("torch<=2.14.1\n")
    args = inst.uv_args({"index-url": ["https://mirror.example/simple"],
                         "extra-index-url": [f"file://{tmp_path}/simple", "file:///nonexistent/simple",
                                             "https://extra.example/simple"],
                         "find-links": [str(tmp_path / "wheels"), "/nonexistent/wheels"],
                         "constraint": [str(tmp_path / "c.txt"), "/nonexistent/c.txt"],
                         "trusted-host": ["mirror.example"]})
    pairs = list(zip(args[::2], args[1::2]))
    assert pairs == [("--index-strategy", "unsafe-best-match"), ("--index-url", "https://mirror.example/simple"),
                     ("--extra-index-url", f"file://{tmp_path}/simple"),
                     ("--extra-index-url", "https://extra.example/simple"),
                     ("--find-links", str(tmp_path / "wheels")), ("--constraint", str(tmp_path / "c.txt")),
                     ("--allow-insecure-host", "mirror.example")]
    assert inst.uv_args({}) == ["--index-strategy", "unsafe-best-match"]  # plain PyPI, pip's version rule
    # an offline wheelhouse: pip's no-index (as pip config prints it) becomes uv's
    offline = inst.uv_args({"no-index": ["true"], "find-links": [str(tmp_path / "wheels")]})
    assert offline == ["--index-strategy", "unsafe-best-match", "--no-index", "--find-links", str(tmp_path / "wheels")]


def test_usage_without_arguments_exits_with_the_docstring():
    p = subprocess.run([sys.executable, inst.__file__], capture_output=True, text=True)
    assert p.returncode == 1 and "install_requirements.py .venv/bin/python" in p.stderr
