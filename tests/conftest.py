import os
import sys
from pathlib import Path

import pytest
import torch

# Tests import the toy envs by module name (spawned env workers too).
TESTS = str(Path(__file__).parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
os.environ["PYTHONPATH"] = TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
