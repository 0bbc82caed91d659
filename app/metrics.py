"""Every Prometheus object the service exports, defined once.

Each app gets its own `Metrics` (own CollectorRegistry), so several apps in one process (tests)
do not share counters. /metrics renders `Metrics.render()` from a plain route. Per-model series carry
a `model` label whose values are only names of served models (known at start or reload, never taken
from a request), so their number is bounded by the repository.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
SAMPLE_BUCKETS = (1, 2, 5, 10, 20, 40, 80, 160)
NATS_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "vpt_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "vpt_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("vpt_queue_depth", "requests waiting for the model", registry=r)
        self.queue_rejected = Counter("vpt_queue_rejected", "requests refused because the queue was full", registry=r)
        self.queue_wait = Histogram(
            "vpt_queue_wait_seconds", "time from enqueue to the start of its batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("vpt_batch_size", "images per forward pass", buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("vpt_inference_seconds", "model time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.classes = Gauge("vpt_registered_classes", "classes currently registered", ["model"], registry=r)
        self.samples = Histogram(
            "vpt_samples", "Monte Carlo samples per served prediction", ["model"], buckets=SAMPLE_BUCKETS, registry=r
        )
        self.model = Info("vpt_model", "a served model and its version", ["model"], registry=r)
        self.models = Gauge("vpt_models", "models served", registry=r)
        self.reloads = Counter(
            "vpt_model_reloads", "model reloads: swapped to a new version, or failed (the old one serves)",
            ["model", "outcome"], registry=r,
        )  # fmt: skip
        self.ready = Gauge("vpt_ready", "1 once the weights are loaded and warmed up", registry=r)
        self.registry_version = Gauge(
            "vpt_registry_version", "the class registry version this replica's classes equal", registry=r
        )  # replicas that differ are converging, or cut off from the database
        self.registry_up = Gauge(
            "vpt_registry_up", "1 while this replica follows the class registry, 0 when cut off (degraded)", registry=r
        )
        self.entropy = Histogram(
            "vpt_prediction_entropy_nats",
            "predictive entropy of served predictions",
            ["model"],
            buckets=NATS_BUCKETS,
            registry=r,
        )
        self.mutual_information = Histogram(
            "vpt_prediction_mutual_information_nats",
            "mutual information (epistemic uncertainty) of served predictions",
            ["model"],
            buckets=NATS_BUCKETS,
            registry=r,
        )
        self.unknown = Counter(
            "vpt_unknown_predictions",
            "served predictions flagged unknown (the image may show none of the registered classes)",
            ["model", "measure"],
            registry=r,
        )
        self.unknown_threshold = Gauge(
            "vpt_unknown_threshold", "threshold of the unknown flag, on its measure", ["model", "measure"], registry=r
        )
        self.set_size = Histogram(
            "vpt_prediction_set_size", "classes in served prediction sets", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.linear_error = Gauge(
            "vpt_linear_error",
            "vpt-cond linear pass: the guard's max |dp| against the exact pass",
            ["model"],
            registry=r,
        )
        self.linear_active = Gauge(
            "vpt_linear_active", "1 while vpt-cond answers use the linear pass", ["model"], registry=r
        )
        self.calibrated = Gauge(
            "vpt_calibrated",
            "1 while the registered classes are the ones the posterior was calibrated on",
            ["model"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
