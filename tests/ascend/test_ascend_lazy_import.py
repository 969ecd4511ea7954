"""torch_npu is imported only when the ascend backend is asked to run, and a broken torch_npu is reported.

A stand-in ``torch_npu`` module that fails on import (as the real one does without CANN) sits on the path of
a fresh interpreter: loading dsq, its plugins and the capability matrix must not touch it; ``is_available()``
must then report the import error with the install hint; emulated mode must never import it.
"""

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import json, sys
    import dsq
    names = [b.name for b in dsq.list_backends()]
    asc = dsq.get_backend("npu", require_available=False)
    caps = asc.capabilities()
    before = "torch_npu" in sys.modules or "_fake_npu_imported" in sys.modules
    ok, why = asc.is_available()
    if ok:  # emulated: run one quantized matmul through the emulated ops
        import torch
        s = dsq.get_scheme("w8a8_dynamic")
        y = asc.matmul(torch.randn(2, 64), dsq.get_backend("cpu").quantize_weight(torch.randn(8, 64), s), s)
        assert y.shape == (2, 8)
    after = "torch_npu" in sys.modules or "_fake_npu_imported" in sys.modules
    print(json.dumps({"names": names, "before": before, "after": after, "ok": ok, "why": why,
                      "mode": asc.mode, "w8a16_mm": bool(caps["W8A16"]["matmul"])}))
""")


def _probe(tmp_path, emulate: bool) -> dict:
    fake = tmp_path / "torch_npu.py"
    fake.write_text("import sys\nsys.modules['_fake_npu_imported'] = sys\n"
                    "raise OSError('libhccl.so: cannot open shared object file (fake torch_npu for dsq tests)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    env.pop("DSQ_EMULATE", None)
    if emulate:
        env["DSQ_EMULATE"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plugin_load_and_matrix_do_not_import_torch_npu_and_errors_are_reported(tmp_path):
    r = _probe(tmp_path, emulate=False)
    assert "ascend" in r["names"] and "cpu-reference" in r["names"]
    assert r["before"] is False  # import dsq, plugin loading, get_backend, capabilities: no torch_npu import
    assert r["w8a16_mm"] is True and r["mode"] == "hardware"
    assert r["ok"] is False and r["after"] is True  # is_available() is where the import is tried
    assert "import torch_npu failed (OSError: libhccl.so" in r["why"] and "CANN" in r["why"]
    assert "DSQ_EMULATE=1" in r["why"]


def test_emulated_mode_never_imports_torch_npu(tmp_path):
    r = _probe(tmp_path, emulate=True)
    assert r["ok"] is True and r["mode"] == "emulated" and r["why"] == ""
    assert r["before"] is False and r["after"] is False
