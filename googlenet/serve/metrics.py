"""Prometheus metrics of one server (its own registry, so several apps in one process never mix their counts)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ERROR_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
               413: "too_large", 415: "unsupported_media", 431: "headers_too_large", 503: "queue_full", 504: "deadline"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("googlenet_requests", "HTTP requests by route and status", ["route", "code"],
                                registry=self.registry)
        self.errors = Counter("googlenet_errors", "Failed requests by kind", ["kind"], registry=self.registry)
        self.queue_depth = Gauge("googlenet_queue_depth", "Requests waiting for a batch", registry=self.registry)
        self.batch_size = Histogram("googlenet_batch_size", "Images per model batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.batch_seconds = Histogram("googlenet_batch_seconds", "Model time per batch", registry=self.registry)
        self.latency = Histogram("googlenet_request_seconds", "Request latency by route", ["route"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=self.registry)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def error(self, status: int) -> None:
        self.errors.labels(ERROR_KINDS.get(status, "client_error" if status < 500 else "server_error")).inc()

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_size.observe(images)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
