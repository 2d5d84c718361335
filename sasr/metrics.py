"""A few Prometheus metrics, rendered in the text exposition format without a client library."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


class Metrics:
    """Counters and latency histograms keyed by label sets; safe to update from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[tuple, list[float]]] = defaultdict(dict)
        self.help: dict[str, tuple[str, str]] = {}
        self.buckets: dict[str, tuple[float, ...]] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        with self.lock:
            self.help.setdefault(name, ("counter", help))
            self.counters[name][tuple(sorted(labels.items()))] += value

    def observe(self, name: str, seconds: float, help: str = "", buckets=LATENCY_BUCKETS_S, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            self.help.setdefault(name, ("histogram", help))
            self.buckets.setdefault(name, buckets)
            # per label set: one count per bucket, then +Inf count, then sum
            hist = self.histograms[name].setdefault(key, [0.0] * (len(buckets) + 2))
            hist[bisect.bisect_left(buckets, seconds)] += 1
            hist[-1] += seconds

    def render(self, gauges: dict[str, float] | None = None) -> str:
        lines = []
        with self.lock:
            for name, series in self.counters.items():
                lines += [f"# HELP {name} {self.help[name][1]}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(k)} {v:g}" for k, v in series.items()]
            for name, series in self.histograms.items():
                lines += [f"# HELP {name} {self.help[name][1]}", f"# TYPE {name} histogram"]
                for key, hist in series.items():
                    cumulative = 0.0
                    for bound, count in zip((*self.buckets[name], "+Inf"), hist[:-1]):
                        cumulative += count
                        lines.append(f"{name}_bucket{_labels(key + (('le', str(bound)),))} {cumulative:g}")
                    lines.append(f"{name}_count{_labels(key)} {cumulative:g}")
                    lines.append(f"{name}_sum{_labels(key)} {hist[-1]:g}")
        for name, value in (gauges or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"
