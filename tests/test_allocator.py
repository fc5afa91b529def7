"""The CLI's allocator setting: freed large arrays stay in the process for the next ones."""
import subprocess
import sys

import pytest

_PROBE = """
import sys, numpy as np
from edgenet._allocator import keep_freed_memory
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 1e6
if sys.argv[1] == 'keep':
    assert keep_freed_memory()
a = np.ones(150 << 17)          # 150 MB
a[::512] = 2.0
del a
print(rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_arrays_stay_in_the_process_only_when_asked():
    after = {mode: float(subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                                        check=True).stdout) for mode in ("keep", "default")}
    assert after["keep"] > after["default"] + 100      # kept for reuse vs returned with munmap
