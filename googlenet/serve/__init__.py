"""``googlenet serve``: the project's inference path behind HTTP, safe by default.

* ``model``    the served weights: decoding an upload into crops, the shared inference path (``Ensemble``).
* ``batcher``  dynamic batching: concurrent requests gathered up to ``max_batch`` images or ``max_wait_ms``, run as
               one batch off the event loop, answered one by one; a bounded queue (503 when full).
* ``protocol`` the Open Inference Protocol v2 (KServe / Triton) request and response bodies, with Triton's binary
               tensor and classification extensions.
* ``limits``   request limits enforced while the body streams in (413, 408) and the JSON error responses.
* ``app``      the Starlette application: v2 routes, ``POST /v1/classify``, ``GET /metrics``, the demo page at ``/``.
"""
