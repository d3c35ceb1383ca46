import os
import sys
from pathlib import Path

# tests/ helpers (zedd_samples.py) importable from every test module
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")
