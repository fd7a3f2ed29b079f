"""
Monitoring: `GET /api/1.0/open-metrics/` and `GET /api/1.0/service-status/`.

- `families`: the name, type, labels and buckets of every metric the server exports;
- `events`: what processes observe (request latency, scheduling passes, upload bytes),
  aggregated across every server and Celery process in Redis;
- `exposition`: one scrape, from the database's maintained counts and those events;
- `middleware`: the request latency histogram;
- `service_status`: the JSON of `service-status`.

See docs/reference/metrics.md.
"""
