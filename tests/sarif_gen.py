"""A large, synthetic SARIF log: the scan gate's memory test and ``bench/bench_scan.py`` read it.

One generator for both, so that the benchmark times the very log whose memory bound the test
asserts. It lives with the tests (and the benchmark imports it) because the test suite must run
without ``bench/``, whose modules import each other as top-level scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The default level of rule ``i`` is ``LEVELS[i % 4]``.
LEVELS = ("error", "warning", "note", "none")


def write_big_sarif(path: Path, results: int, rules: int = 20) -> None:
    """``results`` small results (~55 bytes each, as compact scanners write them) over ``rules``
    rules: result ``i`` is of rule ``R{i % rules}`` and has no level of its own."""
    rule_list = [
        {
            "id": f"R{i}",
            "defaultConfiguration": {"level": LEVELS[i % 4]},
            "properties": {"security-severity": "5"},
        }
        for i in range(rules)
    ]
    with path.open("w") as f:
        f.write('{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"Big","rules":')
        f.write(json.dumps(rule_list) + '}},"results":[')
        f.write(
            ",".join(
                f'{{"ruleId":"R{i % rules}","message":{{"text":"finding {i}"}}}}' for i in range(results)
            )
        )
        f.write("]}]}")
