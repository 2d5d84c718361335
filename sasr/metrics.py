"""Prometheus metrics on prometheus_client: one registry per Metrics, so apps and engines never share series."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Scrape:
    """One scrape: the registry's families, then gauges whose values are known only now (queues, caches)."""

    def __init__(self, registry: CollectorRegistry, gauges: dict[str, float]) -> None:
        self.registry, self.gauges = registry, gauges

    def collect(self):
        for family in self.registry.collect():
            # The text format carries `_created` timestamps as a gauge family beside each counter and
            # histogram; Prometheus does not read them there, so they would only double the families.
            family.samples = [s for s in family.samples if s.name != family.name + "_created"]
            yield family
        for name, value in self.gauges.items():
            yield GaugeMetricFamily(name, "", value=value)


class Metrics:
    """Counters and histograms created on first use, keyed by name; safe to update from any thread.

    A name keeps the label names of its first update. Counter names end in `_total`, as exposed.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lock = threading.Lock()  # guards creation; prometheus_client guards the values
        self.families: dict[str, Counter | Histogram] = {}

    def _series(self, kind: type[Counter | Histogram], name: str, help: str, labels: dict[str, str], **options):
        with self.lock:
            family = self.families.get(name)
            if family is None:
                family = kind(name, help, sorted(labels), registry=self.registry, **options)
                self.families[name] = family
        return family.labels(**labels) if labels else family

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        self._series(Counter, name, help, labels).inc(value)

    def observe(self, name: str, seconds: float, help: str = "", buckets=LATENCY_BUCKETS_S, **labels: str) -> None:
        self._series(Histogram, name, help, labels, buckets=buckets).observe(seconds)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value, 0 before its first update: `value("sasr_requests_total", path=..., status=...)`."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self, gauges: dict[str, float] | None = None) -> str:
        """Prometheus text format: every counter and histogram, then `gauges` as gauges."""
        return generate_latest(_Scrape(self.registry, gauges or {})).decode()
