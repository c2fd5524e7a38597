"""The README's example must run as written and reach log p(x)."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_agrees_with_log_marginal(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    bound, truth = (float(v) for v in capsys.readouterr().out.split())
    # IWAE with K = 1000 after fitting: within 0.05 nats of the exact mean log p(x).
    assert bound <= truth + 0.01 and np.isclose(bound, truth, atol=0.05)
